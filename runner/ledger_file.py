"""Is the file at the ledger path a runner ledger? Found out by reading it, never by writing.

Opening a SQLite file for writing changes it: switching it to WAL rewrites its header, and the
migrations would add the runner's tables to whatever database is there. So before any connection
that may write, the file is inspected read-only: its first bytes (a SQLite file at all?), its
`application_id` (the runner's ledgers carry their own since `m007_application_id`), and the
migrations it lists. A file that is not a runner ledger, or one written by a newer runner, is
refused untouched; a ledger of an older runner is upgraded by the migrations as usual.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

from runner.errors import UserError
from runner.migrations import APPLICATION_ID, MIGRATIONS

_MAGIC = b"SQLite format 3\x00"
#: What the first migration creates: a database listing runner migrations has these.
_FIRST_TABLES = {"jobs", "sweeps", "sweep_jobs", "events"}
_JOB_COLUMNS = {"key", "sweep", "provider", "model", "state"}


class NotALedger(UserError):
    """The file at the ledger path is something else, or a newer runner's ledger: left as it is."""


#: How to point the runner elsewhere, ending every refusal (the companion CLI says it its own way).
RUNNER_HINT = "move it away, or give the runner another ledger with db=... or state_dir=..."


def check(path: str | Path, shown: str | None = None, hint: str = RUNNER_HINT) -> bool:
    """True when `path` holds a ledger this runner can use as it is or after upgrading it, False
    when there is nothing there yet (a new ledger may be created); NotALedger otherwise. `shown`
    names the file in messages the way the user gave it (`db=.runner/ledger.db`)."""
    path = Path(path)
    shown = shown or str(path)
    if not path.exists():
        return False
    if path.is_dir():
        raise NotALedger(f"{shown} is a folder, not a ledger file; give db= a file path (or another state_dir=)")
    try:
        with path.open("rb") as stream:
            head = stream.read(100)
    except OSError as exc:
        raise NotALedger(f"{shown} cannot be read ({exc.strerror or exc}); nothing was written") from None
    if not head:
        return False  # an empty file is an empty database to SQLite: nothing of anyone's to lose
    if not head.startswith(_MAGIC):
        raise NotALedger(f"{shown} is not a runner ledger: it is not an SQLite database at all (it starts with "
                         f"{head[:16]!r}); it was left untouched: {hint}")
    app_id = int.from_bytes(head[68:72], "big", signed=True)
    tables, applied, job_columns = _schema(path, shown, hint)
    if app_id not in (0, APPLICATION_ID):
        raise _foreign(shown, f"it is an SQLite database of another application (application_id {app_id})", tables, hint)
    if not tables:
        return False  # a database with nothing in it yet
    known = [fn.__name__ for fn in MIGRATIONS]
    if applied is None:
        raise _foreign(shown, "it is an SQLite database without the runner's schema", tables, hint)
    unknown = [name for name in applied if name not in known]
    if app_id == APPLICATION_ID and unknown:
        raise NotALedger(f"{shown} is a ledger written by a newer version of the runner (its schema has changes this "
                         f"version does not know: {', '.join(sorted(unknown))}); it was left untouched: upgrade the "
                         f"runner (pip install -U video-runner), or {hint}")
    if unknown or not _FIRST_TABLES <= set(tables) or not _JOB_COLUMNS <= job_columns:
        raise _foreign(shown, "it is an SQLite database whose tables are not the runner's", tables, hint)
    return True


def read_only(path: Path, timeout: float) -> sqlite3.Connection:
    """A connection that cannot write, nor make a file beside the ledger: `immutable` when the file
    is all there is (no journal or WAL beside it, so SQLite creates none either), else read-only,
    which reads the WAL as a writer left it."""
    wal, journal = Path(f"{path}-wal"), Path(f"{path}-journal")
    flags = "mode=ro" if wal.exists() or journal.exists() else "mode=ro&immutable=1"
    return sqlite3.connect(f"file:{quote(str(path.resolve()))}?{flags}", uri=True, timeout=timeout)


def _schema(path: Path, shown: str, hint: str) -> tuple[list[str], list[str] | None, set[str]]:
    """(tables, applied migrations or None without `_migrations`, columns of `jobs`), read through a
    connection that cannot write (`read_only`)."""
    try:
        conn = read_only(path, timeout=60)
    except sqlite3.Error as exc:
        raise NotALedger(f"{shown} cannot be opened to check it is a runner ledger ({exc}); nothing was written") from None
    try:
        tables = [r[0] for r in conn.execute("select name from sqlite_master where type = 'table' and name not like 'sqlite_%'")]
        applied = [r[0] for r in conn.execute("select name from _migrations")] if "_migrations" in tables else None
        columns = {r[1] for r in conn.execute("pragma table_info(jobs)")} if "jobs" in tables else set()
    except sqlite3.DatabaseError as exc:
        raise NotALedger(f"{shown} is not a runner ledger: SQLite cannot read it ({exc}); it was left untouched: {hint}") from None
    finally:
        conn.close()
    return tables, applied, columns


def _foreign(shown: str, what: str, tables: list[str], hint: str) -> NotALedger:
    listed = ", ".join(sorted(tables)[:8]) + (", ..." if len(tables) > 8 else "")
    return NotALedger(f"{shown} is not a runner ledger: {what} (tables: {listed or 'none'}); it was left untouched: {hint}")
