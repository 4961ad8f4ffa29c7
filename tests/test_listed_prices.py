"""Models the manifest leaves unpriced are priced from fal's price list (its pricing API) after the
plan is validated: the plan says where the price came from, the estimate and the budget count
those jobs, a run keeps the price in the ledger for 24 h, and a list that cannot be read never
stops planning. All through the CLI against the simulator, whose price list is `price_list`."""

from __future__ import annotations

import datetime
import sqlite3
from collections import Counter

from runner.sim import SimConfig, Simulator
from tests.conftest import run_cli
from tests.helpers import ledger_path, ledger_rows, query, sim_args, sim_env

KLING = "fal-kling-v2.1-standard"
ENDPOINT = "fal-ai/kling-video/v2.1/standard/image-to-video"
#: The animate set: two prompts, kling's default 5 s: $0.25 each at $0.05/s.
RUN = ["model=kling", "prompt_set=animate"]


def _today() -> str:
    return datetime.date.today().isoformat()


def _listed_sim(**settings) -> Simulator:
    return Simulator(SimConfig(latency={"default": 0.05}, pending_s=0.01, price_list={KLING: 0.05}, **settings))


def _platform_requests(sim: Simulator) -> int:
    return sim.stats()["server"]["routes"].get("fal.platform", {}).get("requests", 0)


def test_simulate_prices_unpriced_models_from_the_simulators_price_list(tmp_path):
    (tmp_path / "sim.yaml").write_text(f"price_list: {{{KLING}: 0.05}}\n")
    shown = run_cli(*RUN, "simulate=true", "sim_config=sim.yaml", "duration=10", "dry_run=true", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count("$0.50") == 2 and "2 jobs, estimated total $1.00" in shown.stdout
    assert f"prices from: {KLING}: fal price list, fetched {_today()}" in shown.stdout
    assert "price unknown" not in shown.stdout

    over = run_cli(*RUN, "simulate=true", "sim_config=sim.yaml", "duration=10", "budget_usd=0.99", cwd=tmp_path)
    assert over.returncode == 2
    assert over.stderr.strip() == ("error: the estimated total $1.00 is over budget_usd=0.99; raise budget_usd or plan "
                                   "fewer jobs (nothing was submitted)")
    assert not ledger_path(tmp_path).exists() and not (tmp_path / ".runner" / "simulator.jsonl").exists()


def test_without_a_key_the_plan_says_the_list_was_not_read_and_the_budget_asks_for_a_price(tmp_path):
    shown = run_cli(*RUN, "dry_run=true", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "2 jobs with price unknown" in shown.stdout
    assert "warning: the fal price list was not read (FAL_KEY is not set): 2 jobs stay price unknown" in shown.stdout
    refused = run_cli(*RUN, "dry_run=true", "budget_usd=5", cwd=tmp_path)
    assert refused.returncode == 2 and f"cannot count jobs with no known price: {KLING} (2 jobs)" in refused.stderr


def test_a_run_keeps_the_price_for_a_day_and_an_unreadable_list_never_stops_planning(tmp_path):
    with _listed_sim() as sim:
        args = [*RUN, *sim_args(sim)]
        dry = run_cli(*args, "dry_run=true", cwd=tmp_path, env=sim_env(sim))
        assert dry.returncode == 0 and f"{KLING}: fal price list, fetched {_today()}" in dry.stdout, dry.stdout + dry.stderr
        assert not ledger_path(tmp_path).exists()  # a dry run reads the list and keeps nothing

        ran = run_cli(*args, "budget_usd=0.5", cwd=tmp_path, env=sim_env(sim))
        assert ran.returncode == 0, ran.stdout + ran.stderr
        rows = ledger_rows(tmp_path)
        assert Counter(r["state"] for r in rows) == {"downloaded": 2}
        assert {(r["est_micros"], r["spent_micros"], r["cost_source"]) for r in rows} == {
            (250_000, 250_000, f"fal price list, fetched {_today()}")}
        kept = query(tmp_path, "select provider, source, endpoint, usd, unit from listed_prices")
        assert kept == [{"provider": "fal", "source": sim.fal_url, "endpoint": ENDPOINT, "usd": "0.05", "unit": "second"}]

        asked = _platform_requests(sim)
        again = run_cli(*args, "dry_run=true", "duration=10", cwd=tmp_path, env=sim_env(sim))
        assert again.returncode == 0 and "2 jobs, estimated total $1.00" in again.stdout
        assert _platform_requests(sim) == asked  # the kept price, not a new request

    # the simulator is gone: the kept price still prices the plan ...
    offline = run_cli(*args, "dry_run=true", cwd=tmp_path, env=sim_env(sim))
    assert offline.returncode == 0 and "2 jobs, estimated total $0.50" in offline.stdout, offline.stdout
    # ... for 24 hours; after that the list is asked again, and its failure leaves the jobs unpriced
    conn = sqlite3.connect(ledger_path(tmp_path))
    with conn:
        conn.execute("update listed_prices set fetched_at = fetched_at - 86401")
    conn.close()
    stale = run_cli(*args, "dry_run=true", cwd=tmp_path, env=sim_env(sim))
    assert stale.returncode == 0, stale.stderr
    assert "2 jobs with price unknown" in stale.stdout
    assert "warning: the fal price list could not be read (network error" in stale.stdout
    assert "): 2 jobs stay price unknown" in stale.stdout


def test_jobs_first_planned_unpriced_get_the_listed_price_when_a_run_reads_it(tmp_path):
    # A first run against a provider whose list has no price for kling: the jobs fail, unpriced.
    with Simulator(SimConfig(latency={"default": 0.05}, pending_s=0.01)) as sim:
        for _ in range(2):
            sim.inject("task_failed", on="fal.submit", failure_code="INTERNAL")
        first = run_cli(*RUN, *sim_args(sim), "max_attempts=1", cwd=tmp_path, env=sim_env(sim))
        assert first.returncode == 1, first.stdout + first.stderr
        assert f"warning: the fal price list has no price for {KLING}" in first.stdout
    assert {(r["state"], r["est_micros"]) for r in ledger_rows(tmp_path)} == {("failed", None)}
    # Rerun against one whose list prices it: the failed jobs are retried with an estimate the
    # budget reserves (the ledger's rows take it), and it covers what the provider bills.
    with _listed_sim() as sim:
        rerun = run_cli(*RUN, *sim_args(sim), "retry_failed=true", "budget_usd=0.5", cwd=tmp_path, env=sim_env(sim))
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        billed = sum(float(entry["billed_usd"]) for entry in sim.ledger())
    rows = ledger_rows(tmp_path)
    assert {(r["state"], r["est_micros"]) for r in rows} == {("downloaded", 250_000)}
    assert billed == 0.5
