"""The runner does what the providers' APIs mean: quotas stop a model instead of burning retries,
cancels are settled as billed, and finished work is collected, never dropped."""

from __future__ import annotations

import signal
from collections import Counter

from runner.sim import SimConfig, Simulator
from runner.sim.media import make_image
from tests.conftest import run_cli
from tests.helpers import ledger_rows, sim_args, sim_env, start, states, wait_until


def test_a_daily_generation_limit_stops_that_model_not_the_run(tmp_path):
    with Simulator(SimConfig(latency={"default": 0.05}, pending_s=0.01, daily_limit={"gen4_turbo": 2})) as sim:
        args = ["-m", "model=gen4_turbo,gen4.5", "prompt_set=animate", "replicates=2", *sim_args(sim, runway=1)]
        result = run_cli(*args, cwd=tmp_path, env=sim_env(sim))
        assert result.returncode == 1, result.stdout + result.stderr
        rows = ledger_rows(tmp_path)
        by_model = {model: Counter(r["state"] for r in rows if r["model"] == model) for model in ("gen4_turbo", "gen4.5")}
        assert by_model == {"gen4_turbo": {"downloaded": 2, "planned": 2}, "gen4.5": {"downloaded": 4}}
        assert "stopped sending to runway gen4_turbo: rate limited for" in result.stdout and "daily" in result.stdout
        creates = sim.stats()["models"]["gen4_turbo"]["requests"]["runway.create"]
        assert creates <= 3  # one refused create, not a retry storm

        # Asked first, the account says how many are left: nothing is sent past them.
        again = run_cli(*args, "providers.runway.limits_from_provider=true", cwd=tmp_path, env=sim_env(sim))
        assert again.returncode == 1
        assert sim.stats()["models"]["gen4_turbo"]["requests"]["runway.create"] == creates
        assert "daily generation limit for this model is reached" in again.stdout


def test_cancel_on_interrupt_settles_what_may_have_run_and_a_rerun_says_it_pays_again(tmp_path):
    with Simulator(SimConfig(latency={"default": {"min": 2.0, "max": 3.0}}, pending_s=0.05)) as sim:
        args = ["model=gen4_turbo", "prompt_set=animate", "duration=5", "cancel_on_interrupt=true", *sim_args(sim, runway=2)]
        proc = start(args, tmp_path, sim_env(sim))
        wait_until(lambda: states(tmp_path, "provider_status")["RUNNING"] >= 2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 130 and "canceled 2 task(s) at the provider" in err, err
        rows = ledger_rows(tmp_path)
        assert {r["state"] for r in rows} == {"canceled"}
        # They were running: the provider may bill them, and the ledger holds their estimate.
        assert [r["spent_micros"] for r in rows] == [250_000, 250_000]
        again = run_cli(*args, cwd=tmp_path, env=sim_env(sim), timeout=240)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "2 job(s) canceled earlier were generated again (a new charge each)" in again.stdout
        assert states(tmp_path) == {"downloaded": 2}


def test_a_large_input_is_uploaded_once_and_reused_across_jobs_and_runs(tmp_path, sim, prompt_sets):
    big = tmp_path / "big.png"
    big.write_bytes(make_image("big") + b"\0" * 4_000_000)  # over Runway's inline limit: the upload flow
    overrides = prompt_sets("upload", f"""
        name: upload
        prompts:
          - {{id: big, text: the beam turns, image: {big}}}
    """)
    args = ["model=gen4_turbo", *overrides, "replicates=3", *sim_args(sim)]
    assert run_cli(*args, cwd=tmp_path, env=sim_env(sim)).returncode == 0
    uploads = sim.stats()["server"]["routes"]["runway.upload"]["requests"]
    assert uploads == 2  # one ticket and one form post for three jobs
    again = run_cli(*args, "seed=7", cwd=tmp_path, env=sim_env(sim))  # new jobs, the same file
    assert again.returncode == 0, again.stdout + again.stderr
    assert sim.stats()["server"]["routes"]["runway.upload"]["requests"] == uploads
    assert len(sim.ledger()) == 6


def test_fal_failures_are_read_from_the_result_and_billed_as_fal_bills_them(tmp_path, sim):
    # A moderation refusal is a model error: final, and fal may still charge for it. A platform
    # error is not billed and may pass on a new attempt.
    sim.inject("task_failed", on="fal.submit", model="fal-hailuo-02-standard", failure_code="SAFETY.INPUT.IMAGE")
    sim.inject("task_failed", on="fal.submit", model="fal-hailuo-02-standard", failure_code="INTERNAL")
    result = run_cli("model=hailuo", "prompt_set=animate", *sim_args(sim, fal=1), cwd=tmp_path, env=sim_env(sim))
    assert result.returncode == 1
    rows = {r["state"]: r for r in ledger_rows(tmp_path)}
    refused, retried = rows["failed"], rows["downloaded"]
    assert refused["error_class"] == "permanent" and "content_policy_violation" in refused["error"] and refused["attempts"] == 1
    assert refused["spent_micros"] == 0 and refused["possible_micros"] == refused["est_micros"] == 270_000
    assert retried["attempts"] == 2 and retried["spent_micros"] == 270_000 and retried["possible_micros"] == 0
    assert "possibly billed on top of the settled spend: up to $0.27" in result.stdout


def test_fal_stores_a_large_local_input_once_and_sends_its_url(tmp_path, sim, prompt_sets):
    image = tmp_path / "big.png"
    image.write_bytes(make_image("fal-big") + b"\0" * 1_500_000)  # over the inline threshold
    overrides = prompt_sets("stored", f"""
        name: stored
        prompts:
          - {{id: big, text: waves, image: {image}}}
    """)
    args = ["model=kling", *overrides, "replicates=3", *sim_args(sim)]
    result = run_cli(*args, cwd=tmp_path, env=sim_env(sim))
    assert result.returncode == 0, result.stdout + result.stderr
    bodies = [sim.app.board.get(e["task_id"]).body for e in sim.ledger()]
    urls = {body["image_url"] for body in bodies}
    assert len(bodies) == 3 and len(urls) == 1 and next(iter(urls)).startswith(sim.base_url + "/fal-cdn/files/")
    assert sim.stats()["server"]["routes"]["fal.upload"]["requests"] == 2  # the initiate call and the PUT, once
