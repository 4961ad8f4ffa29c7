"""HTTP clients sized to the work: httpx's API on aiohttp's connections.

Plugins and the engine speak httpx (requests, responses, exceptions); the bytes go through aiohttp,
whose HTTP parser is C and whose pool hands out a connection without looking at the others.
httpcore's pool looks at every connection it holds whenever a request starts or ends, and h11 and
anyio add their own layers: at 100 connections a request cost 1.5 ms of CPU through httpcore (in
pools of 8), 0.5 ms through aiohttp. The official runwayml SDK offers the same swap (its `aiohttp`
extra); our transport is our own because a create call's money rests on its error mapping (below).

Errors come back as httpx's, split where the request left the machine: ConnectError,
ConnectTimeout, ProxyError, UnsupportedProtocol and LocalProtocolError before (nothing was sent),
ReadError, ReadTimeout and RemoteProtocolError after (the provider may have it). An aiohttp error
this module does not know is treated as after: a create that may have been sent is never sent
again blindly.

A client's requests beyond its connections wait their turn in order outside the pool, their
timeouts not yet running.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from typing import Any

import httpx

from runner import pacing

KEEPALIVE_S = 5.0  # an idle connection is closed after this, as httpx does: servers close theirs too
#: Longest status or header line read: aiohttp's own default (8 KiB) is less than h11's, and a
#: provider's signed URLs in a header can be long.
MAX_LINE = 64 * 1024


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
    timeout = httpx.Timeout(timeout_s, connect=min(15.0, timeout_s))
    # httpx reads proxy variables only when it builds its own transport: mount them as it would.
    from httpx._utils import get_environment_proxies

    mounts = {pattern: None if proxy is None else Transport(connections, proxy=proxy)
              for pattern, proxy in get_environment_proxies().items()}
    return _Client(timeout=timeout, transport=Transport(connections), mounts=mounts, follow_redirects=follow_redirects)


class _Client(httpx.AsyncClient):
    """httpx's client with a cookie jar that reads only the responses that set cookies."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.cookies = kwargs.get("cookies")

    @property  # type: ignore[override]
    def cookies(self) -> httpx.Cookies:
        return self._jar

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        self._jar = _Cookies(cookies)


class _Cookies(httpx.Cookies):
    """httpx reads every response's cookies through two urllib adapters it builds for the purpose,
    cookies or not: 5% of the runner's CPU per request. Here only a response that sets some is read."""

    def extract_cookies(self, response: httpx.Response) -> None:
        if "set-cookie" in response.headers or "set-cookie2" in response.headers:
            super().extract_cookies(response)


