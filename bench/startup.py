"""Start-up: the CPU a 3-job dry run and `--help` cost, each the median of a few runs (after one to
warm the caches a user's second command finds warm: bytecode, the compiled manifests, the kept
composition and plan)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from bench.env import run, runner_argv

RUNS = 5
COMMANDS = {
    "dry_run_3_jobs": ("model=kling", "prompt_set=ads", "dry_run=true"),
    "help": ("--help",),
}


def measure(work: Path) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, args in COMMANDS.items():
        run(runner_argv(*args), cwd=work)
        runs = [run(runner_argv(*args), cwd=work) for _ in range(RUNS)]
        failed = [r for r in runs if r.returncode]
        results[name] = {"cpu_s": round(statistics.median(r.cpu_s for r in runs), 3),
                         "wall_s": round(statistics.median(r.wall_s for r in runs), 3),
                         **({"error": failed[0].stderr[-800:]} if failed else {})}
    return results
