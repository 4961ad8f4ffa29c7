"""The provider contract: what a provider plugin implements, and the words the engine understands.

A provider turns a planned job into a task at the provider and reports on it: `submit`, `poll`,
`result`, `cancel`, with input files prepared the provider's way. Its statuses are normalised to
the runner's few (queued, running, succeeded, failed, canceled) and every error is classified as
retryable, rate-limited (with the server's Retry-After) or permanent (with the provider's message),
so the engine can schedule, retry and resume without knowing any provider.
"""

from __future__ import annotations

import dataclasses
import email.utils
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from runner.catalog import CatalogModel
from runner.config import ProviderConf
from runner.inputs import InputFile, replace_inputs

if TYPE_CHECKING:  # imported where used: a dry run loads the plugins, never the HTTP stack
    import httpx

State = Literal["queued", "running", "succeeded", "failed", "canceled"]
ErrorClass = Literal["retryable", "rate_limited", "permanent"]


class ProviderError(Exception):
    """A call to a provider failed; `kind` says whether to try again.

    `maybe_accepted` is set when a submit failed after the request may have reached the provider
    (a timeout, a dropped connection, a 5xx, an answer that cannot be read): a retry could start a
    second, paid generation. `never_sent` is set when the request provably never left (no
    connection, a pool timeout, a request that could not be built): nothing happened at the provider.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: ErrorClass,
        status: int | None = None,
        retry_after: float | None = None,
        maybe_accepted: bool = False,
        never_sent: bool = False,
    ):
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.status = status
        self.retry_after = retry_after
        self.maybe_accepted = maybe_accepted
        self.never_sent = never_sent


class GenerationFailed(ProviderError):
    """The provider ran the generation and it failed, as `result` learns it (fal reports model
    errors there). `cost_usd` is what the provider billed for it, when it says; otherwise
    `may_be_billed` says whether the provider may still charge for it (fal: model errors may be)."""

    def __init__(
        self, message: str, *, kind: ErrorClass, status: int | None = None, cost_usd: Decimal | None = None,
        may_be_billed: bool = False,
    ):
        super().__init__(message, kind=kind, status=status)
        self.cost_usd = cost_usd
        self.may_be_billed = may_be_billed


@dataclass(frozen=True)
class Handle:
    """What the ledger keeps of a task: enough to poll, fetch and cancel it from any process."""

    task_id: str
    urls: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Status:
    """A task as the provider reports it. `succeeded` with no `outputs` means "finished: ask
    `result()`", which may still raise GenerationFailed (fal reports model errors there)."""

    state: State
    detail: str = ""  # the provider's own status word (THROTTLED, IN_QUEUE, ...)
    progress: float | None = None
    queue_position: int | None = None
    error: str | None = None
    error_kind: ErrorClass | None = None
    cost_usd: Decimal | None = None  # what the provider says this generation cost, when it says
    outputs: tuple[str, ...] = ()  # output URLs, when the status already carries them
    may_be_billed: bool = False  # a failure the provider may still charge for (when cost_usd is None)


@dataclass(frozen=True)
class Result:
    """A succeeded task's outputs (fetch them at once: providers expire them) and its bill."""

    outputs: tuple[str, ...]
    cost_usd: Decimal | None = None  # what the provider billed, when it says


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
    prepared: bool = False  # the payload's input placeholders are already replaced (see Provider.prepare)

    def with_payload(self, payload: dict[str, Any]) -> "Job":
        return dataclasses.replace(self, payload=payload, prepared=True)


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


class Uploads:
    """Files the provider already holds, by sha256, so a file is uploaded once while its copy lasts
    (the runner keeps them in the ledger, across jobs and runs; this default keeps them in memory)."""

    def __init__(self) -> None:
        self._held: dict[str, tuple[str, float]] = {}

    async def get(self, sha256: str) -> str | None:
        uri, expires_at = self._held.get(sha256, ("", 0.0))
        return uri if expires_at > time.time() else None

    async def put(self, sha256: str, uri: str, ttl_s: float) -> None:
        self._held[sha256] = (uri, time.time() + ttl_s)


