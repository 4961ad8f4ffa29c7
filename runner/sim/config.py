"""How a simulator behaves: latencies, account limits, URL lifetimes, fault rates and keys.

Tables are keyed by name. A model may be named by its catalogue name, its provider id, an alias or
its endpoint. `latency` takes the model's entry, else its provider's (`runway`, `fal`), else
`default`; in `concurrency` and `daily_limit` a provider entry limits the whole account and a model
entry that model, both applying at once. So one file can say "every model takes 0.2-0.5 s, gen4.5
takes longer, the fal account runs 4 at once and Kling only 1".
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from runner.sim.failures import RUNWAY_UNREFUNDED
from runner.sim.faults import Points, check_details

#: What a fal model does with a cancel that reaches it running: run on to its result, or stop.
FAL_RUNNING_CANCEL = ("completes", "stops")


@dataclass(frozen=True)
class Latency:
    """Seconds a task runs, drawn uniformly from [min, max] when it is created."""

    min: float
    max: float

    def __post_init__(self) -> None:
        if not 0 <= self.min <= self.max:
            raise ValueError(f"latency needs 0 <= min <= max, got min={self.min}, max={self.max}")

    @classmethod
    def parse(cls, value: Any) -> "Latency":
        """From a number (fixed), `{min, max}`, or text `0.2:0.5` / `1.5`."""
        if isinstance(value, Latency):
            return value
        if isinstance(value, Mapping):
            unknown = set(value) - {"min", "max"}
            if unknown:
                raise ValueError(f"latency takes min and max, not {', '.join(sorted(map(str, unknown)))}")
            low = float(value.get("min", value.get("max", 0)))
            return cls(low, float(value.get("max", low)))
        if isinstance(value, str) and ":" in value:
            low, high = value.split(":", 1)
            return cls(float(low), float(high))
        return cls(float(value), float(value))


DEFAULT_LATENCY = Latency(0.2, 0.5)


@dataclass
class SimConfig:
    """Everything a simulator run can be told; the defaults suit tests (sub-second tasks, no limits)."""

    seed: int = 0
    #: Divides every latency and pending time: 2.0 runs the clock twice as fast.
    speed: float = 1.0
    latency: dict[str, Latency] = field(default_factory=lambda: {"default": DEFAULT_LATENCY})
    #: Seconds a task waits (PENDING / IN_QUEUE at position 0) before it starts running.
    pending_s: float = 0.05
    #: Tasks running at once, per provider account and per model; absent means unlimited.
    concurrency: dict[str, int] = field(default_factory=dict)
    #: Accepted submissions per rolling day, per provider and per model; over it create answers 429.
    daily_limit: dict[str, int] = field(default_factory=dict)
    #: The rolling window daily limits count over (Runway: 24 h); shorter in tests that watch it roll.
    daily_window_s: float = 86400.0
    url_ttl_s: float = 3600.0
    upload_ttl_s: float = 86400.0
    #: Fault rates: fault point (or "*" for every point a kind applies to) -> kind -> probability.
    faults: dict[str, dict[str, float]] = field(default_factory=dict)
    #: Settings for rate-drawn faults, by kind (e.g. `http_503: {retry_after: soon}`).
    fault_details: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The codes a rate-drawn `task_failed` picks from, one per documented family.
    failure_codes: tuple[str, ...] = (
        "SAFETY.INPUT.TEXT",
        "SAFETY.OUTPUT.VIDEO",
        "INTERNAL.BAD_OUTPUT.CODE01",
        "THIRD_PARTY.UNAVAILABLE",
    )
    #: The API key to accept, by provider, instead of its simulator's own (`ProviderSim.key`).
    keys: dict[str, str] = field(default_factory=dict)
    credit_balance: int = 10_000_000
    #: Charges are the manifest price times this: a provider billing more than its price list says.
    bill_factor: float = 1.0
    #: USD per pricing unit for models whose manifest gives no price: what the provider's own
    #: price list (fal's pricing API) says and bills, by model name, alias or endpoint.
    price_list: dict[str, float] = field(default_factory=dict)
    #: Runway failure-code families that are not refunded (the failed task is billed).
    runway_unrefunded_failures: tuple[str, ...] = RUNWAY_UNREFUNDED
    #: Runway: a cancelled task answers 404 at once (the SDK warns aborted tasks may not be fetchable).
    runway_forget_cancelled: bool = False
    #: fal: whether a model's own error (422, e.g. content policy) is charged; fal says it may be.
    fal_charges_model_errors: bool = True
    #: fal: a running request that is cancelled "completes" (the model ignores the signal) or "stops".
    fal_running_cancel: str = "completes"
    #: Append every ledger change to this JSONL file, so the record outlives the process.
    ledger_path: str | None = None
    #: Persist every task, upload and ledger entry to this JSONL file and restore them on start,
    #: so a simulator started again on it answers for everything an earlier one accepted.
    state_path: str | None = None
    #: Upper bounds on deliberate waits, so no fault or stream holds a thread for long.
    hang_max_s: float = 30.0
    stream_max_s: float = 120.0

    def __post_init__(self) -> None:
        self.latency = {"default": DEFAULT_LATENCY, **{str(k): Latency.parse(v) for k, v in self.latency.items()}}
        self.concurrency = _positive_ints("concurrency", self.concurrency)
        self.daily_limit = _positive_ints("daily_limit", self.daily_limit, allow_zero=True)
        self.failure_codes = tuple(self.failure_codes)
        self.runway_unrefunded_failures = tuple(self.runway_unrefunded_failures)
        if self.fal_running_cancel not in FAL_RUNNING_CANCEL:
            raise ValueError(f"fal_running_cancel must be one of {', '.join(FAL_RUNNING_CANCEL)}, got {self.fal_running_cancel!r}")
        for name, rate in self.price_list.items():
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate < 0:
                raise ValueError(f"price_list.{name} must be a price in USD >= 0, got {rate!r}")
        self.keys = {str(k): str(v) for k, v in self.keys.items()}
        if self.bill_factor <= 0:
            raise ValueError(f"bill_factor must be > 0, got {self.bill_factor}")
        if self.speed <= 0:
            raise ValueError(f"speed must be > 0, got {self.speed}")
        for name in ("pending_s", "url_ttl_s", "upload_ttl_s", "hang_max_s", "stream_max_s", "daily_window_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        Points().check_rates(self.faults, known_only=True)  # providers' points: checked by the simulator
        check_details(self.fault_details)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SimConfig":
        """A config from plain data (a parsed file); an unknown key is an error naming it."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown simulator setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**dict(data))

    @classmethod
    def load(cls, path: str | Path) -> "SimConfig":
        """Read a YAML or JSON file (JSON is YAML too); ValueError names the file when it cannot."""
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"cannot read simulator config {path}: {exc}") from None
        if not isinstance(data, Mapping):
            raise ValueError(f"simulator config {path}: expected a mapping of settings")
        return cls.from_dict(data)

    def latency_for(self, names: Iterable[str], provider: str) -> Latency:
        """The most specific latency for a model: its names, then its provider, then `default`."""
        for name in (*names, provider):
            if name in self.latency:
                return self.latency[name]
        return self.latency["default"]

    def model_limit(self, table: Mapping[str, int], names: Iterable[str], providers: Collection[str]) -> int | None:
        """A per-model entry only: a name that is also a provider's (`providers`) is that provider's
        account limit, kept apart (a model may be aliased as its provider, as Acme's is)."""
        for name in names:
            if name in table and name not in providers:
                return table[name]
        return None


def _positive_ints(label: str, table: Mapping[str, Any], allow_zero: bool = False) -> dict[str, int]:
    out = {}
    for key, value in table.items():
        number = int(value)
        if number < (0 if allow_zero else 1) or number != value:
            raise ValueError(f"{label}.{key} must be a whole number >= {0 if allow_zero else 1}, got {value!r}")
        out[str(key)] = number
    return out
