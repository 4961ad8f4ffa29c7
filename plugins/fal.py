"""fal.ai's queue API (queue.fal.run): submit the raw input, follow the URLs the queue returns.

Models come from manifests/fal.yaml. The status, result and cancel URLs are taken from the submit
answer and kept in the ledger, never rebuilt. fal keeps a result only minutes after completion, so
the engine fetches it as soon as COMPLETED is seen. Fallback to another model is switched off, so a
comparison measures the model that was asked for.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from runner.hookspecs import hookimpl
from runner.inputs import InputFile, replace_inputs
from runner.providers import (
    FINAL_STATES, GenerationFailed, Handle, Job, ListedPrice, Provider, ProviderError, Result, Status, classify_status,
    classify_transport, json_object, output_urls,
)
from runner_manifests import path
from runner_plugins.fal_platform import FalPlatform

if TYPE_CHECKING:  # asyncio and httpx are imported where used: a dry run loads this plugin without them
    import asyncio

    import httpx

#: Errors in a COMPLETED status that are the caller's fault; the rest are the platform's.
PERMANENT_ERROR_TYPES = {"bad_request", "content_policy_violation"}
CANCELED_ERROR_TYPES = {"client_cancelled"}
MODERATION = "content_policy_violation"
#: Local files up to this size go inline as data URIs; larger ones through fal's storage, as fal
#: recommends (a data URI makes every request carry the file, and not every model takes one).
INLINE_MAX_BYTES = 1_000_000
#: How long a stored file's URL is reused for other jobs with the same file.
STORED_TTL_S = 6 * 3600


class Fal(Provider):
    name = "fal"
    key_env = ("FAL_KEY",)
    price_list = "fal price list"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.platform = FalPlatform(self)
        self._upload_locks: dict[str, asyncio.Lock] = {}

    @classmethod
    def key_from_env(cls, environ: Mapping[str, str], configured: str | None = None) -> str | None:
        key = super().key_from_env(environ, configured)
        if key is None and environ.get("FAL_KEY_ID") and environ.get("FAL_KEY_SECRET"):
            key = f"{environ['FAL_KEY_ID']}:{environ['FAL_KEY_SECRET']}"
        return key

    def auth_headers(self) -> dict[str, str]:
        # Fallback to another model is switched off under the header's documented name
        # (docs.fal.ai, "Reliability") and its older one, so a comparison measures the model asked for.
        return {"Authorization": f"Key {self.settings.key}", "x-fal-disable-fallbacks": "true",
                "x-app-fal-disable-fallback": "true"}

    def error_message(self, response: httpx.Response) -> str:
        """fal's `detail`: a message, or a list of per-field validation errors."""
        try:
            body = response.json()
        except ValueError:
            return f"HTTP {response.status_code}: {response.text[:200]}"
        detail = body.get("detail", body) if isinstance(body, dict) else body
        if isinstance(detail, list):
            parts = []
            for item in detail:
                if isinstance(item, dict):
                    loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                    text = f"{loc}: {item.get('msg')}" if loc else str(item.get("msg"))
                    parts.append(text + (f" ({item['type']})" if item.get("type") else ""))
            detail = "; ".join(parts) or detail
        error_type = body.get("error_type") if isinstance(body, dict) else None
        return f"HTTP {response.status_code}: {detail}" + (f" ({error_type})" if error_type else "")

    async def prepare(self, job: Job) -> Job:
        """Small local files inline as data URIs (where the model's limit allows), the others stored with fal."""
        uris: dict[str, str] = {}
        for file in job.inputs:
            limit = job.data_uri_max_bytes.get(file.mime.split("/")[0])
            uri = file.data_uri() if file.size <= INLINE_MAX_BYTES else ""
            uris[file.sha256] = uri if uri and (limit is None or len(uri) <= limit) else await self._stored(file)
        return job.with_payload(replace_inputs(job.payload, uris))

    async def _stored(self, file: InputFile) -> str:
        import asyncio

        async with self._upload_locks.setdefault(file.sha256, asyncio.Lock()):
            url = await self.uploads.get(file.sha256)
            if url is None:
                url = await self.platform.upload(file)
                await self.uploads.put(file.sha256, url, STORED_TTL_S)
            return url

    async def listed_prices(self, endpoints: Sequence[str]) -> dict[str, ListedPrice]:
        """Unit prices from fal's pricing API (the Platform API), for models the manifest leaves unpriced."""
        return await self.platform.listed(endpoints)

    async def find(self, job: Job, since: float) -> list[Handle]:
        """Requests fal holds for this exact input, sent since `since`: a lost submit answer is looked
        up here instead of paid for again."""
        return await self.platform.candidates(job, since)

    async def submit(self, job: Job) -> Handle:
        if not job.prepared:
            job = await self.prepare(job)
        url = f"{self.settings.base_url.rstrip('/')}/{job.endpoint}"
        data = json_object(await self.http("POST", url, json=job.payload, submitting=True), submitting=True)
        try:
            urls = {name: str(data[f"{name}_url"]) for name in ("status", "response", "cancel")}
            return Handle(task_id=str(data["request_id"]), urls=urls)
        except KeyError:
            raise ProviderError(f"fal accepted the request but the answer lacks its URLs: {data!r}", kind="retryable", maybe_accepted=True) from None

    async def poll(self, handle: Handle) -> Status:
        status = request_status(json_object(await self.http("GET", handle.urls["status"], params={"logs": "0"})))
        if status.state == "failed" and status.detail == "COMPLETED":
            return await self._explained(handle, status)
        return status

    async def watch(self, handle: Handle, timeout: float, seen: Callable[[Status], None] | None = None) -> Status | None:
        """Follow a request over fal's status stream (`<status_url>/stream`, server-sent events, one
        `data: {status}` per change, closed after COMPLETED): its end is seen as it happens, with
        one request instead of a poll schedule. Anything unexpected is a ProviderError: the engine
        then polls the request."""
        import asyncio

        import httpx

        last: Status | None = None
        try:
            async with asyncio.timeout(timeout):
                async with self.streams.stream("GET", handle.urls["status"] + "/stream", params={"logs": "0"},
                                               headers={**self.auth_headers(), "Accept": "text/event-stream"}) as response:
                    if response.status_code != 200:
                        await response.aread()
                        raise classify_status(response, self.error_message(response))
                    if not response.headers.get("content-type", "").startswith("text/event-stream"):
                        raise ProviderError(f"fal's status stream answered {response.headers.get('content-type')!r}, "
                                            f"not an event stream", kind="retryable", status=response.status_code)
                    async with aclosing(_events(response)) as events:
                        async for data in events:
                            try:
                                event = json.loads(data)
                            except ValueError:
                                event = None
                            if not isinstance(event, dict):
                                raise ProviderError(f"fal's status stream sent an unreadable event: {data[:200]!r}", kind="retryable")
                            last = request_status(event)
                            if last.state in FINAL_STATES:
                                break
                            if seen is not None:
                                seen(last)
        except TimeoutError:
            return last
        except httpx.TransportError as exc:
            raise classify_transport(exc) from None
        except httpx.HTTPError as exc:
            raise ProviderError(f"fal's status stream failed: {type(exc).__name__}: {exc}", kind="retryable") from None
        if last is not None and last.state == "failed" and last.detail == "COMPLETED":
            return await self._explained(handle, last)
        return last

    async def _explained(self, handle: Handle, status: Status) -> Status:
        """fal explains a failed request in its result response (docs.fal.ai, "Request errors"): a
        model error is a 4xx with `detail[{loc, msg, type}]` and may still be billed; a platform
        error is a 5xx and is not; `X-Fal-Retryable` says whether trying again can help. When the
        result cannot be read, the status's own error type decides."""
        import httpx

        try:
            response = await self.client.get(handle.urls["response"], headers=self.auth_headers())
        except httpx.HTTPError:
            return status
        if response.status_code < 400:
            return status
        types = _error_types(response)
        told = response.headers.get("x-fal-retryable", "").lower()
        model_error = response.status_code < 500 or MODERATION in types
        kind = "permanent" if told == "false" or (model_error and told != "true") else "retryable"
        return Status("failed", detail=status.detail, error=self.error_message(response), error_kind=kind,  # type: ignore[arg-type]
                      may_be_billed=model_error)

    async def result(self, handle: Handle, job: Job) -> Result:
        """The outputs of a completed request. A model error (a 4xx with fal's `detail`) means the
        generation failed; a 5xx or a network error is the result endpoint failing, and says nothing
        about the generation: the caller tries the same request again later."""
        try:
            response = await self.http("GET", handle.urls["response"])
        except ProviderError as exc:
            if exc.kind == "permanent" and exc.status is not None and 400 <= exc.status < 500 and exc.status not in (401, 403, 404, 410):
                raise GenerationFailed(exc.message, kind="permanent", status=exc.status, may_be_billed=True) from None
            raise
        urls = output_urls(json_object(response), job.output_paths)
        if not urls:
            raise ProviderError(f"fal result has no output URL at {', '.join(job.output_paths)}: {response.text[:300]}", kind="permanent")
        return Result(tuple(urls), await self.platform.bill(job.endpoint, response.headers.get("x-fal-billable-units")))

    async def cancel(self, handle: Handle) -> bool:
        response = await self.http("PUT", handle.urls["cancel"], ok=(400, 404))
        return response.status_code < 300  # 400: already completed (collect it); 404: gone


