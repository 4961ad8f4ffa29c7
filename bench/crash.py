"""The cost of a crash: a sweep SIGKILLed once half its clips are on disk, then finished. The runner
finishes with a plain rerun (done jobs skipped, submitted ones collected); the SDK loop, a script
with no record of what it sent, can only start again, and pays again for everything it had sent."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any, Callable

from bench import clients
from bench import sim as S
from bench.env import RUNWAY_MIN_POLL_S, Measured, Process
from bench.workloads import RUNWAY_MODEL, outputs_done, peer_jobs, prompt_file

N, C = 100, 20


def measure(work: Path) -> dict[str, Any]:
    prompts = prompt_file(work, N)
    jobs = peer_jobs(prompts, RUNWAY_MODEL, work)

    def runner(sim: S.Sim, folder: Path) -> Process:
        return Process(*clients.runner(sim, C, RUNWAY_MIN_POLL_S, f"model={RUNWAY_MODEL[0]}", f"prompt_set.file={prompts}",
                                       RUNWAY_MODEL[1]), cwd=folder)

    def sdk(sim: S.Sim, folder: Path) -> Process:
        return Process(*clients.sdk("runway", sim, jobs, folder / "outputs", C), cwd=folder)

    return {"n": N, "c": C, "clients": {"runner (rerun)": _crash(work / "runner", runner),
                                        "runwayml SDK loop (start again)": _crash(work / "sdk", sdk)}}


def _crash(folder: Path, start: Callable[[S.Sim, Path], Process]) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    with S.Sim(folder / "sim", S.config()) as sim:
        first = start(sim, folder)
        while outputs_done(folder)[0] < N // 2 and first.running():
            time.sleep(0.05)
        first.signal(signal.SIGKILL)
        killed: Measured = first.wait()
        finish = start(sim, folder).wait()  # the same command in the same folder
        entries = sim.ledger()
    done, last_file = outputs_done(folder / "outputs")
    price = float(entries[0]["estimated_usd"]) if entries else 0.0
    if finish.returncode != 0 or done != N or last_file is None:
        return {"error": f"exit {finish.returncode}, {done} of {N} clips; {finish.stderr[-800:]}"}
    return {
        "killed_after_s": round(killed.wall_s, 2),
        "finish_s": round(finish.wall_s, 2),
        "total_s": round(last_file - killed.started, 2),
        "submissions": len(entries),
        "billed_usd": S.billed(entries),
        "ideal_usd": round(price * N, 2),
        "paid_twice_usd": round(S.billed(entries) - price * N, 2),
    }
