"""The provider contract: what a provider plugin implements, and the words the engine understands.

A provider turns a planned job into a task at the provider and reports on it: `submit`, `poll`,
`result`, `cancel`, with input files prepared the provider's way. Its statuses are normalised to
the runner's few (queued, running, succeeded, failed, canceled) and every error is classified as
retryable, rate-limited (with the server's Retry-After) or permanent (with the provider's message),
so the engine can schedule, retry and resume without knowing any provider.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar, Literal

import httpx

from runner.catalog import CatalogModel
from runner.config import ProviderConf
from runner.inputs import InputFile

State = Literal["queued", "running", "succeeded", "failed", "canceled"]
ErrorClass = Literal["retryable", "rate_limited", "permanent"]


class ProviderError(Exception):
    """A call to a provider failed; `kind` says whether to try again.

    `maybe_accepted` is set when a submit failed after the request may have reached the provider
    (a timeout, a dropped connection, a 5xx): a retry could start a second, paid generation.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: ErrorClass,
        status: int | None = None,
        retry_after: float | None = None,
        maybe_accepted: bool = False,
    ):
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.status = status
        self.retry_after = retry_after
        self.maybe_accepted = maybe_accepted


@dataclass(frozen=True)
class Handle:
    """What the ledger keeps of a task: enough to poll, fetch and cancel it from any process."""

    task_id: str
    urls: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Status:
    state: State
    detail: str = ""  # the provider's own status word (THROTTLED, IN_QUEUE, ...)
    progress: float | None = None
    queue_position: int | None = None
    error: str | None = None
    error_kind: ErrorClass | None = None
    cost_usd: Decimal | None = None  # what the provider says this generation cost, when it says
    outputs: tuple[str, ...] = ()  # output URLs, when the status already carries them


@dataclass(frozen=True)
class Job:
    """What a provider needs of a planned job (a row of the ledger, decoded)."""

    key: str
    model_id: str
    endpoint: str
    payload: dict[str, Any]
    inputs: tuple[InputFile, ...]
    output_paths: tuple[str, ...]  # where the output URL sits in the result (manifest `output.url`)
    data_uri_max_bytes: Mapping[str, int | None] = field(default_factory=dict)  # per input mime kind


def make_job(
    key: str, model: CatalogModel, endpoint: str, payload: dict[str, Any], inputs: tuple[InputFile, ...]
) -> Job:
    """A provider's view of a job: the request plus what the catalogue says about its model."""
    limits = {kind: getattr(model.media_limits(kind), "data_uri_max_bytes", None) for kind in ("image", "video", "audio")}
    return Job(
        key=key,
        model_id=model.model_id,
        endpoint=endpoint,
        payload=payload,
        inputs=inputs,
        output_paths=tuple(model.spec.output.url),
        data_uri_max_bytes=limits,
    )


@dataclass(frozen=True)
class Settings:
    """A provider account as the run config gives it."""

    base_url: str
    key: str
    request_timeout_s: float = 60.0


class Provider:
    """Base class for provider plugins. Subclasses set `name` and implement the async methods."""

    name: ClassVar[str]
    #: The environment variables the official SDK reads for the key, most specific first.
    key_env: ClassVar[tuple[str, ...]] = ()
    #: The provider's settings (base URL, key variable, limits) when conf/provider/ has no file for
    #: it: a third-party plugin ships its defaults here, and they become `provider=<name>`.
    default_conf: ClassVar[ProviderConf | None] = None

    def __init__(self, settings: Settings, client: httpx.AsyncClient):
        self.settings = settings
        self.client = client

    @classmethod
    def key_from_env(cls, environ: Mapping[str, str], configured: str | None = None) -> str | None:
        """The API key, from the configured variable or the SDK's usual ones."""
        for var in (configured, *cls.key_env):
            if var and environ.get(var):
                return environ[var]
        return None

    def auth_headers(self) -> dict[str, str]:
        """Headers every API call carries (the key is never logged or stored)."""
        raise NotImplementedError

    def error_message(self, response: httpx.Response) -> str:
        """The provider's own explanation of an HTTP error."""
        return f"HTTP {response.status_code}: {response.text[:300]}"

    async def http(
        self, method: str, url: str, *, submitting: bool = False, ok: tuple[int, ...] = (), **kwargs: Any
    ) -> httpx.Response:
        """One API call; a failure comes back classified as a ProviderError."""
        try:
            response = await self.client.request(method, url, headers=self.auth_headers(), **kwargs)
        except httpx.TransportError as exc:
            raise classify_transport(exc, submitting=submitting) from None
        if response.status_code >= 400 and response.status_code not in ok:
            raise classify_status(response, self.error_message(response), submitting=submitting)
        return response

    async def submit(self, job: Job) -> Handle:
        raise NotImplementedError

    async def poll(self, handle: Handle) -> Status:
        raise NotImplementedError

    async def result(self, handle: Handle, job: Job) -> list[str]:
        """Output URLs of a succeeded task (fetch them at once: providers expire them)."""
        raise NotImplementedError

    async def cancel(self, handle: Handle) -> None:
        raise NotImplementedError

    async def concurrency_limits(self) -> dict[str, int]:
        """Per-model concurrency the account allows, where the provider says (else empty)."""
        return {}


# -- helpers every HTTP provider needs -------------------------------------------------------------


def retry_after(response: httpx.Response) -> float | None:
    """Seconds to wait, from `retry-after-ms` or `Retry-After` (seconds or an HTTP date)."""
    value = response.headers.get("retry-after-ms")
    if value:
        try:
            return float(value) / 1000
        except ValueError:
            pass
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def classify_status(response: httpx.Response, message: str, *, submitting: bool = False) -> ProviderError:
    """An HTTP error as the engine should treat it (DESIGN.md "Engine rules")."""
    code = response.status_code
    if code == 429:
        return ProviderError(message, kind="rate_limited", status=code, retry_after=retry_after(response))
    if code in (408, 409) or code >= 500:
        return ProviderError(message, kind="retryable", status=code, retry_after=retry_after(response), maybe_accepted=submitting)
    return ProviderError(message, kind="permanent", status=code)


def classify_transport(exc: httpx.TransportError, *, submitting: bool = False) -> ProviderError:
    """A network failure: retryable; on submit, ambiguous unless the request never left."""
    never_sent = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))
    return ProviderError(
        f"network error: {type(exc).__name__}: {exc}", kind="retryable", maybe_accepted=submitting and not never_sent
    )


def json_body(response: httpx.Response, *, submitting: bool = False) -> Any:
    """The response's JSON; a malformed body is a retryable error (a proxy or a glitch). On a submit
    the provider answered with success, so it has probably started the task: `maybe_accepted`."""
    try:
        return response.json()
    except ValueError:
        raise ProviderError(
            f"malformed JSON from the provider (HTTP {response.status_code}): {response.text[:200]!r}",
            kind="retryable",
            status=response.status_code,
            maybe_accepted=submitting,
        ) from None


def dig(data: Any, path: str) -> Any:
    """The value at a manifest output path such as `output[0]`, `video.url` or `video`."""
    current = data
    for part in path.replace("]", "").replace("[", ".").split("."):
        if part == "":
            continue
        if isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        elif isinstance(current, dict) and part in current:
            current = current[part]
        else:
            return None
    return current


def output_urls(data: Any, paths: tuple[str, ...]) -> list[str]:
    """Output URLs found at the first manifest path that yields a URL string."""
    for path in paths:
        value = dig(data, path)
        if isinstance(value, str) and value:
            return [value]
    return []
