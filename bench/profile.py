"""py-spy's raw samples (one line per distinct stack: `frame;frame;... count`) summarised as the
share of CPU samples per function: inclusive (the function or anything it calls) and self."""

from __future__ import annotations

import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from bench.env import PY_SPY

TOP = 25
#: Frames every sample of a run passes through (the command line, Hydra, the event loop): their
#: inclusive share says nothing.
ENTRY = ("runner/__main__.py", "runner/app.py", "runner/run.py", "hydra/", "asyncio/runners.py", "asyncio/base_events.py",
         "asyncio/events.py", "threading.py:Thread._bootstrap", "<frozen", "bench/")


def attach(pid: int, out: Path, rate: int = 50) -> subprocess.Popen:
    """py-spy sampling a running process until it exits: without pausing it (--nonblocking), and
    only the thread holding the GIL (--gil), so a thread asleep in a wait does not count as busy."""
    return subprocess.Popen([str(PY_SPY), "record", "--pid", str(pid), "--nonblocking", "--gil", "--rate", str(rate),
                             "--format", "raw", "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def collect(spy: subprocess.Popen, out: Path, top: int = TOP, now: bool = False) -> dict[str, Any] | None:
    """The summary of an attached sampler's profile: once the process it watches has ended, or at
    once (`now`: py-spy stops on SIGINT and writes what it sampled so far)."""
    if now:
        spy.send_signal(signal.SIGINT)
    try:
        spy.wait(timeout=120)
    except subprocess.TimeoutExpired:
        spy.kill()
    return summary(out, top) if out.exists() else None


def summary(path: Path, top: int = TOP) -> dict[str, Any]:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_name(frame) for frame in stack.split(";") if frame]
        for name in set(frames):
            inclusive[name] += n
        if frames:
            own[frames[-1]] += n
            packages[_package(frames[-1])] += n
    if not total:
        return {"samples": 0}

    def share(counter: Counter[str], skip: tuple[str, ...] = ()) -> list[list[Any]]:
        kept = [(name, n) for name, n in counter.most_common() if not name.startswith(skip)]
        return [[name, round(100 * n / total, 1)] for name, n in kept[:top]]

    return {"samples": total, "inclusive_pct": share(inclusive, ENTRY), "self_pct": share(own),
            "by_package_pct": share(packages)}


def _name(frame: str) -> str:
    """`function (path/file.py:123)` -> `path/file.py:function`."""
    function, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0].rstrip(")")
    return f"{file}:{function}" if file else function


def _package(name: str) -> str:
    file = name.split(":", 1)[0]
    if file.startswith("<frozen"):
        return "python (import machinery)"
    head = file.split("/", 1)[0]
    return head.removesuffix(".py") if head else "?"
