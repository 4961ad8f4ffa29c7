"""The job ledger: one SQLite file (sqlite-utils) that every runner process shares.

This module is the ledger's vocabulary: the job states, and every change as a small function run
inside one transaction (the writer thread in `runner.writer` batches them). Every change to a job
a runner drives is a compare-and-set on (owner, lease): a process that lost a job (it was presumed
dead, and another took the job over) changes nothing. Concurrency slots are a flag on the jobs that
hold one, counted through a partial index; budgets are running totals kept in the same transaction
as the money they count. See docs/ledger.md for every table and column.
"""

from __future__ import annotations

import datetime
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner import ledger_file, ledger_lock
from runner.migrations import upgrade
from runner.owners import Identity

PLANNED = "planned"
CLAIMED = "claimed"  # a slot and its budget are held; nothing has been sent yet
SUBMITTING = "submitting"  # the create request may be on the wire: its outcome is unknown until answered
SUBMITTED = "submitted"  # the provider has a task id for it
GENERATED = "generated"  # the provider generated it and billed it; the output is still to collect
DOWNLOADED = "downloaded"
LOST = "lost"  # paid for, but the provider no longer has the output
FAILED = "failed"
CANCELED = "canceled"
STATES = (PLANNED, CLAIMED, SUBMITTING, SUBMITTED, GENERATED, DOWNLOADED, LOST, FAILED, CANCELED)
FINAL = (DOWNLOADED, LOST, FAILED, CANCELED)
DRIVEN = (CLAIMED, SUBMITTING, SUBMITTED, GENERATED)  # states a live runner process drives

_CHUNK = 500  # keys per `in (...)` query, under SQLite's variable limit


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Fence:
    """Who may change a job: its owner and the lease it was granted (bumped at every takeover)."""

    owner: str
    lease: int


@dataclass(frozen=True)
class ClaimResult:
    key: str
    fence: Fence | None  # None: not granted
    reason: str = ""  # "provider", "model", "budget", "state"
    row: dict[str, Any] | None = None  # a granted job's row as claimed: the engine drives it from this


def open_ledger(path: str | Path, shown: str | None = None, hint: str = ledger_file.RUNNER_HINT) -> sqlite3.Connection:
    """A connection in WAL mode with the schema migrated. A ledger's writes are committed to the
    WAL before anything is sent: `synchronous=NORMAL` survives any crash of the process. A file
    that is not a runner ledger (or a newer runner's) raises `ledger_file.NotALedger` untouched."""
    path = Path(path)
    ledger_file.check(path, shown, hint)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=60, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA busy_timeout={ledger_lock.BUSY_TIMEOUT_MS}")
    upgrade(conn)
    return conn


def rows(conn: sqlite3.Connection, keys: Iterable[str] | None = None, columns: str = "*") -> list[dict[str, Any]]:
    """Job rows by key (every job when `keys` is None), in chunks of plain SELECTs."""
    if keys is None:
        return [dict(r) for r in conn.execute(f"select {columns} from jobs")]
    return [dict(r) for r in _by_keys(conn, list(keys), columns)]


def _by_keys(conn: sqlite3.Connection, keys: Sequence[str], columns: str) -> Iterator[sqlite3.Row]:
    """`columns` of the jobs with these keys, a chunk of keys per SELECT (SQLite's variable limit)."""
    for i in range(0, len(keys), _CHUNK):
        chunk = keys[i : i + _CHUNK]
        yield from conn.execute(f"select {columns} from jobs where key in ({','.join('?' * len(chunk))})", chunk)


#: What the engine keeps of a job it is not driving: enough to queue it and count it.
SLIM = ("key", "provider", "model_id", "state", "provider_status", "est_micros")


#: A sweep's jobs (its id the one parameter), through the index holding every column read over a
#: whole sweep (migration m009): only those columns may be read through it, or each row is read too.
#: A condition on another of its columns is written `+jobs.state ...`: a filter on the rows found,
#: not a search per value (five states would be five searches per job).
SWEEP_JOINED = ("from sweep_jobs join jobs indexed by jobs_sweep_reads on jobs.key = sweep_jobs.job_key "
                "where sweep_jobs.sweep_id = ?")


