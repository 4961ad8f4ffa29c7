"""What a person sees while a sweep runs: a tqdm bar with counts per state and spend so far, or
plain log lines when the output is not a terminal, or nothing but the summary in quiet mode."""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any, TextIO

from tqdm import tqdm

from runner import store as S

#: The provider's queue words, counted as "queued" rather than "running".
QUEUED_WORDS = {"PENDING", "THROTTLED", "IN_QUEUE"}


def bucket(row: dict[str, Any]) -> str:
    """A job's place in the display: planned, queued (at the provider), running, downloading, done, failed."""
    state = row["state"]
    if state == S.SUBMITTED:
        return "queued" if (row.get("provider_status") or "PENDING") in QUEUED_WORDS else "running"
    if state == S.SUBMITTING:
        return "queued"
    return {S.SUCCEEDED: "downloading", S.DOWNLOADED: "done", S.CANCELED: "canceled"}.get(state, state)


class Progress:
    def __init__(self, total: int, *, quiet: bool = False, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.interactive = not quiet and self.stream.isatty()
        self.bar = tqdm(total=total, unit="job", file=self.stream, dynamic_ncols=True) if self.interactive else None

    def update(self, rows: list[dict[str, Any]]) -> None:
        """Redraw from the ledger's rows (the truth, whichever process changed them)."""
        if self.bar is None:
            return
        counts = Counter(bucket(row) for row in rows)
        spent = sum(row["spent_usd"] or 0 for row in rows)
        self.bar.n = counts["done"] + counts["failed"] + counts["canceled"]
        parts = [f"{name} {counts[name]}" for name in ("queued", "running", "downloading", "done", "failed") if counts[name]]
        self.bar.set_postfix_str(f"{', '.join(parts)}; spent ${spent:.2f}", refresh=False)
        self.bar.refresh()

    def event(self, event: str, row: dict[str, Any], detail: str) -> None:
        """A job changed state: a log line when there is no bar to show it."""
        if self.quiet or self.bar is not None:
            return
        print(f"{event:<10} {row['key'][:12]} {row['model']} {row['prompt_id']}" + (f": {detail}" if detail else ""), file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
