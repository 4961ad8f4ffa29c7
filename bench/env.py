"""What every benchmark shares: where things are, the one time scale, and how a process is measured.

Every client (the runner and the official SDK loops) runs as its own process, started the same
way, and is measured the same way: wall time from just before it is started, and its own CPU time
(user + system) and peak RSS from the kernel when it is reaped (`os.wait4`), so neither the
simulator's work nor the benchmark's is counted against it.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: The runner as a user installs it, without the test tools (`make bench` builds .venv-run): their
#: dependencies would be measured too.
RUNNER_PYTHON = ROOT / ".venv-run" / "bin" / "python"
#: The official SDKs live in their own virtualenv (bench/requirements.txt): never the runner's deps.
PEER_PYTHON = ROOT / ".venv-bench" / "bin" / "python"
PY_SPY = ROOT / ".venv-bench" / "bin" / "py-spy"
RESULTS = ROOT / "bench" / "results.json"
DOC = ROOT / "docs" / "benchmarks.md"

#: One time scale for everyone: the simulator's clock runs SCALE times faster than the providers',
#: and every client's clock constant is divided by the same factor (Runway's 5 s poll floor is
#: 0.25 s; the runwayml SDK's 6 +/- 1.5 s poll sleep is 0.3 +/- 0.075 s). Generations the providers
#: take 60-100 s for take 3-5 s here.
SCALE = 20.0
LATENCY_S = (60.0, 100.0)  # provider seconds, before scaling
RUNWAY_MIN_POLL_S = 5.0 / SCALE
RUNWAY_SDK_POLL_S = (6.0 / SCALE, 3.0 / SCALE)  # runwayml.lib.polling.POLL_TIME, POLL_JITTER


@dataclass
class Measured:
    """One client process: its wall time, CPU time, peak memory, exit status and output."""

    started: float  # unix time just before the process was started
    wall_s: float
    cpu_s: float
    max_rss_mib: float
    returncode: int
    stdout: str = ""
    stderr: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ended(self) -> float:
        return self.started + self.wall_s


class Process:
    """A client started in the background; `wait()` reaps it with its own resource usage."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None, *, cwd: Path):
        full = {k: v for k, v in os.environ.items() if k not in ("RUNWAYML_API_SECRET", "FAL_KEY")}
        full.pop("PYTHONDONTWRITEBYTECODE", None)  # a user's installed runner has its bytecode cached
        full.update(env or {})
        self.out = tempfile.TemporaryFile("w+", dir=cwd)
        self.err = tempfile.TemporaryFile("w+", dir=cwd)
        self.started = time.time()
        self.clock = time.monotonic()
        self.proc = subprocess.Popen(argv, cwd=cwd, env=full, stdout=self.out, stderr=self.err, text=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def running(self) -> bool:
        """Whether it has not exited yet, without reaping it (`wait` reaps it, with its resource usage)."""
        return os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None

    def wait(self, timeout: float = 900.0) -> Measured:
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                self.proc.kill()
                pid, status, usage = os.wait4(self.proc.pid, 0)
                break
            time.sleep(0.01)
        wall = time.monotonic() - self.clock
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.out.seek(0)
        self.err.seek(0)
        measured = Measured(self.started, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024,
                            self.proc.returncode, self.out.read(), self.err.read())
        self.out.close()
        self.err.close()
        return measured


def run(argv: list[str], env: dict[str, str] | None = None, *, cwd: Path, timeout: float = 900.0) -> Measured:
    return Process(argv, env, cwd=cwd).wait(timeout)


def runner_argv(*overrides: str) -> list[str]:
    """`python -m runner ...` from the runner's own virtualenv, as a user runs it."""
    return [str(RUNNER_PYTHON), "-m", "runner", *overrides]


def interrupt(process: Process) -> None:
    process.signal(signal.SIGINT)


def machine() -> dict[str, Any]:
    """What the figures were measured on: they mean little without it."""
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor()
    peers = subprocess.run([str(PEER_PYTHON), "-c", "import json, importlib.metadata as m; "
                            "print(json.dumps({p: m.version(p) for p in ('runwayml', 'fal-client', 'httpx')}))"],
                           capture_output=True, text=True)
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": sys.version.split()[0],
        "runner": {p: metadata.version(p) for p in ("video-runner", "hydra-core", "httpx", "aiohttp", "sqlite-utils", "pydantic")},
        "peers": json.loads(peers.stdout) if peers.returncode == 0 else {"error": peers.stderr.strip()[-300:]},
        "time_scale": SCALE,
    }
