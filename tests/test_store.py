"""The ledger on real SQLite files: schema and upgrades, fenced changes, claims that hold limits and
budgets across processes, and the writer thread that keeps SQLite off the event loop."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from pathlib import Path

import pytest
import sqlite_utils

from runner import store as S
from runner.app import plan
from runner.migrations import MIGRATIONS, m001_initial
from runner.recording import record_plan
from runner.writer import LedgerUnusable, Writer


@pytest.fixture
def writer(tmp_path):
    w = Writer(tmp_path / "ledger.db")
    yield w
    w.close()


@pytest.fixture(scope="module")
def four_jobs():
    return plan(["model=gen4_turbo", "prompt_set=animate", "sweep.duration=[5,10]"])


def _candidates(p, est=250_000):
    return [(j.key, j.provider, j.model_id, est) for j in p.jobs]


def test_migrations_from_a_blank_database(tmp_path):
    conn = S.open_ledger(tmp_path / "a.db")
    db = sqlite_utils.Database(conn)
    assert {row["name"] for row in db["_migrations"].rows} == {m.__name__ for m in MIGRATIONS}
    columns = db["jobs"].columns_dict
    for name in ("key", "state", "task_id", "attempts", "est_micros", "spent_micros", "possible_micros", "holds_slot", "lease", "owner"):
        assert name in columns
    assert conn.execute("pragma journal_mode").fetchone()[0] == "wal"
    conn.close()
    again = S.open_ledger(tmp_path / "a.db")  # applying twice changes nothing
    assert again.execute("select count(*) from _migrations").fetchone()[0] == len(MIGRATIONS)
    again.close()


def test_a_ledger_of_the_first_schema_is_upgraded_in_place(tmp_path):
    path = tmp_path / "old.db"
    db = sqlite_utils.Database(path)
    db["_migrations"].create({"name": str, "applied_at": str}, pk="name")
    m001_initial(db)
    db["_migrations"].insert({"name": "m001_initial", "applied_at": "2026-01-01"})
    base = {"key": "a", "provider": "runway", "model": "gen4_turbo", "model_id": "gen4_turbo", "attempts": 1}
    db["jobs"].insert({**base, "state": "succeeded", "est_cost": 0.25, "spent_usd": 0.25, "reserved_usd": 0.0})
    db["jobs"].insert({**base, "key": "b", "state": "submitted", "est_cost": 0.1, "spent_usd": 0, "reserved_usd": 0.1})
    db.conn.close()
    conn = S.open_ledger(path)
    rows = {r["key"]: r for r in S.rows(conn)}
    assert rows["a"]["state"] == "generated" and rows["a"]["spent_micros"] == 250_000 and rows["a"]["holds_slot"] == 0
    assert rows["b"]["state"] == "submitted" and rows["b"]["reserved_micros"] == 100_000 and rows["b"]["holds_slot"] == 1
    assert "spent_usd" not in rows["a"]
    conn.close()


def test_recording_a_plan_twice_keeps_state_and_sweep(writer, four_jobs):
    sweep = writer.sync(record_plan, four_jobs, {"model": "gen4_turbo"})
    key = four_jobs.jobs[0].key
    [granted] = writer.sync(S.claim, "me", _candidates(four_jobs)[:1], {"runway": 5}, {}, None)
    assert granted.fence == S.Fence("me", 1)
    assert writer.sync(record_plan, four_jobs, {}) == sweep
    assert writer.sync(S.job, key)["state"] == S.CLAIMED
    assert [e["to_state"] for e in writer.sync(S.events, key)] == [S.PLANNED, S.CLAIMED]


def test_claims_respect_provider_and_model_limits(writer, four_jobs):
    writer.sync(record_plan, four_jobs, {})
    results = writer.sync(S.claim, "me", _candidates(four_jobs), {"runway": 3}, {("runway", "gen4_turbo"): 2}, None)
    assert [r.reason for r in results] == ["", "", "model", "model"]
    results = writer.sync(S.claim, "me", _candidates(four_jobs)[2:], {"runway": 2}, {}, None)
    assert [r.reason for r in results] == ["provider", "provider"]


def test_a_budget_is_exact_and_counts_what_its_jobs_already_cost(writer, four_jobs):
    writer.sync(record_plan, four_jobs, {})
    keys = [j.key for j in four_jobs.jobs]
    writer.sync(S.join_budget, "run", 750_000, keys)
    results = writer.sync(S.claim, "me", _candidates(four_jobs), {"runway": 9}, {}, "run")
    assert [r.reason for r in results] == ["", "", "", "budget"]  # exactly at the budget runs
    assert writer.sync(S.budget, "run") == (750_000, 750_000)
    # Settled below the estimate: the difference is free again. A second budget over the same jobs
    # starts from what they already cost.
    first = results[0]
    assert writer.sync(S.move, first.key, first.fence, S.GENERATED, reserve=0, spend=100_000)
    assert writer.sync(S.budget, "run")[0] == 600_000
    writer.sync(S.join_budget, "rerun", 1_000_000, keys)
    assert writer.sync(S.budget, "rerun") == (600_000, 1_000_000)


def test_a_stale_fence_changes_nothing(writer, four_jobs):
    writer.sync(record_plan, four_jobs, {})
    [claim] = writer.sync(S.claim, "old", _candidates(four_jobs)[:1], {"runway": 5}, {}, None)
    new = writer.sync(S.adopt, claim.key, claim.fence, "new")
    assert new == S.Fence("new", 2)
    assert not writer.sync(S.move, claim.key, claim.fence, S.SUBMITTING)  # the old owner is fenced out
    assert writer.sync(S.adopt, claim.key, claim.fence, "third") is None  # the takeover already happened
    assert writer.sync(S.move, claim.key, new, S.SUBMITTING)
    assert writer.sync(S.job, claim.key)["state"] == S.SUBMITTING


def _claim_all(path: str, candidates, start, results) -> None:
    w = Writer(path)
    start.wait()
    granted = [r.key for c in candidates for r in w.sync(S.claim, f"p{id(w)}", [c], {"runway": 3}, {}, None) if r.fence]
    results.put(granted)
    w.close()


def test_concurrent_processes_never_exceed_the_limit(tmp_path):
    many = plan(["model=gen4_turbo", "prompt_set=animate", "sweep.duration=[2,3,4,5,6,7,8,9,10]"])
    path = str(tmp_path / "shared.db")
    w = Writer(path)
    w.sync(record_plan, many, {})
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_claim_all, args=(path, _candidates(many), start, results)) for _ in range(4)]
    for p in procs:
        p.start()
    start.set()
    granted = [k for _ in procs for k in results.get(timeout=120)]
    for p in procs:
        p.join(timeout=60)
    claimed = [row for row in w.sync(S.rows) if row["state"] == S.CLAIMED]
    assert len(granted) == len(claimed) == 3
    w.close()


def test_a_failing_change_does_not_undo_the_others_in_its_batch(writer, four_jobs):
    writer.sync(record_plan, four_jobs, {})

    def broken(conn):
        conn.execute("update jobs set prompt_id = 'changed'")
        raise ValueError("refused")

    futures = [writer.submit(S.reopen, "nope", [S.FAILED], ""), writer.submit(broken), writer.submit(S.owner_gone, "x")]
    assert futures[0].result() is False and futures[2].result() is None
    with pytest.raises(ValueError):
        futures[1].result()
    assert {row["prompt_id"] for row in writer.sync(S.rows)} != {"changed"}


def test_a_locked_ledger_makes_the_writer_wait_not_fail(tmp_path, four_jobs):
    path = tmp_path / "locked.db"
    waits: list[float] = []
    w = Writer(path, on_wait=waits.append)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    future = w.submit(record_plan, four_jobs, {})
    release = threading.Event()

    def hold():
        while not waits:  # until the writer has said it is waiting (past its busy timeout)
            release.wait(0.05)
        other.execute("COMMIT")

    holder = threading.Thread(target=hold)
    holder.start()
    assert future.result(timeout=120)
    holder.join()
    assert waits and len(w.sync(S.rows)) == len(four_jobs.jobs)
    other.close()
    w.close()


def test_an_interrupted_run_does_not_wait_for_a_ledger_another_process_holds(tmp_path, four_jobs):
    """`finish` with a wait: the last change is given up, with what was queued (as a killed
    process would leave them), and the thread stops trying."""
    path = tmp_path / "held.db"
    w = Writer(path)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    queued = w.submit(record_plan, four_jobs, {})
    assert w.finish(S.owner_gone, "me", wait_s=0.05) is False
    with pytest.raises(LedgerUnusable):
        queued.result(timeout=60)
    assert w.held_elsewhere
    w._thread.join(timeout=60)
    assert not w._thread.is_alive()
    other.execute("COMMIT")
    assert other.execute("select count(*) from jobs").fetchone()[0] == 0
    other.close()


def test_finishing_waits_for_the_last_change_otherwise(tmp_path, four_jobs):
    w = Writer(tmp_path / "free.db")
    w.submit(record_plan, four_jobs, {})
    assert w.finish(S.owner_gone, "me", wait_s=60) is True
    conn = sqlite3.connect(tmp_path / "free.db")
    assert conn.execute("select count(*) from jobs").fetchone()[0] == len(four_jobs.jobs)
    conn.close()


def test_every_column_is_documented(tmp_path):
    doc = (Path(__file__).parent.parent / "docs" / "ledger.md").read_text()
    db = sqlite_utils.Database(S.open_ledger(tmp_path / "doc.db"))
    for table in db.table_names():
        for column in db[table].columns_dict:
            assert f"`{column}`" in doc or f"`{table}.{column}`" in doc, (table, column)
