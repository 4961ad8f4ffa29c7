"""Who drives a job, and whether that process is still alive.

Every runner process registers an owner row (a random id, its host, pid and how to recognise the
process) and a thread bumps the row's `beat` counter every few seconds. Another process judges
liveness without comparing clocks across machines:

- where it can prove it shares the pid namespace and the boot with the owner (same boot id, same
  pid namespace), it asks the kernel: is that pid running, and is it the same process (start time)?
- otherwise it watches the counter on its *own* monotonic clock: an owner whose beat has not moved
  for `LEASE_S` of the observer's time is dead. A clock skew between machines changes nothing.

An owner that exits cleanly marks itself gone, so its jobs are taken over at once.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Seconds between beats, and the observer's time without a beat after which an owner is dead.
BEAT_S = 2.0
#: How long a beat waits for a ledger another process holds before leaving it to the next beat.
BEAT_WAIT_S = 0.5
LEASE_S = 30.0


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def process_start(pid: int) -> str | None:
    """The kernel's start time of a running process (clock ticks since boot), which tells a reused
    pid apart; None when no such process runs (a zombie, killed and not yet reaped, is not running)."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    # The command name (field 2) may hold spaces and parentheses: count fields after the last ')'.
    fields = stat.rpartition(")")[2].split()
    if len(fields) <= 19 or fields[0] in ("Z", "X"):
        return None
    return fields[19]


@dataclass(frozen=True)
class Identity:
    """What identifies a process across the machines and containers sharing a ledger."""

    id: str
    host: str
    pid: int
    boot_id: str | None
    pid_ns: str | None
    started: str | None

    @classmethod
    def current(cls) -> "Identity":
        pid = os.getpid()
        return cls(
            id=uuid.uuid4().hex[:16],
            host=socket.gethostname(),
            pid=pid,
            boot_id=_read("/proc/sys/kernel/random/boot_id"),
            pid_ns=_pid_namespace(),
            started=process_start(pid),
        )

    def row(self) -> dict[str, Any]:
        return {"id": self.id, "host": self.host, "pid": self.pid, "boot_id": self.boot_id, "pid_ns": self.pid_ns,
                "started": self.started, "beat": 0, "gone": 0, "registered_at": time.time()}


class Liveness:
    """An observer's judgement of other owners, from what it can prove or has watched."""

    def __init__(self, me: Identity, clock: Callable[[], float] = time.monotonic, lease_s: float = LEASE_S):
        self.me = me
        self.clock = clock
        self.lease_s = lease_s
        self._seen: dict[str, tuple[int, float]] = {}  # owner id -> (beat, observer time it was first seen)

    def alive(self, owner: dict[str, Any] | None) -> bool:
        """`owner` is its row of the owners table; None (an unknown owner id) is dead."""
        if owner is None or owner["gone"]:
            return False
        if owner["id"] == self.me.id:
            return True
        if self._shares_kernel(owner):
            return process_start(int(owner["pid"])) == owner["started"]
        beat, now = int(owner["beat"]), self.clock()
        seen = self._seen.get(owner["id"])
        if seen is None or seen[0] != beat:
            self._seen[owner["id"]] = (beat, now)
            return True
        return now - seen[1] < self.lease_s

    def _shares_kernel(self, owner: dict[str, Any]) -> bool:
        me = self.me
        return bool(me.boot_id and me.pid_ns and me.started and owner["started"]
                    and owner["boot_id"] == me.boot_id and owner["pid_ns"] == me.pid_ns)


class Heartbeat:
    """A thread that bumps this process's beat counter on its own connection to the ledger.

    A thread, not the event loop: a loop busy with thousands of jobs, or a ledger write waiting
    on another process's lock, must not make this process look dead to the others.
    """

    def __init__(self, path: Path, owner_id: str, every_s: float = BEAT_S):
        self.path = path
        self.owner_id = owner_id
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="runner-heartbeat", daemon=True)

    def start(self) -> "Heartbeat":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        # A beat waits for a ledger held by another process a moment only: the next beat tries
        # again, and stopping (at a Ctrl-C) never waits on a lock.
        conn = sqlite3.connect(str(self.path), timeout=BEAT_WAIT_S, isolation_level=None)
        try:
            while not self._stop.wait(self.every_s):
                try:
                    conn.execute("update owners set beat = beat + 1 where id = ?", [self.owner_id])
                except sqlite3.Error:
                    continue  # a busy or failing ledger: the next beat tries again
        finally:
            conn.close()
