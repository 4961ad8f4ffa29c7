"""Zero-latency throughput: generations that finish the moment they are submitted, so all that is
measured is the client's own cost per job (submit, poll, download, bookkeeping). The runner and the
runwayml SDK loop, N=5,000 at C=100, with every poll delay at zero. The runner's run is sampled by
py-spy for the profile of what is still slow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import clients, profile
from bench import sim as S
from bench.env import RUNNER_PYTHON, Measured, Process, run
from bench.workloads import RUNWAY_MODEL, outputs_done, peer_jobs, prompt_file

N, C = 5000, 100


#: "Zero" poll interval: the smallest the runner accepts (it refuses 0, which would spin).
ZERO_POLL_S = 0.001


def measure(work: Path) -> dict[str, Any]:
    prompts = prompt_file(work, N)
    jobs = peer_jobs(prompts, RUNWAY_MODEL, work)
    runner_dir, sdk_dir = work / "runner", work / "sdk"
    runner_dir.mkdir(parents=True, exist_ok=True)
    sdk_dir.mkdir(parents=True, exist_ok=True)
    with S.Sim(runner_dir / "sim", S.config(latency=0.0)) as sim:
        process = Process(*clients.runner(sim, C, ZERO_POLL_S, f"model={RUNWAY_MODEL[0]}", f"prompt_set.file={prompts}",
                                          RUNWAY_MODEL[1]), cwd=runner_dir)
        samples = runner_dir / "py-spy.txt"
        spy = profile.attach(process.pid, samples)
        measured = process.wait()
        sampled = profile.collect(spy, samples)
        runner = _figures(measured, sim, runner_dir)
    with S.Sim(sdk_dir / "sim", S.config(latency=0.0)) as sim:
        sdk = _figures(run(*clients.sdk("runway", sim, jobs, sdk_dir / "outputs", C, poll=(0.0, 0.0)), cwd=sdk_dir), sim, sdk_dir)
    return {"n": N, "c": C, "clients": {"runner": runner, "runwayml SDK loop": sdk},
            "profile": sampled, "probe_cpu_ms_per_clip": _probe_cost(runner_dir)}


#: Reads one clip as the probe process does (its facts and its poster), PROBES times: CPU ms per clip.
PROBE = ("import resource, sys, tempfile; from pathlib import Path; from runner.probe import examine; "
         "clip = Path(tempfile.mkdtemp()) / 'sweep' / 'model' / 'clip.mp4'; clip.parent.mkdir(parents=True); "
         "clip.write_bytes(Path(sys.argv[1]).read_bytes()); n = int(sys.argv[2]); "
         "cpu = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2]); examine(clip, '{}', ''); start = cpu(); "
         "[examine(clip, '{}', '') for _ in range(n)]; print(round((cpu() - start) * 1000 / n, 3))")
PROBES = 200


def _probe_cost(folder: Path) -> float | None:
    """What probing costs per clip (in the runner's probe process, counted in its CPU per job)."""
    clip = next((p for p in folder.rglob("*.mp4") if p.is_file()), None)
    if clip is None:
        return None
    measured = run([str(RUNNER_PYTHON), "-c", PROBE, str(clip), str(PROBES)], cwd=folder)
    return float(measured.stdout.strip()) if measured.returncode == 0 else None


def _figures(measured: Measured, sim: S.Sim, folder: Path) -> dict[str, Any]:
    entries = sim.ledger()
    done, last_file = outputs_done(folder)
    first = S.first_submission(entries)
    if measured.returncode != 0 or done != N or first is None or last_file is None:
        return {"error": f"exit {measured.returncode}, {done} of {N} clips; {measured.stderr[-800:]}"}
    return {
        "jobs_per_s": round(N / (last_file - first), 1),
        "jobs_per_s_from_start": round(N / (last_file - measured.started), 1),
        "cpu_ms_per_job": round(measured.cpu_s * 1000 / N, 2),
        "cpu_s": round(measured.cpu_s, 2),
        "wall_s": round(measured.wall_s, 2),
        "max_rss_mib": round(measured.max_rss_mib, 1),
        "simulator_cpu_s": sim.stats()["server"]["cpu_s"],
    }
