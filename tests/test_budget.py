"""One budget for the whole run: what the provider bills stays within budget_usd plus the in-flight
allowance (docs/ledger.md "Budgets"), whatever the provider bills, however many answers are lost,
and whichever Hydra launcher runs the sweep points."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

import pytest

from runner.sim import SimConfig, Simulator
from tests.conftest import run_cli
from tests.helpers import assert_no_paid_twice, ledger_rows, sim_args, sim_env


def _billed(sim) -> Decimal:
    return sum((Decimal(e["billed_usd"] or "0") for e in sim.ledger()), Decimal(0))


@pytest.fixture
def fast_sim():
    with Simulator(SimConfig(latency={"default": 0.05}, pending_s=0.01)) as sim:
        yield sim


def test_a_provider_billing_double_stops_the_sweep_at_the_cap(tmp_path):
    # Estimated $0.25 a job (gen4_turbo 5 s): eight jobs are $2.00, within budget_usd=2.0. Runway
    # bills double, and says so: after four jobs the settled spend is $2.00 and the runner stops.
    with Simulator(SimConfig(latency={"default": 0.05}, pending_s=0.01, bill_factor=2.0)) as sim:
        args = ["model=gen4_turbo", "prompt_set=animate", "duration=5", "replicates=4", "budget_usd=2.0", *sim_args(sim, runway=1)]
        result = run_cli(*args, cwd=tmp_path, env=sim_env(sim))
        rows = ledger_rows(tmp_path)
        assert sum(r["spent_micros"] for r in rows) == 2_000_000 == int(_billed(sim) * 1_000_000)
        assert Counter(r["state"] for r in rows) == {"downloaded": 4, "planned": 4}
        assert result.returncode == 1
        assert "stopped at budget_usd: 4 job(s) not submitted" in result.stdout


def test_fal_billing_double_is_read_from_its_billable_units(tmp_path):
    # fal says what a result cost in X-Fal-Billable-Units, at the unit price its price list gives:
    # a provider billing double is seen, and the budget holds.
    with Simulator(SimConfig(latency={"default": 0.05}, pending_s=0.01, bill_factor=2.0)) as sim:
        args = ["model=hailuo", "prompt_set=animate", "replicates=4", "budget_usd=2.16", *sim_args(sim, fal=1)]
        result = run_cli(*args, cwd=tmp_path, env=sim_env(sim))
        rows = ledger_rows(tmp_path)
        assert result.returncode == 1 and "stopped at budget_usd" in result.stdout, result.stdout
        assert sum(r["spent_micros"] for r in rows) == int(_billed(sim) * 1_000_000) <= 2_160_000
        assert {r["spent_micros"] for r in rows if r["state"] == "downloaded"} == {540_000}


def test_lost_submit_answers_are_held_against_the_budget(tmp_path, fast_sim):
    # Each lost answer may be a generation the provider bills: it keeps its estimate, so the
    # resubmissions cannot carry the real bill past the budget.
    sim = fast_sim
    for _ in range(3):
        sim.inject("reset", on="runway.create", after_accept=True)
    args = ["model=gen4_turbo", "prompt_set=animate", "duration=5", "replicates=4", "budget_usd=2.0", *sim_args(sim, runway=1)]
    result = run_cli(*args, cwd=tmp_path, env=sim_env(sim))
    assert result.returncode == 1 and "stopped at budget_usd" in result.stdout, result.stdout
    assert _billed(sim) <= Decimal("2.0")
    rows = ledger_rows(tmp_path)
    assert sum(r["spent_micros"] + r["possible_micros"] for r in rows) <= 2_000_000
    assert sum(r["possible_duplicates"] for r in rows) == 3
    assert_no_paid_twice(sim.ledger(), rows, tmp_path)


@pytest.mark.parametrize("launcher", ["hydra/launcher=basic", "hydra/launcher=joblib"])
def test_every_point_of_a_multirun_shares_one_budget(tmp_path, fast_sim, launcher):
    # gen4_turbo's two jobs are $0.50, gen4.5's $1.20: each point fits $1.30 alone, both do not.
    sim = fast_sim
    args = ["-m", launcher, "model=gen4_turbo,gen4.5", "prompt_set=animate", "duration=5", "budget_usd=1.3",
            *sim_args(sim, runway=1)]
    if "joblib" in launcher:
        args.append("hydra.launcher.n_jobs=2")
    run_cli(*args, cwd=tmp_path, env=sim_env(sim), timeout=240)
    assert _billed(sim) <= Decimal("1.3")
    rows = ledger_rows(tmp_path)
    assert sum(r["spent_micros"] for r in rows) <= 1_300_000
    assert Counter(r["state"] for r in rows)["planned"] >= 1


def test_a_sweep_exactly_at_its_budget_runs(tmp_path, fast_sim):
    sim = fast_sim
    args = ["model=gen4_turbo", "prompt_set=animate", "duration=5", "replicates=3", *sim_args(sim)]
    refused = run_cli(*args, "budget_usd=1.49", cwd=tmp_path, env=sim_env(sim))
    assert refused.returncode == 2 and "the estimated total $1.50 is over budget_usd=1.49" in refused.stderr
    assert sim.ledger() == [] and not (tmp_path / ".runner" / "ledger.db").exists()
    exact = run_cli(*args, "budget_usd=1.5", cwd=tmp_path, env=sim_env(sim))
    assert exact.returncode == 0, exact.stdout + exact.stderr
    assert sum(r["spent_micros"] for r in ledger_rows(tmp_path)) == 1_500_000


def test_a_budget_needs_a_price_for_every_job(tmp_path, fast_sim):
    sim = fast_sim
    args = ["model=kling", "prompt_set=animate", *sim_args(sim)]
    refused = run_cli(*args, "budget_usd=5", cwd=tmp_path, env=sim_env(sim))
    assert refused.returncode == 2 and "cannot count jobs with no known price: fal-kling-v2.1-standard (2 jobs)" in refused.stderr
    assert "prices.fal-kling-v2.1-standard=" in refused.stderr and "allow_unpriced=true" in refused.stderr
    assert sim.ledger() == []
    priced = run_cli(*args, "budget_usd=5", "prices.kling=0.06/s", cwd=tmp_path, env=sim_env(sim))
    assert priced.returncode == 0, priced.stdout + priced.stderr
    rows = ledger_rows(tmp_path)
    assert {r["est_micros"] for r in rows} == {300_000} and {r["cost_source"] for r in rows} == {"your price"}
    assert sum(r["spent_micros"] for r in rows) == 600_000  # fal does not say what it billed: the estimate


def test_unpriced_jobs_run_under_a_budget_only_when_allowed(tmp_path, fast_sim):
    sim = fast_sim
    result = run_cli("model=kling", "prompt_set=animate", "budget_usd=0.01", "allow_unpriced=true", *sim_args(sim),
                     cwd=tmp_path, env=sim_env(sim))
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(sim.ledger()) == 2


def test_a_lost_answer_at_the_budget_is_not_sent_again(tmp_path, fast_sim):
    # The only job the budget allows loses its answer: the provider may be generating it, so sending
    # it again could bill twice the budget. It waits for a rerun (and a larger budget).
    sim = fast_sim
    sim.inject("reset", on="runway.create", after_accept=True)
    args = ["model=gen4_turbo", "prompt_set=animate", "duration=5", "budget_usd=0.5", *sim_args(sim, runway=1)]
    result = run_cli(*args, cwd=tmp_path, env=sim_env(sim))
    assert result.returncode == 1 and "stopped at budget_usd" in result.stdout, result.stdout
    assert len(sim.ledger()) <= 2 and _billed(sim) <= Decimal("0.5")
    rows = ledger_rows(tmp_path)
    assert sum(r["possible_duplicates"] for r in rows) == 1
    assert sum(r["spent_micros"] + r["possible_micros"] for r in rows) <= 500_000