async def _events(response: httpx.Response) -> AsyncIterator[str]:
    """The data of each server-sent event (comments such as keep-alives skipped)."""
    data: list[str] = []
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield "\n".join(data)
            data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if data:  # a last event not closed by a blank line: the stream was cut mid-event
        raise ProviderError("fal's status stream ended mid-event", kind="retryable")


def _error_types(response: httpx.Response) -> set[str]:
    try:
        body = response.json()
    except ValueError:
        return set()
    if not isinstance(body, dict):
        return set()
    detail = body.get("detail")
    found = {item.get("type") for item in detail if isinstance(item, dict)} if isinstance(detail, list) else set()
    return {str(t) for t in found | {body.get("error_type"), response.headers.get("x-fal-error-type")} if t}


def request_status(data: dict[str, Any]) -> Status:
    """A queue status in the runner's words; failed and cancelled requests also say COMPLETED."""
    status = data.get("status")
    if status == "IN_QUEUE":
        return Status("queued", detail=status, queue_position=data.get("queue_position"))
    if status == "IN_PROGRESS":
        return Status("running", detail=status)
    if status == "COMPLETED":
        error, error_type = data.get("error"), data.get("error_type")
        if not error:
            return Status("succeeded", detail=status)
        if error_type in CANCELED_ERROR_TYPES:
            return Status("canceled", detail=status, error=str(error))
        kind = "permanent" if error_type in PERMANENT_ERROR_TYPES else "retryable"
        return Status("failed", detail=status, error=f"{error}" + (f" ({error_type})" if error_type else ""), error_kind=kind)
    return Status("failed", detail=str(status), error=f"unknown queue status {status!r}", error_kind="retryable")


@hookimpl
def register_providers(register):
    register(Fal)


@hookimpl
def register_manifests(register):
    register(path("fal.yaml"))


@hookimpl
def register_simulators(register):
    from runner.sim.fal import FalSim  # imported only when a simulator is wanted

    register(FalSim)
