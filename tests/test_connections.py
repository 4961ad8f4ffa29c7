"""The runner's HTTP transport: after a Ctrl-C no create call's request leaves the machine (even one
that was already waiting for its turn or a connection), a call that has sent a request goes on,
and proxies from the environment are used with the same transport."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from runner import connections
from runner.connections import DOOR, Door, Held, Transport


class Server:
    """A loopback server that records each request's target and answers 200; requests to /slow
    wait until `release` is set."""

    def __init__(self) -> None:
        self.targets: list[str] = []
        self.release = threading.Event()
        self.arrived = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                server.targets.append(self.path)
                server.arrived.set()
                if self.path.endswith("/slow"):
                    server.release.wait(60)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_POST = do_GET

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.release.set()
    s.httpd.shutdown()
    s.httpd.server_close()


async def _call(client: httpx.AsyncClient, door: Door, *urls: str) -> list[int]:
    """A create call as a provider makes one: its requests, under its door."""
    token = DOOR.set(door)
    try:
        return [(await client.post(url)).status_code for url in urls]
    finally:
        DOOR.reset(token)


def test_a_create_call_after_an_interrupt_is_held_and_nothing_leaves(server):
    async def main() -> Door:
        door = Door(lambda: True)
        async with connections.client(4, 5.0, follow_redirects=False) as client:
            with pytest.raises(Held, match="was not sent: the run is stopping"):
                await _call(client, door, f"{server.url}/tasks")
            assert (await client.get(f"{server.url}/status")).status_code == 200  # outside a create call: sent
        return door

    door = asyncio.run(main())
    assert door.held
    assert server.targets == ["/status"]


def test_a_call_that_has_sent_a_request_goes_on_after_the_door_closes(server):
    closed = False

    async def main() -> list[int]:
        nonlocal closed
        door = Door(lambda: closed)
        token = DOOR.set(door)
        try:
            async with connections.client(4, 5.0, follow_redirects=False) as client:
                first = (await client.post(f"{server.url}/upload")).status_code
                closed = True  # the interrupt comes between an upload and the create: the create may follow
                return [first, (await client.post(f"{server.url}/tasks")).status_code]
        finally:
            DOOR.reset(token)

    assert asyncio.run(main()) == [200, 200]
    assert server.targets == ["/upload", "/tasks"]


def test_calls_waiting_for_a_connection_when_the_run_stops_are_held(server):
    stopping = False

    async def main() -> list[object]:
        nonlocal stopping
        transport = Transport(1)
        async with httpx.AsyncClient(transport=transport, timeout=30) as client:
            first = asyncio.create_task(_call(client, Door(lambda: stopping), f"{server.url}/slow"))
            await asyncio.get_running_loop().run_in_executor(None, server.arrived.wait, 30)
            waiting = [asyncio.create_task(_call(client, Door(lambda: stopping), f"{server.url}/tasks")) for _ in range(4)]
            for _ in range(100_000):  # until all four wait for the one connection, which is busy
                if len(transport._gate._waiters or ()) == 4:
                    break
                await asyncio.sleep(0)
            assert len(transport._gate._waiters or ()) == 4
            stopping = True
            server.release.set()
            return await asyncio.gather(first, *waiting, return_exceptions=True)

    results = asyncio.run(main())
    assert results[0] == [200]
    assert all(isinstance(r, Held) for r in results[1:]), results
    assert server.targets == ["/slow"]


def test_a_proxy_from_the_environment_carries_the_requests(server, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", server.url)
    for name in ("NO_PROXY", "no_proxy", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)

    async def main() -> int:
        async with connections.client(4, 5.0, follow_redirects=False) as client:
            return (await client.get("http://provider.invalid/v1/tasks/abc")).status_code

    assert asyncio.run(main()) == 200
    assert server.targets == ["http://provider.invalid/v1/tasks/abc"]  # the proxy was asked for the URL


class RawServer:
    """A loopback socket server that reads one request per connection and then does `act(conn)`:
    whatever a broken network or server does. Counts the requests that arrived."""

    def __init__(self, act) -> None:
        import socket

        self.requests = 0
        self.heads: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.act = act
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            self.requests += 1
            self.heads.append(data.partition(b"\r\n\r\n")[0])
            self.act(conn)


def _reset(conn) -> None:
    import socket
    import struct

    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with an RST
    conn.close()


def _get(url: str, timeout_s: float = 5.0, method: str = "GET") -> object:
    async def main() -> object:
        async with connections.client(4, timeout_s, follow_redirects=False) as client:
            try:
                response = await client.request(method, url)
                return response.status_code, response.content
            except httpx.HTTPError as exc:
                return exc

    return asyncio.run(main())


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_a_reset_after_the_request_is_an_ambiguous_error_and_is_not_sent_again(method):
    from runner.providers import classify_transport

    server = RawServer(_reset)
    error = _get(f"{server.url}/v1/tasks", method=method)
    assert isinstance(error, (httpx.ReadError, httpx.RemoteProtocolError)), error
    classified = classify_transport(error, submitting=True)
    assert classified.maybe_accepted and not classified.never_sent
    assert server.requests == 1  # the engine decides about another attempt, not the transport


def test_a_refused_connection_is_an_error_before_anything_was_sent():
    from runner.providers import classify_transport

    import socket

    with socket.socket() as free:  # a port nothing listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    error = _get(f"http://127.0.0.1:{port}/v1/tasks", method="POST")
    assert isinstance(error, httpx.ConnectError), error
    classified = classify_transport(error, submitting=True)
    assert classified.never_sent and not classified.maybe_accepted


def test_an_answer_that_never_comes_is_a_read_timeout():
    held = []
    server = RawServer(held.append)  # reads the request, answers nothing, keeps the connection open
    error = _get(f"{server.url}/v1/tasks/abc", timeout_s=0.3)
    assert isinstance(error, httpx.ReadTimeout), error
    assert server.requests == 1


def test_a_body_cut_short_and_an_unreadable_answer_are_protocol_errors():
    def short(conn) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        conn.close()

    def garbage(conn) -> None:
        conn.sendall(b"HELLO THERE\r\n\r\n")
        conn.close()

    for act in (short, garbage):
        error = _get(f"{RawServer(act).url}/clip.mp4")
        assert isinstance(error, httpx.RemoteProtocolError), (act.__name__, error)


def test_an_answer_passes_through_with_its_headers_and_body_undecoded_by_the_transport():
    import gzip

    body = gzip.compress(b'{"status": "SUCCEEDED"}')

    def answer(conn) -> None:
        conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Encoding: gzip\r\nX-Request-Id: a\r\nX-Request-Id: b\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)
        conn.close()

    async def main() -> httpx.Response:
        async with connections.client(4, 5.0, follow_redirects=False) as client:
            response = await client.get(f"{RawServer(answer).url}/v1/tasks/abc")
            await response.aread()
            return response

    response = asyncio.run(main())
    assert response.status_code == 201 and response.reason_phrase == "Created"
    assert response.json() == {"status": "SUCCEEDED"}  # httpx decoded it, once
    assert response.num_bytes_downloaded == len(body)
    assert response.headers.get_list("x-request-id") == ["a", "b"]


def test_cookies_a_response_sets_are_sent_back_and_a_response_without_sets_none():
    def answer(conn) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nSet-Cookie: edge=abc; Path=/\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        conn.close()

    def plain(conn) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        conn.close()

    setter, other = RawServer(answer), RawServer(plain)

    async def main() -> tuple[dict[str, str], dict[str, str]]:
        async with connections.client(4, 5.0, follow_redirects=False) as client:
            await client.get(f"{other.url}/a")
            before = dict(client.cookies)
            await client.get(f"{setter.url}/a")
            await client.get(f"{setter.url}/b")
            return before, dict(client.cookies)

    before, after = asyncio.run(main())
    assert before == {} and after == {"edge": "abc"}
    assert b"cookie: edge=abc" in setter.heads[1].lower() and b"cookie" not in setter.heads[0].lower()


@pytest.fixture
def tls_server(tmp_path):
    """An HTTPS loopback server whose certificate a throwaway CA signed; yields (url, CA file)."""
    import ssl

    import trustme

    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    s = Server()
    s.httpd.socket = context.wrap_socket(s.httpd.socket, server_side=True)
    yield f"https://localhost:{s.httpd.server_port}", ca_file
    s.httpd.shutdown()
    s.httpd.server_close()


def _tls_get(url: str) -> object:
    connections._tls.cache_clear()  # the process's one context is made from the trust settings of now
    try:
        return _get(url)
    finally:
        connections._tls.cache_clear()


def test_https_is_verified_against_the_trusted_certificates(tls_server, monkeypatch):
    from runner.providers import classify_transport

    url, ca_file = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # as httpx honours it
    assert _tls_get(f"{url}/v1/tasks/abc") == (200, b"ok")

    monkeypatch.delenv("SSL_CERT_FILE")
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    error = _tls_get(f"{url}/v1/tasks/abc")  # a certificate nobody vouches for: refused before sending
    assert isinstance(error, httpx.ConnectError) and "certificate" in str(error).lower(), error
    assert classify_transport(error, submitting=True).never_sent
