"""What the engine is given and what it gives back: each provider's lane (the plugin instance, the
account's limits, its health, its queues), the run's options, and the run's outcome for the summary."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

from runner.config import ProviderConf
from runner.providers import Provider


@dataclass
class Lane:
    """One provider as the engine drives it: the plugin instance, the account's limits, its health."""

    provider: Provider
    conf: ProviderConf
    model_limits: dict[str, int] = field(default_factory=dict)  # by model id
    stopped: str | None = None  # why no more jobs are sent to it in this run (refused key, outage)
    stopped_models: dict[str, str] = field(default_factory=dict)  # model id -> why (a daily limit reached)
    daily_left: dict[str, int] = field(default_factory=dict)  # model id -> generations the account has left today
    unreachable_since: float | None = None
    queues: dict[str, deque[tuple[str, int]]] = field(default_factory=dict)  # model id -> (key, estimate) ready to claim
    blocked: set[str | None] = field(default_factory=set)  # None: the provider's limit; else model ids
    held: int = 0  # slots this process holds
    #: Places for status streams (`Provider.watch`), one per generation the account runs at once;
    #: None when this lane polls only (the plugin offers no stream, or `status_stream=false`).
    watching: asyncio.Semaphore | None = None

    def reached(self) -> None:
        self.unreachable_since = None

    def stop_model(self, model_id: str, why: str) -> None:
        self.stopped_models.setdefault(model_id, why)

    def waiting(self) -> bool:
        """Jobs this lane could still send in this run."""
        return not self.stopped and any(q for m, q in self.queues.items() if m not in self.stopped_models)

    def sendable(self, model_id: str) -> bool:
        return not self.stopped and model_id not in self.stopped_models

    def unreachable(self, max_outage_s: float) -> None:
        now = time.monotonic()
        if self.unreachable_since is None:
            self.unreachable_since = now
        elif now - self.unreachable_since > max_outage_s and self.stopped is None:
            self.stopped = f"{self.provider.name} has been unreachable for {now - self.unreachable_since:.0f} s"


@dataclass
class Options:
    outputs_dir: Path
    max_attempts: int = 3
    budget_id: str | None = None
    job_timeout_s: float = 3600.0
    max_outage_s: float = 600.0
    retry_failed: bool = False
    regenerate_lost: bool = False


@dataclass
class Outcome:
    """What a run did, for the summary."""

    budget_stopped: bool = False
    interrupted: bool = False
    fault: str | None = None  # an environment fault that stopped the run
    lanes_stopped: dict[str, str] = field(default_factory=dict)
    parked: dict[str, str] = field(default_factory=dict)  # key -> why it is left for a later run
    waiting_on_others: list[str] = field(default_factory=list)
    reopened: Counter[str] = field(default_factory=Counter)  # state -> jobs generated again
