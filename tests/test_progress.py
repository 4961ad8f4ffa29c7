"""What a person sees while a sweep runs: counts per state and spend, or plain lines, or nothing."""

from __future__ import annotations

import io

from runner.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _row(state: str, provider_status: str | None = None, spent: float = 0.0) -> dict:
    return {"key": "k" * 64, "model": "gen4_turbo", "prompt_id": "p", "state": state, "provider_status": provider_status, "spent_usd": spent}


def test_terminal_shows_counts_per_state_and_spend():
    screen = Terminal()
    progress = Progress(5, stream=screen)
    progress.update([
        _row("submitted", "THROTTLED"), _row("submitted", "RUNNING"), _row("succeeded", spent=0.25),
        _row("downloaded", spent=0.5), _row("failed"),
    ])
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
