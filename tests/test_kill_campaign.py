"""Crash campaigns: runners SIGKILLed at random moments of a faulty two-provider sweep, and three
runners sharing one sweep while one of them dies. What must hold: no generation paid twice for a
job whose task id was recorded, every output on disk once, an intact ledger, possible duplicates
counted tightly (every real orphan, and never a job whose request had not started), and the
providers' concurrency limits at every instant.

`RUNNER_SOAK_KILLS` sets the number of kills and `RUNNER_SOAK_REPEATS` the three-runner repetitions
(the suite: 20 and 4, to stay within its time; `make soak`: 200 and 10)."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess

import pytest

from runner.sim import SimConfig, Simulator
from tests.conftest import run_cli
from tests.helpers import (
    SimProcess,
    assert_complete,
    assert_no_paid_twice,
    ledger_path,
    ledger_rows,
    query,
    recorded_task_ids,
    sim_args,
    sim_env,
    start,
    states,
    wait_until,
)

KILLS = int(os.environ.get("RUNNER_SOAK_KILLS", "20"))
REPEATS = int(os.environ.get("RUNNER_SOAK_REPEATS", "4"))
FAULT_RATES = [
    "runway.create:http_500=0.03", "fal.submit:http_503=0.03", "runway.poll:http_503=0.05", "fal.status:http_500=0.05",
    "fal.result:http_502=0.08", "download:truncated=0.05", "download:expired_url=0.05", "*:reset=0.01",
]


def _lost_answers() -> list[dict]:
    """Submissions the provider accepts but whose answer never reaches the runner."""
    return [{"kind": "reset", "on": "runway.create", "after_accept": True},
            {"kind": "reset", "on": "fal.submit", "after_accept": True},
            {"kind": "hang", "on": "fal.submit", "after_accept": True, "seconds": 4}]


def _last_event_id(folder) -> int:
    try:
        return query(folder, "select coalesce(max(id), 0) as id from events")[0]["id"]
    except sqlite3.Error:
        return 0


def _claimed(folder) -> set[str]:
    try:
        return {row["key"] for row in query(folder, "select key from jobs where state = 'claimed'")}
    except sqlite3.Error:
        return set()


@pytest.mark.long
@pytest.mark.timeout(1800 + 10 * KILLS)  # a loaded machine starts each run slowly: wait on progress, not the clock
def test_kill_campaign_never_pays_twice_and_counts_orphans_tightly(tmp_path):
    rng = random.Random(20261123)
    flags = ["--latency", "0.3:1.2", "--pending", "0.05", "--concurrency", "runway=3", "--concurrency", "fal=3", "--seed", "7"]
    for rate in FAULT_RATES:
        flags += ["--fault", rate]
    with SimProcess(*flags) as sim:
        args = ["-m", "model=gen4_turbo,gen4.5,kling,hailuo", "prompt_set=animate", "replicates=8", "quiet=true",
                *sim_args(sim, timeout=2, runway=3, fal=3)]
        total = 4 * 2 * 8
        kills: list[tuple[int, set[str]]] = []  # (last event id at the kill, jobs claimed but not sent)
        for _ in range(KILLS):
            sim.inject(*_lost_answers())
            before = _last_event_id(tmp_path)
            proc = start(args, tmp_path, sim_env(sim))
            if rng.random() < 0.8:  # most kills while it works; the others during start-up and planning
                wait_until(lambda: _last_event_id(tmp_path) > before or proc.poll() is not None)
            try:
                proc.wait(timeout=rng.uniform(0.0, 3.0))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills.append((_last_event_id(tmp_path), _claimed(tmp_path)))
            proc.communicate()
        sim.clear_faults()
        for _ in range(8):  # the faults go on at their rates: a run may leave some to collect
            final = run_cli(*args, cwd=tmp_path, env=sim_env(sim), timeout=300)
            assert "Traceback" not in final.stderr, final.stderr
            if final.returncode == 0:
                break
        assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
        assert len(kills) >= min(KILLS, 10), "too few runs were still going when killed"

        conn = sqlite3.connect(ledger_path(tmp_path))
        assert conn.execute("pragma integrity_check").fetchone()[0] == "ok"
        conn.close()
        rows = assert_complete(tmp_path, total)
        orphans = assert_no_paid_twice(sim.ledger(), rows, tmp_path)
        recorded = recorded_task_ids(tmp_path)
        assert all(len(recorded[row["key"]]) == 1 for row in rows), "a job with a recorded task id was submitted again"
        assert sum(row["possible_duplicates"] for row in rows) >= orphans >= 1
        for after, claimed in kills:  # a claimed job had sent nothing: taken over, it is not ambiguous
            for key in claimed:
                events = query(tmp_path, "select to_state, detail from events where job_key = ? and id > ? order by id", (key, after))
                decisive = next(e for e in events if e["to_state"] == "planned" or "possible duplicate" in (e["detail"] or ""))
                assert decisive["to_state"] == "planned" and "before anything was sent" in decisive["detail"], (key, events)


@pytest.mark.parametrize("repetition", range(REPEATS))
def test_three_runners_one_killed_keep_the_limits_and_finish(tmp_path, repetition):
    rng = random.Random(repetition)
    with Simulator(SimConfig(latency={"default": {"min": 0.3, "max": 0.8}}, pending_s=0.05, seed=repetition)) as sim:
        args = ["-m", "model=gen4_turbo,hailuo", "prompt_set=animate", "replicates=4", "quiet=true", *sim_args(sim, runway=2, fal=2)]
        runners = [start(args, tmp_path, sim_env(sim)) for _ in range(3)]
        victim = runners[rng.randrange(3)]
        wait_until(lambda: states(tmp_path)["submitted"] >= 1 or victim.poll() is not None)
        try:
            victim.wait(timeout=rng.uniform(0.0, 1.5))
        except subprocess.TimeoutExpired:
            victim.send_signal(signal.SIGKILL)
        outputs = {id(p): p.communicate(timeout=300) for p in runners}
        for proc in runners:
            if proc is not victim:
                out, err = outputs[id(proc)]
                assert proc.returncode == 0, out[-2000:] + err[-2000:]
        rows = assert_complete(tmp_path, 16)
        stats = sim.stats()["providers"]
        assert stats["runway"]["max_in_flight"] <= 2 and stats["fal"]["max_in_flight"] <= 2, stats
        assert_no_paid_twice(sim.ledger(), rows, tmp_path)
        assert len({row["task_id"] for row in ledger_rows(tmp_path)}) == 16
