"""The billing ledger: every submission the simulated providers accepted, and what it cost.

It is the ground truth a client's own bookkeeping is checked against: one entry per accepted
task (including ones whose response the client never saw), keyed by the payload's hash so a test
can prove that no job was submitted twice, and billed as the providers bill (`billing.charge`:
successes, unrefunded failures, cancels of running tasks) so a test can prove what a sweep spent. With a path, every change is appended as a JSON line (the last line for
a task id is its current state), so a ledger survives the simulator process. A simulator with a
state file (`SimConfig.state_path`) rebuilds its ledger from that file when it starts, so the
ledger then covers every run on the file, not only this process.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from runner.sim.state import Snapshot, is_state_file, read_state
from runner.sim.tasks import Task, payload_sha256

__all__ = ["Ledger", "entries_from_state", "payload_sha256", "read_ledger"]


def new_entry(*, provider: str, model: str, endpoint: str, task_id: str, body_sha256: str, time: float,
              price: str | None, failure_code: str | None, fallback_disabled: bool | None,
              fallback_header: str | None = None) -> dict[str, Any]:
    """An accepted submission, before it ends."""
    return {
        "provider": provider,
        "model": model,
        "endpoint": endpoint,
        "task_id": task_id,
        "payload_sha256": body_sha256,
        "time": time,
        "status": "accepted",  # until the task ends: succeeded, failed or cancelled
        "estimated_usd": price,
        "billed_usd": None,
        "billable_units": None,  # fal: X-Fal-Billable-Units of the ended request
        "failure_code": failure_code,
        "fallback_disabled": fallback_disabled,
        "fallback_header": fallback_header,
        "cancelled_at_phase": None,  # waiting, pending or running when a cancel arrived
        "deleted": False,  # Runway: DELETE of the ended task (its bill stands)
        "started": None,
        "ended": None,
    }


def settle_entry(entry: dict[str, Any], *, final: str, billed: str | None, units: str | None,
                 started: float | None, ended: float) -> None:
    """Record the outcome and the bill (`billing.charge` decided it; None: at an unknown price)."""
    entry["status"] = final
    entry["billed_usd"] = billed
    entry["billable_units"] = units
    entry["started"] = started
    entry["ended"] = ended


def entries_from_state(snap: Snapshot) -> list[dict[str, Any]]:
    """The ledger a state file records (tasks not yet ended there show as `accepted`)."""
    entries = []
    for task_id, rec in snap.tasks.items():
        entry = new_entry(provider=rec["provider"], model=rec["model"], endpoint=rec["endpoint"], task_id=task_id,
                          body_sha256=rec["body_sha256"], time=rec["created"], price=rec["price"],
                          failure_code=rec["failure_code"], fallback_disabled=rec["fallback_disabled"],
                          fallback_header=rec.get("fallback_header"))
        entry["cancelled_at_phase"] = snap.cancels.get(task_id)
        entry["deleted"] = task_id in snap.deleted
        if task_id in snap.ended:
            final, at = snap.ended[task_id]
            # files written before bills were recorded: successes billed their price, the rest nothing
            bill = snap.bills.get(task_id, {"billed": rec["price"] if final == "succeeded" else "0", "units": None})
            settle_entry(entry, final=final, billed=bill["billed"], units=bill["units"],
                         started=snap.admitted.get(task_id), ended=at)
        entries.append(entry)
    return entries


class Ledger:
    """Entries in submission order; thread-safe."""

    def __init__(self, path: str | Path | None = None, wall=lambda t: t):
        self._path = Path(path) if path else None
        self._wall = wall  # board time -> unix time
        self._entries: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def record(self, task: Task) -> None:
        """A task was accepted (called before the client is answered, so a lost answer still counts)."""
        entry = new_entry(
            provider=task.provider, model=task.model.name, endpoint=task.endpoint, task_id=task.id,
            body_sha256=task.body_hash, time=round(self._wall(task.created), 6),
            price=None if task.price is None else str(task.price), failure_code=task.failure_code,
            fallback_disabled=task.fallback_disabled, fallback_header=task.fallback_header,
        )
        with self._lock:
            self._entries[task.id] = entry
            self._append(entry)

    def settle(self, task: Task, units: str | None) -> None:
        """A task ended: record its final status and its bill (`task.billed`)."""
        with self._lock:
            entry = self._entries.get(task.id)
            if entry is None:
                return
            settle_entry(entry, final=task.final or "failed", billed=None if task.billed is None else str(task.billed),
                         units=units, started=None if task.admitted is None else round(self._wall(task.admitted), 6),
                         ended=round(self._wall(task.ended or 0.0), 6))
            self._append(entry)

    def update(self, task_id: str, **fields: Any) -> None:
        """Note a cancel or a delete on an entry."""
        with self._lock:
            entry = self._entries.get(task_id)
            if entry is not None:
                entry.update(fields)
                self._append(entry)

    def load(self, entries: list[dict[str, Any]]) -> None:
        """Entries an earlier simulator recorded (restored from its state; not appended again)."""
        with self._lock:
            for entry in entries:
                self._entries[entry["task_id"]] = dict(entry)

    def entries(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(entry) for entry in self._entries.values()]

    def _append(self, entry: dict[str, Any]) -> None:
        if self._path is not None:
            with self._path.open("a", encoding="utf-8") as out:
                out.write(json.dumps(entry, sort_keys=True) + "\n")


def read_ledger(path: str | Path) -> list[dict[str, Any]]:
    """A ledger file's entries: the last line written for each task id, in first-seen order.

    A simulator state file (`state_path`) is read too: its ledger as recorded, without starting a
    simulator (a task whose end the file does not hold yet shows as `accepted`).
    """
    if is_state_file(path):
        return entries_from_state(read_state(path))
    entries: dict[str, dict[str, Any]] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            entry = json.loads(line)
            entries[entry["task_id"]] = entry
    return list(entries.values())
