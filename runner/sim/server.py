"""HTTP plumbing: a threaded HTTP/1.1 server on loopback that turns requests into `Response`s.

The protocol modules never touch sockets: they return a `Response`, which may ask for one of the
misbehaviours a real network shows (an RST, a response that never comes, a body cut short, an
event stream). This module carries those out, and times every ordinary request so the simulator
can report its own overhead.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

from runner.sim.faults import Fault

Abort = Literal["reset", "hang", "truncate"]
#: Where a `redirect` fault points by default: a path that answers 404, like a moved resource.
REDIRECT_TO = "/_sim/redirected"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: Message
    body: bytes
    params: list[tuple[str, str]] = field(default_factory=list)  # the query in order, repeats kept

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def json(self) -> Any:
        """The body parsed as JSON; ValueError when it is not."""
        return json.loads(self.body or b"null")


@dataclass
class Response:
    """What to send. `route` labels the request in the statistics (e.g. `runway.poll`)."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    route: str = "other"
    model: str | None = None  # the catalogue model it concerns, for per-model counts
    stream: Iterator[bytes] | None = None  # sent with chunked transfer encoding
    abort: Abort | None = None
    hold_s: float = 0.0  # for "hang": how long to hold the connection before closing it
    send_bytes: int = 0  # for "truncate": body bytes actually sent


def json_response(status: int, obj: Any, headers: dict[str, str] | None = None, route: str = "other",
                  model: str | None = None) -> Response:
    body = json.dumps(obj, separators=(",", ":")).encode()
    return Response(status, body, {"Content-Type": "application/json", **(headers or {})}, route, model)


def fault_response(fault: Fault, error: Callable[[int, str], Response], hang_max_s: float,
                   route: str = "other", model: str | None = None) -> Response:
    """The response a response-spoiling fault turns into; `error` builds the provider's error body.

    Header settings are sent verbatim (a `Retry-After: soon` is the point of some tests).
    """
    kind, detail = fault.kind, fault.detail
    if kind == "reset":
        response = Response(0, abort="reset")
    elif kind == "hang":
        response = Response(0, abort="hang", hold_s=min(float(detail.get("seconds", 5.0)), hang_max_s))
    elif kind == "malformed_json":
        response = Response(200, b'{"id": "6f0c1d2e-broken', {"Content-Type": "application/json"})
    elif kind == "not_object":
        response = json_response(200, detail.get("value", []))
    elif kind == "redirect":  # somewhere unrelated: following it never reaches what was asked for
        response = Response(int(detail.get("status", 302)), headers={"Location": detail.get("location", REDIRECT_TO)})
    else:
        status = int(kind.removeprefix("http_"))
        response = error(status, detail.get("message") or HTTPStatus(status).phrase)
        if "retry_after" in detail or status == 429:
            response.headers["Retry-After"] = str(detail.get("retry_after", 1))
        if "retry_after_ms" in detail:
            response.headers["retry-after-ms"] = str(detail["retry_after_ms"])
        if "should_retry" in detail:  # the Stainless-generated Runway SDK obeys this over the status code
            should = detail["should_retry"]
            response.headers["x-should-retry"] = str(should).lower() if isinstance(should, bool) else should
    response.route, response.model = route, model
    return response


class SimHTTPServer(ThreadingHTTPServer):
    """One thread per connection (daemon threads: a held connection never blocks shutdown)."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # bursts of new connections must not overflow the listen backlog

    def __init__(self, port: int, app: Callable[[Request], Response],
                 record: Callable[[Response, tuple[float, float] | None], None], stopping: threading.Event):
        self.app = app
        self.record = record
        self.stopping = stopping
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(("127.0.0.1", port), _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        try:
            super().finish_request(request, client_address)
        finally:
            with self._open_lock:
                self._open.discard(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-request (an interrupted or killed runner) is no fault of the
        simulator's: only its own errors print a traceback."""
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        """Shut every open connection, so a stopped simulator answers nothing more on kept-alive ones."""
        with self._open_lock:
            for sock in self._open:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "video-runner-sim/1"
    disable_nagle_algorithm = True
    timeout = 120  # an idle keep-alive connection is dropped after this
    server: SimHTTPServer

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a burst would otherwise print thousands of lines."""

    def _dispatch(self) -> None:
        started, cpu = time.perf_counter(), time.thread_time()
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return
        parts = urlsplit(self.path)
        method = "GET" if self.command == "HEAD" else self.command
        params = parse_qsl(parts.query, keep_blank_values=True)
        request = Request(method, parts.path, dict(params), self.headers, body, params)
        try:
            response = self.server.app(request)
        except Exception:  # a simulator bug must show up as a clear 500, not a dropped connection
            traceback.print_exc(file=sys.stderr)
            response = json_response(500, {"error": "simulator error: " + traceback.format_exc(limit=1).strip()})
        try:
            timed = self._send(response)
        except OSError:  # the client went away
            self.close_connection = True
            return
        timing = (time.perf_counter() - started, time.thread_time() - cpu) if timed else None
        self.server.record(response, timing)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, response: Response) -> bool:
        """Write the response (or misbehave as asked); True when it counts as an ordinary request."""
        if response.abort == "reset":
            self._reset()
            return False
        if response.abort == "hang":
            self.server.stopping.wait(response.hold_s)
            self.close_connection = True
            return False
        headers = {"Date": formatdate(usegmt=True), "Server": self.server_version, **response.headers}
        if response.stream is not None:
            headers["Transfer-Encoding"] = "chunked"
            self.wfile.write(self._head(response.status, headers))
            for chunk in response.stream:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
            return False
        if response.status not in (204, 304):  # these carry no body, so no length either
            headers["Content-Length"] = str(len(response.body))
        body = b"" if self.command == "HEAD" else response.body
        if response.abort == "truncate":
            self.wfile.write(self._head(response.status, headers) + body[: response.send_bytes])
            self.close_connection = True
            return False
        self.wfile.write(self._head(response.status, headers) + body)
        return True

    def _head(self, status: int, headers: dict[str, str]) -> bytes:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Client Closed Request" if status == 499 else ""
        if self.close_connection:
            headers["Connection"] = "close"
        lines = [f"HTTP/1.1 {status} {phrase}", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
        return "\r\n".join(lines).encode("latin-1")

    def _reset(self) -> None:
        """Drop the connection with an RST (SO_LINGER 0), as a crashed peer or a middlebox does."""
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()  # release the file object's hold on the socket, so close() is real
        self.connection.close()
