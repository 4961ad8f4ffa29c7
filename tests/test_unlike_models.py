"""Sweeps across models that take different values: on_invalid=skip plans what each model takes and
lists the rest; override_prompt_params=true lets the command line win over a prompt's own params;
the README's in-config sweep of a native field works as written. All through the CLI."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from runner.sim import SimConfig, Simulator
from tests.conftest import run_cli
from tests.helpers import ledger_path, ledger_rows, sim_args, sim_env

HAILUO = "fal-hailuo-02-standard"
KLING = "fal-kling-v2.1-standard"


def _jobs(stdout: str) -> Counter:
    """(model, prompt, params) of every row of the plan table."""
    rows = re.findall(r"^[0-9a-f]{12}\s+(\S+)\s+\S+\s+(\S+)\s+(.+?)\s{2,}(?:\$[\d.,]+|price unknown)$", stdout, re.M)
    return Counter((model, prompt, params.strip()) for model, prompt, params in rows)


def test_a_multirun_over_unlike_models_is_an_error_that_names_on_invalid_skip(tmp_path):
    result = run_cli("-m", "model=hailuo,kling", "duration=5,10", "dry_run=true", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    message = result.stderr.strip()
    assert message.count("\n") == 0, message
    assert f"duration=5 is not allowed for model {HAILUO}" in message and "allowed: 6, 10" in message
    assert "add on_invalid=skip" in message
    assert not ledger_path(tmp_path).exists()


def test_on_invalid_skip_plans_every_valid_point_and_lists_what_it_skipped(tmp_path):
    result = run_cli("-m", "model=hailuo,kling", "duration=5,10", "dry_run=true", "on_invalid=skip", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    jobs = _jobs(result.stdout)
    # hailuo takes 6 or 10 s: only its duration=10 point is planned, plus coffee-morning, which the
    # ads set pins to 10 s whatever the command line says (the same job as at the 10 s point)
    assert {key for key in jobs if key[0] == HAILUO} == {
        (HAILUO, prompt, "duration=10 resolution=768p") for prompt in ("sneaker-hero", "coffee-morning", "perfume-vertical")}
    assert {key for key in jobs if key[0] == KLING} == {
        (KLING, "sneaker-hero", "duration=5"), (KLING, "perfume-vertical", "duration=5"), (KLING, "coffee-morning", "duration=10"),
        (KLING, "sneaker-hero", "duration=10"), (KLING, "perfume-vertical", "duration=10")}
    skipped = result.stdout[result.stdout.index("skipped 2 jobs (on_invalid=skip):"):].splitlines()
    assert skipped[1:] == [f"  2 jobs (sneaker-hero, perfume-vertical): duration=5 is not allowed for model {HAILUO} "
                           f"(image-to-video) (from the config or command line); allowed: 6, 10"]


def test_skipping_is_per_job_a_prompt_whose_own_params_a_model_refuses(tmp_path, prompt_sets):
    files = prompt_sets("mixed", """
        prompts:
          - {id: plain, text: A kite climbs the wind, image: "${asset:lighthouse.png}"}
          - {id: seven, text: A kite dips, image: "${asset:lighthouse.png}", params: {duration: 7}}
    """)
    refused = run_cli("model=kling", *files, "dry_run=true", cwd=tmp_path)
    assert refused.returncode == 2
    assert "duration=7 is not allowed for model" in refused.stderr and "prompt 'seven'" in refused.stderr
    assert "on_invalid=skip" in refused.stderr

    skipped = run_cli("model=kling", *files, "dry_run=true", "on_invalid=skip", cwd=tmp_path)
    assert skipped.returncode == 0, skipped.stderr
    assert set(_jobs(skipped.stdout)) == {(KLING, "plain", "duration=5")}
    line = skipped.stdout.splitlines()[-1]
    assert line.startswith("  1 job (seven): duration=7 is not allowed for model") and "allowed: 5, 10" in line

    # the command line's value over the prompt's own: both prompts plan at 10 s
    overridden = run_cli("model=kling", *files, "duration=10", "override_prompt_params=true", "dry_run=true", cwd=tmp_path)
    assert overridden.returncode == 0, overridden.stderr
    assert set(_jobs(overridden.stdout)) == {(KLING, "plain", "duration=10"), (KLING, "seven", "duration=10")}


def test_a_prompts_own_params_win_unless_override_prompt_params_and_the_plan_says_so(tmp_path):
    kept = run_cli("model=kling", "duration=5", "dry_run=true", cwd=tmp_path)
    assert kept.returncode == 0, kept.stderr
    assert (KLING, "coffee-morning", "duration=10") in _jobs(kept.stdout)
    assert ("warning: duration=5 (from the config or command line) does not apply to 1 prompt that sets duration "
            "itself (coffee-morning); add override_prompt_params=true") in kept.stdout

    won = run_cli("model=kling", "duration=5", "override_prompt_params=true", "dry_run=true", cwd=tmp_path)
    assert won.returncode == 0, won.stderr
    assert {params for _, _, params in _jobs(won.stdout)} == {"duration=5"}
    assert "override_prompt_params" not in won.stdout

    # a sweep grid in the config wins over the prompt's own value too, when asked
    grid = run_cli("model=kling", "sweep.duration=[5]", "override_prompt_params=true", "dry_run=true", cwd=tmp_path)
    assert {params for _, _, params in _jobs(grid.stdout)} == {"duration=5"}


def test_a_plan_that_skips_every_job_is_an_error_after_listing_them(tmp_path):
    result = run_cli("model=hailuo", "prompt_set=animate", "duration=5", "on_invalid=skip", "dry_run=true", cwd=tmp_path)
    assert result.returncode == 2
    assert "skipped 2 jobs (on_invalid=skip):" in result.stdout and "allowed: 6, 10" in result.stdout
    assert result.stderr.strip() == "error: on_invalid=skip skipped every job (listed above): nothing to run"


def test_on_invalid_takes_error_or_skip(tmp_path):
    result = run_cli("model=kling", "on_invalid=ignore", "dry_run=true", cwd=tmp_path)
    assert result.returncode == 2
    assert "on_invalid='ignore' is not allowed: give error" in result.stderr and "or skip" in result.stderr


@pytest.mark.parametrize("native", ["native.cfg_scale=0.5", "+native.cfg_scale=0.5"])
def test_the_readmes_native_field_sweep_works_as_written(tmp_path, native):
    # README: "sweep.<param>=[a,b] ... (sweep.native.<field>=[...] too)"; "+native.<field>=" (the + is optional)
    swept = run_cli("model=kling", "prompt_set=animate", "sweep.native.cfg_scale=[0.3,0.7]", "dry_run=true", cwd=tmp_path)
    assert swept.returncode == 0, swept.stderr
    assert sum(_jobs(swept.stdout).values()) == 4 and "4 jobs" in swept.stdout
    single = run_cli("model=kling", "prompt_set=animate", native, "dry_run=true", cwd=tmp_path)
    assert single.returncode == 0, single.stderr
    assert sum(_jobs(single.stdout).values()) == 2
    refused = run_cli("model=kling", "prompt_set=animate", "sweep.native.cfg_scale=[0.3,high]", "dry_run=true", cwd=tmp_path)
    assert refused.returncode == 2 and "native.cfg_scale='high' is not allowed" in refused.stderr


def test_a_skipping_multirun_runs_the_valid_jobs_on_the_simulator(tmp_path):
    with Simulator(SimConfig(latency={"default": 0.05}, pending_s=0.01)) as sim:
        result = run_cli("-m", "model=hailuo,kling", "prompt_set=animate", "duration=5", "on_invalid=skip", *sim_args(sim),
                         cwd=tmp_path, env=sim_env(sim))
        assert result.returncode == 0, result.stdout + result.stderr
        rows = ledger_rows(tmp_path)
        assert Counter((r["model"], r["state"]) for r in rows) == {(KLING, "downloaded"): 2}
        assert Counter(entry["model"] for entry in sim.ledger()) == {KLING: 2}  # nothing was sent for hailuo
    assert f"2 jobs (lighthouse-dusk, portrait-smile): duration=5 is not allowed for model {HAILUO}" in result.stdout