class Transport(httpx.AsyncBaseTransport):
    """`connections` connections through one aiohttp session, made on first use (it belongs to the
    running loop); a request holds its place until its response is closed (read whole, or its
    stream closed)."""

    def __init__(self, connections: int, proxy: str | None = None):
        self._connections = connections
        self._proxy = proxy
        self._gate = asyncio.Semaphore(connections)
        self._session: Any = None  # aiohttp.ClientSession, imported with the first request

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await pacing.turn()  # requests start a few per pass of the loop (runner.pacing), however many are due at once
        await self._gate.acquire()
        door = DOOR.get()
        if door is not None and not door.passing():
            self._gate.release()
            raise Held(f"{request.method} {request.url.copy_with(query=None)} was not sent: the run is stopping")
        try:
            answer = await self._send(request)
        except BaseException:
            self._gate.release()
            raise
        return httpx.Response(status_code=answer.status, headers=answer.raw_headers,
                              stream=_Body(answer, request, self._gate.release), request=request,
                              extensions={"http_version": b"HTTP/1.1", "reason_phrase": (answer.reason or "").encode()})

    async def _send(self, request: httpx.Request) -> Any:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections, limit_per_host=0, keepalive_timeout=KEEPALIVE_S),
                cookie_jar=aiohttp.DummyCookieJar(),  # httpx keeps the cookies
                auto_decompress=False,  # httpx decodes, and counts the bytes on the wire
                max_line_size=MAX_LINE, max_field_size=MAX_LINE,
            )
            # aiohttp sends a GET, PUT or DELETE again by itself after a reset: the engine is the one
            # retry policy (its backoff, its counts, what the user is told). aiohttp's own test
            # client turns this off the same way; tests/test_connections.py checks it stays off.
            if hasattr(self._session, "_retry_connection"):
                self._session._retry_connection = False
        timeout = request.extensions.get("timeout", {})
        headers = request.headers
        try:
            data: Any = request.content or None
        except httpx.RequestNotRead:  # a streamed body: aiohttp frames it itself
            data = request.stream
            headers = headers.copy()
            headers.pop("transfer-encoding", None)
        try:
            return await self._session.request(
                request.method, str(request.url), headers=list(headers.multi_items()), data=data,
                allow_redirects=False,  # httpx follows them, by its client's policy
                timeout=aiohttp.ClientTimeout(total=None, connect=None, sock_connect=timeout.get("connect"),
                                              sock_read=timeout.get("read")),
                ssl=_tls() if request.url.scheme == "https" or self._proxy else True,
                server_hostname=request.extensions.get("sni_hostname"), proxy=self._proxy,
            )
        except Exception as exc:
            mapped = _before_answer(exc, request)
            if mapped is None:
                raise
            raise mapped from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context for the process, made by the first https request: each loads the certificate
    store (50 ms), and a context is safe to share. httpx's, so the certificates trusted (certifi's,
    or SSL_CERT_FILE's) are what httpx trusts."""
    return httpx.create_ssl_context()


class _Body(httpx.AsyncByteStream):
    """A response body read from aiohttp; closing it gives the connection back (or closes it, if
    the body was not read whole) and the request's place to the next."""

    def __init__(self, answer: Any, request: httpx.Request, release: Callable[[], None]):
        self._answer = answer
        self._request = request
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._answer.content.iter_any():
                yield chunk
        except Exception as exc:
            mapped = _after_sent(exc, self._request)
            if mapped is None:
                raise
            raise mapped from exc

    async def aclose(self) -> None:
        release, self._release = self._release, None
        if release is None:
            return
        try:
            self._answer.release()
        finally:
            release()


def _before_answer(exc: Exception, request: httpx.Request) -> Exception | None:
    """httpx's exception for an aiohttp failure before the answer's headers; None to let it go as it is."""
    import aiohttp

    message = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message, request=request)
    if isinstance(exc, aiohttp.ClientConnectorError):  # refused, no route, DNS, TLS handshake, the proxy unreachable
        return httpx.ConnectError(message, request=request)
    if isinstance(exc, aiohttp.ClientHttpProxyError):  # the proxy refused the tunnel: nothing reached the provider
        return httpx.ProxyError(message, request=request)
    if isinstance(exc, aiohttp.NonHttpUrlClientError):
        return httpx.UnsupportedProtocol(message, request=request)
    if isinstance(exc, aiohttp.InvalidURL):
        return httpx.InvalidURL(message)
    mapped = _after_sent(exc, request)
    if mapped is None and isinstance(exc, ValueError):  # a header aiohttp will not write (a line break): nothing sent
        return httpx.LocalProtocolError(message, request=request)
    return mapped


def _after_sent(exc: Exception, request: httpx.Request) -> Exception | None:
    """httpx's exception for a failure once the request may have left: every one of them says so."""
    import aiohttp
    from aiohttp.http_exceptions import HttpProcessingError  # an answer aiohttp could not parse

    message = str(exc) or type(exc).__name__
    if isinstance(exc, (aiohttp.ServerTimeoutError, TimeoutError)):
        return httpx.ReadTimeout(message, request=request)
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientResponseError,
                        HttpProcessingError)):
        return httpx.RemoteProtocolError(message, request=request)
    if isinstance(exc, (aiohttp.ClientConnectionError, ConnectionError)):  # reset, broken pipe, a closing transport
        return httpx.ReadError(message, request=request)
    if isinstance(exc, aiohttp.ClientError):
        return httpx.RemoteProtocolError(message, request=request)
    return None
