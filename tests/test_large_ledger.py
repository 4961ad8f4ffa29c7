"""`video-runner` on a ledger of 100,000 jobs, written directly (not by running them): the commands
that read a whole sweep (sweeps, status, jobs) answer with the right numbers at that size. Their
speed is measured outside the suite; here only what they say is checked."""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

import pytest

from runner import store as S
from runner.cli import main

JOBS = 100_000
MODELS = ("gen4_turbo", "fal-kling-v2.1-standard", "fal-hailuo-02-standard", "fal-pika-v2.2")
#: state -> share of the jobs, with the reasons failed and lost ones carry
STATES = {S.DOWNLOADED: 0.80, S.FAILED: 0.05, S.LOST: 0.01, S.SUBMITTED: 0.04, S.PLANNED: 0.10}
REASONS = {S.FAILED: [("permanent", "Input did not pass moderation"), ("retryable", "The model provider is temporarily unavailable")],
           S.LOST: [("lost", "the provider no longer has the output: 404")]}


def build(path: Path, jobs: int = JOBS, seed: int = 7) -> dict[str, int]:
    """A ledger of `jobs` jobs in two sweeps (a big one, and a small one sharing 1,000 of its jobs),
    with probes flagging every 10th clip; returns the count of jobs by state."""
    rng = random.Random(seed)
    conn = S.open_ledger(path)
    counts = dict.fromkeys(STATES, 0)
    stamp = "2026-01-01T00:00:00.000+00:00"
    rows, links, probes = [], [], []
    for i in range(jobs):
        state = rng.choices(list(STATES), weights=list(STATES.values()))[0]
        counts[state] += 1
        key = f"{i:064x}"
        model = MODELS[i % len(MODELS)]
        duration = (5, 10)[i // len(MODELS) % 2]
        error_class, error = rng.choice(REASONS[state]) if state in REASONS else (None, None)
        done = state == S.DOWNLOADED
        rows.append((key, "big", "fal", model, model, "text-to-video", "/x", f"prompt-{i % 500:03d}", i // 2000,
                     json.dumps({"duration": duration, "prompt": f"text {i % 500}"}), "{}", "[]", "video", "mp4", state,
                     250_000, 250_000 if state in (S.DOWNLOADED, S.LOST) else 0, f"task-{i}" if state != S.PLANNED else None,
                     f"outputs/big/{model}/p{i}.mp4" if done else None, "ab" * 32 if done else None, error_class, error, stamp, stamp))
        links.append(("big-sweep-id-0001", key))
        if i < 1000:
            links.append(("small-sweep-id-02", key))
        if done:
            probes.append((key, "ab" * 32, float(duration if i % 10 else 5), 1280, 720, 24.0, "h264", None,
                           f"asked {duration} s, got 5.0 s" if i % 10 == 0 and duration == 10 else None))
    conn.execute("BEGIN")
    conn.executemany("insert into jobs (key, sweep, provider, model, model_id, mode, endpoint, prompt_id, replicate, params, payload, "
                     "inputs, media, extension, state, est_micros, spent_micros, task_id, output_path, output_sha256, error_class, "
                     "error, created_at, updated_at) values (" + ",".join("?" * 24) + ")", rows)
    conn.executemany("insert into sweep_jobs (sweep_id, job_key) values (?, ?)", links)
    conn.executemany("insert into sweeps (id, name, created_at, config, jobs) values (?, ?, ?, '{}', ?)",
                     [("big-sweep-id-0001", "big", "2026-01-01T00:00:00", jobs), ("small-sweep-id-02", "small", "2026-01-02T00:00:00", 1000)])
    conn.executemany("insert into probes (job_key, output_sha256, duration_s, width, height, fps, video_codec, audio_codec, mismatch) "
                     "values (?, ?, ?, ?, ?, ?, ?, ?, ?)", probes)
    conn.execute("COMMIT")
    conn.close()
    return counts


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    path = tmp_path_factory.mktemp("large") / "ledger.db"
    return path, build(path)


def run(capsys, path: Path, *args: str) -> str:
    assert main(["--db", str(path), *args]) == 0
    return capsys.readouterr().out


def test_sweeps_counts_a_hundred_thousand_jobs(large, capsys):
    path, counts = large
    lines = run(capsys, path, "sweeps").splitlines()
    assert lines[2].startswith("small-sw  small") and lines[3].startswith("big-swee  big")  # latest first
    assert f"{counts[S.PLANNED]} planned, {counts[S.SUBMITTED]} submitted, {counts[S.DOWNLOADED]} downloaded" in lines[3]
    assert str(JOBS) in lines[3] and "$25000.00" in lines[3]  # every job's estimate: 100,000 x $0.25


def test_status_of_a_hundred_thousand_jobs(large, capsys):
    path, counts = large
    out = run(capsys, path, "status", "big")
    assert f"sweep big (1 run): {JOBS} jobs" in out
    failed = out.split("failures by reason:")[1]
    assert f"{counts[S.LOST]} lost (lost, " in failed
    assert "failed (permanent, " in failed and "Input did not pass moderation" in failed
    assert f"{counts[S.SUBMITTED]} submitted at fal" in out
    assert "asked 10 s, got 5.0 s" in out
    assert f"{counts[S.PLANNED]} planned: submitted (est. ${counts[S.PLANNED] * 0.25:.2f})" in out


def test_jobs_filters_a_hundred_thousand_jobs(large, capsys):
    path, counts = large
    out = run(capsys, path, "jobs", "big", "--state", "failed")
    assert out.startswith(f"sweep big (1 run): {counts[S.FAILED]} job(s) match, first 50 shown")
    out = run(capsys, path, "jobs", "--model", "kling", "--param", "duration=10", "--prompt", "prompt-00")
    # the latest sweep is "small": jobs 0..999; kling is every 4th job, duration 10 every other block of 4
    expected = sum(1 for i in range(1000) if i % 4 == 1 and (i // 4) % 2 == 1 and f"prompt-{i % 500:03d}".startswith("prompt-00"))
    assert out.startswith(f"sweep small-sw (small, latest): {expected} job(s) match")
    flagged = sqlite3.connect(path).execute("select count(*) from probes where mismatch is not null").fetchone()[0]
    listed = run(capsys, path, "jobs", "big", "--param", "duration=10", "--state", "downloaded", "--limit", "0")
    assert flagged and listed.count("DIFFERS: asked 10 s, got 5.0 s") == flagged
