"""Changes the companion CLI makes to the ledger: files checked against it, failed jobs retried.

Each change goes through the ledger's own functions (`runner.store.reopen`, `recollect`,
`record_probe`) in one `BEGIN IMMEDIATE` transaction, as the runner's writer does, so it is safe
while runners work on the same ledger: a job a runner changed meanwhile is left alone.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from runner import ledger_lock
from runner import store as S
from runner.locate import Found
from runner.views import Selection, jobs

T = TypeVar("T")


def transaction(conn: sqlite3.Connection, change: Callable[[sqlite3.Connection], T]) -> T:
    """`change` in one write transaction, begun once no other process holds the ledger (saying so
    while it waits)."""
    ledger_lock.begin(conn, ledger_lock.teller(conn=conn))
    try:
        result = change(conn)
        conn.execute("COMMIT")
        return result
    except BaseException:
        conn.execute("ROLLBACK")
        raise


@dataclass
class Verified:
    ok: int = 0
    missing: list[dict[str, Any]] = field(default_factory=list)
    changed: list[dict[str, Any]] = field(default_factory=list)
    probed: int = 0  # clips probed now (downloaded before probing existed, collected again, or not read whole)
    marked: int = 0  # jobs moved back to `generated`, for a rerun to collect


def verify(conn: sqlite3.Connection, found: Found, sel: Selection, mark: bool = True) -> Verified:
    """Re-hash every downloaded file of the selection against the ledger. A missing or changed file
    is reported and (with `mark`) its job goes back to `generated`: the next plain run of the runner
    collects it again from the provider's task (renewing its URL), never generating it again."""
    from runner.probing import examine_all

    done = Verified()
    unprobed: list[str] = []  # their keys
    requests: list[tuple[str, str | None, str]] = []
    for row in jobs(conn, sel, state=S.DOWNLOADED)[1]:
        path = found.resolve(row["output_path"])
        if not path.is_file():
            done.missing.append(row)
            continue
        if _sha256(path) != row["output_sha256"]:
            done.changed.append(row)
            continue
        done.ok += 1
        if row["probe_output_sha256"] != row["output_sha256"] or row["probe_error"]:  # never probed, or not read whole
            unprobed.append(row["key"])
            requests.append((str(path), row["params"], row["output_sha256"]))
    probes = list(zip(unprobed, examine_all(requests)))

    def record(conn: sqlite3.Connection) -> int:
        for key, facts in probes:
            S.record_probe(conn, key, facts)
        if not mark:
            return 0
        marked = 0
        for row, why in [(r, "missing") for r in done.missing] + [(r, "changed") for r in done.changed]:
            detail = f"verify: file {why} ({row['output_path']}); to be collected again from task {row['task_id']}"
            marked += S.recollect(conn, row["key"], row["output_sha256"], detail)
        return marked

    done.marked = transaction(conn, record)
    done.probed = len(probes)
    return done


def retry(conn: sqlite3.Connection, sel: Selection, permanent: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Failed jobs back to `planned`, so the next run generates them again (a new charge each);
    permanent failures (the provider refused the request) only when asked. (retried, left)."""
    failed = jobs(conn, sel, state=S.FAILED)[1]
    chosen = [r for r in failed if permanent or r["error_class"] != "permanent"]
    left = [r for r in failed if not permanent and r["error_class"] == "permanent"]

    def reopen(conn: sqlite3.Connection) -> list[dict[str, Any]]:
        detail = "retry requested (video-runner retry): a new generation, a new charge"
        return [r for r in chosen if S.reopen(conn, r["key"], [S.FAILED], detail, attempts=0)]

    return transaction(conn, reopen), left


def _sha256(path: Any) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
