"""The task clock: when each task starts and ends, computed from timestamps on demand.

There is no background loop. Every request first calls `advance(now)`, which replays, in time
order, every finish that happened since the last call and admits waiting tasks into the slots those
finishes freed (at the moment they freed). So a task's history is the same whether it is polled
every millisecond or once at the end, and an idle simulator costs nothing.

A task is *in flight* from submission until it ends; it *runs* (holds a concurrency slot) from
admission until it ends. Admission happens in submission order whenever the provider's and the
model's slots allow: over the limit a task waits (Runway THROTTLED, fal IN_QUEUE). The highest
number of simultaneous in-flight and running tasks per provider and model is kept for tests that
check a client's own concurrency limit.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Literal

from runner.catalog import CatalogModel

Phase = Literal["waiting", "pending", "running", "succeeded", "failed", "cancelled"]


def iso_time(unix: float) -> str:
    """ISO-8601 UTC with milliseconds, as both providers write timestamps."""
    return datetime.fromtimestamp(unix, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(unix * 1000) % 1000:03d}Z"


def payload_sha256(payload: Any) -> str:
    """sha256 of the canonical JSON of a request body (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def model_names(model: CatalogModel, endpoint: str | None = None) -> tuple[str, ...]:
    """Every name a config or a fault filter may use for a model, most specific first."""
    return (model.name, model.model_id, *model.spec.aliases, *([endpoint] if endpoint else []))


class DailyLimitExceeded(Exception):
    """A create over the daily generation limit of `scope` (a provider or model name).

    `retry_after` is the number of seconds until the oldest generation in the window leaves it.
    """

    def __init__(self, scope: str, limit: int, retry_after: float):
        super().__init__(f"daily generation limit of {limit} reached for {scope}")
        self.scope = scope
        self.limit = limit
        self.retry_after = retry_after


@dataclass(eq=False)
class Task:
    """One accepted generation. Times are on the board's monotonic clock.

    `payload_hash` and `body_hash` are computed at creation; a task restored from a state file
    carries them from the file (its payload may have had long values, such as data URIs, left out).
    """

    id: str
    provider: str
    model: CatalogModel
    mode: str
    endpoint: str
    payload: dict[str, Any]  # the native fields (Runway's body without `model`)
    body: Any  # the request body as sent, for the ledger's payload hash
    latency: float
    pending: float
    price: Decimal | None = None  # the manifest price of this job, None when unknown
    failure_code: str | None = None  # set when the task is fated to fail
    problems: tuple[str, ...] = ()  # invalid input (fal accepts it, then fails the request)
    fallback_disabled: bool | None = None
    fallback_header: str | None = None  # the header (name) that disabled fal's fallback, if one did
    created: float = 0.0
    seq: int = 0
    admitted: float | None = None
    ended: float | None = None
    final: str | None = None
    failure_message: str | None = None
    payload_hash: str = ""  # sha256 of the native payload: seeds the output file
    body_hash: str = ""  # sha256 of the request body as sent: the ledger's payload_sha256
    cancel_phase: str | None = None  # the phase it was in when a cancel arrived; None: never cancelled
    billed: Decimal | None = None  # what the provider charged, once it ended (None: at an unknown price)

    def __post_init__(self) -> None:
        if not self.payload_hash:
            self.payload_hash = payload_sha256(self.payload)
        if not self.body_hash:
            self.body_hash = self.payload_hash if self.body is self.payload else payload_sha256(self.body)

    @property
    def names(self) -> tuple[str, ...]:
        return model_names(self.model, self.endpoint)

    @property
    def run_at(self) -> float | None:
        return None if self.admitted is None else self.admitted + self.pending

    def phase(self, now: float) -> Phase:
        if self.final is not None:
            return self.final  # type: ignore[return-value]
        if self.admitted is None:
            return "waiting"
        return "pending" if now < self.admitted + self.pending else "running"

    def progress(self, now: float) -> float:
        """Fraction of the running time elapsed, 0..1."""
        if self.admitted is None or self.latency <= 0:
            return 0.0
        return min(1.0, max(0.0, (now - self.admitted - self.pending) / self.latency))


@dataclass
class _Counter:
    in_flight: int = 0
    max_in_flight: int = 0
    running: int = 0
    max_running: int = 0
    submitted: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class TaskBoard:
    """Every task, the wait queues, the running set and the account limits; thread-safe."""

    provider_limits: dict[str, int] = field(default_factory=dict)
    model_limit: Callable[[Task], int | None] = lambda task: None
    #: (scope, limit) pairs for a task, scope being its provider or its model name.
    daily_limits: Callable[[Task], list[tuple[str, int]]] = lambda task: []
    #: Daily limits count the generations accepted in the last `daily_window_s` (a rolling day).
    daily_window_s: float = 86400.0
    on_accept: Callable[[Task], None] = lambda task: None
    on_cancel: Callable[[Task], None] = lambda task: None
    on_final: Callable[[Task], None] = lambda task: None
    on_admit: Callable[[Task], None] = lambda task: None
    on_delete: Callable[[Task], None] = lambda task: None
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self.lock = threading.RLock()
        self._tasks: dict[str, Task] = {}
        self._waiting: dict[str, list[Task]] = defaultdict(list)
        self._running: list[tuple[float, int, Task]] = []  # heap by done_at
        self._counts: dict[tuple[str, str], _Counter] = defaultdict(_Counter)
        self._daily: dict[str, deque[float]] = defaultdict(deque)  # scope -> wall times accepted, oldest first
        self._seq = 0
        self._mono0, self._wall0 = self.clock(), time.time()

    def wall(self, t: float) -> float:
        """Unix time of a board time."""
        return self._wall0 + (t - self._mono0)

    def at_wall(self, unix: float) -> float:
        """Board time of a Unix time (the inverse of `wall`), for state restored from a file."""
        return self._mono0 + (unix - self._wall0)

    def now(self) -> float:
        return self.clock()

    # -- changes ----------------------------------------------------------------------------------

    def submit(self, task: Task) -> None:
        """Accept a task (DailyLimitExceeded when over a daily limit) and admit it if a slot is free."""
        with self.lock:
            now = self.clock()
            self.advance(now)
            wall = self.wall(now)
            for scope, limit in self.daily_limits(task):
                recent = self._in_window(scope, wall)
                if len(recent) >= limit:
                    raise DailyLimitExceeded(scope, limit, recent[-limit] + self.daily_window_s - wall)
            self._seq += 1
            task.seq, task.created = self._seq, now
            self.on_accept(task)  # first: when it cannot record the task (a full disk), nothing changes
            for scope in {task.provider, task.model.name}:
                self._daily[scope].append(wall)
            self._tasks[task.id] = task
            for counter in self._counters(task):
                counter.submitted += 1
                counter.in_flight += 1
                counter.max_in_flight = max(counter.max_in_flight, counter.in_flight)
            self._waiting[task.provider].append(task)
            self._admit(task.provider, now)

    def cancel(self, task: Task, stop_running: bool = True) -> str | None:
        """Cancel a task that has not ended: the phase it was in, or None when it had ended.

        A waiting or pending task ends cancelled; a running one too, unless `stop_running` is
        False (the model ignores the signal and runs to its end). The first cancel's phase is kept.
        """
        with self.lock:
            now = self.clock()
            self.advance(now)
            if task.final is not None:
                return None
            phase = task.phase(now)
            if task.cancel_phase is None:
                task.cancel_phase = phase
                self.on_cancel(task)
            if phase == "running" and not stop_running:
                return phase
            if task.admitted is None:
                self._waiting[task.provider].remove(task)
            self._finish(task, "cancelled", now)
            self._admit(task.provider, now)
            return phase

    def delete(self, task: Task) -> None:
        """Forget an ended task (Runway's DELETE of a finished task)."""
        with self.lock:
            if self._tasks.pop(task.id, None) is not None:
                self.on_delete(task)

    def restore(self, tasks: list[Task], deleted: Collection[str] = ()) -> None:
        """Put back tasks a previous simulator accepted (their times already on this board's clock).

        Ended tasks stay as they ended; admitted ones hold their slots until their recorded end
        (`admitted + pending + latency`); the others wait, in their original submission order, and
        are admitted as slots free. Tasks in `deleted` count (daily usage, submitted) but answer
        nothing. Nothing here calls `on_accept`: the tasks were accepted before. Call before serving.
        """
        with self.lock:
            latest: dict[str, float] = {}
            for task in sorted(tasks, key=lambda t: t.seq):
                self._seq = max(self._seq, task.seq)
                if task.id not in deleted:
                    self._tasks[task.id] = task
                for scope in {task.provider, task.model.name}:
                    self._daily[scope].append(self.wall(task.created))
                times = [t for t in (task.created, task.admitted, task.ended) if t is not None]
                latest[task.provider] = max(latest.get(task.provider, times[0]), *times)
                for counter in self._counters(task):
                    counter.submitted += 1
                    if task.final is None:
                        counter.in_flight += 1
                        counter.max_in_flight = max(counter.max_in_flight, counter.in_flight)
                        if task.admitted is not None:
                            counter.running += 1
                            counter.max_running = max(counter.max_running, counter.running)
                if task.final is not None:
                    continue
                if task.admitted is not None:
                    heapq.heappush(self._running, (task.admitted + task.pending + task.latency, task.seq, task))
                else:
                    self._waiting[task.provider].append(task)
            # A slot may have freed (or a task been accepted) just before the previous process died,
            # before it admitted the next task: admit now, at the last moment the file knows of.
            for provider, at in latest.items():
                if self._waiting[provider]:
                    self._admit(provider, at)
            self.advance(self.clock())

    def advance(self, now: float) -> None:
        """Replay every finish up to `now`, admitting waiting tasks as slots free."""
        with self.lock:
            while self._running and self._running[0][0] <= now:
                done_at, _, task = heapq.heappop(self._running)
                if task.final is not None:  # cancelled while running
                    continue
                failed = task.failure_code is not None or bool(task.problems)
                self._finish(task, "failed" if failed else "succeeded", done_at)
                self._admit(task.provider, done_at)

    # -- queries ----------------------------------------------------------------------------------

    def get(self, task_id: str) -> Task | None:
        """The task, brought up to date, or None when unknown or deleted."""
        with self.lock:
            self.advance(self.clock())
            return self._tasks.get(task_id)

    def tasks(self, provider: str) -> list[Task]:
        """The provider's tasks (not deleted), brought up to date, in submission order."""
        with self.lock:
            self.advance(self.clock())
            return [task for task in self._tasks.values() if task.provider == provider]

    def queue_position(self, task: Task) -> int:
        """Tasks ahead of this one in its wait queue (0-based); 0 once admitted."""
        with self.lock:
            if task.admitted is not None or task.final is not None:
                return 0
            provider_wide = task.provider in self.provider_limits
            ahead = 0
            for other in self._waiting[task.provider]:
                if other is task:
                    break
                if provider_wide or other.model is task.model:
                    ahead += 1
            return ahead

    def counts(self) -> dict[str, dict[str, dict[str, int]]]:
        """In-flight / running counts and their maxima, per provider and per model."""
        with self.lock:
            self.advance(self.clock())
            out: dict[str, dict[str, dict[str, int]]] = {"providers": {}, "models": {}}
            for (kind, name), counter in self._counts.items():
                out["providers" if kind == "provider" else "models"][name] = counter.as_dict()
            return out

    def usage_today(self) -> dict[str, int]:
        """Submissions accepted in the rolling day (`daily_window_s`) per provider and model name."""
        with self.lock:
            wall = self.wall(self.clock())
            return {scope: n for scope in list(self._daily) if (n := len(self._in_window(scope, wall)))}

    # -- internals (lock held) --------------------------------------------------------------------

    def _in_window(self, scope: str, wall: float) -> deque[float]:
        """The scope's acceptance times within the rolling day, after dropping older ones."""
        times = self._daily[scope]
        while times and times[0] <= wall - self.daily_window_s:
            times.popleft()
        return times

    def _counters(self, task: Task) -> tuple[_Counter, _Counter]:
        return self._counts[("provider", task.provider)], self._counts[("model", task.model.name)]

    def _finish(self, task: Task, final: str, at: float) -> None:
        task.final, task.ended = final, at
        for counter in self._counters(task):
            counter.in_flight -= 1
            if task.admitted is not None:
                counter.running -= 1
        self.on_final(task)

    def _admit(self, provider: str, at: float) -> None:
        """Start waiting tasks, in submission order, while the slots allow."""
        queue = self._waiting[provider]
        limit = self.provider_limits.get(provider)
        index = 0
        while index < len(queue):
            provider_count, model_count = self._counters(queue[index])
            if limit is not None and provider_count.running >= limit:
                return
            task = queue[index]
            model_limit = self.model_limit(task)
            if model_limit is not None and model_count.running >= model_limit:
                index += 1
                continue
            queue.pop(index)
            task.admitted = at
            for counter in (provider_count, model_count):
                counter.running += 1
                counter.max_running = max(counter.max_running, counter.running)
            heapq.heappush(self._running, (at + task.pending + task.latency, task.seq, task))
            self.on_admit(task)