@dataclass(frozen=True)
class AccountLimits:
    """What an account allows, by the provider's model id: generations at once, and left today."""

    concurrency: dict[str, int] = field(default_factory=dict)
    daily_left: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ListedPrice:
    """A price as the provider's own price list gives it: USD per `unit` (the manifest's words:
    `second`, `clip`, `image`, `character`, `request`; any other is the provider's own word, which
    the runner cannot estimate from)."""

    usd: Decimal
    unit: str


@dataclass(frozen=True)
class Settings:
    """A provider account as the run config gives it."""

    base_url: str
    key: str = field(repr=False)  # never in a repr, a log line or a traceback
    request_timeout_s: float = 60.0
    endpoints: Mapping[str, str] = field(default_factory=dict)  # the provider's other services, by name


class Provider:
    """Base class for provider plugins. Subclasses set `name` and implement the async methods."""

    name: ClassVar[str]
    #: The environment variables the official SDK reads for the key, most specific first.
    key_env: ClassVar[tuple[str, ...]] = ()
    #: The provider's settings (base URL, key variable, limits) when conf/provider/ has no file for
    #: it: a third-party plugin ships its defaults here, and they become `provider=<name>`.
    default_conf: ClassVar[ProviderConf | None] = None
    #: How the plan names the provider's own price list ("fal price list"), read for models its
    #: manifest leaves unpriced; None: the provider publishes none the runner can read.
    price_list: ClassVar[str | None] = None

    def __init__(self, settings: Settings, client: httpx.AsyncClient, uploads: Uploads | None = None,
                 streams: httpx.AsyncClient | None = None):
        self.settings = settings
        self.client = client
        self.uploads = uploads or Uploads()
        #: The client for `watch`'s long-held requests: the engine gives one of its own, so a stream
        #: held for a whole generation never takes a connection submits and downloads need.
        self.streams = streams or client

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
        """One API call; a failure comes back classified as a ProviderError. A redirect is an error:
        an API that answers a create with a 3xx has not said it created anything."""
        import httpx

        try:
            response = await self.client.request(method, url, headers=self.auth_headers(), **kwargs)
        except httpx.TransportError as exc:
            raise classify_transport(exc, submitting=submitting) from None
        except httpx.InvalidURL as exc:
            raise ProviderError(f"invalid URL {url!r}: {exc}", kind="permanent", never_sent=True) from None
        except httpx.HTTPError as exc:  # an undecodable body, a redirect loop: the answer, not the request, failed
            raise ProviderError(f"unreadable answer: {type(exc).__name__}: {exc}", kind="retryable",
                                maybe_accepted=submitting) from None
        if response.status_code in ok:
            return response
        if 300 <= response.status_code < 400:
            raise ProviderError(
                f"unexpected redirect: HTTP {response.status_code} to {response.headers.get('location', '?')!r} "
                f"(check the provider's base_url)", kind="permanent", status=response.status_code, maybe_accepted=submitting,
            )
        if response.status_code >= 400:
            raise classify_status(response, self.error_message(response), submitting=submitting)
        return response

    async def prepare(self, job: Job) -> Job:
        """The job ready to send: input files made available the provider's way (inline here; a
        plugin overrides this to upload). Called before the submit is recorded as possibly sent, so
        nothing here may start a generation. Raises InputChanged if a file differs from the plan."""
        return job.with_payload(replace_inputs(job.payload, {f.sha256: f.data_uri() for f in job.inputs}))

    async def submit(self, job: Job) -> Handle:
        """Send the create request, once (the engine decides about retries); `job` comes from
        `prepare` (a job that was not prepared is prepared first)."""
        raise NotImplementedError

    async def find(self, job: Job, since: float) -> list[Handle] | None:
        """Tasks the provider holds for exactly this (prepared) request, sent since `since` (epoch
        seconds), newest first: a submit whose answer was lost is looked up here and adopted instead
        of paid for again. [] means provably none; None (the default) that the provider keeps no
        such history (the engine then counts a possible duplicate and sends again)."""
        return None

    async def poll(self, handle: Handle) -> Status:
        raise NotImplementedError

    async def watch(self, handle: Handle, timeout: float, seen: Callable[[Status], None] | None = None) -> Status | None:
        """Optional: follow a task over one long-held request (a status stream) instead of polls,
        with `self.streams`. Return as soon as the task reaches a final state; when the stream ends
        or `timeout` seconds pass first, return the last status seen (None: none). Each queued or
        running status on the way is given to `seen` (the progress display shows them). Raise
        ProviderError when the stream fails: the engine then polls that task. A plugin that does
        not override it is polled (see `offers_watch`)."""
        raise NotImplementedError

    async def result(self, handle: Handle, job: Job) -> Result:
        """A succeeded task's outputs (fresh URLs: this also renews an expired one) and its bill;
        GenerationFailed when the provider says the generation failed after all."""
        raise NotImplementedError

    async def cancel(self, handle: Handle) -> bool:
        """Stop a task; False when it had already finished (its output is then still collectable)."""
        raise NotImplementedError

    async def listed_prices(self, endpoints: Sequence[str]) -> dict[str, ListedPrice]:
        """The provider's own prices of these endpoints, where its price list has them (asked after
        the plan is validated, for models the manifest leaves unpriced; see `price_list`)."""
        return {}

    async def account_limits(self) -> "AccountLimits":
        """Per-model limits the account has, where the provider says (`limits_from_provider=true`)."""
        return AccountLimits()


