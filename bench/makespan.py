"""Makespan against the exact bound, N=200 and C=20: the runner and each provider's official SDK
loop on the same seeded simulator, each from its process start and from its first submission to
its last file, with the status calls each made per job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import clients
from bench import sim as S
from bench.env import RUNWAY_MIN_POLL_S, Measured, run
from bench.workloads import FAL_MODEL, RUNWAY_MODEL, outputs_done, peer_jobs, prompt_file

N, C = 200, 20
#: A status request: a poll, or (fal) a status stream, which follows a task to its end in one.
STATUS_ROUTES = {"runway": ("runway.poll",), "fal": ("fal.status", "fal.stream")}


def measure(work: Path) -> dict[str, Any]:
    prompts = prompt_file(work, N)
    results = {}
    for provider, model in (("runway", RUNWAY_MODEL), ("fal", FAL_MODEL)):
        jobs = peer_jobs(prompts, model, work)
        results[f"runner ({provider})"] = _one(work / f"runner-{provider}", provider, lambda sim, folder: run(
            *clients.runner(sim, C, RUNWAY_MIN_POLL_S, f"model={model[0]}", f"prompt_set.file={prompts}", model[1]), cwd=folder))
        peer = "runwayml SDK loop" if provider == "runway" else "fal-client loop"
        results[peer] = _one(work / f"sdk-{provider}", provider, lambda sim, folder: run(
            *clients.sdk(provider, sim, jobs, folder / "outputs", C), cwd=folder))
    return {"n": N, "c": C, "clients": results}


def _one(folder: Path, provider: str, client: Any) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    with S.Sim(folder / "sim", S.config()) as sim:
        measured: Measured = client(sim, folder)
        entries = sim.ledger()
        status_calls = sum(sim.requests(route) for route in STATUS_ROUTES[provider])
    done, last_file = outputs_done(folder)
    first = S.first_submission(entries)
    bound = S.exact_bound(entries, C)
    if measured.returncode != 0 or done != N or first is None or last_file is None:
        return {"error": f"exit {measured.returncode}, {done} of {N} clips; {measured.stderr[-800:]}"}
    return {
        "first_submission_s": round(first - measured.started, 3),
        "makespan_from_start_s": round(last_file - measured.started, 3),
        "makespan_from_first_submission_s": round(last_file - first, 3),
        "exact_bound_s": round(bound, 3),
        "ratio_from_start": round((last_file - measured.started) / bound, 3),
        "ratio_from_first_submission": round((last_file - first) / bound, 3),
        "status_calls_per_job": round(status_calls / N, 2),
        "submissions": len(entries),
        "billed_usd": S.billed(entries),
        "cpu_s": round(measured.cpu_s, 2),
        "wall_s": round(measured.wall_s, 2),
        "max_rss_mib": round(measured.max_rss_mib, 1),
    }
