"""Acme Video: a provider plugin written against video-runner's public contract only.

Acme's API: POST /v1/generations starts one (header X-Api-Key), GET /v1/generations/{id} reports
`state` (queued, processing, done, error, canceled) and, when done, `video_url`; an error comes with
`error`, `code` and `retryable`. DELETE cancels (409 once it has finished).
"""

from __future__ import annotations

import json
from importlib.resources import files

from runner.config import ProviderConf
from runner.hookspecs import hookimpl
from runner.providers import Handle, Job, Provider, ProviderError, Result, Status, json_object, output_urls


class Acme(Provider):
    name = "acme"
    key_env = ("ACME_API_KEY",)
    default_conf = ProviderConf(base_url="https://api.acme-video.example", key_env="ACME_API_KEY", concurrency=2, min_poll_interval_s=1.0)

    def auth_headers(self) -> dict[str, str]:
        return {"X-Api-Key": self.settings.key}

    def _url(self, path: str) -> str:
        return f"{self.settings.base_url.rstrip('/')}/v1/{path}"

    async def submit(self, job: Job) -> Handle:
        if not job.prepared:  # inputs inline as data URIs: the base class's prepare()
            job = await self.prepare(job)
        response = await self.http("POST", self._url(job.endpoint), json={"model": job.model_id, **job.payload}, submitting=True)
        data = json_object(response, submitting=True)
        if "id" not in data:
            raise ProviderError(f"Acme accepted the generation but sent no id: {data!r}", kind="retryable", maybe_accepted=True)
        return Handle(task_id=str(data["id"]))

    async def poll(self, handle: Handle) -> Status:
        data = json_object(await self.http("GET", self._url(f"generations/{handle.task_id}")))
        state = data.get("state")
        if state == "done":
            return Status("succeeded", detail=state, outputs=tuple(output_urls(data, ("video_url",))))
        if state == "error":
            kind = "retryable" if data.get("retryable") else "permanent"  # Acme says whether a new try may pass
            return Status("failed", detail=state, error=f"{data.get('error')} ({data.get('code')})", error_kind=kind)
        if state == "canceled":
            return Status("canceled", detail=state)
        if state in ("queued", "processing"):
            return Status("queued" if state == "queued" else "running", detail=state)
        return Status("failed", detail=str(state), error=f"unknown Acme state {state!r}", error_kind="retryable")

    async def result(self, handle: Handle, job: Job) -> Result:
        data = json_object(await self.http("GET", self._url(f"generations/{handle.task_id}")))
        urls = output_urls(data, job.output_paths)  # a fresh URL each time: Acme's expire
        if not urls:
            raise ProviderError(f"generation {handle.task_id} has no video", kind="permanent")
        return Result(tuple(urls))

    async def cancel(self, handle: Handle) -> bool:
        response = await self.http("DELETE", self._url(f"generations/{handle.task_id}"), ok=(404, 409))
        return response.status_code < 300  # 409: it had already finished; 404: gone


@hookimpl
def register_providers(register):
    register(Acme)


@hookimpl
def register_manifests(register):
    register(files(__name__) / "acme.yaml")


@hookimpl
def register_simulators(register):
    from runner_acme.sim import AcmeSim  # imported only when a simulator is wanted

    register(AcmeSim)


@hookimpl
def job_finished(job, path):
    """Beside each Acme clip, a note of Acme's generation id and what it cost. Hooks are delivered
    at least once, so this writes the same note again rather than adding to it."""
    if job.provider == "acme":
        note = {"generation": job.task_id, "model": job.model, "usd": str(job.spent_usd), "sha256": job.output_sha256}
        path.with_name(path.name + ".acme.json").write_text(json.dumps(note), encoding="utf-8")
