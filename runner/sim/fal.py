"""fal.ai's queue API, as https://fal.ai/docs/inference-api/queue and the official `fal-client`
describe it.

Submit goes to the full model id; status, result and cancel live under the app's `owner/app` only,
and clients must follow the absolute URLs the submit answer gives. Invalid input is accepted at
submit and fails the request afterwards (COMPLETED with an error; the result answers 422), as the
real queue does, because the queue does not validate: the model does. fal's Platform API
(platform.py) and storage (falstorage.py) are served beside it; the fal plugin registers this
simulator (plugins/fal.py, `register_simulators`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from runner.catalog import CatalogModel, check_payload
from runner.sim.failures import fal_failure
from runner.sim.falresult import app_id, billable_units, detail_error, error_of, model_error, request_error, result_of
from runner.sim.falstorage import FalStorage
from runner.sim.faults import RESPONSE_KINDS, Fault
from runner.sim.platform import PlatformAPI
from runner.sim.provider import ProviderSim, Route
from runner.sim.server import Request, Response, fault_response, json_response
from runner.sim.state import Snapshot
from runner.sim.tasks import DailyLimitExceeded, Task, iso_time

if TYPE_CHECKING:
    from runner.sim.app import SimApp

_LOGS = {"1": True, "true": True, "0": False, "false": False}
#: The per-request header that turns fal's model fallbacks off, as documented today
#: (https://docs.fal.ai/model-apis/model-endpoints/reliability) and under its other name
#: (https://fal.ai/docs/documentation/model-apis/inference/fallback-chains). Either counts.
FALLBACK_HEADERS = ("x-fal-disable-fallbacks", "x-app-fal-disable-fallback")
_FALSE = ("", "0", "false", "no")


class FalSim(ProviderSim):
    """Everything under `/fal` (the queue), `/fal-api` (Platform API), `/fal-rest` and `/fal-cdn` (storage)."""

    provider = "fal"
    title = "fal"
    key = "sim-key-id:sim-key-secret"  # fal keys are `key id:key secret`
    auth = ("Authorization", "Key {key}")
    points = {"submit": ("submit",), "status": ("poll",), "stream": ("poll",), "result": ("result",), "cancel": ("cancel",),
              "upload": ()}

    def __init__(self, app: "SimApp"):
        super().__init__(app)
        self.platform = PlatformAPI(app)
        self.storage = FalStorage(app, app.secret)

    def routes(self) -> dict[str, Route]:
        return {"fal-api/": self.platform.handle, "fal-rest/": self.storage.rest, "fal-cdn/": self.storage.cdn}

    def endpoints(self) -> dict[str, str]:
        """As the fal plugin's `providers.fal.endpoints` names them."""
        return {"platform": f"{self.app.base_url}/fal-api/v1", "storage": f"{self.app.base_url}/fal-rest"}

    def clients(self) -> list[str]:
        base = self.app.base_url
        return [f'fal_client: import fal_client.client as fc; fc.QUEUE_URL_FORMAT = "{self.url}/"',
                f'            fc.REST_URL = "{base}/fal-rest"; fc.CDN_URL = "{base}/fal-cdn"',
                f"fal Platform API: {base}/fal-api/v1/models/requests/by-endpoint | /fal-api/v1/models/pricing"]

    def error(self, status: int, message: str) -> Response:
        return detail_error(status, message)

    def handle(self, request: Request, path: str) -> Response:
        if self.refuse(request) is not None:
            return detail_error(401, "Unauthorized")
        target = path.strip("/")
        if request.method == "POST":
            return self.submit(request, target)
        parts = target.split("/")
        if "requests" not in parts[:-1]:
            return detail_error(404, "Not Found") if request.method in ("GET", "PUT") else detail_error(405, "Method Not Allowed")
        at = parts.index("requests")
        app, request_id, rest = "/".join(parts[:at]), parts[at + 1], parts[at + 2:]
        handlers = {
            ("GET", ()): ("fal.result", self.result),
            ("GET", ("status",)): ("fal.status", self.status),
            ("GET", ("status", "stream")): ("fal.stream", self.stream),
            ("PUT", ("cancel",)): ("fal.cancel", self.cancel_request),
        }
        if (request.method, tuple(rest)) not in handlers:
            return detail_error(404, "Not Found")
        route, handler = handlers[(request.method, tuple(rest))]
        task = self.task(request_id)
        if task is None or app_id(task.endpoint) != app:
            if route == "fal.cancel":
                return json_response(404, {"status": "NOT_FOUND"}, route=route)
            return detail_error(404, "Request not found", route)
        return handler(request, task)

    # -- submit -----------------------------------------------------------------------------------

    def submit(self, request: Request, endpoint: str) -> Response:
        route = "fal.submit"
        try:
            model, mode = self.app.catalog.by_endpoint("fal", endpoint)
        except KeyError:
            return detail_error(404, f"Application '{endpoint}' not found", route)
        try:
            body = request.json()
        except ValueError:
            return detail_error(422, [model_error(["body"], "Invalid JSON", "json_invalid")], route, model.name)
        if not isinstance(body, dict):
            return detail_error(422, [model_error(["body"], "Input should be a valid dictionary", "dict_type")], route, model.name)
        problems = check_payload(model.mode(mode), body) + self._check_inputs(model, mode, body)
        header = next((h for h in FALLBACK_HEADERS if (request.header(h) or "").strip().lower() not in _FALSE), None)
        task = self.accept(model, mode, endpoint, body, body, problems=tuple(problems),
                           fallback_disabled=header is not None, fallback_header=header)
        if isinstance(task, Response):
            return task
        answer = {"status": "IN_QUEUE", "request_id": task.id, **self.urls(task),
                  "queue_position": self.app.board.queue_position(task)}
        return json_response(200, answer, {"X-Fal-Request-Id": task.id}, route, model.name)

    def _check_inputs(self, model: CatalogModel, mode: str, body: dict[str, Any]) -> list[str]:
        """fal fetches URLs and decodes data URIs; anything else cannot be an input file."""
        problems = []
        for field, spec in model.mode(mode).params.items():
            if field not in body or spec.type not in ("image", "video", "audio", "image_list"):
                continue
            limits = model.media_limits("image" if spec.type == "image_list" else spec.type)
            values = body[field] if isinstance(body[field], list) else [body[field]]
            for value in values:
                if not isinstance(value, str):
                    continue
                if value.startswith("data:"):
                    size = len(value.partition(",")[2]) * 3 // 4
                    if limits is not None and limits.max_bytes and size > limits.max_bytes:
                        problems.append(f"{field}: file is {size} bytes; at most {limits.max_bytes} bytes are allowed")
                elif not value.startswith(("https://", "http://")):
                    problems.append(f"{field}: expected a URL or a data URI")
                elif (missing := self.storage.missing(value)) is not None:
                    problems.append(f"{field}: {missing}")
        return problems

    # -- per request ------------------------------------------------------------------------------

    def urls(self, task: Task) -> dict[str, str]:
        base = f"{self.app.base_url}/fal/{app_id(task.endpoint)}/requests/{task.id}"
        return {"response_url": base, "status_url": base + "/status", "cancel_url": base + "/cancel"}

    def status(self, request: Request, task: Task) -> Response:
        route = "fal.status"
        logs = _LOGS.get(request.query.get("logs", "0").lower())
        if logs is None:
            return detail_error(422, [model_error(["query", "logs"], "Input should be 1, 0, true or false", "bool_parsing")], route, task.model.name)
        spoiled = self.spoiled("status", task)
        if spoiled is not None:
            return spoiled
        obj = self.status_object(task, logs)
        code = 200 if obj["status"] == "COMPLETED" else 202
        return json_response(code, obj, {"X-Fal-Request-Id": task.id}, route, task.model.name)

    def status_object(self, task: Task, logs: bool) -> dict[str, Any]:
        """The queue status: IN_QUEUE (queue_position), IN_PROGRESS, or COMPLETED (maybe with error)."""
        now = self.app.board.now()
        self.app.board.advance(now)
        phase = task.phase(now)
        obj: dict[str, Any] = {"request_id": task.id, **self.urls(task), "logs": self._logs(task, now) if logs else None}
        if phase in ("waiting", "pending"):
            return {"status": "IN_QUEUE", **obj, "queue_position": self.app.board.queue_position(task)}
        if phase == "running":
            return {"status": "IN_PROGRESS", **obj}
        obj = {"status": "COMPLETED", **obj, "metrics": {"inference_time": round(task.latency, 3)} if phase == "succeeded" else {}}
        if phase != "succeeded":
            obj["error"], obj["error_type"] = error_of(task)
        return obj

    def stream(self, request: Request, task: Task) -> Response:
        """Server-sent events: the status object on every change, closing after COMPLETED. A fault
        at `fal.stream` spoils the answer before any event is sent."""
        spoiled = self.spoiled("stream", task)
        if spoiled is not None:
            return spoiled
        logs = _LOGS.get(request.query.get("logs", "0").lower(), False)
        headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Fal-Request-Id": task.id}
        return Response(200, headers=headers, route="fal.stream", model=task.model.name, stream=self._events(task, logs))

    def _events(self, task: Task, logs: bool) -> Iterator[bytes]:
        board, stopping = self.app.board, self.app.stopping
        deadline = board.now() + self.app.config.stream_max_s
        last, last_sent = None, board.now()
        while not stopping.is_set() and board.now() < deadline:
            obj = self.status_object(task, logs)
            text = json.dumps(obj, separators=(",", ":"))
            if text != last:
                yield f"data: {text}\n\n".encode()
                last, last_sent = text, board.now()
                if obj["status"] == "COMPLETED":
                    return
            elif board.now() - last_sent >= 15:
                yield b": keep-alive\n\n"
                last_sent = board.now()
            stopping.wait(0.02)

    def result(self, request: Request, task: Task) -> Response:
        route, name = "fal.result", task.model.name
        now = self.app.board.now()
        phase = task.phase(now)
        kinds = RESPONSE_KINDS | {"expired_url"} if phase == "succeeded" else RESPONSE_KINDS
        fault = self.app.faults.draw(route, task.names, kinds)
        if fault is not None and fault.kind != "expired_url":
            return self.spoil(fault, "result", name)
        if phase not in ("succeeded", "failed", "cancelled"):
            return detail_error(400, "Request is still in progress", route, name)
        return result_of(self.app, task, route, expired=fault is not None)

    def cancel_request(self, request: Request, task: Task) -> Response:
        """Cancel a request (https://fal.ai/docs/inference-api/queue/cancel).

        A queued one is removed and never runs (not billed). A running one gets a signal its model
        may ignore: with `fal_running_cancel="completes"` it runs on to its result, with "stops" it
        ends cancelled; billed either way. A request that has ended answers ALREADY_COMPLETED and
        its result stays collectable.
        """
        route = "fal.cancel"
        spoiled = self.spoiled("cancel", task)
        if spoiled is not None:
            return spoiled
        if self.cancel(task, stop_running=self.app.config.fal_running_cancel == "stops") is not None:
            return json_response(202, {"status": "CANCELLATION_REQUESTED"}, route=route, model=task.model.name)
        return json_response(400, {"status": "ALREADY_COMPLETED"}, route=route, model=task.model.name)

    # -- helpers --------------------------------------------------------------------------------

    def _logs(self, task: Task, now: float) -> list[dict[str, str]]:
        """Log lines for the phases the request has passed (they change only at transitions)."""
        lines = []
        if task.run_at is not None and now >= task.run_at:
            lines.append(("INFO", "Generation started", task.run_at))
        if task.ended is not None and task.final != "cancelled":
            lines.append(("INFO" if task.final == "succeeded" else "ERROR",
                          "Generation finished" if task.final == "succeeded" else "Generation failed", task.ended))
        return [{"message": message, "level": level, "source": "USER", "timestamp": iso_time(self.app.board.wall(at))}
                for level, message, at in lines]

    def spoil(self, fault: Fault, point: str, model: str | None = None) -> Response:
        def error(status: int, message: str) -> Response:
            if fault.detail.get("ingress"):  # the nginx ingress, not fal itself (fal_client retries these)
                html = f"<html><head><title>{status}</title></head><body><center><h1>{status}</h1></center><hr><center>nginx</center></body></html>"
                return Response(status, html.encode(), {"Content-Type": "text/html"})
            if status == 429:
                return detail_error(429, message)
            error_type = {500: "internal_error", 502: "runner_incomplete_response",
                          503: "runner_scheduling_failure", 504: "request_timeout"}[status]
            return request_error(status, message, error_type)

        return fault_response(fault, error, self.app.config.hang_max_s, self.point(point), model)

    # -- billing and state -------------------------------------------------------------------------

    def over_daily_limit(self, exc: DailyLimitExceeded, message: str | None = None) -> Response:
        return detail_error(429, f"Daily request limit ({exc.limit}) reached for {exc.scope}")

    def failure_charged(self, task: Task) -> bool:
        """fal never charges invalid input (refused before any GPU time) or its own 5xx errors; a
        model's error (a 4xx, e.g. content policy) may be charged (`fal_charges_model_errors`)."""
        return not task.problems and fal_failure(task.failure_code).charged and self.app.config.fal_charges_model_errors

    def billable_units(self, task: Task) -> str:
        return billable_units(self.app, task)

    def restore(self, snap: Snapshot) -> None:
        self.storage.secret = self.app.secret  # storage URLs issued before the restart still verify
        self.storage.restore(snap.records)
