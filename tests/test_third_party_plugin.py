"""A third-party provider plugin, installed from its own package, runs a job end to end with no
change to the core; leaving it out of the allowlist removes its models with a clear message."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli

EXAMPLE = ROOT / "tests" / "example_plugin"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The plugin installed into a throwaway folder (not the test environment) from its pyproject."""
    target = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("build")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(target), str(EXAMPLE)],
        check=True,
        cwd=build,
        env={**os.environ, "PIP_NO_INPUT": "1"},
    )
    return target


@pytest.fixture(scope="module")
def acme():
    sys.path.insert(0, str(EXAMPLE / "tests"))
    try:
        from acme_server import KEY, AcmeServer

        with AcmeServer() as server:
            server.key = KEY
            yield server
    finally:
        sys.path.remove(str(EXAMPLE / "tests"))


def test_the_plugin_passes_the_conformance_suite(site):
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(EXAMPLE / "tests")])},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout


def test_a_job_runs_through_the_installed_plugin(site, acme, tmp_path):
    env = {"PYTHONPATH": str(site), "ACME_API_KEY": acme.key}
    listing = subprocess.run([sys.executable, "-m", "runner.models", "acme"], env={**os.environ, **env}, capture_output=True, text=True)
    assert "acme 1.0.0" in listing.stdout and "acme-v1 (acme; aliases acme)" in listing.stdout
    result = run_cli(
        "model=acme", "prompt_set=nature", "duration=8",
        f"providers.acme.base_url={acme.url}", "providers.acme.min_poll_interval_s=0.05",
        cwd=tmp_path, env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = sqlite3.connect(tmp_path / ".runner" / "ledger.db").execute(
        "select state, output_path, output_sha256 from jobs"
    ).fetchall()
    assert len(rows) == 3 and all(state == "downloaded" and sha for state, _, sha in rows)
    assert all((tmp_path / path).is_file() or Path(path).is_file() for _, path, _ in rows)
    assert [s["seconds"] for s in acme.submissions[-3:]] == [8, 8, 8]


def test_leaving_the_plugin_out_removes_its_models(site, tmp_path):
    result = run_cli("model=acme", "prompt_set=nature", "dry_run=true", cwd=tmp_path, env={"PYTHONPATH": str(site), "RUNNER_LOAD_PLUGINS": "runway,fal"})
    assert result.returncode == 2
    assert "unknown model 'acme'" in result.stderr
    assert "RUNNER_LOAD_PLUGINS='runway,fal': acme" in result.stderr
