"""The event loop's pace: when many jobs wake at once, their steps (request starts, claimed jobs,
the ledger's answers) run a few per pass of the loop, so the loop keeps answering in between."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from runner import pacing
from runner.writer import BATCH, Writer


class Passes:
    """Counts the loop's passes: a callback that runs once in each and schedules itself again."""

    def __init__(self) -> None:
        self.n = 0
        self.loop = asyncio.get_running_loop()
        self.loop.call_soon(self._tick)
        self.stopped = False

    def _tick(self) -> None:
        self.n += 1
        if not self.stopped:
            self.loop.call_soon(self._tick)


def test_turns_are_given_per_pass_and_in_order():
    async def main() -> tuple[list[int], Counter[int]]:
        passes = Passes()
        order: list[int] = []
        per_pass: Counter[int] = Counter()

        async def step(i: int) -> None:
            await pacing.turn()
            order.append(i)
            per_pass[passes.n] += 1

        await asyncio.gather(*(step(i) for i in range(200)))
        passes.stopped = True
        return order, per_pass

    order, per_pass = asyncio.run(main())
    assert order == list(range(200))  # first come, first served
    assert max(per_pass.values()) <= pacing.PER_PASS
    assert len(per_pass) >= 200 // pacing.PER_PASS


def test_a_cancelled_waiter_gives_its_turn_away():
    async def main() -> list[int]:
        done: list[int] = []

        async def step(i: int) -> None:
            await pacing.turn()
            done.append(i)

        tasks = [asyncio.ensure_future(step(i)) for i in range(3 * pacing.PER_PASS)]
        await asyncio.sleep(0)
        tasks[-1].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return done

    assert asyncio.run(main()) == list(range(3 * pacing.PER_PASS - 1))


def test_the_ledgers_answers_wake_their_callers_a_few_per_pass(tmp_path):
    # More changes than one transaction takes (writer.BATCH), each caller's next step taking a
    # moment (as a job's does): later transactions answer while earlier ones' answers are still
    # being handed out, and still no more than PER_PASS callers wake in a pass.
    writer = Writer(tmp_path / "ledger.db")

    async def main() -> Counter[int]:
        passes = Passes()
        woken: Counter[int] = Counter()

        async def change() -> None:
            await writer(lambda conn: conn.execute("select 1").fetchone())
            woken[passes.n] += 1
            time.sleep(0.0005)

        await asyncio.gather(*(change() for _ in range(3 * BATCH)))
        passes.stopped = True
        return woken

    try:
        woken = asyncio.run(main())
    finally:
        writer.close()
    assert sum(woken.values()) == 3 * BATCH and max(woken.values()) <= pacing.PER_PASS
