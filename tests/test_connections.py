"""The runner's HTTP transport: after a Ctrl-C no create call's request leaves the machine (even one
that was already waiting for its turn or a connection), a call that has sent a request goes on,
and proxies from the environment are used with the same pools."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from runner import connections
from runner.connections import DOOR, Door, Held, Pools


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
        pools = Pools(1, pool_size=1)
        async with httpx.AsyncClient(transport=pools, timeout=30) as client:
            first = asyncio.create_task(_call(client, Door(lambda: stopping), f"{server.url}/slow"))
            await asyncio.get_running_loop().run_in_executor(None, server.arrived.wait, 30)
            waiting = [asyncio.create_task(_call(client, Door(lambda: stopping), f"{server.url}/tasks")) for _ in range(4)]
            for _ in range(100_000):  # until all four wait for the one connection, which is busy
                if len(pools._gate._waiters or ()) == 4:
                    break
                await asyncio.sleep(0)
            assert len(pools._gate._waiters or ()) == 4
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
