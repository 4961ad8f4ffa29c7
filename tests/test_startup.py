"""What a command loads before it has anything to send: a dry run run again reads its composition,
its plan and its compiled manifests back, and loads neither the manifest checker (pydantic), nor
asyncio and the HTTP stack, nor the engine and the ledger. Figures are `make bench`'s; this checks
what is loaded, which does not depend on the machine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

#: Runs the command in this process, then prints the top-level packages it loaded.
PROBE = """
import json, runpy, sys
sys.argv = ["runner", *sys.argv[1:]]
try:
    runpy.run_module("runner", run_name="__main__")
except SystemExit as exc:
    assert not exc.code, exc.code
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules} | {n for n in sys.modules if n.startswith("runner.")})))
"""

HEAVY = {"pydantic", "asyncio", "httpx", "httpcore", "aiohttp", "sqlite_utils", "runner.drive", "runner.engine", "runner.store"}


def _loaded(folder: Path, *args: str) -> set[str]:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=folder, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(folder), "RUNNER_CACHE_DIR": str(folder / "cache")})
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_a_dry_run_run_again_loads_nothing_it_does_not_use(tmp_path):
    args = ("model=kling", "prompt_set=ads", "dry_run=true")
    first = _loaded(tmp_path, *args)
    assert "pydantic" in first  # the manifests checked and compiled: the cache was empty
    again = _loaded(tmp_path, *args)
    assert not again & HEAVY, sorted(again & HEAVY)
    assert {"hydra", "omegaconf", "runner.plan", "runner.composed"} <= again  # it did run the command


def test_a_rerun_on_its_ledger_loads_no_migration_tool(tmp_path):
    """A ledger already up to date is told by one read: sqlite-utils (migrations) is loaded by a
    ledger's first run only."""
    (tmp_path / "fast.yaml").write_text("latency: {default: {min: 0.03, max: 0.06}}\npending_s: 0.01\n")
    args = ("model=gen4.5", "prompt_set=ads", "duration=5", "simulate=true", f"sim_config={tmp_path / 'fast.yaml'}",
            "quiet=true", "yes=true", "providers.runway.min_poll_interval_s=0.05")
    assert "sqlite_utils" in _loaded(tmp_path, *args)  # the ledger made: migrated
    again = _loaded(tmp_path, *args)
    assert "sqlite_utils" not in again and "runner.drive" in again  # it did run, on the same ledger
