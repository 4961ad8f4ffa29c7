"""Request counts and the simulator's own time per request.

Benchmarks of the runner run against the simulator; these numbers show that the simulator is not
what they measure. Each request is timed twice: wall time from parsed request to sent response
(`mean_ms`, which includes waiting for other threads under load) and the handling thread's own CPU
time (`cpu_mean_ms`, the simulator's intrinsic cost). Deliberate waits (a `hang` fault, an open
event stream) are counted but not timed, so they do not inflate the means.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Any


@dataclass
class _Timing:
    count: int = 0
    timed: int = 0
    total_s: float = 0.0
    max_s: float = 0.0
    cpu_s: float = 0.0

    def add(self, timing: tuple[float, float] | None) -> None:
        self.count += 1
        if timing is not None:
            seconds, cpu = timing
            self.timed += 1
            self.total_s += seconds
            self.max_s = max(self.max_s, seconds)
            self.cpu_s += cpu

    def as_dict(self) -> dict[str, Any]:
        timed = self.timed or 1
        return {"requests": self.count, "timed": self.timed, "total_s": round(self.total_s, 6),
                "mean_ms": round(self.total_s / timed * 1000, 4), "max_ms": round(self.max_s * 1000, 4),
                "cpu_s": round(self.cpu_s, 6), "cpu_mean_ms": round(self.cpu_s / timed * 1000, 4)}


class RequestStats:
    """Per route (`runway.poll`, `download`, ...) and per model; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._all = _Timing()
        self._routes: dict[str, _Timing] = defaultdict(_Timing)
        self._by_model: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def record(self, route: str, model: str | None, timing: tuple[float, float] | None) -> None:
        """Count a request; `timing` is (wall seconds, CPU seconds), None for a deliberate wait."""
        with self._lock:
            self._all.add(timing)
            self._routes[route].add(timing)
            if model is not None:
                self._by_model[model][route] += 1

    def server(self) -> dict[str, Any]:
        """Overall and per-route counts and server-side times."""
        with self._lock:
            return {**self._all.as_dict(), "routes": {route: t.as_dict() for route, t in sorted(self._routes.items())}}

    def per_model(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {model: dict(routes) for model, routes in self._by_model.items()}
