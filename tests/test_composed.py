"""A kept composition: the same command run again reads Hydra's composition back instead of
registering the catalogue's options and composing, and anything the composition is made of (an
override, a config file, a file added to a config folder, the registered options) composes again."""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path

import pytest
from hydra.types import RunMode

from runner import app, composed
from runner.run import RUN_ID_ENV
from tests.conftest import run_cli

LONG_AGO = time.time() - 3600  # older than runner.kept.RACY_S: a file the composition may trust


def _write(path: Path, text: str, when: float = LONG_AGO) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, (when, when))
    os.utime(path.parent, (when, when))


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder with a config folder of its own on Hydra's search path (hydra.searchpath),
    holding a prompt set; the runner's cache in the folder."""
    monkeypatch.setenv("RUNNER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv(RUN_ID_ENV, "composed")
    monkeypatch.chdir(tmp_path)
    for name in ("alpha", "beta"):
        _write(tmp_path / f"{name}.jsonl", f'{{"id": "{name}", "text": "the {name} words"}}\n')
    _write(tmp_path / "myconf" / "prompt_set" / "mine.yaml", f"file: {tmp_path / 'alpha.jsonl'}\n")
    os.utime(tmp_path / "myconf", (LONG_AGO, LONG_AGO))
    return tmp_path


@pytest.fixture
def registrations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per time the options were registered for Hydra: once per composition."""
    calls: list[int] = []
    setup = app.setup
    monkeypatch.setattr(app, "setup", lambda: calls.append(1) or setup())
    return calls


def _dry_run(capsys: pytest.CaptureFixture, *overrides: str) -> str:
    app.main(["model=gen4.5", "prompt_set=mine", "hydra.searchpath=[file://myconf]", "dry_run=true", "show_jobs=all", *overrides])
    return capsys.readouterr().out


def _kept(project: Path) -> list[Path]:
    return sorted((project / "cache").glob("compose-*.pickle"))


def test_the_same_command_reads_its_composition_back(project, registrations, capsys):
    first = _dry_run(capsys)
    assert "alpha" in first and len(registrations) == 1 and len(_kept(project)) == 1
    again = _dry_run(capsys)
    assert again == first and len(registrations) == 1  # nothing registered, nothing composed
    other = _dry_run(capsys, "duration=10")
    assert "duration=10" in other and len(registrations) == 2 and len(_kept(project)) == 2


def test_a_changed_config_file_composes_again(project, registrations, capsys):
    assert "alpha" in _dry_run(capsys)
    _write(project / "myconf" / "prompt_set" / "mine.yaml", f"file: {project / 'beta.jsonl'}\n", LONG_AGO + 60)
    assert "beta" in _dry_run(capsys) and len(registrations) == 2


def test_a_file_added_to_a_config_folder_composes_again(project, registrations, capsys):
    _dry_run(capsys)
    # A new option in a config folder (model=mine now exists): the folders are checked, not only the files read.
    _write(project / "myconf" / "model" / "mine.yaml", "name: gen4_turbo\n", LONG_AGO + 60)
    _dry_run(capsys)
    assert len(registrations) == 2


def test_a_config_file_modified_while_composing_is_not_trusted(project, registrations, capsys):
    _write(project / "myconf" / "prompt_set" / "mine.yaml", f"file: {project / 'beta.jsonl'}\n", time.time())
    assert "beta" in _dry_run(capsys)
    assert _kept(project) == []  # it may have changed after Hydra read it: composed again next time
    _dry_run(capsys)
    assert len(registrations) == 2


def test_a_torn_entry_composes_again(project, registrations, capsys):
    first = _dry_run(capsys)
    [entry] = _kept(project)
    entry.write_bytes(entry.read_bytes()[:100])
    assert _dry_run(capsys) == first and len(registrations) == 2


def test_a_multirun_is_not_kept(project, capsys):
    app.main(["-m", "model=gen4.5,veo3.1_fast", "prompt_set=mine", "hydra.searchpath=[file://myconf]", "dry_run=true"])
    assert "alpha" in capsys.readouterr().out
    assert _kept(project) == []


def test_the_key_follows_what_is_registered_and_the_folder(project, monkeypatch):
    class Loader:  # what the key reads of Hydra's loader
        def get_search_path(self):
            from hydra._internal.config_search_path_impl import ConfigSearchPathImpl

            path = ConfigSearchPathImpl()
            path.append("main", "pkg://runner_conf")
            return path

    def key(options: list[str]) -> str:
        return composed.KeptCompositions(Loader(), lambda: {"options": options}, lambda: None)._key("config", ["model=kling"], True, True)

    assert key(["kling"]) == key(["kling"])
    assert key(["kling"]) != key(["kling", "a_plugins_model"])  # a plugin installed: its model=... option
    before = key(["kling"])
    elsewhere = project / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # hydra.runtime.cwd, and relative search paths
    assert key(["kling"]) != before


def test_interpolations_are_resolved_by_each_run(project, monkeypatch):
    """A kept composition holds nothing resolved: state_dir (from RUNNER_STATE_DIR) follows the
    environment of each run."""
    loader = composed.KeptCompositions(_hydra_loader(), lambda: {"options": app.catalog_options()}, app.setup)
    overrides = ["model=gen4_turbo", "prompt_set=animate", "hydra.mode=RUN"]
    monkeypatch.setenv("RUNNER_STATE_DIR", str(project / "one"))
    first = loader.load_configuration("config", overrides, RunMode.RUN)
    assert first.state_dir == str(project / "one")
    monkeypatch.setenv("RUNNER_STATE_DIR", str(project / "two"))
    again = loader.load_configuration("config", overrides, RunMode.RUN)
    assert again is not first and again.state_dir == str(project / "two")
    assert copy.deepcopy(loader).load_configuration("config", overrides, RunMode.RUN) == again  # as joblib's launcher copies Hydra


def _hydra_loader():
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_automatic_config_search_path

    return ConfigLoaderImpl(config_search_path=create_automatic_config_search_path(None, None, app.CONFIG_PATH))


def test_a_rerun_end_to_end_plans_the_same(project):
    """The command, twice, as a user types it: the second prints the same plan from the kept
    composition."""
    env = {"RUNNER_CACHE_DIR": str(project / "cache")}
    args = ["model=gen4.5", "prompt_set=mine", "hydra.searchpath=[file://myconf]", "dry_run=true"]
    first = run_cli(*args, cwd=project, env=env)
    assert first.returncode == 0, first.stderr
    assert len(_kept(project)) == 1
    again = run_cli(*args, cwd=project, env=env)
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout and "1 job" in again.stdout


@pytest.mark.filterwarnings("ignore:provider=hydra.searchpath in command-line, path=later is not available")
def test_a_config_folder_that_appears_later_composes_again(project, registrations, capsys):
    """A search path folder absent when the command first ran is part of what the composition is
    made of: once it exists, the command is composed again."""
    args = ["model=gen4.5", "prompt_set.file=alpha.jsonl", "hydra.searchpath=[file://later]", "dry_run=true"]
    app.main(args)
    app.main(args)
    assert len(registrations) == 1  # kept, absent folder and all
    _write(project / "later" / "prompt_set" / "other.yaml", f"file: {project / 'beta.jsonl'}\n", LONG_AGO + 60)
    os.utime(project / "later", (LONG_AGO + 60, LONG_AGO + 60))
    app.main(args)
    assert len(registrations) == 2
    capsys.readouterr()
