"""Clips probed in a process of their own (runner.probing): the same facts as reading them here,
a child's death costs one clip's probe and nothing else, and the child holds no credentials."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import pytest

from runner import probing
from runner.probe import examine
from runner.probing import Prober, examine_all
from runner.sim.media import make_video


def _clip(folder: Path, name: str, seconds: float = 2.0) -> Path:
    clip = folder / "sweep" / "model" / f"{name}.mp4"
    clip.parent.mkdir(parents=True, exist_ok=True)
    clip.write_bytes(make_video(name, seconds, width=128, height=72))
    return clip


async def _until(condition, what: str, within_s: float = 60.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.01)


def test_a_child_process_reads_what_reading_here_reads(tmp_path):
    clips = [_clip(tmp_path, f"c{i}", 1.0 + i) for i in range(3)]
    params = json.dumps({"duration": 2})
    got = examine_all([(str(c), params, f"sha{i}") for i, c in enumerate(clips)])
    assert got == [examine(c, params, f"sha{i}") for i, c in enumerate(clips)]
    assert [g["mismatch"] for g in got] == ["asked 2 s, got 1.0 s", None, "asked 2 s, got 3.0 s"]
    assert all(Path(g["poster_path"]).is_file() for g in got)


def test_a_child_that_dies_costs_the_clip_it_was_reading_and_nothing_else(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNWAYML_API_SECRET", "key_never_in_the_child")
    stuck = tmp_path / "stuck.mp4"
    os.mkfifo(stuck)  # opening it blocks until a writer comes: the child is busy with it for as long as the test likes
    after = _clip(tmp_path, "after")

    async def scenario() -> tuple[dict, dict, dict]:
        prober = Prober()
        first = asyncio.create_task(prober.examine(stuck, "{}", "sha-stuck"))
        second = asyncio.create_task(prober.examine(after, "{}", "sha-after"))
        await _until(lambda: prober._proc is not None, "the probe process started")
        child = prober._proc.pid
        environ = Path(f"/proc/{child}/environ").read_bytes()
        assert b"key_never_in_the_child" not in environ and b"RUNWAYML_API_SECRET" not in environ
        assert os.getsid(child) != os.getsid(0)  # a Ctrl-C at the terminal is the runner's, not the child's
        os.kill(child, 9)
        lost, probed = await asyncio.gather(first, second)
        later = await prober.examine(after, "{}", "sha-later")  # a new process carries on
        await prober.close()
        assert prober._proc is None or prober._proc.returncode is not None
        return lost, probed, later

    lost, probed, later = asyncio.run(scenario())
    assert lost == {"output_sha256": "sha-stuck", "error": "the probe process ended (SIGKILL) while reading this file"}
    assert probed == {**examine(after, "{}", "sha-after")}
    assert later["output_sha256"] == "sha-later" and later["width"] == 128 and "error" not in later


def test_a_child_that_cannot_start_stops_probing_for_the_run_without_failing_it(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", "/bin/false")  # exits at once, every time
    clips = [_clip(tmp_path, f"c{i}") for i in range(5)]
    got = examine_all([(str(c), "{}", f"sha{i}") for i, c in enumerate(clips)])
    assert [g["output_sha256"] for g in got] == [f"sha{i}" for i in range(5)]
    assert [g["error"] for g in got[:probing.GIVE_UP_AFTER - 1]] == ["the probe process ended (exit status 1) while reading this file"] * 2
    assert all(g["error"].startswith("the probe process ended") for g in got)
    assert got[-1]["error"] == f"the probe process ended {probing.GIVE_UP_AFTER} times in a row (last: exit status 1)"


def test_a_clip_read_for_too_long_is_left_unprobed_and_the_rest_carry_on(tmp_path, monkeypatch):
    monkeypatch.setattr(probing, "STUCK_S", 0.5)
    stuck = tmp_path / "stuck.mp4"
    os.mkfifo(stuck)  # a hung file system: the child waits on it for ever
    after = _clip(tmp_path, "after")

    async def scenario() -> tuple[dict, dict]:
        prober = Prober()
        first = asyncio.create_task(prober.examine(stuck, "{}", "sha-stuck"))
        second = asyncio.create_task(prober.examine(after, "{}", "sha-after"))
        lost = await first
        monkeypatch.setattr(probing, "STUCK_S", 600.0)  # the next child may start as slowly as a loaded machine likes
        probed = await second
        await prober.close()
        return lost, probed

    lost, probed = asyncio.run(scenario())
    assert lost == {"output_sha256": "sha-stuck", "error": "not probed: reading this file took longer than 0.5 s"}
    assert probed == examine(after, "{}", "sha-after")


def test_no_interpreter_to_start_leaves_clips_unprobed_not_jobs_failed(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    got = examine_all([(str(_clip(tmp_path, "c")), "{}", "sha")])
    assert got[0]["output_sha256"] == "sha" and got[0]["error"].startswith("the probe process could not start: ")


def test_an_interrupted_run_does_not_wait_for_clips_nobody_waits_for(tmp_path, monkeypatch):
    monkeypatch.setattr(probing, "CLOSE_WAIT_S", 3600.0)  # a child left to finish would hold the run for an hour
    stuck = tmp_path / "stuck.mp4"
    os.mkfifo(stuck)

    async def scenario() -> None:
        prober = Prober()
        job = asyncio.create_task(prober.examine(stuck, "{}", "sha"))
        await _until(lambda: prober._proc is not None, "the probe process started")
        job.cancel()  # the run was interrupted: the job stopped waiting
        await asyncio.gather(job, return_exceptions=True)
        proc = prober._proc
        await asyncio.wait_for(prober.close(), 60)
        assert proc.returncode == -9
        assert await prober.examine(stuck, "{}", "sha") == {"output_sha256": "sha", "error": "the run is ending"}

    asyncio.run(scenario())
