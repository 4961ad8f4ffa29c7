"""The simulator's state on disk: an append-only JSON-lines log, replayed when a simulator starts.

A real provider keeps its tasks when the client dies; a simulator started in-process by
`simulate=true` dies with the runner. With `SimConfig.state_path` every fact the simulator
decides is appended here, one JSON object per line, and a simulator started on the same file
restores them, so a rerun finds every task, request id, upload and ledger entry where it was.

Events (`"event"` names the kind; times are Unix seconds, rounded to the microsecond):

    meta      format, secret (hex: signs output and upload URLs), created   -- first line
    serve     port, ports (every port bound), pid, at                       -- each start
    task      id, seq, provider, model, mode, endpoint, payload, payload_sha256, body_sha256,
              latency, pending, price, failure_code, failure_message, problems,
              fallback_disabled, fallback_header, created                   -- each accepted task
    admit     id, at        -- the task took a concurrency slot (it ran from at + pending)
    cancel    id, phase     -- a cancel arrived while the task was waiting, pending or running
    end       id, final, at, billed, units -- succeeded, failed or cancelled, and what it cost
    delete    id            -- Runway DELETE of an ended task
    ...       what a provider simulator persists of its own (kept in `Snapshot.records` for it):
    upload    id, filename, expires   /   uploaded  id, size               -- Runway uploads
    fal_file  id, name, content_type, expires, size, sha256                -- fal storage uploads

The billing ledger is not stored separately: it is a function of these events (`task` is the
accepted submission, `end` its outcome and bill). A task's `payload` keeps its fields (fal's
request history shows them as the request's input) but leaves out data URIs and other very long
strings; the hashes of the full payload and body are kept, so output files and ledger hashes are
unchanged. The bytes of fal storage uploads are not kept, only their facts.

Each event is written and flushed before the client is answered (one `write` to the OS: a
killed process loses nothing it acknowledged; a machine crash may lose the last events). A line
torn by a crash mid-write is cut off when the file is next opened for writing, and a line that
cannot be read is skipped with a warning. One simulator at a time owns a file (an exclusive
`flock`, released when it stops or dies).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from runner.errors import UserError

FORMAT = 1
#: Data URIs longer than this are left out of a stored payload (the payload's hash is kept) ...
MAX_STORED_DATA_URI = 512
#: ... and so is any string longer than this (prompts are far shorter).
MAX_STORED_STRING = 65536
#: Where a simulator looks for a port of its own when a state file has none yet: below the
#: ephemeral range (Linux 32768-60999, macOS and Windows 49152-65535), from which the OS hands
#: out ports to outgoing connections and to `port=0` listeners, so a port chosen here is far less
#: likely to be taken by someone else between two runs.
PREFERRED_PORTS = (20000, 32767)

log = logging.getLogger("runner.sim")


class StateInUse(UserError):
    """Another live simulator owns the state file."""


@dataclass
class Snapshot:
    """What a state file says, event by event folded into current facts."""

    meta: dict[str, Any] | None = None
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)  # by id, in acceptance order
    admitted: dict[str, float] = field(default_factory=dict)
    ended: dict[str, tuple[str, float]] = field(default_factory=dict)
    bills: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> {billed, units} (newer files)
    cancels: dict[str, str] = field(default_factory=dict)  # id -> phase when the cancel arrived
    deleted: set[str] = field(default_factory=set)
    #: Events of other kinds, in order: what provider simulators persisted of their own (uploads, stored files).
    records: list[dict[str, Any]] = field(default_factory=list)
    serves: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0  # lines that could not be read
    torn: int = 0  # bytes of an unfinished last line

    @property
    def ports(self) -> list[int]:
        """Ports earlier simulators served on, most recent first (their URLs name these ports)."""
        seen: list[int] = []
        for serve in reversed(self.serves):
            for port in (serve.get("port"), *serve.get("ports", ())):
                if isinstance(port, int) and port > 0 and port not in seen:
                    seen.append(port)
        return seen


def parse(lines: Iterable[bytes]) -> Snapshot:
    """Fold complete lines into a Snapshot; unreadable ones are counted in `skipped`."""
    snap = Snapshot()
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            kind = record["event"]
            if kind == "task":
                snap.tasks[record["id"]] = record
            elif kind == "admit":
                snap.admitted[record["id"]] = float(record["at"])
            elif kind == "end":
                snap.ended[record["id"]] = (str(record["final"]), float(record["at"]))
                if "billed" in record:
                    snap.bills[record["id"]] = {"billed": record["billed"], "units": record.get("units")}
            elif kind == "cancel":
                snap.cancels[record["id"]] = str(record["phase"])
            elif kind == "delete":
                snap.deleted.add(record["id"])
            elif kind == "serve":
                snap.serves.append(record)
            elif kind == "meta":
                if int(record.get("format", 0)) > FORMAT:
                    raise UserError(f"simulator state written by a newer version (format {record['format']}; this one reads {FORMAT})")
                snap.meta = snap.meta or record
            else:  # a provider simulator's own (or a newer version's: its simulator ignores it)
                snap.records.append(record)
        except (ValueError, KeyError, TypeError, AttributeError):
            snap.skipped += 1
    return snap


def split(data: bytes) -> tuple[list[bytes], int]:
    """(complete lines, bytes after the last newline: a line torn by a crash mid-write)."""
    end = data.rfind(b"\n") + 1
    return data[:end].split(b"\n"), len(data) - end


def read_state(path: str | Path) -> Snapshot:
    """A state file as it stands (no lock taken: it may belong to a live simulator)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read simulator state {path}: {exc}") from None
    lines, torn = split(data)
    snap = parse(lines)
    snap.torn = torn
    return snap


