"""`video-runner` on a ledger of 100,000 jobs, written directly (not by running them): the commands
that read a whole sweep (sweeps, status, jobs) answer with the right numbers at that size. Their
speed is measured outside the suite; here only what they say is checked."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from runner import store as S
from runner.cli import main

JOBS = 100_000
MODELS = ("gen4_turbo", "fal-kling-v2.1-standard", "fal-hailuo-02-standard", "fal-pika-v2.2")
#: i % 100 below each bound: the job's state (80% downloaded, 5% failed, 1% lost, 4% at the provider, 10% planned)
STATES = ((80, S.DOWNLOADED), (85, S.FAILED), (86, S.LOST), (90, S.SUBMITTED), (100, S.PLANNED))


def state_of(i: int) -> str:
    return next(state for bound, state in STATES if i % 100 < bound)


def build(path: Path, jobs: int = JOBS) -> dict[str, int]:
    """A ledger of `jobs` jobs, written by SQL in a few statements, in two sweeps (a big one, and a
    later small one sharing its first 1,000 jobs): model i % 4, duration 5 or 10 by blocks of 4,
    500 prompts; every 10th clip of 10 s came back 5 s. Returns the count of jobs by state."""
    conn = S.open_ledger(path)
    state = "case " + " ".join(f"when i % 100 < {bound} then '{name}'" for bound, name in STATES) + " end"
    model = "case i % 4 " + " ".join(f"when {n} then '{m}'" for n, m in enumerate(MODELS)) + " end"
    duration = "(case (i / 4) % 2 when 0 then 5 else 10 end)"
    conn.execute("BEGIN")
    conn.execute(f"""
        insert into jobs (key, sweep, provider, model, model_id, mode, endpoint, prompt_id, replicate, params, payload, inputs,
                          media, extension, state, est_micros, spent_micros, task_id, output_path, output_sha256, error_class,
                          error, created_at, updated_at)
        with recursive n(i) as (select 0 union all select i + 1 from n where i < {jobs - 1}),
             j as (select i, printf('%064x', i) as key, {state} as state, {model} as model, {duration} as duration from n)
        select key, 'big', 'fal', model, model, 'text-to-video', '/x', printf('prompt-%03d', i % 500), i / 2000,
               json_object('duration', duration, 'prompt', 'text ' || (i % 500)), '{{}}', '[]', 'video', 'mp4', state, 250000,
               case when state in ('downloaded', 'lost') then 250000 else 0 end,
               case when state != 'planned' then 'task-' || i end,
               case when state = 'downloaded' then 'outputs/big/' || model || '/p' || i || '.mp4' end,
               case when state = 'downloaded' then '{"ab" * 32}' end,
               case state when 'failed' then (case i % 2 when 0 then 'permanent' else 'retryable' end) when 'lost' then 'lost' end,
               case state when 'failed' then (case i % 2 when 0 then 'Input did not pass moderation'
                                               else 'The model provider is temporarily unavailable' end)
                          when 'lost' then 'the provider no longer has the output: 404' end,
               '2026-01-01T00:00:00.000+00:00', '2026-01-01T00:00:00.000+00:00'
        from j""")
    conn.execute("insert into sweep_jobs (sweep_id, job_key) select 'big-sweep-id-0001', key from jobs")
    conn.execute("insert into sweep_jobs (sweep_id, job_key) select 'small-sweep-id-02', key from jobs order by rowid limit 1000")
    conn.executemany("insert into sweeps (id, name, created_at, config, jobs) values (?, ?, ?, '{}', ?)",
                     [("big-sweep-id-0001", "big", "2026-01-01T00:00:00", jobs), ("small-sweep-id-02", "small", "2026-01-02T00:00:00", 1000)])
    conn.execute("""
        insert into probes (job_key, output_sha256, duration_s, width, height, fps, video_codec, mismatch)
        select key, output_sha256, case when rowid % 10 = 1 then 5.0 else json_extract(params, '$.duration') end, 1280, 720, 24.0, 'h264',
               case when rowid % 10 = 1 and json_extract(params, '$.duration') = 10 then 'asked 10 s, got 5.0 s' end
        from jobs where state = 'downloaded'""")
    conn.execute("COMMIT")
    conn.close()
    return {name: sum(1 for i in range(jobs) if state_of(i) == name) for _, name in STATES}


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


def test_run_summary_of_a_hundred_thousand_jobs_is_summed_in_sql(large):
    """What a run's summary says of a 100,000-job sweep: counts, money, the first failures, the
    parked jobs still open, and (when files are looked at) the clips no longer on disk."""
    from runner.locate import Found
    from runner.tally import SHOWN, tally

    path, counts = large
    conn = S.open_ledger(path)
    try:
        keys = [r[0] for r in conn.execute("select key from jobs order by rowid")]
        named = dict.fromkeys(keys, "big")
        parked = keys[:200]  # of each 100: 80 downloaded, 5 failed, 1 lost (final: not listed), 4 submitted, 10 planned
        outputs = path.parent / "outputs"
        t = tally(conn, "big-sweep-id-0001", named, parked, Found(path, path.parent), outputs)
    finally:
        conn.close()
    assert t.jobs == JOBS and dict(t.states) == {k: v for k, v in counts.items() if v}
    assert t.estimated == 0  # no job was attempted in this ledger (attempts 0)
    assert t.settled == (counts[S.DOWNLOADED] + counts[S.LOST]) * 250_000
    assert t.sweeps == {"big"} and not t.earlier
    assert len(t.failed) == SHOWN and all(r["state"] == S.FAILED for r in t.failed)
    assert [r["key"] for r in t.failed] == [k for i, k in enumerate(keys) if state_of(i) == S.FAILED][:SHOWN]  # in plan order
    assert len(t.lost) == SHOWN and t.lost[0]["error"].startswith("the provider no longer has the output")
    assert set(t.parked) == {keys[i] for i in range(200) if state_of(i) not in S.FINAL}
    assert t.gone == counts[S.DOWNLOADED]  # none of the clips is on disk here
    assert t.elsewhere == []  # recorded under outputs/, beside the ledger

    conn = S.open_ledger(path)
    try:  # another name for the same jobs: all of them were first planned under "big"
        t = tally(conn, "big-sweep-id-0001", dict.fromkeys(keys, "renamed"), [], Found(path, path.parent), None)
    finally:
        conn.close()
    assert t.earlier == {"big": JOBS} and t.gone is None
