"""The ledger on real SQLite files: schema, transitions, and limits that hold across processes."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
import subprocess
import sys

import pytest

from runner import store as S
from runner.app import plan
from runner.migrations import MIGRATIONS
from runner.store import Store


@pytest.fixture
def ledger(tmp_path):
    s = Store(tmp_path / "ledger.db")
    yield s
    s.close()


@pytest.fixture(scope="module")
def four_jobs():
    return plan(["model=gen4_turbo", "prompt_set=animate", "sweep.duration=[5,10]"])


def test_migrations_from_a_blank_database(tmp_path):
    s = Store(tmp_path / "a.db")
    assert {row["name"] for row in s.db["_migrations"].rows} == {m.__name__ for m in MIGRATIONS}
    columns = s.db["jobs"].columns_dict
    for name in ("key", "state", "task_id", "task_urls", "attempts", "est_cost", "spent_usd", "output_sha256", "error_class", "owner"):
        assert name in columns
    assert s.db.execute("pragma journal_mode").fetchone()[0] == "wal"
    s.close()
    again = Store(tmp_path / "a.db")  # applying twice changes nothing
    assert again.db["_migrations"].count == len(MIGRATIONS)
    again.close()


def test_recording_a_plan_twice_keeps_state_and_sweep(ledger, four_jobs):
    sweep = ledger.record_plan(four_jobs, {"model": "gen4_turbo"})
    key = four_jobs.jobs[0].key
    assert ledger.claim(key, provider_limit=5, model_limit=None, budget_usd=None, sweep_id=sweep).granted
    assert ledger.record_plan(four_jobs, {}) == sweep
    assert ledger.job(key)["state"] == S.SUBMITTING
    assert [e["to_state"] for e in ledger.events(key)] == [S.PLANNED, S.SUBMITTING]


def test_claims_respect_provider_model_and_budget(ledger, four_jobs):
    sweep = ledger.record_plan(four_jobs, {})
    keys = [j.key for j in four_jobs.jobs]
    assert ledger.claim(keys[0], provider_limit=2, model_limit=1, budget_usd=None, sweep_id=sweep).granted
    assert ledger.claim(keys[1], provider_limit=2, model_limit=1, budget_usd=None, sweep_id=sweep).reason == "model"
    assert ledger.claim(keys[1], provider_limit=1, model_limit=None, budget_usd=None, sweep_id=sweep).reason == "provider"
    # committed: one job reserved; the next would pass the budget
    committed = float(ledger.committed_usd(sweep))
    assert ledger.claim(keys[1], provider_limit=5, model_limit=None, budget_usd=committed + 0.01, sweep_id=sweep).reason == "budget"
    assert ledger.claim(keys[1], provider_limit=5, model_limit=None, budget_usd=committed + 1.0, sweep_id=sweep).granted


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_jobs_of_a_dead_process_free_their_slot_and_can_be_adopted(ledger, four_jobs):
    sweep = ledger.record_plan(four_jobs, {})
    key = four_jobs.jobs[0].key
    ledger.claim(key, provider_limit=1, model_limit=None, budget_usd=None, sweep_id=sweep)
    assert ledger.in_flight("runway") == 1
    ledger.update(key, owner=f"{S.HOST}:{_dead_pid()}")
    assert ledger.in_flight("runway") == 0
    assert ledger.adopt(key)["owner"] == S.this_owner()


def test_a_live_owner_keeps_its_job(ledger, four_jobs):
    sweep = ledger.record_plan(four_jobs, {})
    key = four_jobs.jobs[0].key
    ledger.claim(key, provider_limit=1, model_limit=None, budget_usd=None, sweep_id=sweep)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        ledger.update(key, owner=f"{S.HOST}:{sleeper.pid}")
        assert ledger.adopt(key) is None
        assert ledger.in_flight("runway") == 1
    finally:
        sleeper.kill()
        sleeper.wait()


def _claim_all(path: str, keys: list[str], sweep: str, start, results) -> None:
    s = Store(path)
    start.wait()
    granted = [k for k in keys if s.claim(k, provider_limit=3, model_limit=None, budget_usd=None, sweep_id=sweep).granted]
    results.put(granted)
    s.close()


def test_concurrent_processes_never_exceed_the_limit(tmp_path):
    many = plan(["model=gen4_turbo", "prompt_set=animate", "sweep.duration=[2,3,4,5,6,7,8,9,10]"])
    path = str(tmp_path / "shared.db")
    s = Store(path)
    sweep = s.record_plan(many, {})
    keys = [j.key for j in many.jobs]
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_claim_all, args=(path, keys, sweep, start, results)) for _ in range(4)]
    for p in procs:
        p.start()
    start.set()
    granted = [k for _ in procs for k in results.get(timeout=60)]
    for p in procs:
        p.join(timeout=60)
    # Each claiming process has exited, so count what they claimed from the rows themselves.
    claimed = [row for row in s.jobs(keys) if row["state"] == S.SUBMITTING]
    assert len(granted) == len(claimed) == 3
    s.close()


def test_every_column_is_documented(tmp_path):
    doc = (Path(__file__).parent.parent / "docs" / "ledger.md").read_text()
    s = Store(tmp_path / "doc.db")
    for table in s.db.table_names():
        for column in s.db[table].columns_dict:
            assert f"`{column}`" in doc or f"`{table}.{column}`" in doc, (table, column)
    s.close()
