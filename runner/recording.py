"""A plan into the ledger: its sweep, then its jobs, in one transaction or a part at a time.

The sweep id is the hash of the plan's job keys: the same command finds the same sweep again and
has nothing to record. A new sweep's row goes in first, counting all of its jobs; its jobs follow,
with their `sweep_jobs` links, in one or several transactions (a large plan's first jobs run while
the rest are recorded). A sweep with fewer links than it counts was cut short and is recorded
again; jobs are never deleted nor recorded twice (a job already in the ledger keeps its state).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from runner.money import to_micros
from runner.store import PLANNED, now_iso

if TYPE_CHECKING:  # the planner (and Hydra with it) loads only where plans are recorded
    from runner.plan import JobSpec, Plan


def record_plan(conn: sqlite3.Connection, plan: Plan, config: Mapping[str, Any]) -> str:
    """The plan's sweep and every job of it, in one transaction (`begin_sweep` and `record_jobs`)."""
    sweep_id, recorded = begin_sweep(conn, plan, config)
    if recorded != SWEEP_RECORDED:
        record_jobs(conn, sweep_id, plan.jobs)
    return sweep_id


SWEEP_NEW, SWEEP_PARTLY, SWEEP_RECORDED = "new", "partly recorded", "recorded"


def begin_sweep(conn: sqlite3.Connection, plan: Plan, config: Mapping[str, Any]) -> tuple[str, str]:
    """The plan's sweep, recorded if new: (its id, SWEEP_NEW, SWEEP_PARTLY or SWEEP_RECORDED).

    The sweep id is the hash of its job keys: the same command finds the same sweep again, and then
    has nothing to record. A sweep's jobs may go in over several transactions (`record_jobs`, a
    large plan's first jobs run while the rest are recorded): one with fewer jobs linked than it
    counts was cut short, and its jobs are recorded again (jobs are never deleted nor recorded twice).
    """
    from runner.plan import canonical_json

    keys = sorted(job.key for job in plan.jobs)
    sweep_id = hashlib.sha256(canonical_json(keys).encode()).hexdigest()[:16]
    known = conn.execute("select jobs from sweeps where id = ?", [sweep_id]).fetchone()
    if known is not None:
        linked = conn.execute("select count(*) from sweep_jobs where sweep_id = ?", [sweep_id]).fetchone()[0]
        return sweep_id, SWEEP_RECORDED if linked >= known[0] else SWEEP_PARTLY
    conn.execute(
        "insert into sweeps (id, name, created_at, config, jobs) values (?, ?, ?, ?, ?)",
        [sweep_id, plan.jobs[0].sweep if plan.jobs else "", now_iso(), json.dumps(config, default=str), len(keys)],
    )
    return sweep_id, SWEEP_NEW if keys else SWEEP_RECORDED


def record_jobs(conn: sqlite3.Connection, sweep_id: str, jobs: Sequence[JobSpec]) -> None:
    """Insert jobs of a sweep (those already in the ledger keep their state) and link them to it."""
    if not jobs:
        return
    stamp = now_iso()
    conn.execute("create temp table if not exists planning (key text primary key)")
    conn.execute("delete from planning")
    conn.executemany("insert or ignore into planning values (?)", ((job.key,) for job in jobs))
    conn.execute(  # an event for each job new to this ledger, before the jobs themselves go in
        "insert into events (job_key, at, from_state, to_state, detail) select key, ?, null, ?, 'planned' "
        "from planning where key not in (select key from jobs)",
        [stamp, PLANNED],
    )
    encoded: dict[tuple[str, int], Any] = {}  # the plan holds every object encoded: no id is reused meanwhile
    columns = list(_row(jobs[0], stamp))
    conn.executemany(
        f"insert or ignore into jobs ({', '.join(columns)}) values ({', '.join('?' * len(columns))})",
        (tuple(_row(job, stamp, encoded).values()) for job in jobs),
    )
    conn.executemany("insert or ignore into sweep_jobs (sweep_id, job_key) values (?, ?)", ((sweep_id, job.key) for job in jobs))


def _row(job: JobSpec, stamp: str, encoded: dict[tuple[str, int], Any] | None = None) -> dict[str, Any]:
    """A job's row. `encoded`: values already encoded, by field and the id of the object encoded (a
    plan's replicates share their parameters, payload, inputs and price: each is encoded once)."""
    from runner.plan import canonical_json

    encoded = {} if encoded is None else encoded

    def once(name: str, value: Any, encode: Any) -> Any:
        if (name, id(value)) not in encoded:
            encoded[name, id(value)] = encode(value)
        return encoded[name, id(value)]

    return {
        "key": job.key,
        "sweep": job.sweep,
        "provider": job.provider,
        "model": job.model,
        "model_id": job.model_id,
        "mode": job.mode,
        "endpoint": job.endpoint,
        "prompt_id": job.prompt_id,
        "replicate": job.replicate,
        "params": once("params", job.params, lambda v: json.dumps(v, sort_keys=True)),
        "payload": once("payload", job.payload, canonical_json),
        "inputs": once("inputs", job.inputs, lambda v: json.dumps([dataclasses.asdict(f) for f in v])),
        "media": job.media,
        "extension": job.extension,
        "state": PLANNED,
        "est_micros": once("cost", job.cost, to_micros),
        "cost_source": job.cost_source or None,
        "created_at": stamp,
        "updated_at": stamp,
    }
