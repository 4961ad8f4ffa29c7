"""Acme Video's API as video-runner's provider simulator serves it, under `/acme`: what this plugin's
tests, `simulate=true` and `python -m runner.sim` run against. Only Acme's wire format is here; the
simulator brings the rest: generations that queue and run for a configured time under account
limits, injected faults, a billing ledger, and real MP4s behind signed, expiring URLs."""

from __future__ import annotations

from runner.sim import ProviderSim, Request, Response, Task

#: Acme's word for each phase of a generation.
STATES = {"waiting": "queued", "pending": "queued", "running": "processing", "succeeded": "done",
          "failed": "error", "cancelled": "canceled"}
#: Failures Acme calls worth another try: its own faults and its upstream's (by failure-code family).
RETRYABLE = ("INTERNAL", "THIRD_PARTY")


class AcmeSim(ProviderSim):
    provider = "acme"
    title = "Acme"
    key = "acme-test-key"
    auth = ("X-Api-Key", "{key}")
    # Fault points (the default): acme.submit, acme.poll (which also hands out the video URL), acme.cancel.

    def handle(self, request: Request, path: str) -> Response:
        refused = self.refuse(request)
        if refused is not None:
            return refused
        if path == "v1/generations" and request.method == "POST":
            return self.create(request)
        task = self.task(path.removeprefix("v1/generations/")) if path.startswith("v1/generations/") else None
        if task is None:
            return self.error(404, "no such generation")
        if request.method == "GET":
            return self.spoiled("poll", task) or self.reply(200, self.generation(task), "poll", task)
        if request.method == "DELETE":
            return self.spoiled("cancel", task) or self.delete(task)
        return self.error(405, f"{request.method} is not allowed here")

    def create(self, request: Request) -> Response:
        try:
            body = request.json()
        except ValueError:
            return self.error(400, "the body is not JSON")
        if not isinstance(body, dict):
            return self.error(400, "the body must be an object")
        payload = {name: value for name, value in body.items() if name != "model"}
        found = self.model_for("generations", body.get("model"), payload)
        if found is None:
            return self.error(400, f"unknown model {body.get('model')!r}")
        model, mode = found
        problems = self.problems(model, mode, payload)
        if problems:
            return self.error(400, "invalid request: " + "; ".join(problems))
        task = self.accept(model, mode, "generations", body, payload)
        return task if isinstance(task, Response) else self.reply(201, {"id": task.id, "state": "queued"}, "submit", task)

    def generation(self, task: Task) -> dict:
        shown = {"id": task.id, "state": STATES[self.phase(task)]}
        if shown["state"] == "done":
            shown["video_url"] = self.output_url(task, "poll")
        elif shown["state"] == "error":
            code, message = self.failure(task)
            shown.update(error=message, code=code, retryable=code.startswith(RETRYABLE))
        return shown

    def delete(self, task: Task) -> Response:
        if self.cancel(task) is None:
            return self.error(409, "generation already finished")
        return Response(204, route=self.point("cancel"), model=task.model.name)
