"""The job ledger: one SQLite file (sqlite-utils) that every runner process shares.

Each state change is one short IMMEDIATE transaction that updates the job and appends an event, so
a crash at any moment leaves the ledger at a known step (DESIGN.md "Job states"). Concurrency slots
and the budget are claimed inside such a transaction, which SQLite serialises across processes:
two runners on one ledger never exceed a provider's limit or the budget between them.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlite_utils

from runner.migrations import migrate
from runner.plan import JobSpec, Plan, canonical_json

PLANNED = "planned"
SUBMITTING = "submitting"
SUBMITTED = "submitted"
SUCCEEDED = "succeeded"
DOWNLOADED = "downloaded"
FAILED = "failed"
CANCELED = "canceled"
IN_FLIGHT = (SUBMITTING, SUBMITTED)
FINAL = (DOWNLOADED, FAILED, CANCELED)

#: A process that has not refreshed its jobs for this long is presumed dead (other hosts; on this
#: host the pid is checked directly).
LEASE_S = 120.0
HOST = socket.gethostname()


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def this_owner() -> str:
    return f"{HOST}:{os.getpid()}"


def owner_alive(owner: str | None, heartbeat_at: float | None) -> bool:
    """Whether the process that owns an in-flight job is still driving it."""
    if not owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host == HOST and pid.isdigit():
        if int(pid) == os.getpid():
            return True
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
    return heartbeat_at is not None and time.time() - heartbeat_at < LEASE_S


@dataclass(frozen=True)
class Claim:
    """The outcome of asking for a slot: granted, or why not."""

    granted: bool
    reason: str = ""  # "provider", "model", "budget", "state"


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.path), isolation_level=None, timeout=60, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=60000")
        conn.create_function("owner_alive", 2, owner_alive)
        self.db = sqlite_utils.Database(conn)
        migrate(self.db)

    def close(self) -> None:
        self.db.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # -- reading ---------------------------------------------------------------------------------

    def job(self, key: str) -> dict[str, Any]:
        return self.db["jobs"].get(key)  # type: ignore[return-value]

    def jobs(self, keys: Iterable[str] | None = None) -> list[dict[str, Any]]:
        if keys is None:
            return list(self.db["jobs"].rows)
        keys = list(keys)
        rows: list[dict[str, Any]] = []
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            rows += self.db["jobs"].rows_where(f"key in ({','.join('?' * len(chunk))})", chunk)
        return rows

    def events(self, key: str) -> list[dict[str, Any]]:
        return list(self.db["events"].rows_where("job_key = ?", [key], order_by="id"))

    def sweep_jobs(self, sweep_id: str) -> list[dict[str, Any]]:
        return list(
            self.db.query(
                "select jobs.* from jobs join sweep_jobs on sweep_jobs.job_key = jobs.key where sweep_id = ?",
                [sweep_id],
            )
        )

    def committed_usd(self, sweep_id: str) -> Decimal:
        """Settled plus reserved spend on a sweep's jobs, across every process."""
        row = self.db.execute(
            "select coalesce(sum(spent_usd + reserved_usd), 0) from jobs "
            "join sweep_jobs on sweep_jobs.job_key = jobs.key where sweep_id = ?",
            [sweep_id],
        ).fetchone()
        return Decimal(str(round(row[0], 6)))

    def in_flight(self, provider: str, model: str | None = None) -> int:
        """Generations at a provider (or one of its models) driven by a live process."""
        sql = "select count(*) from jobs where provider = ? and state in (?, ?) and owner_alive(owner, heartbeat_at)"
        args: list[Any] = [provider, *IN_FLIGHT]
        if model is not None:
            sql += " and model = ?"
            args.append(model)
        return self.db.execute(sql, args).fetchone()[0]

    def recent_latencies(self, model: str, limit: int = 20) -> list[float]:
        """How long this model's latest successful generations took, submit to success."""
        rows = self.db.execute(
            "select finished_at - submitted_at from jobs where model = ? and state in (?, ?) "
            "and finished_at is not null and submitted_at is not null order by finished_at desc limit ?",
            [model, SUCCEEDED, DOWNLOADED, limit],
        ).fetchall()
        return [r[0] for r in rows if r[0] is not None and r[0] >= 0]

    # -- writing ---------------------------------------------------------------------------------

    def record_plan(self, plan: Plan, config: Mapping[str, Any]) -> str:
        """Insert the plan's jobs (existing ones keep their state) and the sweep that links them.

        The sweep id is the hash of its job keys: the same command finds the same sweep again.
        """
        keys = sorted(job.key for job in plan.jobs)
        sweep_id = hashlib.sha256(canonical_json(keys).encode()).hexdigest()[:16]
        stamp = now_iso()
        with self.transaction():
            self.db["sweeps"].insert(
                {
                    "id": sweep_id,
                    "name": plan.jobs[0].sweep if plan.jobs else "",
                    "created_at": stamp,
                    "config": json.dumps(config, default=str),
                    "jobs": len(keys),
                },
                ignore=True,
            )
            known = {row["key"] for row in self.jobs(keys)}
            new = [job for job in plan.jobs if job.key not in known]
            self.db["jobs"].insert_all((_row(job, stamp) for job in new))
            self.db["sweep_jobs"].insert_all(({"sweep_id": sweep_id, "job_key": k} for k in keys), ignore=True)
            self.db["events"].insert_all(
                {"job_key": job.key, "at": stamp, "from_state": None, "to_state": PLANNED, "detail": "planned"}
                for job in new
            )
        return sweep_id

    def transition(
        self, key: str, to_state: str, *, expect: Iterable[str] | None = None, detail: str = "", **fields: Any
    ) -> bool:
        """Move a job to `to_state` (if it is in one of `expect`), setting `fields`, plus an event."""
        with self.transaction() as conn:
            return self._transition(conn, key, to_state, expect, detail, fields)

    def _transition(
        self, conn: sqlite3.Connection, key: str, to_state: str, expect: Iterable[str] | None, detail: str, fields: Mapping[str, Any]
    ) -> bool:
        row = conn.execute("select state from jobs where key = ?", [key]).fetchone()
        if row is None or (expect is not None and row[0] not in set(expect)):
            return False
        stamp = now_iso()
        values = {**fields, "state": to_state, "updated_at": stamp}
        conn.execute(
            f"update jobs set {', '.join(f'{k} = ?' for k in values)} where key = ?", [*values.values(), key]
        )
        if row[0] != to_state or detail:
            conn.execute(
                "insert into events (job_key, at, from_state, to_state, detail) values (?, ?, ?, ?, ?)",
                [key, stamp, row[0], to_state, detail],
            )
        return True

    def update(self, key: str, **fields: Any) -> None:
        """Change fields that are not a state (progress, provider status) without an event."""
        with self.transaction() as conn:
            conn.execute(
                f"update jobs set {', '.join(f'{k} = ?' for k in fields)}, updated_at = ? where key = ?",
                [*fields.values(), now_iso(), key],
            )

    def settle(self, key: str, cost_usd: float, possible_duplicate: bool = False) -> None:
        """A generation's cost joins the job's spend and its reservation is released, in one step."""
        with self.transaction() as conn:
            conn.execute(
                "update jobs set spent_usd = spent_usd + ?, reserved_usd = 0, "
                "possible_duplicates = possible_duplicates + ?, updated_at = ? where key = ?",
                [cost_usd, int(possible_duplicate), now_iso(), key],
            )

    def note(self, key: str, detail: str, possible_duplicate: bool = False) -> None:
        """An event that is not a state change (a retry), counting a possible duplicate charge if any."""
        with self.transaction() as conn:
            (state,) = conn.execute("select state from jobs where key = ?", [key]).fetchone()
            self._transition(conn, key, state, None, detail, {})
            if possible_duplicate:
                conn.execute("update jobs set possible_duplicates = possible_duplicates + 1 where key = ?", [key])

    def claim(
        self, key: str, *, provider_limit: int, model_limit: int | None, budget_usd: float | None, sweep_id: str
    ) -> Claim:
        """planned -> submitting, if the provider, the model and the budget all have room.

        Committed before the submit request goes out: a crash after this point leaves the job in
        `submitting`, the one state whose outcome at the provider is unknown.
        """
        with self.transaction() as conn:
            job = conn.execute(
                "select state, provider, model, est_cost from jobs where key = ?", [key]
            ).fetchone()
            if job is None or job[0] != PLANNED:
                return Claim(False, "state")
            if self.in_flight(job[1]) >= provider_limit:
                return Claim(False, "provider")
            if model_limit is not None and self.in_flight(job[1], job[2]) >= model_limit:
                return Claim(False, "model")
            estimate = job[3] or 0.0
            if budget_usd is not None and float(self.committed_usd(sweep_id)) + estimate > budget_usd + 1e-9:
                return Claim(False, "budget")
            self._transition(
                conn,
                key,
                SUBMITTING,
                [PLANNED],
                "",
                {"owner": this_owner(), "heartbeat_at": time.time(), "reserved_usd": estimate, "error": None, "error_class": None},
            )
            conn.execute("update jobs set attempts = attempts + 1 where key = ?", [key])
            return Claim(True)

    def adopt(self, key: str) -> dict[str, Any] | None:
        """Take over an in-flight or downloadable job whose owner is gone; None if someone live has it."""
        with self.transaction() as conn:
            row = conn.execute(
                "select state, owner, heartbeat_at from jobs where key = ?", [key]
            ).fetchone()
            if row is None or row[0] not in (*IN_FLIGHT, SUCCEEDED):
                return None
            if row[1] != this_owner() and owner_alive(row[1], row[2]):
                return None
            conn.execute(
                "update jobs set owner = ?, heartbeat_at = ? where key = ?", [this_owner(), time.time(), key]
            )
        return self.job(key)

    def heartbeat(self) -> None:
        with self.transaction() as conn:
            conn.execute(
                "update jobs set heartbeat_at = ? where owner = ? and state in (?, ?, ?)",
                [time.time(), this_owner(), *IN_FLIGHT, SUCCEEDED],
            )


def _row(job: JobSpec, stamp: str) -> dict[str, Any]:
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
        "params": json.dumps(job.params, sort_keys=True),
        "payload": canonical_json(job.payload),
        "inputs": json.dumps([dataclasses.asdict(f) for f in job.inputs]),
        "media": job.media,
        "extension": job.extension,
        "state": PLANNED,
        "attempts": 0,
        "possible_duplicates": 0,
        "est_cost": None if job.cost is None else float(job.cost),
        "reserved_usd": 0.0,
        "spent_usd": 0.0,
        "created_at": stamp,
        "updated_at": stamp,
    }
