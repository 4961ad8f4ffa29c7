"""The runner's command line with an event-loop lag probe: `python -m bench.lagprobe OUT.json <args>`.

A task on the runner's own loop asks to sleep 20 ms, over and over, and records how late it wakes:
the time the loop spent on other work before it could answer (a Ctrl-C waits as long). The probe
wraps `asyncio.run`, so the runner runs unchanged; the figures are written when the process ends.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import sys
import time
from pathlib import Path
from typing import Any

TICK_S = 0.02


def main() -> None:
    out = Path(sys.argv[1])
    lags: list[float] = []
    real_run = asyncio.run

    async def probed(work: Any) -> Any:
        async def probe() -> None:
            while True:
                asked = time.monotonic()
                await asyncio.sleep(TICK_S)
                lags.append(time.monotonic() - asked - TICK_S)

        task = asyncio.ensure_future(probe())
        try:
            return await work
        finally:
            task.cancel()

    def report() -> None:
        ordered = sorted(lags) or [0.0]
        pick = lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)  # noqa: E731
        out.write_text(json.dumps({"samples": len(lags), "p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": pick(1.0)}))

    asyncio.run = lambda work, **kwargs: real_run(probed(work), **kwargs)  # type: ignore[assignment]
    atexit.register(report)
    sys.argv = ["runner", *sys.argv[2:]]
    from runner.app import main as runner_main

    runner_main()


if __name__ == "__main__":
    main()
