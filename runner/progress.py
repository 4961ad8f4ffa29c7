"""What a person sees while a sweep runs: a tqdm bar with counts per state and spend so far, or
plain log lines when the output is not a terminal, or nothing but the summary in quiet mode.

The engine keeps the counts as jobs change state; the bar is redrawn from them at most a few times
a second, so the display costs nothing per job however large the sweep.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Any, TextIO

from tqdm import tqdm

from runner import store as S
from runner.money import usd_text

REDRAW_S = 0.2
#: The provider's queue words, counted as "queued" rather than "running".
QUEUED_WORDS = {"PENDING", "THROTTLED", "IN_QUEUE"}
_BUCKETS = {S.CLAIMED: "queued", S.SUBMITTING: "queued", S.GENERATED: "downloading", S.DOWNLOADED: "done",
            S.LOST: "failed", S.CANCELED: "canceled"}
COLUMNS = ("queued", "running", "downloading", "done", "failed", "canceled")


def bucket(state: str, provider_status: str | None) -> str:
    """A job's place in the display: planned, queued (here or at the provider), running,
    downloading, done, failed (lost included) or canceled."""
    if state == S.SUBMITTED:
        return "queued" if (provider_status or "PENDING") in QUEUED_WORDS else "running"
    return _BUCKETS.get(state, state)


class Progress:
    def __init__(self, total: int, *, quiet: bool = False, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.interactive = not quiet and self.stream.isatty()
        self.bar = tqdm(total=total, unit="job", file=self.stream, dynamic_ncols=True) if self.interactive else None
        self._drawn = 0.0

    def update(self, counts: Counter[str], spent_micros: int, force: bool = False) -> None:
        """Redraw from the engine's running counts per `bucket` (at most every REDRAW_S)."""
        if self.bar is None or (not force and time.monotonic() - self._drawn < REDRAW_S):
            return
        self._drawn = time.monotonic()
        self.bar.n = counts["done"] + counts["failed"] + counts["canceled"]
        parts = [f"{name} {counts[name]}" for name in COLUMNS if counts[name]]
        self.bar.set_postfix_str(f"{', '.join(parts)}; spent {usd_text(spent_micros)}", refresh=False)
        self.bar.refresh()

    def event(self, event: str, row: dict[str, Any], detail: str) -> None:
        """A job changed state: a log line when there is no bar to show it."""
        if self.quiet or self.bar is not None:
            return
        print(f"{event:<10} {row['key'][:12]} {row['model']} {row['prompt_id']}" + (f": {detail}" if detail else ""), file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
