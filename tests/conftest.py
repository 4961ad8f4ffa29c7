"""Shared fixtures: the real CLI in a subprocess, and prompt sets written to a temporary folder."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from runner.plugins import GROUP, is_builtin

ROOT = Path(__file__).resolve().parent.parent
#: The project's tests load only the project's own plugins, whatever else is installed beside them
#: (a user's plugin must not change what they check), in this process and every command they run;
#: a test that wants another plugin names the plugins in the command's RUNNER_LOAD_PLUGINS.
BUILTIN_PLUGINS = ",".join(sorted(ep.name for ep in entry_points(group=GROUP) if is_builtin(ep)))
os.environ["RUNNER_LOAD_PLUGINS"] = BUILTIN_PLUGINS
#: Removed from the environment of every command a test runs: keys (unless the test gives them), the
#: run id one command shares with its multirun points (each test command is a new command), and a
#: state folder of the user's (each test's ledger is its own folder's).
KEYLESS = ("RUNWAYML_API_SECRET", "FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET", "RUNNER_RUN_ID", "RUNNER_STATE_DIR")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `long` (a minute or more, mostly waiting) start first: handed out late, one would
    keep a worker busy after the other has run out of tests."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m runner <args>` as a user runs it from a script; keys are removed unless a test
    gives them. No terminal on stdin (a run over confirm_over_usd then refuses rather than asks),
    whether pytest was started from a terminal or not."""
    full_env = {k: v for k, v in os.environ.items() if k not in KEYLESS}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "runner", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def prompt_sets(tmp_path: Path):
    """Write prompt files: returns a function (name, yaml text) -> the overrides that use it."""
    folder = tmp_path / "prompt_sets"
    folder.mkdir()

    def write(name: str, text: str) -> list[str]:
        path = folder / f"{name}.yaml"
        path.write_text(textwrap.dedent(text))
        return [f"prompt_set.file={path}"]

    return write


@pytest.fixture
def sim():
    """A started provider simulator (Runway and fal on one loopback port) with fast tasks; stopped after.

    Point clients at `sim.runway_url` / `sim.fal_url` with `sim.keys`; read `sim.ledger()` and
    `sim.stats()`; script failures with `sim.inject(kind, on=...)`.
    """
    from runner.sim import SimConfig, Simulator

    config = SimConfig(latency={"default": {"min": 0.03, "max": 0.08}}, pending_s=0.01)
    with Simulator(config) as simulator:
        yield simulator


# The example third-party plugin has its own tests, run by test_third_party_plugin.py once it is installed.
collect_ignore_glob = ["example_plugin/*"]
