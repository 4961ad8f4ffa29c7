"""The real CLI against the simulator: sweeps to files on disk, resume after SIGKILL without paying
twice, concurrency limits across processes, the budget cap, and interrupts."""

from __future__ import annotations

import signal

import pytest

from runner import publish
from runner.locate import find_ledger
from runner.sim import SimConfig, Simulator, read_ledger
from tests.conftest import run_cli
from tests.helpers import assert_complete, assert_no_paid_twice, ledger_rows, query, sim_args, sim_env, start, states, wait_until


def test_sweep_over_two_providers_and_six_models(tmp_path, sim):
    models = "gen4_turbo,gen4.5,seedance,kling,hailuo,pika"
    result = run_cli("-m", f"model={models}", "prompt_set=ads", *sim_args(sim), cwd=tmp_path, env=sim_env(sim))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "18 jobs: 18 downloaded" in result.stdout
    rows = assert_complete(tmp_path, 18)
    assert {r["model"] for r in rows} == {"gen4_turbo", "gen4.5", "fal-seedance-v1-lite", "fal-kling-v2.1-standard", "fal-hailuo-02-standard", "fal-pika-v2.2"}
    assert_no_paid_twice(sim.ledger(), rows, tmp_path)
    # Runway reported what it billed; the ledger settled it.
    gen4 = [r for r in rows if r["model"] == "gen4_turbo"]
    assert sorted(r["spent_micros"] for r in gen4) == [250_000, 250_000, 500_000]
    # The same command again finds everything done and submits nothing; it records nothing again,
    # and leaves the outputs folder's manifest and gallery as they were.
    written = {name: (tmp_path / "outputs" / "ads" / name).stat().st_mtime_ns for name in ("manifest.jsonl", "report.html")}
    events = query(tmp_path, "select count(*) as n from events")[0]["n"]
    again = run_cli("-m", f"model={models}", "prompt_set=ads", *sim_args(sim), cwd=tmp_path, env=sim_env(sim))
    assert again.returncode == 0 and "18 jobs: 18 downloaded" in again.stdout
    assert len(sim.ledger()) == 18
    assert query(tmp_path, "select count(*) as n from events")[0]["n"] == events
    assert {name: (tmp_path / "outputs" / "ads" / name).stat().st_mtime_ns for name in written} == written
    # Pointed at another outputs folder, the finished jobs' files stay where they are, and it says so.
    moved = run_cli("-m", f"model={models}", "prompt_set=ads", "outputs_dir=elsewhere", *sim_args(sim), cwd=tmp_path, env=sim_env(sim))
    assert moved.returncode == 0 and len(sim.ledger()) == 18
    assert "18 file(s) downloaded by an earlier run stay where they are" in moved.stdout
    assert "outside outputs_dir=elsewhere" in moved.stdout


@pytest.fixture
def slow_sim():
    with Simulator(SimConfig(latency={"default": {"min": 0.4, "max": 0.8}}, pending_s=0.05)) as simulator:
        yield simulator


def test_killed_at_several_points_resumes_without_paying_twice(tmp_path, slow_sim):
    sim = slow_sim
    args = ["-m", "model=gen4_turbo,hailuo", "prompt_set=ads", "sweep.duration=[6,10]", *sim_args(sim, runway=2, fal=2)]
    total = 2 * 3 * 2 - 2  # coffee-morning fixes duration=10: its two points merge, per model
    # First, a crash while a submit is on the wire: the provider accepts the task but its answer
    # never arrives, so the ledger holds the job in `submitting`: the one possible duplicate charge.
    sim.inject("hang", on="runway.create", after_accept=True, seconds=20)
    proc = start(args, tmp_path, sim_env(sim))
    try:
        wait_until(lambda: any(e["provider"] == "runway" for e in sim.ledger()) or proc.poll() is not None)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    sim.clear_faults()
    assert any(r["state"] == "submitting" for r in ledger_rows(tmp_path))
    kill_points = [
        lambda s: s["submitted"] >= 1,  # tasks in flight at the provider
        lambda s: s["downloaded"] >= 2 and s["submitted"] >= 1,  # some done, some in flight
        lambda s: s["downloaded"] >= 6,
    ]
    for reached in kill_points:
        proc = start(args, tmp_path, sim_env(sim))
        try:
            wait_until(lambda: reached(states(tmp_path)) or proc.poll() is not None)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    final = run_cli(*args, cwd=tmp_path, env=sim_env(sim))
    assert final.returncode == 0, final.stdout + final.stderr
    rows = assert_complete(tmp_path, total)
    assert_no_paid_twice(sim.ledger(), rows, tmp_path)
    assert sum(r["possible_duplicates"] for r in rows) >= 1
    assert "possible duplicate charges" in final.stdout


