"""100,000 jobs (10,000 prompts x 2 durations x 5 replicates): planning alone; planning, recording
and the first submission; event-loop lag with up to 2,000 generations in flight; Ctrl-C to exit;
the ledger's size; a rerun with nothing left to do; a rerun with 1% left, to its first submission.

Generating 100,000 clips through the simulator would take longer than the whole benchmark may, so
the reruns start from a ledger whose jobs were set to `downloaded` (and 1% back to `planned`) by
SQL: what they measure is the rerun's own work over a ledger of that size.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from bench import clients, profile
from bench import sim as S
from bench.env import RUNNER_PYTHON, RUNWAY_MIN_POLL_S, Process, interrupt, run, runner_argv
from bench.workloads import RUNWAY_MODEL, prompt_file

PROMPTS, DURATIONS, REPLICATES = 10_000, (5, 10), 5
JOBS = PROMPTS * len(DURATIONS) * REPLICATES
IN_FLIGHT = 2000
#: Long enough that the tasks submitted stay in flight until the interrupt.
LATENCY_S = 20 * 60.0
WAIT_S = 40.0  # at most, after the first submission, for the in-flight count to reach IN_FLIGHT


def measure(work: Path) -> dict[str, Any]:
    prompts = prompt_file(work, PROMPTS)
    sweep = [f"model={RUNWAY_MODEL[0]}", f"prompt_set.file={prompts}", f"sweep.duration=[{','.join(map(str, DURATIONS))}]",
             f"replicates={REPLICATES}", f"max_jobs={JOBS}"]
    results: dict[str, Any] = {"jobs": JOBS}
    dry = run(runner_argv(*sweep, "dry_run=true", "quiet=true"), cwd=work)
    results["dry_run"] = {"wall_s": round(dry.wall_s, 2), "cpu_s": round(dry.cpu_s, 2), "max_rss_mib": round(dry.max_rss_mib, 1),
                          **({"error": dry.stderr[-800:]} if dry.returncode else {})}
    with S.Sim(work / "sim", S.config(latency=LATENCY_S)) as sim:
        results["first_run"] = _first_run(work, sim, clients.runner(sim, IN_FLIGHT, RUNWAY_MIN_POLL_S, *sweep,
                                                                    lag_probe=work / "lag.json"))
        argv, env = clients.runner(sim, IN_FLIGHT, RUNWAY_MIN_POLL_S, *sweep)
        db = work / ".runner" / "ledger.db"
        # The interrupted run was still recording the sweep's later jobs: the rest goes in as the
        # runner's next run would put it, so the reruns below start from the whole sweep.
        results["recorded_at_interrupt"] = _linked(db)
        whole = run([str(RUNNER_PYTHON), "-c", RECORD, str(db), *sweep], cwd=work)
        if whole.returncode:
            raise RuntimeError(f"recording the rest of the sweep failed: {whole.stderr[-800:]}")
        results["ledger_mib"] = round(sum(p.stat().st_size for p in db.parent.glob("ledger.db*")) / 2**20, 1)
        _set_states(db, "downloaded", every=1, output=work / "outputs" / "bench" / "clip.mp4")
        # The interrupted run left the 100,000-job gallery to the next: written here, and timed, so
        # the no-op rerun measures a rerun's own work.
        gallery = run([str(RUNNER_PYTHON), "-m", "runner.cli", "gallery"], cwd=work)
        results["gallery"] = {"wall_s": round(gallery.wall_s, 2), "cpu_s": round(gallery.cpu_s, 2), "returncode": gallery.returncode,
                              **({"error": gallery.stderr[-800:]} if gallery.returncode else {})}
        before = sim.stats()["providers"]["runway"]["submitted"]
        samples = work / "noop-py-spy.txt"
        noop = Process(argv, env, cwd=work)
        spy = profile.attach(noop.pid, samples, rate=100)
        rerun = noop.wait()
        results["noop_rerun"] = {"wall_s": round(rerun.wall_s, 2), "cpu_s": round(rerun.cpu_s, 2),
                                 "max_rss_mib": round(rerun.max_rss_mib, 1), "returncode": rerun.returncode,
                                 "submitted": sim.stats()["providers"]["runway"]["submitted"] - before,
                                 "profile": profile.collect(spy, samples, top=12)}
        _set_states(db, "planned", every=100)
        results["one_percent_rerun"] = _to_first_submission(work, sim, argv, env)
    return results


def _first_run(work: Path, sim: S.Sim, command: clients.Command) -> dict[str, Any]:
    """Profiled twice: up to the first submission (planning, recording, the engine's start), then
    while it runs, up to the interrupt and the exit."""
    lag_file = work / "lag.json"
    process = Process(*command, cwd=work)
    spy = profile.attach(process.pid, work / "start-py-spy.txt")
    started_profile = running_profile = None
    first = None
    while process.running() and time.monotonic() - process.clock < WAIT_S + 120:
        runway = sim.stats()["providers"].get("runway", {})
        if first is None and runway.get("submitted"):
            first = time.monotonic() - process.clock
            started_profile = profile.collect(spy, work / "start-py-spy.txt", top=12, now=True)
            spy = profile.attach(process.pid, work / "running-py-spy.txt")
        if first is not None and (runway.get("in_flight", 0) >= IN_FLIGHT or time.monotonic() - process.clock > first + WAIT_S):
            break
        time.sleep(0.1)
    interrupted = time.monotonic()
    interrupt(process)
    measured = process.wait(timeout=300)
    exited = time.monotonic()
    running_profile = profile.collect(spy, work / "running-py-spy.txt", top=12)
    entries = sim.ledger()
    runway = sim.stats()["providers"]["runway"]
    return {
        "first_submission_s": round(S.first_submission(entries) - measured.started, 2) if entries else None,
        "ctrl_c_to_exit_s": round(exited - interrupted, 2),
        "running_s": round(interrupted - process.clock - (first or 0), 1),
        "max_in_flight": runway["max_in_flight"],
        "submitted": runway["submitted"],
        "event_loop_lag": json.loads(lag_file.read_text()) if lag_file.exists() else None,
        "cpu_s": round(measured.cpu_s, 2),
        "max_rss_mib": round(measured.max_rss_mib, 1),
        "returncode": measured.returncode,
        "profile_to_first_submission": started_profile,
        "profile_running": running_profile,
    }


def _to_first_submission(work: Path, sim: S.Sim, argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    before = sim.stats()["providers"]["runway"]["submitted"]
    process = Process(argv, env, cwd=work)
    while process.running() and sim.stats()["providers"]["runway"]["submitted"] == before:
        time.sleep(0.05)
    seen = time.monotonic()
    interrupt(process)
    measured = process.wait(timeout=300)
    entries = sorted(e["time"] for e in sim.ledger())
    first_new = entries[before] if len(entries) > before else None
    return {"first_submission_s": round(first_new - measured.started, 2) if first_new else None,
            "ctrl_c_to_exit_s": round(time.monotonic() - seen, 2), "cpu_s": round(measured.cpu_s, 2),
            "returncode": measured.returncode}


#: The plan of the overrides given, recorded whole into the ledger given (runner.recording, as a run does).
RECORD = ("import sys; from runner import app, recording, store; plan = app.plan(sys.argv[2:]); conn = store.open_ledger(sys.argv[1]); "
          "conn.execute('BEGIN IMMEDIATE'); recording.record_plan(conn, plan, {}); conn.execute('COMMIT')")


def _linked(db: Path) -> int:
    conn = sqlite3.connect(db, timeout=60)
    try:
        return conn.execute("select count(*) from sweep_jobs").fetchone()[0]
    finally:
        conn.close()


def _set_states(db: Path, state: str, every: int, output: Path | None = None) -> None:
    """Every job (or every `every`-th) to `state`, holding no slot and owned by no process; with
    `output`, each with that file as its clip (one file on disk stands for all of them)."""
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_bytes(b"\0" * 1024)
    conn = sqlite3.connect(db, timeout=60)
    with conn:
        conn.execute("update jobs set state = ?, holds_slot = 0, owner = null, task_id = null, "
                     "output_path = coalesce(?, case when ? = 'planned' then null else output_path end) where rowid % ? = 0",
                     [state, None if output is None else str(output), state, every])
    conn.close()
