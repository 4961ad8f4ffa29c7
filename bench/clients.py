"""The command lines of the clients compared: the runner, and the official SDKs' loops over the same
requests, each pointed at one simulator with its keys."""

from __future__ import annotations

from pathlib import Path

from bench.env import PEER_PYTHON, ROOT, RUNNER_PYTHON, RUNWAY_SDK_POLL_S, runner_argv
from bench.sim import Sim

Command = tuple[list[str], dict[str, str]]  # argv, environment


def runner(sim: Sim, concurrency: int, poll_s: float, *overrides: str, lag_probe: Path | None = None) -> Command:
    """`python -m runner <overrides>` against the simulator, quiet (no progress display); with
    `lag_probe`, through bench.lagprobe, which writes the event loop's lag to that file."""
    # yes=true: the simulator's prices are for show, so the spending question is answered up front.
    args = [*overrides, "quiet=true", "yes=true", *sim.runner_overrides(concurrency, poll_s)]
    if lag_probe is None:
        return runner_argv(*args), sim.env()
    return [str(RUNNER_PYTHON), "-m", "bench.lagprobe", str(lag_probe), *args], {**sim.env(), "PYTHONPATH": str(ROOT)}


def sdk(provider: str, sim: Sim, jobs: Path, out: Path, concurrency: int,
        poll: tuple[float, float] = RUNWAY_SDK_POLL_S) -> Command:
    """The runwayml loop (its poll sleep given) or the fal-client loop, over a file of requests."""
    peers = ROOT / "bench" / "peers"
    if provider == "runway":
        argv = [str(PEER_PYTHON), str(peers / "runway_loop.py"), str(jobs), str(concurrency), str(out), *map(str, poll)]
        return argv, {**sim.env(), "RUNWAYML_BASE_URL": sim.runway_url}
    return [str(PEER_PYTHON), str(peers / "fal_loop.py"), str(jobs), str(concurrency), str(out), sim.fal_url], sim.env()
