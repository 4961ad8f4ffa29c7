"""`video-runner` on a real ledger: a simulated sweep over two providers (with a failure of each
kind) run by the real CLI, then every companion command run as a user runs it."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from runner.cli import COMMANDS
from runner.sim import SimConfig, Simulator
from tests.conftest import run_cli
from tests.helpers import ledger_path, ledger_rows, query, sim_args, sim_env

SWEEP = ["-m", "model=gen4_turbo,hailuo", "prompt_set=animate", "sweep.duration=[6,10]", "max_attempts=1"]


def companion(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m runner.cli <args>` as a user runs `video-runner`."""
    full = {k: v for k, v in os.environ.items() if k != "RUNNER_STATE_DIR"} | (env or {})
    return subprocess.run([sys.executable, "-m", "runner.cli", *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A folder holding the ledger and outputs of one simulated sweep: 8 jobs, 6 downloaded, one
    failed for a retryable reason (Runway) and one refused permanently (fal)."""
    folder = tmp_path_factory.mktemp("swept")
    with Simulator(SimConfig(latency={"default": {"min": 0.03, "max": 0.08}}, pending_s=0.01)) as sim:
        sim.inject("task_failed", on="runway.create", failure_code="INTERNAL", count=1)
        sim.inject("task_failed", on="fal.submit", model="fal-hailuo-02-standard", failure_code="SAFETY.INPUT.IMAGE", count=1)
        result = run_cli(*SWEEP, *sim_args(sim), cwd=folder, env=sim_env(sim))
        assert result.returncode == 1, result.stdout + result.stderr
        yield folder, sim, result


@pytest.fixture
def copy(swept, tmp_path):
    """A copy of the swept folder a test may change (the simulator still has its tasks)."""
    folder, sim, _ = swept
    shutil.copytree(folder, tmp_path / "project")
    return tmp_path / "project", sim


def test_the_summary_names_the_outputs_folder_and_its_gallery(swept):
    folder, _, result = swept
    assert "8 jobs: 6 downloaded, 2 failed" in result.stdout
    assert "outputs: outputs/animate (8 jobs of that sweep; gallery outputs/animate/report.html)" in result.stdout
    manifest = [json.loads(line) for line in (folder / "outputs/animate/manifest.jsonl").read_text().splitlines()]
    assert len(manifest) == 8
    for entry in manifest:
        if entry["state"] == "downloaded":  # paths are relative to the manifest: the folder stands on its own
            data = (folder / "outputs/animate" / entry["output_path"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == entry["sha256"]
            assert entry["duration_s"] == entry["params"]["duration"] and entry["video_codec"] == "h264"
            # the name tells a 6 s from a 10 s clip of the same prompt
            assert Path(entry["output_path"]).name.startswith(f"{entry['prompt_id']}__d{entry['params']['duration']}_")


def test_sweeps_lists_every_sweep_with_counts_and_spend(swept):
    folder, _, _ = swept
    result = companion("sweeps", cwd=folder)
    assert result.returncode == 0, result.stderr
    header, _, line = result.stdout.splitlines()
    assert "est. $" in header and "settled $" in header
    assert "animate" in line and "fal-hailuo-02-standard, gen4_turbo" in line and "6 downloaded, 2 failed" in line


def test_status_groups_failures_and_says_what_a_rerun_does(swept):
    folder, _, _ = swept
    (folder / "deeper" / "still").mkdir(parents=True, exist_ok=True)
    result = companion("status", cwd=folder / "deeper" / "still")  # found by walking up, as git does
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "(animate, latest): 8 jobs" in out and "6 downloaded, 2 failed" in out
    assert "1 failed (permanent, fal-hailuo-02-standard): HTTP 422: prompt: Input did not pass moderation" in out
    assert "1 failed (retryable, gen4_turbo): An unexpected error occurred (INTERNAL)" in out
    # The simulator renders small clips: Hailuo's image-to-video jobs asked for 768p.
    assert "clip(s) of fal-hailuo-02-standard: asked 768p, got" in out
    assert "2 failed: left failed; `video-runner retry`" in out


def test_jobs_filters_by_state_model_prompt_and_parameter(swept):
    folder, _, _ = swept

    def count(*args: str) -> int:
        result = companion("jobs", *args, cwd=folder)
        assert result.returncode == 0, result.stderr
        return int(result.stdout.split(": ")[1].split(" ")[0])

    assert count() == 8
    assert count("--state", "failed") == 2
    assert count("--model", "hailuo") == 4
    assert count("--prompt", "portrait") == 4
    assert count("--param", "duration=10") == 4
    assert count("--param", "duration=10", "--model", "gen4", "--state", "downloaded") in (1, 2)
    assert count("animate", "--param", "duration=7") == 0
    shown = companion("jobs", "--limit", "3", cwd=folder).stdout
    assert "first 3 shown" in shown and len(shown.splitlines()) == 1 + 2 + 3


def test_export_writes_one_row_per_job(swept):
    folder, _, _ = swept
    lines = companion("export", "--format", "jsonl", cwd=folder).stdout.splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 8
    by_state = Counter(r["state"] for r in records)
    assert by_state == {"downloaded": 6, "failed": 2}
    for r in records:
        assert r["prompt"] and r["model"] and r["params"]["duration"] in (6, 10)
        if r["state"] == "downloaded":
            assert r["task_id"] and r["sha256"] and r["generation_s"] is not None and r["width"] and r["fps"] == 8
    table = list(csv.DictReader(io.StringIO(companion("export", "--format", "csv", cwd=folder).stdout)))
    assert [row["key"] for row in table] == [r["key"] for r in records]
    assert json.loads(table[0]["params"]) == records[0]["params"]


def test_gallery_is_self_contained_with_relative_links(swept, tmp_path):
    folder, _, _ = swept
    result = companion("--db", str(folder / ".runner" / "ledger.db"), "gallery", "animate", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = folder / "outputs" / "animate" / "report.html"
    assert f"gallery: {report}" in result.stdout
    page = report.read_text()
    assert "http://" not in page and "https://" not in page and "<link" not in page
    data = json.loads(page.split('<script id="data" type="application/json">')[1].split("</script>")[0])
    assert len(data) == 8
    for cell in data:
        if cell["state"] == "downloaded":
            assert (report.parent / cell["output_path"]).is_file() and (report.parent / cell["poster"]).is_file()
        else:
            assert cell["error"]
    assert all((report.parent / cell["input_thumb"]).is_file() for cell in data)


def test_retry_reopens_failed_jobs_and_a_rerun_generates_them(copy):
    folder, sim = copy
    before = len(sim.ledger())
    result = companion("retry", cwd=folder)
    assert result.returncode == 0, result.stderr
    assert "1 failed job(s) back to planned" in result.stdout and "a new charge each" in result.stdout
    assert "1 job(s) failed permanently" in result.stdout and "--permanent" in result.stdout
    assert Counter(r["state"] for r in ledger_rows(folder)) == {"downloaded": 6, "planned": 1, "failed": 1}
    assert companion("retry", "--permanent", cwd=folder).stdout.startswith("sweep ")
    rerun = run_cli(*SWEEP, *sim_args(sim), cwd=folder, env=sim_env(sim))
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert Counter(r["state"] for r in ledger_rows(folder)) == {"downloaded": 8}
    assert len(sim.ledger()) == before + 2  # one new generation each: the charge retry warned of


#: Holds the ledger given (a write transaction) from the line "held" until its input closes.
HOLD = ("import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None); c.execute('BEGIN IMMEDIATE'); "
        "print('held', flush=True); sys.stdin.read(); c.execute('COMMIT')")


def test_retry_waits_for_a_ledger_another_process_holds_then_goes_on(copy):
    folder, _ = copy
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(ledger_path(folder))], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    env = {k: v for k, v in os.environ.items() if k != "RUNNER_STATE_DIR"}
    retry = subprocess.Popen([sys.executable, "-m", "runner.cli", "retry"], cwd=folder, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    said = retry.stderr.readline()  # after a few seconds of waiting: it waits, saying so, never fails
    assert "waiting for the ledger" in said and "another process has held it for" in said, said
    holder.stdin.close()
    holder.wait(timeout=60)
    out, err = retry.communicate(timeout=120)
    assert retry.returncode == 0 and "Traceback" not in err, err
    assert "1 failed job(s) back to planned" in out
    assert Counter(r["state"] for r in ledger_rows(folder))["planned"] == 1


def test_verify_finds_missing_and_changed_files_and_a_rerun_collects_them_again(copy):
    folder, sim = copy
    rows = [r for r in ledger_rows(folder) if r["state"] == "downloaded"]
    gone, changed = folder / rows[0]["output_path"], folder / rows[1]["output_path"]
    gone.unlink()
    changed.write_bytes(b"not the clip")
    checked = companion("verify", "--report-only", cwd=folder)
    assert checked.returncode == 1 and "4 file(s) match the ledger, 1 missing, 1 changed" in checked.stdout
    assert "nothing was changed" in checked.stdout
    assert sum(r["state"] == "downloaded" for r in ledger_rows(folder)) == 6
    result = companion("verify", cwd=folder)
    assert result.returncode == 1
    assert f"missing: {rows[0]['output_path']}" in result.stdout and f"changed: {rows[1]['output_path']}" in result.stdout
    assert "2 job(s) marked to be collected again" in result.stdout
    marked = {r["key"]: r for r in ledger_rows(folder)}
    assert marked[rows[0]["key"]]["state"] == marked[rows[1]["key"]]["state"] == "generated"
    assert marked[rows[0]["key"]]["output_path"] is None
    submissions = len(sim.ledger())
    rerun = run_cli(*SWEEP, *sim_args(sim), cwd=folder, env=sim_env(sim))
    assert "6 downloaded, 2 failed" in rerun.stdout, rerun.stdout + rerun.stderr
    assert len(sim.ledger()) == submissions  # collected from the same tasks: nothing generated again
    again = {r["key"]: r for r in ledger_rows(folder)}
    for row in rows[:2]:
        data = (folder / again[row["key"]]["output_path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["output_sha256"]
    assert companion("verify", cwd=folder).returncode == 0
    events = query(folder, "select detail from events where job_key = ? and to_state = 'generated' order by id", (rows[0]["key"],))
    assert events[-1]["detail"].startswith("verify: file missing")


def test_the_summary_tells_files_gone_from_disk(copy):
    folder, sim = copy
    for clip in (folder / "outputs").rglob("*.mp4"):
        clip.unlink()
    rerun = run_cli(*SWEEP, *sim_args(sim), cwd=folder, env=sim_env(sim))
    assert "6 downloaded file(s) are no longer on disk: `video-runner verify` marks them" in rerun.stdout


def test_a_multirun_over_two_prompt_sets_names_every_outputs_folder(tmp_path, sim):
    result = run_cli("-m", "model=hailuo", "prompt_set=animate,nature", *sim_args(sim), cwd=tmp_path, env=sim_env(sim))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "outputs: outputs/animate (2 jobs" in result.stdout and "outputs: outputs/nature (3 jobs" in result.stdout
    renamed = run_cli("model=hailuo", "prompt_set=nature", "name=again", *sim_args(sim), cwd=tmp_path, env=sim_env(sim))
    assert "3 job(s) were first planned under sweep 'nature' and keep its folder" in renamed.stdout
    assert companion("jobs", "again", cwd=tmp_path).stdout.startswith("sweep again (1 run): 3 job(s) match")


def test_no_ledger_and_unknown_sweep_are_one_clear_message(tmp_path, swept):
    result = companion("status", cwd=tmp_path)
    assert result.returncode == 2 and "no .runner/ledger.db in" in result.stderr and "Traceback" not in result.stderr
    unknown = companion("status", "nosuch", cwd=swept[0])
    assert unknown.returncode == 2 and "no sweep is named 'nosuch'" in unknown.stderr and "animate" in unknown.stderr
    by_env = companion("sweeps", cwd=tmp_path, env={"RUNNER_STATE_DIR": str(swept[0] / ".runner")})
    assert by_env.returncode == 0 and "animate" in by_env.stdout


def test_help_lists_every_command(tmp_path):
    result = companion("--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in COMMANDS:
        assert companion(command, "--help", cwd=tmp_path).stdout.startswith(f"usage: video-runner {command}")
    assert "--permanent" in companion("retry", "--help", cwd=tmp_path).stdout
    # Typed to the runner by mistake, a companion command is pointed to, not a Hydra parse error.
    wrong = run_cli("status", cwd=tmp_path)
    assert wrong.returncode == 2 and "it is a command of the companion CLI; run: video-runner status" in wrong.stderr


def test_the_cli_loads_no_hydra_http_client_or_plugins(tmp_path):
    code = ("import sys, runner.cli, runner.publish, runner.checks; "
            "print(sorted(m for m in ('hydra', 'httpx', 'omegaconf', 'runner_plugins', 'av') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_verify_probes_again_a_clip_whose_probe_failed(copy):
    folder, sim = copy
    key = next(r["key"] for r in ledger_rows(folder) if r["state"] == "downloaded")
    with sqlite3.connect(ledger_path(folder)) as conn:  # as a run leaves it after the probe process died
        conn.execute("update probes set duration_s = null, width = null, error = 'the probe process ended (SIGSEGV) "
                     "while reading this file' where job_key = ?", (key,))
    result = companion("verify", cwd=folder)
    assert result.returncode == 0 and "1 clip(s) probed" in result.stdout, result.stdout + result.stderr
    probe = query(folder, "select * from probes where job_key = ?", (key,))[0]
    assert probe["error"] is None and probe["duration_s"] > 0 and probe["width"] > 0
    assert "clip(s) probed" not in companion("verify", cwd=folder).stdout  # read whole now: not again
