"""The bundled simulator as the benchmarks use it: its own process, one per measurement (so every
client meets the same seeded latency draws, in submission order), and the figures only it knows:
when each task was accepted, started and ended, and how many requests of each kind it answered."""

from __future__ import annotations

import heapq
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx

from bench.env import LATENCY_S, RUNNER_PYTHON, SCALE


def config(latency: tuple[float, float] | float = LATENCY_S, seed: int = 0, **more: Any) -> dict[str, Any]:
    """A simulator config on the bench's time scale: latencies in provider seconds, sped up."""
    low, high = latency if isinstance(latency, tuple) else (latency, latency)
    return {"seed": seed, "speed": SCALE, "latency": {"default": {"min": low, "max": high}},
            "pending_s": 1.0 if high else 0.0, **more}


class Sim:
    """`python -m runner.sim` on a free loopback port with a config file."""

    def __init__(self, folder: Path, settings: dict[str, Any]):
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "sim.json"
        path.write_text(json.dumps(settings))
        self.log = (folder / "sim.log").open("w")
        self.proc = subprocess.Popen([str(RUNNER_PYTHON), "-m", "runner.sim", "--port", "0", "--config", str(path)],
                                     stdout=subprocess.PIPE, stderr=self.log, text=True)
        assert self.proc.stdout is not None
        head = [self.proc.stdout.readline() for _ in range(3)]
        found = re.search(r"on (http://127\.0\.0\.1:\d+)", head[0])
        if not found:
            raise RuntimeError(f"the simulator did not start: {''.join(head)}")
        self.base_url = found[1]
        self.runway_url, self.fal_url = f"{self.base_url}/runway", f"{self.base_url}/fal"
        self.keys = {m[1].lower(): m[2] for line in head[1:] if (m := re.search(r"(Runway|fal)\s+\S+\s+key (\S+)", line))}
        self.http = httpx.Client(timeout=120)

    def env(self) -> dict[str, str]:
        """The variables the runner and both SDKs read their keys from."""
        return {"RUNWAYML_API_SECRET": self.keys["runway"], "FAL_KEY": self.keys["fal"]}

    def runner_overrides(self, concurrency: int, poll_s: float) -> list[str]:
        return [f"providers.runway.base_url={self.runway_url}", f"providers.fal.base_url={self.fal_url}",
                f"providers.runway.concurrency={concurrency}", f"providers.fal.concurrency={concurrency}",
                f"providers.runway.min_poll_interval_s={poll_s}", f"providers.fal.min_poll_interval_s={poll_s}"]

    def ledger(self) -> list[dict[str, Any]]:
        return self.http.get(f"{self.base_url}/_sim/ledger").json()

    def stats(self) -> dict[str, Any]:
        return self.http.get(f"{self.base_url}/_sim/stats").json()

    def requests(self, route: str) -> int:
        return sum(p["requests"].get(route, 0) for p in self.stats()["providers"].values())

    def stop(self) -> None:
        self.http.close()
        self.proc.terminate()
        self.proc.communicate(timeout=60)
        self.log.close()

    def __enter__(self) -> "Sim":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def first_submission(entries: list[dict[str, Any]]) -> float | None:
    return min((e["time"] for e in entries), default=None)


def billed(entries: list[dict[str, Any]]) -> float:
    """Dollars the simulator billed (succeeded tasks at the price list)."""
    return round(sum(float(e["billed_usd"] or 0) for e in entries), 2)


def exact_bound(entries: list[dict[str, Any]], slots: int) -> float:
    """The shortest makespan any client could reach: the simulator's own time for each task
    (accepted to done), list-scheduled in submission order on `slots` slots from time zero.
    Network, polling and downloads are all client overhead above it."""
    durations = [e["ended"] - e["started"] for e in sorted(entries, key=lambda e: e["time"]) if e["ended"] is not None]
    free = [0.0] * slots
    end = 0.0
    for duration in durations:
        start = heapq.heappop(free)
        end = max(end, start + duration)
        heapq.heappush(free, start + duration)
    return end
