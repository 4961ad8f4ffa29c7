"""When to look at a task again: as seldom as what is known of it allows, never faster than the provider's floor.

Every status call is a request the provider counts against the account, and every moment between
a task's end and the poll that sees it is a slot left idle. What is known decides the wait:

- before the first poll, the model's typical latency as runners measured it (`runner.following`);
- a provider that reports progress (Runway does): the end it points to, from two readings the rate
  of progress (from one, half the remaining time it suggests: when generating began is unknown);
- otherwise a growing wait, first a quarter of the model's measured spread of latencies, then
  GROWTH times the last, never more than CAP_FRACTION of the time the task has run, so a late
  look costs a bounded share of the task's own time.
"""

from __future__ import annotations

FIRST_POLL_CAP_S = 600.0
GROWTH = 1.5
CAP_FRACTION = 0.2
PAST_ESTIMATE = 1.05  # aim just after the estimated end: a poll just before it is a wasted one


def first_delay(floor: float, learned: tuple[float, float] | None) -> float:
    """The first poll of a new task: at 0.8x the model's typical latency, once one is measured."""
    return floor if not learned else min(FIRST_POLL_CAP_S, max(floor, 0.8 * learned[0]))


class Schedule:
    """The waits between the polls of one task."""

    def __init__(self, floor: float, learned: tuple[float, float] | None, started: float):
        self.floor = floor
        self.started = started  # when the task was submitted (seconds, on the clock `next` is given)
        self.step = max(floor, (learned[1] - learned[0]) / 4) if learned else floor
        self.seen: tuple[float, float] | None = None  # (when, progress) last reported

    def next(self, progress: float | None, now: float) -> float:
        """The wait before the next poll of a task still queued or running."""
        if progress is not None and 0.0 < progress < 1.0:
            if self.seen is not None and progress > self.seen[1] and now > self.seen[0]:
                wait = PAST_ESTIMATE * (1.0 - progress) * (now - self.seen[0]) / (progress - self.seen[1])
            else:
                wait = 0.5 * max(0.0, now - self.started) * (1.0 - progress) / progress
            self.seen = (now, progress)
            return min(FIRST_POLL_CAP_S, max(self.floor, wait))
        wait = min(self.step, max(self.floor, CAP_FRACTION * (now - self.started)))
        self.step = wait * GROWTH
        return wait
