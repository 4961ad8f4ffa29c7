"""Runway's developer API (api.dev.runwayml.com): tasks created per endpoint, polled at GET /v1/tasks.

Models come from manifests/runway.yaml. Runway keeps no idempotency key, so a create request whose
answer was lost may have started a task: the engine, not this plugin, decides about resubmitting.
"""

from __future__ import annotations

import mimetypes
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from runner.hookspecs import hookimpl
from runner.inputs import InputFile, replace_inputs
from runner.providers import AccountLimits, Handle, Job, Provider, ProviderError, Result, Status, classify_status, classify_transport, json_object
from runner_manifests import path

if TYPE_CHECKING:  # asyncio and httpx are imported where used: a dry run loads this plugin without them
    import asyncio

    import httpx

API_VERSION = "2024-11-06"
#: How long a runway:// upload is reused: Runway keeps ephemeral uploads 24 h; an hour of margin.
UPLOAD_TTL_S = 23 * 3600
CREDIT_USD = Decimal("0.01")


def failure_kind(code: str | None) -> str:
    """Whether a failed task is worth a new generation, as Runway's task-failure guide says: not
    after moderation or a bad asset, and not after INTERNAL.BAD_OUTPUT ("may retry, but not likely
    to succeed": each retry is paid). Internal and third-party faults may pass."""
    if code and code.startswith(("SAFETY.", "INPUT_PREPROCESSING.SAFETY", "ASSET.", "INTERNAL.BAD_OUTPUT")):
        return "permanent"
    return "retryable"


class Runway(Provider):
    name = "runway"
    key_env = ("RUNWAYML_API_SECRET",)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._upload_locks: dict[str, asyncio.Lock] = {}  # two jobs with one file wait for one upload

    def _url(self, endpoint: str) -> str:
        return f"{self.settings.base_url.rstrip('/')}/v1/{endpoint}"

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.key}", "X-Runway-Version": API_VERSION}

    def error_message(self, response: httpx.Response) -> str:
        """Runway's own words: the `error` member and any per-field issues."""
        try:
            body = response.json()
        except ValueError:
            return f"HTTP {response.status_code}: {response.text[:200]}"
        if not isinstance(body, dict):
            return f"HTTP {response.status_code}: {body!r}"
        issues = [i for i in body.get("issues") or [] if isinstance(i, dict)]
        details = "; ".join(f"{'.'.join(str(p) for p in i.get('path', []))}: {i.get('message')}" for i in issues)
        return f"HTTP {response.status_code}: {body.get('error') or body}" + (f" ({details})" if details else "")

    async def _call(self, method: str, endpoint: str, *, submitting: bool = False, **kwargs: Any) -> httpx.Response:
        return await self.http(method, self._url(endpoint), submitting=submitting, **kwargs)

    async def prepare(self, job: Job) -> Job:
        """Local inputs inline as data URIs where they fit, else through Runway's upload flow."""
        uris: dict[str, str] = {}
        for file in job.inputs:
            limit = job.data_uri_max_bytes.get(file.mime.split("/")[0])
            uri = file.data_uri()
            uris[file.sha256] = uri if limit is None or len(uri) <= limit else await self._uploaded(file)
        return job.with_payload(replace_inputs(job.payload, uris))

    async def _uploaded(self, file: InputFile) -> str:
        """A runway:// URI for the file: uploaded once, then reused by every job while it lasts."""
        import asyncio

        async with self._upload_locks.setdefault(file.sha256, asyncio.Lock()):
            uri = await self.uploads.get(file.sha256)
            if uri is None:
                uri = await self._upload(file)
                await self.uploads.put(file.sha256, uri, UPLOAD_TTL_S)
            return uri

    async def _upload(self, file: InputFile) -> str:
        import httpx

        name = f"{file.sha256[:16]}{mimetypes.guess_extension(file.mime) or '.' + file.mime.split('/')[1]}"
        ticket = json_object(await self._call("POST", "uploads", json={"filename": name, "type": "ephemeral"}))
        try:  # the upload URL is presigned: no Runway headers, as the official SDK does
            response = await self.client.post(
                ticket["uploadUrl"], data=ticket.get("fields", {}), files={"file": (name, file.read(), file.mime)}
            )
        except httpx.TransportError as exc:
            raise classify_transport(exc) from None
        if response.status_code >= 300:
            raise classify_status(response, f"upload failed with HTTP {response.status_code}")
        return ticket["runwayUri"]

    async def submit(self, job: Job) -> Handle:
        if not job.prepared:
            job = await self.prepare(job)
        body = {"model": job.model_id, **job.payload}
        data = json_object(await self._call("POST", job.endpoint, json=body, submitting=True), submitting=True)
        if not data.get("id"):
            raise ProviderError(f"Runway accepted the task but sent no id: {data!r}", kind="retryable", maybe_accepted=True)
        return Handle(task_id=str(data["id"]))

    async def poll(self, handle: Handle) -> Status:
        return task_status(json_object(await self._call("GET", f"tasks/{handle.task_id}")))

    async def result(self, handle: Handle, job: Job) -> Result:
        """Runway signs output URLs afresh on every GET, so this also renews an expired one."""
        status = task_status(json_object(await self._call("GET", f"tasks/{handle.task_id}")))
        if status.state != "succeeded" or not status.outputs:
            raise ProviderError(f"task {handle.task_id} has no output (status {status.detail})", kind="permanent")
        return Result(status.outputs, status.cost_usd)

    async def cancel(self, handle: Handle) -> bool:
        """DELETE cancels a task that is still pending or running, but deletes a finished one with
        its output (already paid for): look first, and leave a finished task to be collected."""
        status = await self.poll(handle)
        if status.state not in ("queued", "running"):
            return False
        try:
            await self._call("DELETE", f"tasks/{handle.task_id}")
        except ProviderError as exc:
            if exc.status != 404:
                raise
        return True

    async def account_limits(self) -> AccountLimits:
        """Per-model concurrency and what is left of today's generations, from GET /v1/organization."""
        org = json_object(await self._call("GET", "organization"))
        tier = _table(_table(org.get("tier")).get("models"))
        used = _table(_table(org.get("usage")).get("models"))
        concurrency, daily_left = {}, {}
        for model, limits in tier.items():
            limits = _table(limits)
            if isinstance(limits.get("maxConcurrentGenerations"), int):
                concurrency[model] = limits["maxConcurrentGenerations"]
            if isinstance(limits.get("maxDailyGenerations"), int):
                done = _table(used.get(model)).get("dailyGenerations")
                daily_left[model] = max(0, limits["maxDailyGenerations"] - (done if isinstance(done, int) else 0))
        return AccountLimits(concurrency, daily_left)


