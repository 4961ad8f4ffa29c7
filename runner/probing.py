"""Probing clips in a process of their own.

Reading a clip (`runner.probe.examine`) runs FFmpeg's demuxers and decoders and Pillow's encoder,
which hold the interpreter while they work: on a thread they take it from the event loop, and a
file that crashes FFmpeg would take the whole run down with it. So clips are probed by one child
process (`python -m runner.probe`), started at the first clip and fed one JSON line per clip over
a pipe; its answers come back in the order asked. Its death, or a clip it reads for longer than
`STUCK_S`, is one clip's probe `error`, and the clips queued behind it go to a new process. The
child holds no credentials, is in a session of its own (a Ctrl-C is the runner's to handle) and
ends when its input closes, so a runner killed outright does not leave it behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

#: Deaths in a row, with no answer between them, after which probing stops for this run (a child
#: that cannot start at all): every clip is then recorded unprobed, for `video-runner verify`.
GIVE_UP_AFTER = 3
STUCK_S = 120.0  # one clip read for this long (a first picture takes well under a second): ended, as if it died
ANSWER_LIMIT = 1 << 20  # bytes in one answer line (a probe row is a few hundred)
CLOSE_WAIT_S = 5.0  # for the clip being read when the run ends
_CREDENTIAL = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL", re.IGNORECASE)

Request = tuple[str, "str | None", str]  # path, the job's params as JSON, the file's sha256


class Prober:
    """`await examine(path, params_json, sha256)`: the file's probe row, from the child process."""

    def __init__(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiting: deque[tuple[Request, asyncio.Future[dict[str, Any]]]] = deque()
        self._starting = asyncio.Lock()
        self._deaths = 0
        self._broken = ""  # why probing stopped for this run
        self._closed = False
        self._since = 0.0  # when the child began on the clip first in line
        self._stuck = ""  # why the watchdog ended the child

    async def examine(self, path: str | Path, params_json: str | None, sha256: str) -> dict[str, Any]:
        request: Request = (str(path), params_json, sha256)
        if self._broken or self._closed:
            return _unprobed(request, self._broken or "the run is ending")
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        if not self._waiting:
            self._since = time.monotonic()
        self._waiting.append((request, future))
        if self._proc is None:
            await self._start()  # sends everything waiting, this request included
        elif self._proc.stdin is not None and not self._proc.stdin.is_closing():  # else resent by the next process
            self._proc.stdin.write(_line(request))
        return await future

    async def close(self) -> None:
        """Let the clip being read finish, then end the child (killed if it does not end)."""
        self._closed = True
        async with self._starting:  # a child being started is started, then ended here
            proc, reader = self._proc, self._reader
        if proc is not None:
            if proc.stdin is not None:
                proc.stdin.close()
            if self._waiting and all(future.done() for request, future in self._waiting):
                proc.kill()  # reading clips whose jobs stopped waiting (an interrupt): nobody needs its answers
            try:
                await asyncio.wait_for(proc.wait(), CLOSE_WAIT_S)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
        if reader is not None:
            await asyncio.gather(reader, return_exceptions=True)
        self._unprobed_all("the run ended before it was probed")

    async def _start(self) -> None:
        async with self._starting:
            if self._proc is not None or self._closed:
                return
            root = str(Path(__file__).resolve().parent.parent)  # found even when the runner is run from a checkout
            env = {k: v for k, v in os.environ.items() if not _CREDENTIAL.search(k)}
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
            try:
                self._proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "runner.probe", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.DEVNULL, env=env, start_new_session=True, limit=ANSWER_LIMIT)
            except (OSError, ValueError) as exc:  # no interpreter to start (an embedded Python), no processes left
                return self._give_up(f"the probe process could not start: {exc}")
            self._since, self._stuck = time.monotonic(), ""
            self._reader = asyncio.create_task(self._read(self._proc))
            assert self._proc.stdin is not None
            # Clips whose jobs stopped waiting are not read again; the rest are sent in order, as answers come back.
            self._waiting = deque(item for item in self._waiting if not item[1].done())
            self._proc.stdin.writelines(_line(request) for request, future in self._waiting)

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        watchdog = asyncio.create_task(self._watch(proc))
        try:
            while line := await proc.stdout.readline():
                facts = json.loads(line)
                request, future = self._waiting.popleft()  # IndexError: an answer to nothing
                self._since = time.monotonic()
                self._deaths = 0
                if not future.done():  # a job cancelled while waiting leaves its answer unread
                    future.set_result(facts)
        except (ValueError, IndexError):  # not the protocol (a line too long or not JSON): ended as if it died
            proc.kill()
        code = await proc.wait()
        watchdog.cancel()
        self._proc = None
        if self._closed:
            return
        last = self._stuck or _ended(code)
        if self._waiting:  # the clip it was reading (its job may have stopped waiting for it)
            self._deaths += 1
            request, future = self._waiting.popleft()
            if not future.done():
                why = (f"not probed: reading this file took longer than {STUCK_S:g} s" if self._stuck
                       else f"the probe process ended ({last}) while reading this file")
                future.set_result(_unprobed(request, why))
        if self._deaths >= GIVE_UP_AFTER:
            self._give_up(f"the probe process ended {GIVE_UP_AFTER} times in a row (last: {last})")
        elif self._waiting:
            await self._start()

    def _give_up(self, why: str) -> None:
        """No more probing this run: every clip waiting, and every one after, is recorded unprobed."""
        self._broken = why
        self._unprobed_all(why)

    def _unprobed_all(self, why: str) -> None:
        while self._waiting:
            request, future = self._waiting.popleft()
            if not future.done():
                future.set_result(_unprobed(request, why))

    async def _watch(self, proc: asyncio.subprocess.Process) -> None:
        """End a child that reads one clip for longer than STUCK_S (a hung file system, a decoder
        in a loop): the jobs waiting on it would wait for ever."""
        while True:
            await asyncio.sleep(max(0.05, STUCK_S / 10))
            if self._waiting and time.monotonic() - self._since > STUCK_S:
                self._stuck = f"a file read for longer than {STUCK_S:g} s"
                proc.kill()
                return


def examine_all(requests: list[Request]) -> list[dict[str, Any]]:
    """Probe files from synchronous code (`video-runner verify`), in a child process as a run does."""

    async def run() -> list[dict[str, Any]]:
        prober = Prober()
        try:
            return list(await asyncio.gather(*(prober.examine(*request) for request in requests)))
        finally:
            await prober.close()

    return asyncio.run(run()) if requests else []


def _line(request: Request) -> bytes:
    return json.dumps(request).encode() + b"\n"


def _unprobed(request: Request, why: str) -> dict[str, Any]:
    return {"output_sha256": request[2], "error": why}


def _ended(code: int) -> str:
    if code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return f"exit status {code}"
