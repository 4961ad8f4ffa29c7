"""A kept plan: the same command run again is not planned again, and any change to what the plan is
made from (a setting, the prompt file, an input, a file that appears) plans it again."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from runner import plancache, plugins
from runner.app import compose_config
from runner.errors import UserError
from runner.plan import build_plan
from runner.testjobs import ASSETS
from tests.conftest import run_cli
from tests.helpers import sim_args, sim_env

LONG_AGO = time.time() - 3600  # older than RACY_S: a file the plan may trust


def _age(*paths: Path) -> None:
    for path in paths:
        os.utime(path, (LONG_AGO, LONG_AGO))


def _prompts(folder: Path, rows: list[dict]) -> Path:
    path = folder / "prompts.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    _age(path)
    return path


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RUNNER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    shutil.copy(ASSETS / "lighthouse.png", tmp_path / "still.png")
    _age(tmp_path / "still.png")
    _prompts(tmp_path, [{"id": "a", "text": "the beam turns", "image": "still.png"}, {"id": "b", "text": "waves roll in", "image": "still.png"}])
    return tmp_path


def _planned(*overrides: str):
    cfg, choices = compose_config(["model=gen4_turbo", "prompt_set.file=prompts.jsonl", *overrides])
    return plancache.planned(cfg, plugins.registry().catalog, choices)


def _not_planned_again(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("planned again")

    monkeypatch.setattr(plancache, "build_plan", refuse)


def _kept(project: Path) -> list[Path]:
    return sorted((project / "cache").glob("plan-*.pickle"))


def test_the_same_command_reads_its_plan_back(project, monkeypatch):
    first = _planned("sweep.duration=[5,10]", "replicates=2")
    assert len(first.jobs) == 8 and len(_kept(project)) == 1
    _not_planned_again(monkeypatch)
    again = _planned("sweep.duration=[5,10]", "replicates=2")
    assert again.jobs == first.jobs and again.total == first.total
    assert again is not first and again.sources == first.sources == {str(project / "prompts.jsonl"), str(project / "still.png")}


def test_a_changed_setting_plans_again(project):
    assert {job.payload["duration"] for job in _planned("duration=5").jobs} == {5}
    assert {job.payload["duration"] for job in _planned("duration=10").jobs} == {10}
    assert len(_kept(project)) == 2


def test_an_edited_prompt_file_plans_again(project):
    assert {job.params["prompt"] for job in _planned().jobs} == {"the beam turns", "waves roll in"}
    _prompts(project, [{"id": "a", "text": "the beam stops", "image": "still.png"}])
    os.utime(project / "prompts.jsonl", (LONG_AGO + 60, LONG_AGO + 60))  # edited, and long enough ago to be trusted
    assert {job.params["prompt"] for job in _planned().jobs} == {"the beam stops"}


def test_a_replaced_input_plans_again(project):
    before = {f.sha256 for job in _planned().jobs for f in job.inputs}
    shutil.copy(ASSETS / "sneaker.png", project / "still.png")
    os.utime(project / "still.png", (LONG_AGO + 60, LONG_AGO + 60))
    after = {f.sha256 for job in _planned().jobs for f in job.inputs}
    assert len(before) == len(after) == 1 and before != after


def test_a_refused_plan_is_not_kept_and_a_missing_input_that_appears_is_planned(project):
    _prompts(project, [{"id": "a", "text": "the beam turns", "image": "still.png"}, {"id": "b", "text": "later", "image": "later.png"}])
    with pytest.raises(UserError, match="later.png"):
        _planned()
    assert _kept(project) == []
    shutil.copy(ASSETS / "lighthouse.png", project / "later.png")
    _age(project / "later.png")
    assert sorted(job.prompt_id for job in _planned().jobs) == ["a", "b"]


def test_a_file_changed_while_planning_is_not_trusted(project, monkeypatch):
    os.utime(project / "still.png")  # just now: it may have changed after the planner read it
    _planned()
    assert _kept(project) == []


def test_a_torn_or_foreign_entry_is_planned_again(project):
    first = _planned()
    [entry] = _kept(project)
    entry.write_bytes(entry.read_bytes()[:100])
    assert _planned().jobs == first.jobs
    entry.write_bytes(b"not a pickle")
    assert _planned().jobs == first.jobs


def test_an_unwritable_cache_only_costs_the_time(project, monkeypatch):
    (project / "blocker").write_text("a file where the cache folder would be")
    monkeypatch.setenv("RUNNER_CACHE_DIR", str(project / "blocker" / "cache"))
    assert len(_planned().jobs) == 2 and len(_planned().jobs) == 2


def test_only_the_newest_plans_are_kept(project):
    for duration in (5, 10):
        for replicates in range(1, 4):
            _planned(f"duration={duration}", f"replicates={replicates}")
    assert len(_kept(project)) == plancache.KEEP


def test_the_plan_is_what_the_planner_makes(project):
    """The cache gives back exactly what build_plan makes, skipped jobs and warnings included."""
    _prompts(project, [{"id": "a", "text": "x", "image": "still.png"}, {"id": "b", "text": "y", "image": "still.png", "params": {"duration": 99}}])
    cfg, choices = compose_config(["model=gen4_turbo", "prompt_set.file=prompts.jsonl", "on_invalid=skip"])
    made = build_plan(cfg, plugins.registry().catalog, choices)
    _planned("on_invalid=skip")
    kept = _planned("on_invalid=skip")
    assert made.skipped and [job.prompt_id for job in made.jobs] == ["a"]
    assert (kept.jobs, kept.skipped, kept.warnings, kept.merged) == (made.jobs, made.skipped, made.warnings, made.merged)


def test_a_rerun_of_the_same_command_uses_the_kept_plan_end_to_end(project, sim):
    """Run, then the same command: the second run finds the sweep done; change the prompt file and
    the third run generates the new prompt only."""
    env = {**sim_env(sim), "RUNNER_CACHE_DIR": str(project / "cache")}
    args = ["model=gen4_turbo", "prompt_set.file=prompts.jsonl", "yes=true", "quiet=true", *sim_args(sim)]
    first = run_cli(*args, cwd=project, env=env)
    assert first.returncode == 0, first.stderr
    assert len(_kept(project)) == 1
    again = run_cli(*args, cwd=project, env=env)
    assert again.returncode == 0, again.stderr
    assert "2 jobs: 2 downloaded" in again.stdout
    _prompts(project, [{"id": "a", "text": "the beam turns", "image": "still.png"}, {"id": "c", "text": "new", "image": "still.png"}])
    os.utime(project / "prompts.jsonl", (LONG_AGO + 60, LONG_AGO + 60))
    third = run_cli(*args, cwd=project, env=env)
    assert third.returncode == 0, third.stderr
    assert "2 jobs: 2 downloaded" in third.stdout
    assert sim.stats()["providers"]["runway"]["submitted"] == 3  # a, b, then c only