def is_state_file(path: str | Path) -> bool:
    """Whether a JSON-lines file is a state file (its first record has an `event`)."""
    with open(path, "rb") as file:
        first = file.readline()
    try:
        record = json.loads(first)
    except ValueError:
        return False
    return isinstance(record, dict) and "event" in record


def compact_payload(value: Any) -> Any:
    """The payload with data URIs and very long strings replaced by a short note of their length."""
    if isinstance(value, str) and len(value) > (MAX_STORED_DATA_URI if value.startswith("data:") else MAX_STORED_STRING):
        return f"<{len(value)} characters not stored>"
    if isinstance(value, dict):
        return {k: compact_payload(v) for k, v in value.items()}
    if isinstance(value, list):
        return [compact_payload(v) for v in value]
    return value


def preferred_ports(path: str | Path, count: int = 8) -> list[int]:
    """Ports to try first for a new state file: a stable function of its absolute path."""
    low, high = PREFERRED_PORTS
    span = high - low + 1
    start = int.from_bytes(hashlib.sha256(str(Path(path).resolve()).encode()).digest()[:4], "big") % span
    return [low + (start + i) % span for i in range(count)]


class StateFile:
    """The open, locked log of one simulator; `append` is thread-safe and cheap (write + flush)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file: IO[bytes] | None = None
        self._lock = threading.Lock()
        self.size = 0

    def open(self, wait_s: float = 3.0) -> Snapshot:
        """Lock the file (creating it), cut a torn last line, and read what it holds.

        StateInUse when another simulator still holds it after `wait_s` (a run that is exiting
        releases it within moments; a live one is named by its pid and port).
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = open(self.path, "a+b")  # noqa: SIM115 (kept open until close())
        try:
            self._lock_file(file, wait_s)
            file.seek(0)
            lines, torn = split(file.read())
            if torn:
                file.truncate(file.tell() - torn)  # appends then start on a fresh line
            snap = parse(lines)
            snap.torn = torn
        except BaseException:
            file.close()
            raise
        self._file = file
        self.size = file.seek(0, os.SEEK_END)
        return snap

    def _lock_file(self, file: IO[bytes], wait_s: float) -> None:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory lock; one simulator per state file is then up to the user
            return
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        holder = ""
        serves = read_state(self.path).serves
        if serves:
            holder = f" (pid {serves[-1].get('pid')}, serving on port {serves[-1].get('port')})"
        raise StateInUse(
            f"simulator state {self.path} is in use by another simulator{holder}; wait for that run to "
            f"end, or give this one a different state file (another state_dir)"
        )

    def append(self, record: dict[str, Any]) -> None:
        """Write one event and flush it to the OS; a no-op once closed (the simulator has stopped)."""
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        with self._lock:
            if self._file is None:
                return
            self._file.write(line)
            self._file.flush()
            self.size += len(line)

    def close(self) -> int:
        """Release the file and its lock; returns its size (to notice a later writer)."""
        with self._lock:
            if self._file is not None:
                try:
                    self._file.close()
                except OSError as exc:  # a full disk shows up here at the latest
                    print(f"warning: simulator state {self.path}: {exc}", file=sys.stderr)
                self._file = None
            return self.size

    @property
    def closed(self) -> bool:
        return self._file is None
