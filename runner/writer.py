"""The ledger's one writer: a thread that runs every change in short, batched transactions.

The event loop never touches SQLite: it hands a change (a function of `runner.store` and its
arguments) to this thread and awaits the result. The thread takes everything queued, runs it in one
`BEGIN IMMEDIATE` transaction (each change in its own savepoint, so one failing change does not undo
the others), commits, and only then answers: a job's step is on disk before the engine acts on it.

A ledger locked by another process makes the run wait, saying so, never crash (runner.ledger_lock):
short tries, retried for as long as it takes. Errors SQLite cannot wait out (disk full, I/O error, a
read-only file) fail the changes with `LedgerUnusable`, an environment fault the engine stops on.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from runner import ledger_lock
from runner.pacing import PER_PASS
from runner.store import open_ledger

T = TypeVar("T")
BATCH = 512  # changes per transaction at most: a commit every few ms under load


@dataclass(frozen=True, slots=True)
class _Change:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    future: Future[Any] | asyncio.Future[Any] | None  # None: nobody waits for the outcome
    loop: asyncio.AbstractEventLoop | None = None  # the loop an asyncio future belongs to


class LedgerUnusable(Exception):
    """The ledger cannot be written (disk full, I/O error, permissions): nothing more can be recorded."""


class Writer:
    def __init__(self, path: str | Path, on_wait: Callable[[float], None] = lambda seconds: None):
        self.path = Path(path)
        self.on_wait = on_wait  # told how long the ledger has been locked by another process
        self.conn = open_ledger(self.path)
        self.conn.execute(f"PRAGMA busy_timeout={ledger_lock.TRY_MS}")  # it only begins transactions: short tries
        self._abandoned = False
        self.held_elsewhere = False  # the last transaction's start was refused: another process holds the ledger
        self._queue: queue.SimpleQueue[_Change | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="runner-ledger", daemon=True)
        self._thread.start()

    # -- the caller's side --------------------------------------------------------------------------

    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
        """Queue `fn(conn, *args, **kwargs)`; its future resolves once the transaction holding it committed."""
        future: Future[T] = Future()
        self._queue.put(_Change(fn, args, kwargs, future))
        return future

    def post(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Queue a change whose outcome nobody waits for (a status seen, a latency measured)."""
        self._queue.put(_Change(fn, args, kwargs, None))

    def __call__(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> asyncio.Future[T]:
        """Queue a change from the event loop; await it for its outcome, once committed. The futures
        of one transaction are resolved together, with one wake-up of the loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Change(fn, args, kwargs, future, loop))
        return future

    def sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """For code outside the event loop (setup, summaries)."""
        return self.submit(fn, *args, **kwargs).result()

    def close(self) -> None:
        """Finish what is queued, then close the connection."""
        self._queue.put(None)
        self._thread.join()
        self.conn.close()

    def finish(self, fn: Callable[..., Any], *args: Any, wait_s: float | None = None) -> bool:
        """A last change, then `close`. With `wait_s` (an interrupted run, sending nothing any more)
        the change is waited for that long at most (behind a ledger another process holds, or a
        long change of this run's own); then the ledger is left as a killed process would leave it,
        what is still queued not recorded (the next run starts from what is), and False returned.
        The thread, a daemon, gives up at its next try."""
        try:
            self.submit(fn, *args).result(timeout=wait_s)
        except TimeoutError:
            self._abandoned = True
            self._queue.put(None)
            return False
        except LedgerUnusable:
            pass
        self.close()
        return True

    # -- the thread ---------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # close after this batch
                    break
                batch.append(more)
            self._commit(batch)

    def _commit(self, batch: list[_Change]) -> None:
        try:
            self._begin()
            outcomes: list[tuple[bool, Any]] = []
            for change in batch:
                self.conn.execute("SAVEPOINT change")
                try:
                    outcomes.append((True, change.fn(self.conn, *change.args, **change.kwargs)))
                    self.conn.execute("RELEASE change")
                except sqlite3.OperationalError:
                    raise  # the database itself failed: the whole batch is in doubt
                except Exception as exc:  # a bug or a refused change: only this change is undone
                    self.conn.execute("ROLLBACK TO change")
                    self.conn.execute("RELEASE change")
                    outcomes.append((False, exc))
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            failure = LedgerUnusable(f"the ledger {self.path} cannot be written: {exc}")
            _answer_all(batch, [(False, failure)] * len(batch))
            return
        _answer_all(batch, outcomes)

    def _begin(self) -> None:
        """BEGIN IMMEDIATE, waiting as long as another process holds the ledger (until abandoned)."""
        ledger_lock.begin(self.conn, self.on_wait, give_up=self._refused, short_tries=True)
        self.held_elsewhere = False

    def _refused(self) -> bool:
        """After each try another process refused: whether to stop trying."""
        self.held_elsewhere = True
        return self._abandoned


def _answer_all(batch: list[_Change], outcomes: list[tuple[bool, Any]]) -> None:
    """Resolve the futures of a transaction's changes: those of an event loop in one call on it."""
    on_loops: dict[asyncio.AbstractEventLoop, list[tuple[Any, bool, Any]]] = {}
    for change, (ok, value) in zip(batch, outcomes):
        if change.loop is not None:
            on_loops.setdefault(change.loop, []).append((change.future, ok, value))
        elif change.future is not None:
            _answer(change.future, ok, value)
    for loop, answers in on_loops.items():
        try:
            loop.call_soon_threadsafe(_arrive, answers)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass


#: Per event loop, the answers not handed out yet (touched only on that loop).
_unanswered: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, deque[tuple[Any, bool, Any]]] = weakref.WeakKeyDictionary()


def _arrive(answers: list[tuple[Any, bool, Any]]) -> None:
    """On the loop: a transaction's answers join those not handed out yet. PER_PASS are handed out
    per pass of the loop, however many transactions they come from (each wakes a job's next step:
    hundreds in one pass would keep the loop from everything else)."""
    loop = asyncio.get_running_loop()
    pending = _unanswered.get(loop)
    if pending is None:
        pending = _unanswered[loop] = deque()
    idle = not pending  # else a hand-out is already scheduled
    pending.extend(answers)
    if idle:
        _hand_out(pending)


def _hand_out(pending: deque[tuple[Any, bool, Any]]) -> None:
    for _ in range(min(PER_PASS, len(pending))):
        _answer(*pending.popleft())
    if pending:
        asyncio.get_running_loop().call_soon(_hand_out, pending)


def _answer(future: Future[Any] | asyncio.Future[Any], ok: bool, value: Any) -> None:
    """Resolve a change's future. A caller that stopped waiting (its task was cancelled at an
    interrupt) still had its change applied: that is the point of queueing it."""
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
