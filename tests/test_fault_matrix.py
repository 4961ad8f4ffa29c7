"""The fault matrix: every fault the simulator can inject, at every point it applies to, and the
faults of the machine itself (a full disk, a read-only outputs folder, a ledger locked by another
process, an input file deleted after planning). Each case ends "retried and succeeded" or "a clear
error, nothing paid for lost": never a traceback or a hang, and a rerun generates no job twice."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from runner import store as S
from runner.sim import SimConfig, Simulator
from tests.conftest import run_cli
from tests.helpers import (
    assert_complete, assert_no_paid_twice, ledger_path, ledger_rows, query, recorded_task_ids, sim_args, sim_env, start,
    states, wait_until,
)

JOBS = 4  # gen4_turbo and hailuo x the two prompts of `animate`
ARGS = ["-m", "model=gen4_turbo,hailuo", "prompt_set=animate", "quiet=true"]

#: (fault kind, the points it is injected at, details): every point the kind applies to.
KINDS = {
    "http_429": (["runway.create", "runway.poll", "fal.submit", "fal.status", "fal.stream", "fal.result", "download"], {"retry_after": 1}),
    "http_429 garbled Retry-After": (["runway.create", "fal.submit", "runway.poll"], {"retry_after": "soon"}),
    "http_500": (["runway.create", "runway.poll", "fal.submit", "fal.status", "fal.stream", "fal.result", "download"], {}),
    "http_502": (["runway.poll", "fal.result", "download"], {}),
    "http_503": (["runway.create", "fal.submit", "fal.status", "fal.stream"], {}),
    "http_504": (["runway.poll", "fal.result", "download"], {}),
    "reset": (["runway.create", "runway.poll", "fal.submit", "fal.status", "fal.stream", "fal.result", "download"], {}),
    "hang": (["runway.create", "runway.poll", "fal.status", "fal.stream", "fal.result", "download"], {"seconds": 3}),
    "malformed_json": (["runway.create", "runway.poll", "fal.submit", "fal.status", "fal.stream", "fal.result"], {}),
    "expired_url": (["runway.poll", "fal.result", "download"], {}),
    "truncated": (["download"], {"fraction": 0.4}),
    "not_object": (["runway.create", "runway.poll", "fal.submit", "fal.status", "fal.stream", "fal.result"], {}),
    "redirect": (["runway.poll", "fal.status", "fal.stream", "fal.result", "download"], {}),
    "gzip": (["download"], {}),
}


def _run(sim, folder: Path, *extra: str, timeout: float = 240) -> subprocess.CompletedProcess:
    result = run_cli(*ARGS, *sim_args(sim, timeout=1.5), *extra, cwd=folder, env=sim_env(sim), timeout=timeout)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode in (0, 1), result.stdout[-2000:] + result.stderr[-2000:]
    return result


def _settles(sim, folder: Path, *extra: str) -> None:
    """Whatever the first run left (paid and not collected, at the provider, to retry) a plain rerun
    finishes, and no job was generated twice."""
    if any(state != "downloaded" for state in states(folder)):
        sim.clear_faults()
        again = _run(sim, folder, *extra)
        assert again.returncode == 0, again.stdout[-2000:]
    rows = assert_complete(folder, JOBS)
    assert_no_paid_twice(sim.ledger(), rows, folder)
    assert all(len(tasks) == 1 for tasks in recorded_task_ids(folder).values())


@pytest.mark.parametrize("case", list(KINDS))
def test_each_fault_kind_at_every_point_it_applies_to(tmp_path, sim, case):
    kind = case.split(" ")[0]
    points, detail = KINDS[case]
    for point in points:
        sim.inject(kind, on=point, **detail)
    result = _run(sim, tmp_path)
    if result.returncode:
        assert "to carry on (nothing paid for is paid again), run the same command" in result.stdout, result.stdout
    assert not [r for r in ledger_rows(tmp_path) if r["state"] in ("lost", "failed")], result.stdout
    _settles(sim, tmp_path)


@pytest.mark.parametrize("point", ["runway.create", "fal.submit"])
@pytest.mark.parametrize("kind", ["http_503", "reset", "hang", "malformed_json", "not_object", "redirect"])
def test_a_lost_answer_to_an_accepted_submission(tmp_path, sim, point, kind):
    # Runway keeps no request history: the lost answer is counted once as a possible duplicate. fal
    # lists its requests: the runner finds the one it sent and adopts it, paying for nothing twice.
    sim.inject(kind, on=point, after_accept=True, **({"seconds": 3} if kind == "hang" else {}))
    result = _run(sim, tmp_path)
    refused = kind == "redirect" and point == "runway.create"
    if refused:  # a 3xx is an error, not a success: the job fails, its possible charge counted
        assert result.returncode == 1 and "unexpected redirect" in result.stdout, result.stdout
        rows = ledger_rows(tmp_path)
    else:
        assert result.returncode == 0, result.stdout
        rows = assert_complete(tmp_path, JOBS)
    if point == "runway.create":
        assert "possible duplicate charges: 1 submission(s)" in result.stdout
    else:
        assert "possible duplicate charges" not in result.stdout and sum(r["possible_duplicates"] for r in rows) == 0
        found = query(tmp_path, "select detail from events where detail like '%found in the provider''s request history'")
        assert len(found) == 1, result.stdout
    if not refused:
        assert assert_no_paid_twice(sim.ledger(), rows, tmp_path) == (1 if point == "runway.create" else 0)


def test_failed_generations_retry_or_fail_with_the_providers_reason(tmp_path, sim):
    sim.inject("task_failed", on="runway.create", failure_code="INTERNAL")
    sim.inject("task_failed", on="fal.submit", failure_code="SAFETY.INPUT.IMAGE", count=2)
    result = _run(sim, tmp_path)
    rows = ledger_rows(tmp_path)
    assert [r["attempts"] for r in rows if r["provider"] == "runway" and r["attempts"] == 2]  # retried: a new generation
    refused = [r for r in rows if r["state"] == "failed"]
    assert len(refused) == 2 and all(r["error_class"] == "permanent" and "moderation" in r["error"] for r in refused)
    assert result.returncode == 1 and "failed " in result.stdout
    again = _run(sim, tmp_path)  # a plain rerun does not pay again for what failed for good
    assert again.returncode == 1 and len(sim.ledger()) == 5


# -- the machine's own faults ------------------------------------------------------------------------


@contextmanager
def _tmpfs(folder: Path, size: str):
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a small filesystem here (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_a_full_disk_stops_the_run_and_keeps_every_task_id(tmp_path, sim):
    with _tmpfs(tmp_path / "small", "12k") as small:
        result = run_cli(*ARGS, *sim_args(sim), f"outputs_dir={small}", cwd=tmp_path, env=sim_env(sim), timeout=240)
    assert result.returncode == 3 and "Traceback" not in result.stderr, result.stderr
    assert "cannot write" in result.stderr and "run the same command to collect" in result.stderr
    task_ids = {r["task_id"] for r in ledger_rows(tmp_path) if r["task_id"]}
    assert task_ids and len(sim.ledger()) == len(task_ids)  # what was accepted is in the ledger
    again = _run(sim, tmp_path, f"outputs_dir={tmp_path / 'outputs'}")
    assert again.returncode == 0, again.stdout
    _settles(sim, tmp_path)


def test_an_unwritable_outputs_folder_is_refused_before_anything_is_sent(tmp_path, sim):
    with _tmpfs(tmp_path / "ro", "1m") as folder:
        # A remount fails (EBUSY) while the runner holds a file open for writing: try again, bounded.
        wait_until(lambda: subprocess.run(["mount", "-o", "remount,ro", str(folder)], capture_output=True).returncode == 0)
        result = run_cli(*ARGS, *sim_args(sim), f"outputs_dir={folder}", cwd=tmp_path, env=sim_env(sim))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"outputs_dir={folder} cannot be written (from the command line): {folder} is not writable (Read-only file system)" in result.stderr
    assert sim.ledger() == []


@pytest.mark.long
def test_outputs_turned_read_only_mid_run_stop_it_cleanly(tmp_path):
    # Long enough generations that the run cannot finish before the test turns the folder read-only,
    # however loaded the machine.
    with Simulator(SimConfig(latency={"default": {"min": 1.0, "max": 1.5}}, pending_s=0.05)) as sim, \
            _tmpfs(tmp_path / "out", "4m") as folder:
        proc = start([*ARGS, *sim_args(sim, runway=1, fal=1), f"outputs_dir={folder}", "replicates=3"], tmp_path, sim_env(sim))
        wait_until(lambda: states(tmp_path)["downloaded"] >= 1 or proc.poll() is not None)
        # A remount fails (EBUSY) while the runner holds a file open for writing: try again, bounded.
        wait_until(lambda: subprocess.run(["mount", "-o", "remount,ro", str(folder)], capture_output=True).returncode == 0)
        out, err = proc.communicate(timeout=240)
        subprocess.run(["mount", "-o", "remount,rw", str(folder)], check=True)
        assert proc.returncode == 3 and "Traceback" not in err, err
        assert "cannot write" in err
        again = run_cli(*ARGS, *sim_args(sim, runway=1, fal=1), f"outputs_dir={folder}", "replicates=3", cwd=tmp_path,
                        env=sim_env(sim), timeout=240)
        assert again.returncode == 0, again.stdout + again.stderr
        rows = ledger_rows(tmp_path)
        assert len(rows) == 3 * JOBS and {r["state"] for r in rows} == {"downloaded"}
        assert_no_paid_twice(sim.ledger(), rows, tmp_path)


@pytest.mark.long
def test_a_ledger_locked_for_65_seconds_makes_the_run_wait_then_finish(tmp_path):
    with Simulator(SimConfig(latency={"default": {"min": 0.3, "max": 0.6}}, pending_s=0.05)) as sim:
        proc = start([*ARGS, *sim_args(sim, runway=1, fal=1)], tmp_path, sim_env(sim))
        wait_until(lambda: states(tmp_path)["submitted"] >= 1 or proc.poll() is not None)
        locker = subprocess.Popen([sys.executable, "-c", (
            "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
            "c.execute('BEGIN IMMEDIATE'); print('locked', flush=True); time.sleep(65); c.execute('COMMIT')"
        ), str(ledger_path(tmp_path))], stdout=subprocess.PIPE, text=True)
        assert locker.stdout.readline().strip() == "locked"
        out, err = proc.communicate(timeout=400)
        locker.wait()
        assert proc.returncode == 0, out[-2000:] + err[-2000:]
        assert "waiting for the ledger" in err and "another process has held it" in err
        rows = assert_complete(tmp_path, JOBS)
        assert_no_paid_twice(sim.ledger(), rows, tmp_path)


def test_a_ctrl_c_while_another_process_holds_the_ledger_does_not_wait_for_it(tmp_path):
    """A run waiting to record its plan, before any submission, ends at a Ctrl-C while the other
    process still holds the ledger; the next run does the whole work, once."""
    from tests.test_companion_cli import HOLD

    args = ["model=gen4_turbo", "prompt_set=animate", "quiet=true"]
    S.open_ledger(ledger_path(tmp_path)).close()
    with Simulator(SimConfig(latency={"default": {"min": 0.05, "max": 0.1}}, pending_s=0.01)) as sim:
        holder = subprocess.Popen([sys.executable, "-c", HOLD, str(ledger_path(tmp_path))], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline().strip() == "held"
        proc = start([*args, *sim_args(sim, runway=1)], tmp_path, sim_env(sim))
        said = proc.stderr.readline()  # a few seconds in: it waits, saying so
        assert "waiting for the ledger" in said, said + proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        still_held = holder.poll() is None
        holder.stdin.close()
        holder.wait(timeout=60)
        assert still_held and proc.returncode == 130 and "Traceback" not in err, err
        assert "not waiting for the ledger" in err and "(it is held by another process)" in err
        assert sim.ledger() == []  # nothing was sent
        again = run_cli(*args, *sim_args(sim, runway=1), cwd=tmp_path, env=sim_env(sim))
        assert again.returncode == 0, again.stdout + again.stderr
        rows = assert_complete(tmp_path, 2)
        assert_no_paid_twice(sim.ledger(), rows, tmp_path)


def test_an_input_deleted_after_planning_fails_its_job_not_the_run(tmp_path, prompt_sets):
    images = [tmp_path / f"{name}.png" for name in ("a", "b")]
    for image, source in zip(images, ("lighthouse.png", "sneaker.png")):
        shutil.copy(Path(__file__).parent.parent / "runner" / "assets" / source, image)
    overrides = prompt_sets("two", f"""
        name: two
        prompts:
          - {{id: first, text: a lighthouse, image: {images[0]}}}
          - {{id: second, text: a sneaker, image: {images[1]}}}
    """)
    with Simulator(SimConfig(latency={"default": {"min": 0.8, "max": 1.0}}, pending_s=0.05)) as sim:
        proc = start(["model=gen4_turbo", *overrides, *sim_args(sim, runway=1)], tmp_path, sim_env(sim))
        wait_until(lambda: states(tmp_path)["submitted"] >= 1 or proc.poll() is not None)
        waiting = next(r["prompt_id"] for r in ledger_rows(tmp_path) if r["state"] == "planned")
        images[["first", "second"].index(waiting)].unlink()
        out, err = proc.communicate(timeout=240)
    assert proc.returncode == 1 and "Traceback" not in err, err
    rows = {r["prompt_id"]: r for r in ledger_rows(tmp_path)}
    sent = "second" if waiting == "first" else "first"
    assert rows[sent]["state"] == "downloaded"
    assert rows[waiting]["state"] == "failed" and "cannot be read any more" in rows[waiting]["error"]
    assert len(sim.ledger()) == 1  # nothing was sent for the missing file
