"""The billing ledger: every submission the simulated providers accepted, and what it would cost.

It is the ground truth a client's own bookkeeping is checked against: one entry per accepted
task (including ones whose response the client never saw), keyed by the payload's hash so a test
can prove that no job was submitted twice, and billed per the manifests' prices so a test can
prove what a sweep spent. With a path, every change is appended as a JSON line (the last line for
a task id is its current state), so a ledger survives the simulator process.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

from runner.sim.tasks import Task


def payload_sha256(payload: Any) -> str:
    """sha256 of the canonical JSON of a request body (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class Ledger:
    """Entries in submission order; thread-safe."""

    def __init__(self, path: str | Path | None = None, wall=lambda t: t):
        self._path = Path(path) if path else None
        self._wall = wall  # board time -> unix time
        self._entries: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def record(self, task: Task) -> None:
        """A task was accepted (called before the client is answered, so a lost answer still counts)."""
        entry = {
            "provider": task.provider,
            "model": task.model.name,
            "endpoint": task.endpoint,
            "task_id": task.id,
            "payload_sha256": payload_sha256(task.body),
            "time": round(self._wall(task.created), 6),
            "status": "accepted",  # until the task ends: succeeded, failed or cancelled
            "estimated_usd": None if task.price is None else str(task.price),
            "billed_usd": None,
            "failure_code": task.failure_code,
            "fallback_disabled": task.fallback_disabled,
            "started": None,
            "ended": None,
        }
        with self._lock:
            self._entries[task.id] = entry
            self._append(entry)

    def settle(self, task: Task) -> None:
        """A task ended: record its final status and the bill (failures and cancels cost nothing)."""
        with self._lock:
            entry = self._entries.get(task.id)
            if entry is None:
                return
            entry["status"] = task.final
            entry["billed_usd"] = (None if task.price is None else str(task.price)) if task.final == "succeeded" else "0"
            entry["started"] = None if task.admitted is None else round(self._wall(task.admitted), 6)
            entry["ended"] = round(self._wall(task.ended or 0.0), 6)
            self._append(entry)

    def entries(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(entry) for entry in self._entries.values()]

    def _append(self, entry: dict[str, Any]) -> None:
        if self._path is not None:
            with self._path.open("a", encoding="utf-8") as out:
                out.write(json.dumps(entry, sort_keys=True) + "\n")


def read_ledger(path: str | Path) -> list[dict[str, Any]]:
    """A ledger file's entries: the last line written for each task id, in first-seen order."""
    entries: dict[str, dict[str, Any]] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            entry = json.loads(line)
            entries[entry["task_id"]] = entry
    return list(entries.values())
