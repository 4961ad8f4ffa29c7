"""What the end-to-end tests share: pointing the CLI at a simulator, reading the ledger a run left,
and checking that every job was paid for once and collected once."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from runner.inputs import InputFile, replace_inputs
from runner.sim import payload_sha256
from runner.sim.media import mp4_info
from tests.conftest import KEYLESS



def sim_args(sim: Any, poll: float = 0.05, timeout: float = 5, **concurrency: int) -> list[str]:
    """Overrides that point both providers at a simulator, with test-sized intervals."""
    args = [
        f"providers.runway.base_url={sim.runway_url}",
        f"providers.fal.base_url={sim.fal_url}",
        f"providers.runway.min_poll_interval_s={poll}",
        f"providers.fal.min_poll_interval_s={poll}",
        "providers.runway.retry.backoff_base_s=0.05",
        "providers.fal.retry.backoff_base_s=0.05",
        f"providers.runway.request_timeout_s={timeout}",
        f"providers.fal.request_timeout_s={timeout}",
        *(f"providers.fal.endpoints.{name}={url}" for name, url in sim.fal_endpoints.items()),
    ]
    args += [f"providers.{name}.concurrency={n}" for name, n in concurrency.items()]
    return args


def sim_env(sim: Any) -> dict[str, str]:
    return {"RUNWAYML_API_SECRET": sim.keys["runway"], "FAL_KEY": sim.keys["fal"]}


def start(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    """`python -m runner <args>` in the background, as a user starts it."""
    full = {k: v for k, v in os.environ.items() if k not in KEYLESS} | env
    return subprocess.Popen([sys.executable, "-m", "runner", *args], cwd=cwd, env=full, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)


def wait_until(predicate: Callable[[], Any], timeout: float = 120.0) -> None:
    """Poll a condition (never a fixed sleep: the suite must pass on a loaded machine)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def ledger_path(folder: Path) -> Path:
    return folder / ".runner" / "ledger.db"


def query(folder: Path, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    conn = sqlite3.connect(ledger_path(folder), timeout=60)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, args)]
    finally:
        conn.close()


def ledger_rows(folder: Path) -> list[dict[str, Any]]:
    return query(folder, "select * from jobs")


def states(folder: Path, column: str = "state") -> Counter:
    """How many jobs are in each state (or value of another column); empty before the ledger exists."""
    try:
        return Counter(r[column] for r in query(folder, f"select {column} from jobs"))
    except sqlite3.Error:
        return Counter()


def assert_complete(folder: Path, expected_jobs: int) -> list[dict[str, Any]]:
    """Every job downloaded once: its file on disk with the ledger's sha256, no partial files."""
    rows = ledger_rows(folder)
    assert len(rows) == expected_jobs
    assert Counter(r["state"] for r in rows) == {"downloaded": expected_jobs}, Counter(r["state"] for r in rows)
    for row in rows:
        data = (folder / row["output_path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["output_sha256"] and len(data) == row["output_bytes"]
        assert mp4_info(data)["codec"] == "avc1"
    files = [p for p in (folder / "outputs").rglob("*") if p.is_file() and "_gallery" not in p.parts
             and p.name not in ("manifest.jsonl", "report.html")]  # the clips, not what describes them
    assert len(files) == expected_jobs, sorted(map(str, files))
    return rows


def submitted_body(row: dict[str, Any]) -> dict[str, Any]:
    """The request body the runner sent for a job (input files inline as data URIs)."""
    inputs = [InputFile(**f) for f in json.loads(row["inputs"])]
    body = replace_inputs(json.loads(row["payload"]), {f.sha256: f.data_uri() for f in inputs})
    return {"model": row["model_id"], **body} if row["provider"] == "runway" else body


def recorded_task_ids(folder: Path) -> dict[str, list[str]]:
    """Every task id the ledger ever recorded for each job (from its events), in order."""
    found: dict[str, list[str]] = {}
    for event in query(folder, "select job_key, detail from events where to_state = 'submitted' order by id"):
        match = re.match(r"task (\S+)$", event["detail"] or "")
        if match:
            found.setdefault(event["job_key"], []).append(match[1])
    return found


def assert_no_paid_twice(entries: list[dict[str, Any]], rows: list[dict[str, Any]], folder: Path) -> int:
    """Each job reached the provider once per generation it recorded, plus at most the submissions
    the ledger owns up to as possible duplicates; returns the simulator's count of orphans (accepted
    submissions whose answer the runner never recorded).

    Replicates of one point send identical requests, so the provider's side is compared per request
    body, against the jobs that send it."""
    recorded = recorded_task_ids(folder)
    known = {task for tasks in recorded.values() for task in tasks}
    sent = Counter((entry["endpoint"], entry["payload_sha256"]) for entry in entries)
    orphans = Counter((e["endpoint"], e["payload_sha256"]) for e in entries if e["task_id"] not in known)
    generations: Counter = Counter()
    owned_up: Counter = Counter()
    for row in rows:
        body = (row["endpoint"], payload_sha256(submitted_body(row)))
        generations[body] += len(recorded.get(row["key"], []))
        owned_up[body] += row["possible_duplicates"]
    for body in generations:
        assert sent[body] == generations[body] + orphans[body], (body, sent[body], generations[body], orphans[body])
        assert orphans[body] <= owned_up[body], (body, orphans[body], owned_up[body])
    assert set(sent) <= set(generations), "the provider received requests no job of this ledger sends"
    return sum(orphans.values())


class SimProcess:
    """The simulator as its own process (`python -m runner.sim`), as a real provider is to the runner."""

    def __init__(self, *flags: str):
        self.flags = flags

    def __enter__(self) -> "SimProcess":
        self.proc = subprocess.Popen([sys.executable, "-m", "runner.sim", "--port", "0", *self.flags],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = self.proc.stdout.readline()
        match = re.search(r"on (http://127\.0\.0\.1:\d+)", first)
        assert match, first + self.proc.stderr.read()
        self.base_url = match[1]
        self.runway_url, self.fal_url = f"{self.base_url}/runway", f"{self.base_url}/fal"
        self.fal_endpoints = {"platform": f"{self.base_url}/fal-api/v1", "storage": f"{self.base_url}/fal-rest"}
        self.keys = {}
        for _ in range(3):
            line = self.proc.stdout.readline()
            found = re.search(r"(Runway|fal)\s+\S+\s+key (\S+)", line)
            if found:
                self.keys[found[1].lower()] = found[2]
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.communicate(timeout=30)

    def ledger(self) -> list[dict[str, Any]]:
        return httpx.get(f"{self.base_url}/_sim/ledger", timeout=30).json()

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.base_url}/_sim/stats", timeout=30).json()

    def inject(self, *faults: dict[str, Any]) -> None:
        httpx.post(f"{self.base_url}/_sim/faults", json=list(faults), timeout=30).raise_for_status()

    def clear_faults(self) -> None:
        httpx.delete(f"{self.base_url}/_sim/faults", timeout=30).raise_for_status()
