"""What a person sees while a sweep runs: counts per state and spend, or plain lines, or nothing."""

from __future__ import annotations

import io
from collections import Counter

from runner.progress import Progress, bucket


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _row(state: str) -> dict:
    return {"key": "k" * 64, "model": "gen4_turbo", "prompt_id": "p", "state": state}


def test_terminal_shows_counts_per_state_and_spend():
    screen = Terminal()
    progress = Progress(5, stream=screen)
    jobs = [("submitted", "THROTTLED"), ("submitted", "RUNNING"), ("generated", None), ("downloaded", None), ("failed", None)]
    progress.update(Counter(bucket(state, status) for state, status in jobs), 750_000, force=True)
    progress.close()
    text = screen.getvalue()
    assert "queued 1, running 1, downloading 1, done 1, failed 1; spent $0.75" in text
    assert "2/5" in text


def test_plain_lines_when_not_a_terminal_and_silence_when_quiet():
    log, quiet = io.StringIO(), io.StringIO()
    Progress(1, stream=log).event("submitted", _row("submitted"), "task-1")
    Progress(1, stream=quiet, quiet=True).event("submitted", _row("submitted"), "task-1")
    assert log.getvalue().split() == ["submitted", "k" * 12, "gen4_turbo", "p:", "task-1"]
    assert quiet.getvalue() == ""