FINAL_STATES = frozenset({"succeeded", "failed", "canceled"})


def offers_watch(provider: type[Provider] | Provider) -> bool:
    """Whether a provider follows tasks over a status stream (`Provider.watch` overridden)."""
    cls = provider if isinstance(provider, type) else type(provider)
    return cls.watch is not Provider.watch


# -- helpers every HTTP provider needs -------------------------------------------------------------


def retry_after(response: httpx.Response) -> float | None:
    """Seconds to wait, from `retry-after-ms` or `Retry-After` (seconds or an HTTP date); None
    when absent or unreadable (`Retry-After: soon`): the caller then backs off on its own."""
    value = response.headers.get("retry-after-ms")
    if value:
        try:
            return _bounded(float(value) / 1000)
        except ValueError:
            pass
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return _bounded(float(value))
    except ValueError:
        pass
    try:
        return _bounded(email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _bounded(seconds: float) -> float | None:
    return max(0.0, seconds) if math.isfinite(seconds) else None


def classify_status(response: httpx.Response, message: str, *, submitting: bool = False) -> ProviderError:
    """An HTTP error as the engine should treat it: 429 and 5xx retryable, other 4xx permanent, unless
    the server says otherwise in `x-should-retry` (as Runway's API does and its SDK obeys)."""
    code = response.status_code
    told = response.headers.get("x-should-retry")
    if told == "false":
        return ProviderError(message, kind="permanent", status=code, maybe_accepted=submitting and code >= 500)
    if told == "true" and code < 500 and code != 429:
        return ProviderError(message, kind="retryable", status=code, retry_after=retry_after(response))
    if code == 429:
        return ProviderError(message, kind="rate_limited", status=code, retry_after=retry_after(response))
    if code in (408, 409) or code >= 500:
        return ProviderError(message, kind="retryable", status=code, retry_after=retry_after(response), maybe_accepted=submitting)
    return ProviderError(message, kind="permanent", status=code)


def classify_transport(exc: httpx.TransportError, *, submitting: bool = False) -> ProviderError:
    """A network failure: retryable; on submit, ambiguous unless the request never left."""
    import httpx

    # Transport failures that happen before a request leaves this machine (a ProxyError is a refused tunnel).
    never_sent = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol,
                                  httpx.LocalProtocolError, httpx.ProxyError))
    return ProviderError(
        f"network error: {type(exc).__name__}: {exc}", kind="retryable", maybe_accepted=submitting and not never_sent,
        never_sent=never_sent,
    )


def json_object(response: httpx.Response, *, submitting: bool = False) -> dict[str, Any]:
    """The response's JSON object; anything else (malformed, a list, a string) is a retryable error
    (a proxy or a glitch). On a submit the provider answered with success, so it has probably
    started the task: `maybe_accepted`."""
    try:
        data = response.json()
    except ValueError:
        data = _NOT_JSON
    if isinstance(data, dict):
        return data
    shown = response.text[:200] if data is _NOT_JSON else json.dumps(data)[:200]
    raise ProviderError(
        f"unreadable answer from the provider (HTTP {response.status_code}, expected a JSON object): {shown!r}",
        kind="retryable",
        status=response.status_code,
        maybe_accepted=submitting,
    )


_NOT_JSON = object()


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
