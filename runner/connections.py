"""HTTP clients sized to the work: connections in small pools, and no request ever queued inside one.

httpcore's connection pool looks at every connection it holds (and, for each idle one, at every
other) whenever a request starts or ends, and at every queued request against every connection: a
request's cost grows with the square of the pool's size, and with the requests queued in it. With
thousands of generations in flight one large pool would spend the event loop on that bookkeeping.
So a client's connections are split into pools of POOL_SIZE, each request goes to the first pool
with a free connection, and a semaphore holds back the requests beyond the connections there are:
a request that reaches a pool always finds its connection at once.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import ssl
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar

import httpx

from runner import pacing

POOL_SIZE = 8  # connections per httpcore pool: its scans stay a few dozen steps


class Held(Exception):
    """A request kept back at the door: the run is stopping and nothing of this call left the machine."""


class Door:
    """The last check a create call's requests pass before they leave, after any wait for a turn or
    a connection: once `closed()` (a Ctrl-C), a request is held (`Held`) unless the call has
    already sent one (that one may have been the create: what follows must go on). `held` says
    afterwards, whatever a plugin made of the exception, that nothing of the call was sent."""

    def __init__(self, closed: Callable[[], bool]):
        self.closed = closed
        self.sent = False
        self.held = False

    def passing(self) -> bool:
        if not self.sent and self.closed():
            self.held = True
            return False
        self.sent = True
        return True


#: The door of the call under way in this task (set by whoever makes a create call), else None.
DOOR: ContextVar[Door | None] = ContextVar("runner_door", default=None)


def client(connections: int, timeout_s: float, *, follow_redirects: bool) -> httpx.AsyncClient:
    """An AsyncClient with `connections` connections at most (requests beyond wait their turn in
    order, their timeouts not yet running); proxies from the environment are honoured as httpx does."""
    timeout = httpx.Timeout(timeout_s, connect=15.0)
    # httpx reads proxy variables only when it builds its own transport: mount them as it would.
    from httpx._utils import get_environment_proxies

    mounts = {pattern: None if proxy is None else Pools(connections, proxy=proxy)
              for pattern, proxy in get_environment_proxies().items()}
    return httpx.AsyncClient(timeout=timeout, transport=Pools(connections), mounts=mounts, follow_redirects=follow_redirects)


class Pools(httpx.AsyncBaseTransport):
    """`connections` connections in pools of POOL_SIZE; a request holds its pool's place until its
    response is closed (read whole, or its stream closed)."""

    def __init__(self, connections: int, pool_size: int = POOL_SIZE, proxy: str | None = None):
        count = max(1, -(-connections // pool_size))
        self._proxy = proxy
        self._limits = httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size)
        self._pools: list[httpx.AsyncHTTPTransport | None] = [None] * count  # made when first used
        self._size = pool_size
        self._busy = [0] * count
        self._room = list(range(count))  # a heap of the pools with a free connection: the first is used
        self._gate = asyncio.Semaphore(count * pool_size)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await pacing.turn()  # requests start a few per pass of the loop (runner.pacing), however many are due at once
        await self._gate.acquire()
        door = DOOR.get()
        if door is not None and not door.passing():
            self._gate.release()
            raise Held(f"{request.method} {request.url.copy_with(query=None)} was not sent: the run is stopping")
        index = self._room[0]  # never empty here: the gate lets through only as many requests as there are connections
        self._busy[index] += 1
        if self._busy[index] == self._size:
            heapq.heappop(self._room)
        release = self._releaser(index)
        pool = self._pools[index]
        if pool is None:
            pool = self._pools[index] = httpx.AsyncHTTPTransport(verify=_tls(), limits=self._limits, proxy=self._proxy)
        try:
            response = await pool.handle_async_request(request)
        except BaseException:
            release()
            raise
        response.stream = _Releasing(response.stream, release)
        return response

    def _releaser(self, index: int) -> Callable[[], None]:
        done = False

        def release() -> None:
            nonlocal done
            if done:
                return
            done = True
            if self._busy[index] == self._size:
                heapq.heappush(self._room, index)
            self._busy[index] -= 1
            self._gate.release()

        return release

    async def aclose(self) -> None:
        for pool in self._pools:
            if pool is not None:
                await pool.aclose()


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every pool of the process, made when the first pool is: each loads the
    certificate store (50 ms), and a context is safe to share."""
    return httpx.create_ssl_context()


class _Releasing(httpx.AsyncByteStream):
    """A response body that gives its pool's place back once closed."""

    def __init__(self, stream: httpx.AsyncByteStream, release: Callable[[], None]):
        self._stream = stream
        self._release = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            self._release()