def sweep_jobs(conn: sqlite3.Connection, sweep_id: str, states: Sequence[str]) -> list[tuple[Any, ...]]:
    """The SLIM columns of a sweep's jobs in these states, as tuples, in the order they were planned."""
    marks = ",".join("?" * len(states))
    return [tuple(r) for r in conn.execute(
        f"select {', '.join(f'jobs.{c}' for c in SLIM)} {SWEEP_JOINED} and +jobs.state in ({marks}) order by jobs.rowid",
        [sweep_id, *states])]


def sweep_totals(conn: sqlite3.Connection, sweep_id: str) -> list[tuple[str, str | None, int, int]]:
    """(state, provider_status, jobs, settled micro-dollars) over a sweep's jobs."""
    return [tuple(r) for r in conn.execute(  # type: ignore[misc]
        f"select jobs.state, jobs.provider_status, count(*), coalesce(sum(jobs.spent_micros), 0) {SWEEP_JOINED} group by 1, 2",
        [sweep_id])]


def job(conn: sqlite3.Connection, key: str) -> dict[str, Any] | None:
    row = conn.execute("select * from jobs where key = ?", [key]).fetchone()
    return None if row is None else dict(row)


def events(conn: sqlite3.Connection, key: str) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute("select * from events where job_key = ? order by id", [key])]


