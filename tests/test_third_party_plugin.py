"""The example third-party plugin (tests/example_plugin, "Acme"), installed from its own package as a
user installs it: it passes the conformance kit against its own simulator, and a multirun mixing
its model with a Runway and a fal model runs end to end with simulate=true, with no change to the
core; leaving it out of the allowlist removes its models with a clear message."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

from runner.sim import read_ledger
from runner.sim.media import mp4_info
from tests.conftest import ROOT, run_cli
from tests.helpers import ledger_rows

EXAMPLE = ROOT / "tests" / "example_plugin"
#: The project's plugins and Acme (tests load only the project's own unless told otherwise).
WITH_ACME = "runway,fal,acme"


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


def test_the_docs_walk_through_the_example_plugin_as_it_is():
    """docs/plugins.md shows each file of the plugin (under a heading naming it); every block of code it
    shows is in that file, word for word, so the walk-through cannot drift from the plugin that is tested."""
    doc = (ROOT / "docs" / "plugins.md").read_text()
    shown = 0
    for heading, body in re.findall(r"^### (\S+)\n(.*?)(?=^##)", doc, flags=re.S | re.M):
        path = EXAMPLE / heading.replace("\\", "")
        if not path.is_file():
            continue
        for block in re.findall(r"^```(?:python|toml|yaml)\n(.*?)^```", body, flags=re.S | re.M):  # code, not a terminal
            assert block in path.read_text(), f"docs/plugins.md shows, under {heading}, what {path.name} does not say:\n{block}"
            shown += 1
    assert shown == 6  # pyproject.toml, the provider and its hooks, the manifest, the simulator, the tests


def test_the_plugin_passes_the_conformance_kit_against_its_simulator(site):
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", str(EXAMPLE / "tests")],
        env={**os.environ, "PYTHONPATH": str(site), "RUNNER_LOAD_PLUGINS": WITH_ACME},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout  # every test ran


def test_a_multirun_mixing_acme_runway_and_fal_runs_end_to_end_with_simulate_true(site, tmp_path):
    env = {"PYTHONPATH": str(site), "RUNNER_LOAD_PLUGINS": WITH_ACME}
    listing = subprocess.run([sys.executable, "-m", "runner.models", "acme"], env={**os.environ, **env}, capture_output=True, text=True)
    assert "acme 1.0.0" in listing.stdout and "acme-v1 (acme; aliases acme)" in listing.stdout
    assert "acme (plugin acme)  key ACME_API_KEY  simulator: yes" in listing.stdout
    fast = tmp_path / "fast-sim.yaml"
    fast.write_text("latency: {default: {min: 0.05, max: 0.1}}\npending_s: 0.01\n")
    polls = [f"providers.{name}.min_poll_interval_s=0.05" for name in ("acme", "runway", "fal")]
    result = run_cli("-m", "model=acme,kling,gen4_turbo", "prompt_set=animate", "simulate=true", f"sim_config={fast}", *polls,
                     cwd=tmp_path, env=env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 jobs: 6 downloaded" in result.stdout

    rows = ledger_rows(tmp_path)
    assert Counter(r["provider"] for r in rows) == {"acme": 2, "fal": 2, "runway": 2}
    for row in rows:  # every output on disk, whole, as the ledger describes it
        assert row["state"] == "downloaded", row
        video = mp4_info((tmp_path / row["output_path"]).read_bytes())
        assert video["codec"] == "avc1"
        if row["provider"] == "acme":  # Acme's default length, and the plugin's lifecycle hook's note
            assert round(video["duration"]) == 4
            note = json.loads((tmp_path / (row["output_path"] + ".acme.json")).read_text())
            assert note == {"generation": row["task_id"], "model": "acme-v1", "usd": "0.08", "sha256": row["output_sha256"]}
        else:
            assert not (tmp_path / (row["output_path"] + ".acme.json")).exists()

    # The simulators' billing ledger (kept in the state dir, as simulate=true does): one accepted,
    # succeeded and billed generation per job, each provider's own.
    entries = read_ledger(tmp_path / ".runner" / "simulator.jsonl")
    assert sorted((e["provider"], e["task_id"]) for e in entries) == sorted((r["provider"], r["task_id"]) for r in rows)
    assert {e["status"] for e in entries} == {"succeeded"} and len({e["payload_sha256"] for e in entries}) == 6
    billed = {e["provider"]: Decimal(e["billed_usd"]) for e in entries if e["billed_usd"] is not None}
    assert billed["acme"] == Decimal("0.08") and billed["runway"] == Decimal("0.25")
    assert {e["model"] for e in entries} == {"acme-v1", "fal-kling-v2.1-standard", "gen4_turbo"}


def test_simulate_names_the_providers_to_simulate_and_the_others_need_their_keys(site, tmp_path):
    env = {"PYTHONPATH": str(site), "RUNNER_LOAD_PLUGINS": WITH_ACME}
    result = run_cli("-m", "model=acme,gen4_turbo", "prompt_set=animate", "simulate=[runway]", cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert "no API key for acme: set the environment variable ACME_API_KEY" in result.stderr
    assert "simulate=acme (or simulate=true)" in result.stderr and "ACME_API_KEY (acme)" in result.stderr
    unknown = run_cli("model=acme", "prompt_set=animate", "simulate=[acme,kling]", cwd=tmp_path, env=env)
    assert unknown.returncode == 2 and "simulate=kling: no installed provider is named 'kling'" in unknown.stderr


def test_help_names_the_installed_providers_and_its_examples_run(site, tmp_path):
    env = {"PYTHONPATH": str(site), "RUNNER_LOAD_PLUGINS": WITH_ACME}
    shown = run_cli("--help", cwd=tmp_path, env=env)
    assert shown.returncode == 0, shown.stderr
    assert "across the installed providers' models (fal, runway, acme)" in shown.stdout
    assert "Keys come from the environment: FAL_KEY (fal), RUNWAYML_API_SECRET (runway), ACME_API_KEY (acme)." in shown.stdout
    examples = [line.split("#")[0].split()[3:] for line in shown.stdout.splitlines()
                if line.startswith("  python -m runner ") and "dry_run=true" in line]
    assert any("model=pika,gen45,acme" in example for example in examples), examples  # one model of each provider
    for example in examples:
        result = run_cli(*example, cwd=tmp_path, env=env)
        assert result.returncode == 0, (example, result.stderr)


def test_leaving_the_plugin_out_removes_its_models(site, tmp_path):
    result = run_cli("model=acme", "prompt_set=nature", "dry_run=true", cwd=tmp_path, env={"PYTHONPATH": str(site), "RUNNER_LOAD_PLUGINS": "runway,fal"})
    assert result.returncode == 2
    assert "unknown model 'acme'" in result.stderr
    assert "RUNNER_LOAD_PLUGINS='runway,fal': acme" in result.stderr
