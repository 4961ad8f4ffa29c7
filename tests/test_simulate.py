"""`simulate=`: the providers it names run against the simulator started in the runner's process, the
others against their configured accounts; what it cannot simulate is said before anything is sent."""

from __future__ import annotations

from collections import Counter

from runner.sim import read_ledger
from tests.conftest import run_cli
from tests.helpers import ledger_rows

FAST = "latency: {default: {min: 0.03, max: 0.06}}\npending_s: 0.01\n"


def test_simulate_fal_simulates_fal_only_and_runway_uses_its_account(sim, tmp_path):
    # Runway's account is the test's own simulator (its URL and key given as a user gives them);
    # fal's jobs go to the simulator the runner starts.
    (tmp_path / "fast.yaml").write_text(FAST)
    result = run_cli(
        "-m", "model=kling,gen4_turbo", "prompt_set=animate", "simulate=fal", f"sim_config={tmp_path / 'fast.yaml'}",
        f"providers.runway.base_url={sim.url('runway')}", "providers.runway.min_poll_interval_s=0.05",
        "providers.fal.min_poll_interval_s=0.05", cwd=tmp_path, env={"RUNWAYML_API_SECRET": sim.keys["runway"]},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = ledger_rows(tmp_path)
    assert Counter((r["provider"], r["state"]) for r in rows) == {("fal", "downloaded"): 2, ("runway", "downloaded"): 2}
    assert {e["provider"] for e in sim.ledger()} == {"runway"}
    assert sorted(e["task_id"] for e in sim.ledger()) == sorted(r["task_id"] for r in rows if r["provider"] == "runway")
    started = read_ledger(tmp_path / ".runner" / "simulator.jsonl")
    assert sorted(e["task_id"] for e in started) == sorted(r["task_id"] for r in rows if r["provider"] == "fal")


def test_a_provider_simulate_does_not_name_needs_its_key(tmp_path):
    result = run_cli("-m", "model=kling,gen4_turbo", "prompt_set=animate", "simulate=[fal]", cwd=tmp_path)
    assert result.returncode == 2
    assert "no API key for runway: set the environment variable RUNWAYML_API_SECRET" in result.stderr
    assert "simulate=runway (or simulate=true)" in result.stderr
    assert "FAL_KEY (fal), RUNWAYML_API_SECRET (runway)" in result.stderr
    assert not (tmp_path / ".runner" / "ledger.db").exists()  # stopped before anything was planned into it


def test_simulate_names_only_installed_providers(tmp_path):
    result = run_cli("model=kling", "prompt_set=animate", "simulate=[fal,kling]", cwd=tmp_path)
    assert result.returncode == 2
    assert "simulate=kling: no installed provider is named 'kling' (from the command line); allowed: simulate=true, false, or provider names (fal, runway)" in result.stderr