def owners(conn: sqlite3.Connection, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    ids = list(set(ids))
    found: dict[str, dict[str, Any]] = {}
    for i in range(0, len(ids), _CHUNK):
        chunk = ids[i : i + _CHUNK]
        for row in conn.execute(f"select * from owners where id in ({','.join('?' * len(chunk))})", chunk):
            found[row["id"]] = dict(row)
    return found


def budget(conn: sqlite3.Connection, budget_id: str) -> tuple[int, int | None]:
    """(committed, limit) micro-dollars of a budget."""
    row = conn.execute("select committed_micros, limit_micros from budgets where id = ?", [budget_id]).fetchone()
    return (0, None) if row is None else (row[0], row[1])


def latency(conn: sqlite3.Connection, model_id: str) -> tuple[float, float] | None:
    """(typical, longest) seconds a model's generations took, as runners measured them, or None."""
    row = conn.execute("select latency_s, max_s from model_stats where model_id = ?", [model_id]).fetchone()
    return None if row is None else (row[0], row[1])


# -- changes (each runs inside the writer's transaction) ---------------------------------------------


def register_owner(conn: sqlite3.Connection, me: Identity) -> None:
    row = me.row()
    conn.execute(f"insert into owners ({', '.join(row)}) values ({', '.join('?' * len(row))})", list(row.values()))


def owner_gone(conn: sqlite3.Connection, owner_id: str) -> None:
    conn.execute("update owners set gone = 1 where id = ?", [owner_id])


def jobs_slim(conn: sqlite3.Connection, keys: Sequence[str]) -> list[tuple[Any, ...]]:
    """The SLIM columns and the settled money of these jobs, in the order they were planned."""
    found = sorted((tuple(r) for r in _by_keys(conn, keys, f"{', '.join(SLIM)}, spent_micros, rowid")), key=lambda row: row[-1])
    return [row[:-1] for row in found]


def join_budget(conn: sqlite3.Connection, budget_id: str, limit_micros: int, keys: Sequence[str]) -> None:
    """Make `keys` members of a budget (creating it); their money so far joins its running total."""
    stamp = now_iso()
    conn.execute(
        "insert into budgets (id, limit_micros, committed_micros, created_at, updated_at) values (?, ?, 0, ?, ?) "
        "on conflict(id) do update set limit_micros = excluded.limit_micros, updated_at = excluded.updated_at",
        [budget_id, limit_micros, stamp, stamp],
    )
    conn.execute("create temp table if not exists joining (job_key text primary key)")
    conn.execute("delete from joining")
    conn.executemany("insert or ignore into joining values (?)", ((k,) for k in keys))
    conn.execute("delete from joining where job_key in (select job_key from budget_jobs where budget_id = ?)", [budget_id])
    conn.execute(
        "update budgets set committed_micros = committed_micros + (select coalesce(sum(spent_micros + reserved_micros "
        "+ possible_micros), 0) from jobs where key in (select job_key from joining)) where id = ?",
        [budget_id],
    )
    conn.execute("insert into budget_jobs (budget_id, job_key) select ?, job_key from joining", [budget_id])


def claim(
    conn: sqlite3.Connection,
    owner: str,
    candidates: Sequence[tuple[str, str, str, int]],
    provider_limits: Mapping[str, int],
    model_limits: Mapping[tuple[str, str], int],
    budget_id: str | None,
) -> list[ClaimResult]:
    """planned -> claimed for each (key, provider, model_id, estimate) that the provider's and the
    model's slots and the budget have room for, in order; one transaction for all of them."""
    counts: dict[tuple[str, str | None], int] = {}
    for row in conn.execute("select provider, model_id, count(*) from jobs where holds_slot = 1 group by provider, model_id"):
        counts[(row[0], row[1])] = row[2]
        counts[(row[0], None)] = counts.get((row[0], None), 0) + row[2]
    committed, limit = budget(conn, budget_id) if budget_id else (0, None)
    results = []
    for key, provider, model_id, estimate in candidates:
        current = conn.execute("select * from jobs where key = ?", [key]).fetchone()
        if current is None or current["state"] != PLANNED:
            results.append(ClaimResult(key, None, "state"))
            continue
        if counts.get((provider, None), 0) >= provider_limits[provider]:
            results.append(ClaimResult(key, None, "provider"))
            continue
        model_limit = model_limits.get((provider, model_id))
        if model_limit is not None and counts.get((provider, model_id), 0) >= model_limit:
            results.append(ClaimResult(key, None, "model"))
            continue
        if limit is not None and committed + estimate > limit:
            results.append(ClaimResult(key, None, "budget"))
            continue
        fence = Fence(owner, current["lease"] + 1)
        claimed = {"state": CLAIMED, "owner": owner, "lease": fence.lease, "holds_slot": 1, "reserved_micros": estimate,
                   "error": None, "error_class": None, "updated_at": now_iso()}
        conn.execute(f"update jobs set {', '.join(f'{k} = ?' for k in claimed)} where key = ?", [*claimed.values(), key])
        _event(conn, key, PLANNED, CLAIMED, "")
        _budgets(conn, key, estimate)
        committed += estimate
        counts[(provider, None)] = counts.get((provider, None), 0) + 1
        counts[(provider, model_id)] = counts.get((provider, model_id), 0) + 1
        results.append(ClaimResult(key, fence, row={**dict(current), **claimed}))
    return results


def move(
    conn: sqlite3.Connection,
    key: str,
    fence: Fence,
    to_state: str | None = None,
    detail: str = "",
    *,
    reserve: int | None = None,
    spend: int = 0,
    possible: int = 0,
    **fields: Any,
) -> bool:
    """Change a job this owner holds: its state (None: unchanged), fields, and money.

    `reserve` replaces the estimate held against the budget; `spend` adds to the settled spend and
    `possible` to the money possibly billed for generations the ledger could not track. False when
    the fence no longer matches: another process has the job now, and nothing was changed.
    """
    current = conn.execute(
        "select state, reserved_micros from jobs where key = ? and owner = ? and lease = ?", [key, fence.owner, fence.lease]
    ).fetchone()
    if current is None:
        return False
    values = dict(fields)
    if to_state is not None:
        values["state"] = to_state
    delta = spend + possible + (0 if reserve is None else reserve - current[1])
    if reserve is not None:
        values["reserved_micros"] = reserve
    sets = [f"{k} = ?" for k in values] + ["spent_micros = spent_micros + ?", "possible_micros = possible_micros + ?", "updated_at = ?"]
    conn.execute(f"update jobs set {', '.join(sets)} where key = ?", [*values.values(), spend, possible, now_iso(), key])
    if (to_state is not None and to_state != current[0]) or detail:
        _event(conn, key, current[0], to_state or current[0], detail)
    if delta:
        _budgets(conn, key, delta)
    return True


def ambiguous(conn: sqlite3.Connection, key: str, fence: Fence, detail: str, budget_id: str | None) -> bool | None:
    """Count a create request whose answer never arrived: one possible duplicate, its estimate held
    against the budget. Then: may the job be sent again (its reservation still held) within the
    budget? None when fenced out."""
    row = conn.execute("select est_micros, possible_duplicates from jobs where key = ? and owner = ? and lease = ?",
                       [key, fence.owner, fence.lease]).fetchone()
    if row is None:
        return None
    move(conn, key, fence, None, f"possible duplicate charge: {detail}", possible=row[0] or 0, possible_duplicates=row[1] + 1)
    committed, limit = budget(conn, budget_id) if budget_id else (0, None)
    return limit is None or committed <= limit


def known_tasks(conn: sqlite3.Connection, task_ids: Sequence[str]) -> set[str]:
    """Which of these task ids the ledger has recorded for some job, now or in an earlier attempt."""
    return {t for t in task_ids if conn.execute(
        "select 1 from jobs where task_id = ? union all select 1 from events where detail = ? limit 1", [t, f"task {t}"]
    ).fetchone()}


def adopt(conn: sqlite3.Connection, key: str, old: Fence, owner: str) -> Fence | None:
    """Take over a job whose owner is gone; None if it changed hands meanwhile."""
    new = Fence(owner, old.lease + 1)
    changed = conn.execute(
        "update jobs set owner = ?, lease = ?, updated_at = ? where key = ? and owner is ? and lease = ?",
        [owner, new.lease, now_iso(), key, old.owner, old.lease],
    ).rowcount
    if not changed:
        return None
    _event(conn, key, None, None, f"taken over from {old.owner or 'an earlier run'}")
    return new


def reopen(conn: sqlite3.Connection, key: str, from_states: Sequence[str], detail: str, **fields: Any) -> bool:
    """A job no process drives (failed, canceled, lost) back to `planned`, as a rerun asks."""
    placeholders = ",".join("?" * len(from_states))
    row = conn.execute(f"select state from jobs where key = ? and state in ({placeholders})", [key, *from_states]).fetchone()
    if row is None:
        return False
    values = {**fields, "state": PLANNED, "holds_slot": 0, "task_id": None, "task_urls": None, "updated_at": now_iso()}
    conn.execute(f"update jobs set {', '.join(f'{k} = ?' for k in values)} where key = ?", [*values.values(), key])
    _event(conn, key, row[0], PLANNED, detail)
    return True


def recollect(conn: sqlite3.Connection, key: str, sha256: str | None, detail: str) -> bool:
    """A downloaded job whose file is missing or changed back to `generated`, its file forgotten, so
    a plain rerun collects it again from its task (never a new generation). Only while it is still
    the download `sha256` names: a job collected again meanwhile is left alone."""
    row = conn.execute("select state from jobs where key = ? and state = ? and output_sha256 is ?", [key, DOWNLOADED, sha256]).fetchone()
    if row is None:
        return False
    conn.execute(
        "update jobs set state = ?, output_path = null, output_bytes = null, output_sha256 = null, updated_at = ? where key = ?",
        [GENERATED, now_iso(), key],
    )
    _event(conn, key, DOWNLOADED, GENERATED, detail)
    return True


def record_probe(conn: sqlite3.Connection, key: str, facts: Mapping[str, Any]) -> None:
    """What a job's downloaded file turned out to be (`runner.probe`), replacing an earlier probe."""
    values = {"job_key": key, **facts, "probed_at": now_iso()}
    conn.execute(
        f"insert or replace into probes ({', '.join(values)}) values ({', '.join('?' * len(values))})", list(values.values())
    )


def note_latency(conn: sqlite3.Connection, model_id: str, low_s: float, high_s: float) -> None:
    """A generation this process submitted and watched end took between `low_s` and `high_s`.

    Only such measurements are kept (never a gap while no runner ran), as a moving average of the
    lower bound (when to poll first) and the largest upper bound (how long an untracked task may run).
    """
    conn.execute(
        "insert into model_stats (model_id, samples, latency_s, max_s, updated_at) values (?, 1, ?, ?, ?) "
        "on conflict(model_id) do update set samples = samples + 1, latency_s = 0.8 * latency_s + 0.2 * excluded.latency_s, "
        "max_s = max(max_s, excluded.max_s), updated_at = excluded.updated_at",
        [model_id, low_s, high_s, now_iso()],
    )


def upload(conn: sqlite3.Connection, provider: str, sha256: str, now: float) -> str | None:
    """A provider-held copy of a file that is still valid at `now` (epoch seconds), if any."""
    row = conn.execute("select uri from uploads where provider = ? and sha256 = ? and expires_at > ?", [provider, sha256, now]).fetchone()
    return None if row is None else row[0]


def keep_upload(conn: sqlite3.Connection, provider: str, sha256: str, uri: str, expires_at: float) -> None:
    conn.execute("insert or replace into uploads (provider, sha256, uri, expires_at) values (?, ?, ?, ?)",
                 [provider, sha256, uri, expires_at])


#: The events lifecycle hooks are told of.
OBSERVED = (SUBMITTED, GENERATED, DOWNLOADED, FAILED, LOST)


def hook_cursors(conn: sqlite3.Connection, plugins: Sequence[str]) -> dict[str, int]:
    """The last event each plugin was given; a plugin seen for the first time starts now (the
    ledger's history is not replayed to it)."""
    latest = conn.execute("select coalesce(max(id), 0) from events").fetchone()[0]
    conn.executemany("insert or ignore into hook_cursors (plugin, event_id, updated_at) values (?, ?, ?)",
                     [(name, latest, now_iso()) for name in plugins])
    marks = ",".join("?" * len(plugins))
    return {row[0]: row[1] for row in conn.execute(f"select plugin, event_id from hook_cursors where plugin in ({marks})", list(plugins))}


def observed_events(conn: sqlite3.Connection, after: int, limit: int) -> list[dict[str, Any]]:
    """State changes hooks are told of, after event `after`, with each job's current row."""
    marks = ",".join("?" * len(OBSERVED))
    return [dict(r) for r in conn.execute(
        f"select events.id as event_id, events.to_state as event_state, events.detail as event_detail, jobs.* "
        f"from events join jobs on jobs.key = events.job_key where events.id > ? and events.to_state in ({marks}) "
        f"and events.from_state is not events.to_state order by events.id limit ?",
        [after, *OBSERVED, limit],
    )]


def advance_cursor(conn: sqlite3.Connection, plugin: str, old: int, new: int) -> bool:
    return conn.execute("update hook_cursors set event_id = ?, updated_at = ? where plugin = ? and event_id = ?",
                        [new, now_iso(), plugin, old]).rowcount == 1


def _event(conn: sqlite3.Connection, key: str, from_state: str | None, to_state: str | None, detail: str) -> None:
    conn.execute(
        "insert into events (job_key, at, from_state, to_state, detail) values (?, ?, ?, ?, ?)",
        [key, now_iso(), from_state, to_state, detail],
    )


def _budgets(conn: sqlite3.Connection, key: str, delta: int) -> None:
    conn.execute(
        "update budgets set committed_micros = committed_micros + ? where id in (select budget_id from budget_jobs where job_key = ?)",
        [delta, key],
    )
