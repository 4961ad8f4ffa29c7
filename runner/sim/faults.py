"""Fault injection: which request fails, and how, either scripted (`inject`) or drawn at a rate.

A fault is looked up at a named point of a provider's protocol (`runway.create`, `fal.status`,
`acme.poll`: each provider simulator names its own, `Points`) or `download`, and optionally only
for one model. Scripted faults fire first, in the order they were added, each
`count` times; then each configured rate is rolled with the simulator's seeded generator. The
protocol handlers decide what a fault does to their response (see `server.fault_response`).
Every kind's settings (`DETAILS`) are checked when the fault is scripted or configured.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: The one point every simulator has: downloads of output files (`/files/...`).
DOWNLOAD = "download"
#: What a provider's request is, for faults: the provider contract's call it serves (`submit`
#: creates a generation, `poll` asks how it goes, `result` hands out its output URLs, `cancel`), or
#: none (an upload, an account query). A point may serve several (Runway's poll gives the outputs).
ROLES = ("submit", "poll", "result", "cancel")
HTTP_KINDS = ("http_429", "http_500", "http_502", "http_503", "http_504")
#: Kinds that spoil a JSON body; answers that are not JSON (files, Runway's upload form) skip them.
BODY_KINDS = frozenset({"malformed_json", "not_object"})
#: Kinds that spoil a response (as opposed to a task's outcome or an output URL).
RESPONSE_KINDS = frozenset({*HTTP_KINDS, "reset", "hang", "redirect", *BODY_KINDS})
KINDS = (*HTTP_KINDS, "reset", "hang", "malformed_json", "not_object", "redirect", "task_failed",
         "expired_url", "truncated", "gzip")

_HTTP_DETAIL = {"message": str, "retry_after": (str, int, float), "retry_after_ms": (str, int, float),
                "should_retry": (str, bool), "ingress": bool}
#: The settings each kind takes (a misspelt one must not silently do nothing), with their types.
DETAILS: dict[str, dict[str, Any]] = {
    **{kind: _HTTP_DETAIL for kind in HTTP_KINDS},
    "reset": {},
    "hang": {"seconds": (int, float)},
    "malformed_json": {},
    "not_object": {"value": (list, str, int, float, bool, type(None))},
    "redirect": {"status": int, "location": str},
    "task_failed": {"failure_code": str, "failure": str},
    "expired_url": {},
    "truncated": {"fraction": (int, float)},
    "gzip": {},
}
#: What a `not_object` answer is when not given: valid JSON, but not the object the client expects.
NOT_OBJECTS: tuple[Any, ...] = ([], "ok", None, 0)
REDIRECTS = (301, 302, 303, 307, 308)


@dataclass
class Fault:
    """One fault to apply; `detail` carries kind-specific settings (retry_after, seconds, ...)."""

    kind: str
    on: str
    count: int = 1
    model: str | None = None
    after_accept: bool = False
    detail: dict[str, Any] = field(default_factory=dict)

    def fate(self) -> tuple[str | None, str | None]:
        """(failure code, message) a `task_failed` fault gives its task; (None, None) for other kinds."""
        if self.kind != "task_failed":
            return None, None
        return str(self.detail.get("failure_code", "INTERNAL")), self.detail.get("failure")

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "on": self.on, "count": self.count, "model": self.model,
                "after_accept": self.after_accept, **self.detail}


class Points:
    """The fault points of the providers a simulator hosts, and which kinds can happen at each.

    Built from each provider simulator's `points` (`name -> roles`, named `<provider>.<name>`) plus
    `download`: a response can be spoilt anywhere, a body wherever it is JSON (not a download), a
    generation fated to fail where one is created (`submit`), an output URL expired where output
    URLs are handed out (`result`) or fetched.
    """

    def __init__(self, roles: Mapping[str, Collection[str]] | None = None):
        self.roles: dict[str, frozenset[str]] = {DOWNLOAD: frozenset()}
        for point, given in (roles or {}).items():
            unknown = set(given) - set(ROLES)
            if unknown:
                raise ValueError(f"fault point {point!r}: unknown role(s) {', '.join(sorted(unknown))}; roles: {', '.join(ROLES)}")
            self.roles[point] = frozenset(given)
        every = frozenset(self.roles)
        self.applies: dict[str, frozenset[str]] = {
            **{kind: every for kind in (*HTTP_KINDS, "reset", "hang", "redirect")},
            **{kind: every - {DOWNLOAD} for kind in BODY_KINDS},
            "task_failed": self.serving("submit"),
            "expired_url": self.serving("result") | {DOWNLOAD},
            "truncated": frozenset({DOWNLOAD}),
            "gzip": frozenset({DOWNLOAD}),
        }

    @classmethod
    def of(cls, simulators: Iterable[Any]) -> "Points":
        """The points of these provider simulators (`ProviderSim` classes) and `download`."""
        return cls({f"{sim.provider}.{name}": roles for sim in simulators for name, roles in sim.points.items()})

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.roles)

    def serving(self, role: str) -> frozenset[str]:
        """The points whose requests serve a role (`submit`: where generations are created)."""
        return frozenset(point for point, roles in self.roles.items() if role in roles)

    def check(self, kind: str, on: str, after_accept: bool = False) -> None:
        """Raise ValueError when a kind cannot happen at a point (a typo must not silently do nothing)."""
        if kind not in self.applies:
            raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(KINDS)}")
        if on not in self.roles:
            raise ValueError(f"unknown fault point {on!r}; known: {', '.join(self.names)}")
        if on not in self.applies[kind]:
            raise ValueError(f"fault {kind!r} cannot happen at {on!r}; it applies to {', '.join(sorted(self.applies[kind]))}")
        if after_accept and (on not in self.serving("submit") or kind not in RESPONSE_KINDS):
            raise ValueError(f"after_accept applies to response faults (http_*, reset, hang, malformed_json, not_object, "
                             f"redirect) where generations are created: {', '.join(sorted(self.serving('submit')))}")

    def check_rates(self, rates: Mapping[str, Mapping[str, float]], *, known_only: bool = False) -> None:
        """Validate a `faults` rate table: point (or "*") -> kind -> probability in [0, 1]. With
        `known_only`, points this table lacks are left to a table that has them (a config is read
        before the simulator knows which providers it hosts)."""
        for point, kinds in rates.items():
            for kind, rate in kinds.items():
                if point == "*" or (known_only and point not in self.roles):
                    if kind not in self.applies:
                        raise ValueError(f"faults.{point}: unknown fault kind {kind!r}; known: {', '.join(KINDS)}")
                else:
                    self.check(kind, point)
                if not 0 <= float(rate) <= 1:
                    raise ValueError(f"faults.{point}.{kind}: a rate is a probability in [0, 1], got {rate!r}")


def check_detail(kind: str, detail: Mapping[str, Any]) -> None:
    """Raise ValueError for a setting the kind does not take, or a value of the wrong type."""
    allowed = DETAILS[kind]
    for key, value in detail.items():
        if key not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise ValueError(f"fault {kind!r} takes no setting {key!r}; it takes: {known}")
        types = allowed[key] if isinstance(allowed[key], tuple) else (allowed[key],)
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):  # True is an int too
            raise ValueError(f"fault {kind!r}: {key}={value!r} has the wrong type")
    if kind == "redirect" and detail.get("status", 302) not in REDIRECTS:
        raise ValueError(f"fault 'redirect': status must be one of {', '.join(map(str, REDIRECTS))}")
    if isinstance(detail.get("should_retry"), str) and detail["should_retry"] not in ("true", "false"):
        raise ValueError("should_retry is sent as the x-should-retry header: 'true' or 'false'")


class FaultPlan:
    """Scripted faults waiting to fire, plus the configured rates."""

    def __init__(self, rates: Mapping[str, Mapping[str, float]], failure_codes: Collection[str], rng: random.Random,
                 details: Mapping[str, Mapping[str, Any]] | None = None, points: Points | None = None):
        self.points = points or Points()
        self.points.check_rates(rates)
        check_details(details or {})
        self._rates = {point: dict(kinds) for point, kinds in rates.items()}
        self._details = {kind: dict(detail) for kind, detail in (details or {}).items()}
        self._codes = list(failure_codes)
        self._rng = rng
        self._scripted: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, kind: str, *, on: str, count: int = 1, model: str | None = None,
            after_accept: bool = False, **detail: Any) -> Fault:
        self.points.check(kind, on, after_accept)
        check_detail(kind, detail)
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        fault = Fault(kind, on, count, model, after_accept, detail)
        with self._lock:
            self._scripted.append(fault)
        return fault

    def pending(self) -> list[dict[str, Any]]:
        """Scripted faults not yet fired (with the count still to go)."""
        with self._lock:
            return [fault.as_dict() for fault in self._scripted]

    def clear(self) -> None:
        with self._lock:
            self._scripted.clear()

    def draw(self, point: str, model_names: Collection[str] = (), kinds: Collection[str] | None = None) -> Fault | None:
        """The fault to apply to this request, if any; `kinds` limits it to those that make sense now."""
        with self._lock:
            for fault in self._scripted:
                if fault.on != point or (kinds is not None and fault.kind not in kinds):
                    continue
                if fault.model is not None and fault.model not in model_names:
                    continue
                fault.count -= 1
                if fault.count == 0:
                    self._scripted.remove(fault)
                return Fault(fault.kind, point, 1, fault.model, fault.after_accept, dict(fault.detail))
            for table in (self._rates.get(point, {}), self._rates.get("*", {})):
                for kind, rate in table.items():
                    if point not in self.points.applies[kind] or (kinds is not None and kind not in kinds):
                        continue
                    if rate and self._rng.random() < rate:
                        return Fault(kind, point, detail=self._drawn_detail(kind))
        return None

    def _drawn_detail(self, kind: str) -> dict[str, Any]:
        """A rate-drawn fault's settings: `fault_details` for its kind, the rest drawn (lock held)."""
        detail = dict(self._details.get(kind, {}))
        if kind == "task_failed" and "failure_code" not in detail:
            detail["failure_code"] = self._rng.choice(self._codes)
        if kind == "not_object" and "value" not in detail:
            detail["value"] = self._rng.choice(NOT_OBJECTS)
        return detail


def check_details(details: Mapping[str, Mapping[str, Any]]) -> None:
    """Validate `fault_details`: kind -> the settings rate-drawn faults of that kind get."""
    for kind, detail in details.items():
        if kind not in DETAILS:
            raise ValueError(f"fault_details: unknown fault kind {kind!r}; known: {', '.join(KINDS)}")
        if not isinstance(detail, Mapping):
            raise ValueError(f"fault_details.{kind}: expected a mapping of settings")
        check_detail(kind, detail)
