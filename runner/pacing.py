"""Work spread over the event loop's passes, so the loop keeps answering: timers, streams, Ctrl-C.

asyncio runs, in one pass, every callback made ready before the pass began. When hundreds of jobs
wake together (a poll interval they share, a batch of claims, a ledger transaction's answers) one
pass runs every one of their steps, and the loop answers nothing else until it ends: with 2,000
generations in flight single passes took over half a second. A job step that starts a request (or
is started by a claim) first takes its turn here: at most PER_PASS go through in one pass, the
others wait in order, costing nothing until theirs comes.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque

PER_PASS = 8  # a few milliseconds of requests per pass, even on a busy machine

_paces: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Pace] = weakref.WeakKeyDictionary()


async def turn() -> None:
    """Wait for a turn in the running loop's pace."""
    loop = asyncio.get_running_loop()
    pace = _paces.get(loop)
    if pace is None:
        pace = _paces[loop] = Pace(loop)
    await pace.turn()


class Pace:
    def __init__(self, loop: asyncio.AbstractEventLoop, per_pass: int = PER_PASS):
        self.loop = loop
        self.per_pass = per_pass
        self._passed = 0  # turns given since the current pass began
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._scheduled = False

    async def turn(self) -> None:
        if self._passed < self.per_pass and not self._waiting:
            self._passed += 1
            self._schedule()
            return
        future = self.loop.create_future()
        self._waiting.append(future)
        self._schedule()
        await future

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._next_pass)

    def _next_pass(self) -> None:
        """Runs once per pass while there is work: a new count, and the next waiters let through
        (their steps run in the following pass)."""
        self._scheduled = False
        self._passed = 0
        while self._waiting and self._passed < self.per_pass:
            future = self._waiting.popleft()
            if not future.done():  # a waiter cancelled meanwhile gives its turn to the next
                future.set_result(None)
                self._passed += 1
        if self._passed or self._waiting:
            self._schedule()
