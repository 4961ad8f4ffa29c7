"""Acme Video: a provider plugin written against video-runner's public contract only.

Acme's API: POST /v1/generations starts one (header X-Api-Key), GET /v1/generations/{id} reports
`state` (queued, processing, done, error) and, when done, `video_url`; DELETE cancels.
"""

from __future__ import annotations

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
        state = data["state"]
        if state == "done":
            return Status("succeeded", detail=state, outputs=(data["video_url"],))
        if state == "error":
            return Status("failed", detail=state, error=data.get("error"), error_kind="permanent")
        if state == "canceled":
            return Status("canceled", detail=state)
        return Status("queued" if state == "queued" else "running", detail=state)

    async def result(self, handle: Handle, job: Job) -> Result:
        data = json_object(await self.http("GET", self._url(f"generations/{handle.task_id}")))
        urls = output_urls(data, job.output_paths)
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
