"""Waiting for a ledger another process holds: the write transactions of the runner's writer, the
companion CLI's changes and the migrations all begin here.

SQLite's own wait (the busy timeout) sleeps inside the library, where neither a Ctrl-C nor the
runner's decision to leave can reach it. The wait is therefore cut into short tries, the caller is
told every few seconds how long it has waited, and may give up between tries.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from collections.abc import Callable

#: SQLite's wait per try: a Ctrl-C or a decision to leave is seen within this.
TRY_MS = 250
#: The busy timeout a ledger connection keeps otherwise (runner.store.open_ledger).
BUSY_TIMEOUT_MS = 5000
#: How often a wait is told to the caller.
TELL_EVERY_S = 5.0


def is_busy(exc: sqlite3.OperationalError) -> bool:
    """Whether SQLite refused because another connection holds the lock (not a broken database)."""
    return "locked" in str(exc) or "busy" in str(exc)


def begin(conn: sqlite3.Connection, waiting: Callable[[float], None], give_up: Callable[[], bool] = lambda: False,
          *, short_tries: bool = False) -> None:
    """BEGIN IMMEDIATE, for as long as another process holds the ledger: `waiting` is told the
    seconds waited every TELL_EVERY_S; once `give_up()` says so, the refusal is raised as it is.
    `short_tries`: the connection's busy timeout is TRY_MS already (the writer's own connection),
    else it is set for the wait and put back."""
    if not short_tries:
        conn.execute(f"PRAGMA busy_timeout={TRY_MS}")
    started = time.monotonic()
    told = 0.0
    try:
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if not is_busy(exc) or give_up():
                    raise
            waited = time.monotonic() - started
            if waited - told >= TELL_EVERY_S:
                told = waited
                waiting(waited)
    finally:
        if not short_tries:
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


def teller(shown: str | None = None, conn: sqlite3.Connection | None = None) -> Callable[[float], None]:
    """What a wait says on stderr, naming the ledger as `shown` (else the file `conn` is open on)."""
    if shown is None and conn is not None:
        shown = next((row[2] for row in conn.execute("PRAGMA database_list") if row[1] == "main"), None)

    def tell(seconds: float) -> None:
        print(f"waiting for the ledger {shown}: another process has held it for {seconds:.0f} s", file=sys.stderr, flush=True)

    return tell