def test_provider_limit_holds_across_two_processes(tmp_path, slow_sim):
    sim = slow_sim
    args = ["-m", "model=gen4_turbo,hailuo", "prompt_set=animate", "sweep.duration=[6,10]", *sim_args(sim, runway=2, fal=1)]
    first, second = start(args, tmp_path, sim_env(sim)), start(args, tmp_path, sim_env(sim))
    out = [p.communicate(timeout=120) for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, [o[0][-1500:] + o[1][-1500:] for o in out]
    rows = assert_complete(tmp_path, 8)
    stats = sim.stats()["providers"]
    assert stats["runway"]["max_in_flight"] == 2
    assert stats["fal"]["max_in_flight"] == 1
    assert_no_paid_twice(sim.ledger(), rows, tmp_path)


def test_interrupt_stops_submitting_and_says_how_to_resume(tmp_path, slow_sim, monkeypatch):
    sim = slow_sim
    args = ["model=gen4_turbo", "prompt_set=animate", "sweep.duration=[4,6,8,10]", *sim_args(sim, runway=2)]
    proc = start(args, tmp_path, sim_env(sim))
    wait_until(lambda: states(tmp_path)["submitted"] >= 2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "run the same command: python -m runner model=gen4_turbo" in out
    submitted_before = len(sim.ledger())
    assert submitted_before < 8
    folder = tmp_path / "outputs" / "animate"
    assert (folder / "report.html").is_file()  # a small gallery is written at an interrupt too
    # A large one is left for the next run (Ctrl-C is answered at once), and the summary says so.
    (folder / "report.html").unlink()
    monkeypatch.setattr(publish, "INTERRUPT_MAX_JOBS", 1)
    done, problem = publish.publish_run(find_ledger(cwd=tmp_path), {"animate"}, tmp_path / "outputs", interrupted=True)
    assert done == [] and not (folder / "report.html").exists()
    assert problem.startswith(f"interrupted: the manifest and gallery of {folder} (8 jobs) were left as they were")
    final = run_cli(*args, cwd=tmp_path, env=sim_env(sim))
    assert final.returncode == 0, final.stdout + final.stderr
    assert_complete(tmp_path, 8)
    assert len(sim.ledger()) == 8
    assert (folder / "report.html").is_file()


def test_missing_key_stops_before_anything_runs(tmp_path, sim):
    result = run_cli("model=gen4_turbo", "prompt_set=animate", *sim_args(sim), cwd=tmp_path)
    assert result.returncode == 2
    assert "no API key for runway: set the environment variable RUNWAYML_API_SECRET" in result.stderr
    assert "simulate=true" in result.stderr
    assert sim.ledger() == []


def test_failed_generations_retry_then_fail_permanently(tmp_path, sim):
    sim.inject("task_failed", on="runway.create", failure_code="INTERNAL")
    sim.inject("task_failed", on="fal.submit", model="fal-kling-v2.1-standard", failure_code="SAFETY.INPUT.IMAGE", count=3)
    result = run_cli("-m", "model=gen4_turbo,kling", "prompt_set=animate", *sim_args(sim), cwd=tmp_path, env=sim_env(sim))
    rows = {(r["model"], r["prompt_id"]): r for r in ledger_rows(tmp_path)}
    retried = [r for r in rows.values() if r["model"] == "gen4_turbo" and r["attempts"] == 2]
    assert len(retried) == 1 and retried[0]["state"] == "downloaded"
    refused = [r for r in rows.values() if r["state"] == "failed"]
    assert refused and all(r["error_class"] == "permanent" and r["attempts"] == 1 for r in refused)
    assert result.returncode == 1
    assert "failed" in result.stdout


@pytest.mark.parametrize("launcher", ["hydra/launcher=joblib", "hydra/launcher=basic"])
def test_hydra_launchers_share_one_ledger_and_its_limits(tmp_path, slow_sim, launcher):
    sim = slow_sim
    args = ["-m", launcher, "hydra.launcher.n_jobs=2" if "joblib" in launcher else "replicates=1"]
    args += ["model=gen4_turbo,gen4.5", "prompt_set=animate", *sim_args(sim, runway=1)]
    result = run_cli(*args, cwd=tmp_path, env=sim_env(sim), timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = assert_complete(tmp_path, 4)
    assert sim.stats()["providers"]["runway"]["max_in_flight"] == 1
    assert_no_paid_twice(sim.ledger(), rows, tmp_path)


def test_expired_and_cut_downloads_are_collected_from_the_same_task(tmp_path, sim):
    # Both providers sign fresh output URLs when the task (Runway) or the result (fal) is fetched
    # again: an expired URL is renewed, a cut transfer retried. A URL that keeps failing leaves
    # the job generated (paid for) and the next run collects it, never generating it again.
    sim.inject("expired_url", on="download", model="gen4_turbo")
    sim.inject("truncated", on="download", model="gen4_turbo", fraction=0.5)
    sim.inject("expired_url", on="download", model="fal-hailuo-02-standard", count=12)
    args = ["-m", "model=gen4_turbo,hailuo", "prompt_set=animate", *sim_args(sim)]
    result = run_cli(*args, cwd=tmp_path, env=sim_env(sim))
    rows = ledger_rows(tmp_path)
    assert all(r["state"] == "downloaded" for r in rows if r["provider"] == "runway")
    fal = [r for r in rows if r["provider"] == "fal"]
    assert any(r["state"] == "generated" for r in fal), [r["state"] for r in fal]
    assert result.returncode == 1 and "paid for, not collected yet: download failed" in result.stdout
    sim.clear_faults()
    again = run_cli(*args, cwd=tmp_path, env=sim_env(sim))
    assert again.returncode == 0, again.stdout + again.stderr
    assert_complete(tmp_path, 4)
    assert len(sim.ledger()) == 4


def test_a_job_past_its_deadline_is_reported_and_collected_later(tmp_path, slow_sim):
    sim = slow_sim
    args = ["model=gen4_turbo", "prompt_set=animate", *sim_args(sim)]
    result = run_cli(*args, "job_timeout_s=0.1", cwd=tmp_path, env=sim_env(sim))
    assert result.returncode == 1
    assert result.stdout.count("passed job_timeout_s (0.1 s); still RUNNING at the provider") == 2
    assert {r["state"] for r in ledger_rows(tmp_path)} == {"submitted"}
    again = run_cli(*args, cwd=tmp_path, env=sim_env(sim))
    assert again.returncode == 0, again.stdout + again.stderr
    assert_complete(tmp_path, 2)
    assert len(sim.ledger()) == 2


def test_interrupt_can_cancel_in_flight_tasks(tmp_path, slow_sim):
    sim = slow_sim
    args = ["model=gen4_turbo", "prompt_set=animate", "sweep.duration=[4,6,8,10]", "cancel_on_interrupt=true", *sim_args(sim, runway=2)]
    proc = start(args, tmp_path, sim_env(sim))
    wait_until(lambda: states(tmp_path)["submitted"] >= 2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "canceled 2 task(s) at the provider" in err
    canceled = [r for r in ledger_rows(tmp_path) if r["state"] == "canceled"]
    assert len(canceled) == 2
    cancelled_at_sim = {e["task_id"] for e in sim.ledger() if e["status"] == "cancelled"}
    assert {r["task_id"] for r in canceled} <= cancelled_at_sim
    # Canceled is stopped, not finished: the same command generates them again.
    again = run_cli(*args, cwd=tmp_path, env=sim_env(sim))
    assert again.returncode == 0, again.stdout + again.stderr
    assert_complete(tmp_path, 8)


def test_status_calls_follow_progress_and_the_models_learned_latency(tmp_path, slow_sim):
    sim = slow_sim

    def polls_per_job(model: str, duration: int, route: str) -> float:
        provider = route.split(".")[0]
        before = sim.stats()["providers"].get(provider, {}).get("requests", {}).get(route, 0)
        result = run_cli(f"model={model}", "prompt_set=animate", f"duration={duration}", *sim_args(sim),
                         "providers.fal.status_stream=false", cwd=tmp_path, env=sim_env(sim))
        assert result.returncode == 0, result.stdout + result.stderr
        return (sim.stats()["providers"][provider]["requests"][route] - before) / 2

    # Runway reports progress: each task is looked at about when it ends, even with no history
    # (polling at the minimum interval would take a dozen calls per task here).
    assert polls_per_job("gen4_turbo", 4, "runway.poll") <= 6
    # fal reports none (and is polled here, its status stream switched off): the waits grow; once the model's latency is in the ledger the first poll comes later.
    unknown = polls_per_job("hailuo", 6, "fal.status")
    learned = polls_per_job("hailuo", 10, "fal.status")
    assert learned < 0.6 * unknown, (unknown, learned)


def _fal_status_requests(sim) -> tuple[int, int]:
    """(status streams, status polls) the simulator served for fal."""
    requests = sim.stats()["providers"]["fal"]["requests"]
    return requests.get("fal.stream", 0), requests.get("fal.status", 0)


def test_fal_tasks_are_followed_over_one_status_stream_each(tmp_path, slow_sim):
    sim = slow_sim
    args = ["model=hailuo", "prompt_set=ads", "sweep.duration=[6,10]", *sim_args(sim, fal=2)]
    result = run_cli(*args, cwd=tmp_path, env=sim_env(sim))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = assert_complete(tmp_path, 5)
    assert _fal_status_requests(sim) == (5, 0)  # one status request per job, and no poll
    assert sim.stats()["providers"]["fal"]["max_in_flight"] == 2
    assert_no_paid_twice(sim.ledger(), rows, tmp_path)


def test_a_broken_fal_status_stream_falls_back_to_polling_and_costs_nothing(tmp_path, slow_sim):
    sim = slow_sim
    for kind in ("reset", "http_503", "malformed_json"):  # a dropped connection, an error, not an event stream
        sim.inject(kind, on="fal.stream")
    args = ["model=hailuo", "prompt_set=ads", "sweep.duration=[6,10]", *sim_args(sim, fal=1)]
    result = run_cli(*args, cwd=tmp_path, env=sim_env(sim))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = assert_complete(tmp_path, 5)
    assert not sim.app.faults.pending()  # each broke one stream
    streams, polls = _fal_status_requests(sim)
    assert streams == 5 and polls >= 3  # the three broken ones were polled to their end
    assert len(sim.ledger()) == 5 and all(r["attempts"] == 1 for r in rows)
    # Switched off, every task is polled.
    off = run_cli("model=hailuo", "prompt_set=animate", "duration=6", *sim_args(sim), "providers.fal.status_stream=false",
                  cwd=tmp_path, env=sim_env(sim))
    assert off.returncode == 0 and "2 jobs: 2 downloaded" in off.stdout, off.stdout + off.stderr
    assert _fal_status_requests(sim)[0] == 5 and _fal_status_requests(sim)[1] >= polls + 2


def test_simulate_true_resumes_after_kill_9(tmp_path):
    # simulate=true keeps the simulator's state in the state dir, as a real provider keeps tasks
    # after the runner dies: the rerun collects the tasks the killed run submitted.
    args = ["model=gen4_turbo", "prompt_set=animate", "simulate=true", "providers.runway.min_poll_interval_s=0.5"]
    proc = start(args, tmp_path, {})
    try:
        wait_until(lambda: states(tmp_path)["submitted"] >= 1 or proc.poll() is not None)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    task_ids = {r["task_id"] for r in ledger_rows(tmp_path) if r["task_id"]}
    final = run_cli(*args, cwd=tmp_path)
    assert final.returncode == 0, final.stdout + final.stderr
    rows = assert_complete(tmp_path, 2)
    assert task_ids <= {r["task_id"] for r in rows}
    submissions = read_ledger(tmp_path / ".runner" / "simulator.jsonl")
    assert 2 <= len(submissions) <= 2 + sum(r["possible_duplicates"] for r in rows)


def _run_in_process(args: list[str], cwd, monkeypatch) -> int:
    """The runner's command line in this process (so its record size can be made small)."""
    from runner import app

    monkeypatch.chdir(cwd)
    try:
        app.main(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.mark.parametrize("cut_short", [False, True])
def test_a_large_sweep_is_recorded_while_it_runs(tmp_path, sim, monkeypatch, cut_short):
    """A new sweep's first jobs start before the rest are in the ledger; every job is recorded,
    linked, joined to the budget and generated once. A sweep whose recording was cut short (a
    crash) has the rest recorded by the next run, and nothing is generated twice."""
    from runner import drive, recording
    from runner import store as S
    from runner.app import plan as make_plan

    monkeypatch.setattr(drive, "RECORD_CHUNK", 3)
    for name, value in sim_env(sim).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RUNNER_STATE_DIR", str(tmp_path / ".runner"))
    args = ["model=gen4_turbo", "prompt_set=animate", "sweep.duration=[4,6,8,10]", "replicates=2", "budget_usd=100",
            "quiet=true", *sim_args(sim, runway=3)]
    planned = make_plan(args)
    jobs = len(planned.jobs)
    assert jobs > 3 * drive.RECORD_CHUNK
    if cut_short:  # a run that recorded the sweep and its first part, then died
        conn = S.open_ledger(tmp_path / ".runner" / "ledger.db")
        conn.execute("BEGIN")
        sweep_id, recorded = recording.begin_sweep(conn, planned, {})
        recording.record_jobs(conn, sweep_id, planned.jobs[:4])
        conn.execute("COMMIT")
        conn.close()
        assert recorded == recording.SWEEP_NEW
    assert _run_in_process(args, tmp_path, monkeypatch) == 0
    rows = assert_complete(tmp_path, jobs)
    assert len(sim.ledger()) == jobs  # each generated once
    sweep = query(tmp_path, "select id, jobs from sweeps")
    assert len(sweep) == 1 and sweep[0]["jobs"] == jobs
    assert query(tmp_path, "select count(*) as n from sweep_jobs")[0]["n"] == jobs
    assert query(tmp_path, "select count(*) as n from budget_jobs")[0]["n"] == jobs
    planned_events = query(tmp_path, "select job_key, count(*) as n from events where to_state = 'planned' and from_state is null "
                                     "group by job_key")
    assert len(planned_events) == jobs and {e["n"] for e in planned_events} == {1}
    assert {r["key"] for r in rows} == {j.key for j in planned.jobs}


def test_a_fal_slot_is_free_while_the_result_is_fetched_unless_a_budget_waits_for_its_cost(tmp_path):
    # fal's status says a task ended, not what it made or cost: the result is another request.
    # The provider's slot is free from the end, so without a budget the next task goes out meanwhile.
    import datetime

    def run(folder, *extra):
        with Simulator(SimConfig(latency={"default": 0.05}, pending_s=0.01)) as sim:
            sim.inject("hang", on="fal.result", seconds=30)  # the first result answers only after a retry
            args = ["model=hailuo", "prompt_set=animate", "replicates=2", *extra, *sim_args(sim, timeout=3, fal=1)]
            result = run_cli(*args, cwd=folder, env=sim_env(sim))
            assert result.returncode == 0, result.stdout + result.stderr
            second_sent = sorted(e["time"] for e in sim.ledger())[1]
        first_generated = min(datetime.datetime.fromisoformat(e["at"]).timestamp()
                              for e in query(folder, "select at from events where to_state = 'generated'"))
        return second_sent, first_generated

    (tmp_path / "free").mkdir()
    second_sent, first_generated = run(tmp_path / "free")
    assert second_sent < first_generated  # sent while the first result was still being fetched
    (tmp_path / "budget").mkdir()
    second_sent, first_generated = run(tmp_path / "budget", "budget_usd=100")
    assert second_sent > first_generated  # held until the first one's cost was known
