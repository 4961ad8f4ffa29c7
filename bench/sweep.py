"""A mixed sweep, two Runway and two fal models in one `-m` command: the runner's launcher runs every
point's jobs in one engine, so both providers generate at once; Hydra's basic launcher runs the
points one after another, a process start and a drain of the slots each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import clients
from bench import sim as S
from bench.env import RUNWAY_MIN_POLL_S, run
from bench.workloads import MIXED_MODELS, outputs_done, prompt_file

PROMPTS, C = 20, 10


def measure(work: Path) -> dict[str, Any]:
    prompts = prompt_file(work, PROMPTS)
    results = {}
    for launcher in ("runner", "basic"):
        folder = work / launcher
        folder.mkdir(parents=True, exist_ok=True)
        with S.Sim(folder / "sim", S.config()) as sim:
            measured = run(*clients.runner(sim, C, RUNWAY_MIN_POLL_S, "-m", f"model={','.join(MIXED_MODELS)}",
                                           f"prompt_set.file={prompts}", f"hydra/launcher={launcher}"), cwd=folder)
            entries = sim.ledger()
        done, _ = outputs_done(folder)
        expected = PROMPTS * len(MIXED_MODELS)
        if measured.returncode != 0 or done != expected:
            results[launcher] = {"error": f"exit {measured.returncode}, {done} of {expected} clips; {measured.stderr[-800:]}"}
            continue
        results[launcher] = {"wall_s": round(measured.wall_s, 2), "cpu_s": round(measured.cpu_s, 2),
                             "submissions": len(entries), "billed_usd": S.billed(entries)}
    speedup = None
    if "wall_s" in results["runner"] and "wall_s" in results["basic"]:
        speedup = round(results["basic"]["wall_s"] / results["runner"]["wall_s"], 2)
    return {"models": list(MIXED_MODELS), "jobs": PROMPTS * len(MIXED_MODELS), "c_per_provider": C,
            "launchers": results, "speedup": speedup}