def _table(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def task_status(task: dict[str, Any]) -> Status:
    """A Runway task object in the runner's words (THROTTLED is queued, not an error)."""
    status = task.get("status")
    cost = task.get("cost")
    cost_usd = Decimal(str(cost["credits"])) * CREDIT_USD if isinstance(cost, dict) and "credits" in cost else None
    if status in ("PENDING", "THROTTLED"):
        return Status("queued", detail=status)
    if status == "RUNNING":
        return Status("running", detail=status, progress=task.get("progress"))
    if status == "SUCCEEDED":
        outputs = tuple(url for url in task.get("output") or () if isinstance(url, str))
        return Status("succeeded", detail=status, cost_usd=cost_usd, outputs=outputs)
    if status == "FAILED":
        code = task.get("failureCode")
        message = f"{task.get('failure') or 'task failed'}" + (f" ({code})" if code else "")
        return Status("failed", detail=status, error=message, error_kind=failure_kind(code), cost_usd=cost_usd)  # type: ignore[arg-type]
    if status in ("CANCELLED", "CANCELED"):  # the API writes CANCELLED; older documents say CANCELED
        return Status("canceled", detail=status, cost_usd=cost_usd)
    return Status("failed", detail=str(status), error=f"unknown task status {status!r}", error_kind="retryable")


@hookimpl
def register_providers(register):
    register(Runway)


@hookimpl
def register_manifests(register):
    register(path("runway.yaml"))


@hookimpl
def register_simulators(register):
    from runner.sim.runway import RunwaySim  # imported only when a simulator is wanted

    register(RunwaySim)
