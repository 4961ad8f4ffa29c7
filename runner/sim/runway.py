"""Runway's developer API (`/v1/...`), as https://docs.dev.runwayml.com/api and the official
`runwayml` SDK describe it.

Create endpoints come from the catalogue's Runway modes, and bodies are checked against the
manifests, so the simulator rejects exactly what the runner's own preflight should have caught.
Errors carry Runway's `{"error": ...}` body (validation adds zod-style `issues` naming the field).
The Runway plugin registers this simulator (plugins/runway.py, `register_simulators`).
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from runner.catalog import CatalogModel, check_payload
from runner.manifest import MediaLimits
from runner.sim.failures import failure_message, runway_refunded
from runner.sim.faults import BODY_KINDS, RESPONSE_KINDS
from runner.sim.files import text
from runner.sim.provider import ProviderSim, Route
from runner.sim.server import Request, Response, fault_response, json_response
from runner.sim.state import Snapshot
from runner.sim.tasks import DailyLimitExceeded, Task, iso_time, model_names
from runner.sim.uploads import Uploads

if TYPE_CHECKING:
    from runner.sim.app import SimApp

VERSION = "2024-11-06"
DOC_URL = "https://docs.dev.runwayml.com/api"
MAX_URL_CHARS = 2048
#: "base64 data URI (..., up to 5MB)" for images, videos and audio alike (runwayml SDK 5.24,
#: types/*_create_params.py), counted here on the whole URI.
MAX_DATA_URI_CHARS = 5_000_000
#: The 429 body of a create over the daily limit (quoted in runwayml/sdk-python#23).
DAILY_LIMIT_MESSAGE = "Your daily task limit has been reached."
_STATUS = {"waiting": "THROTTLED", "pending": "PENDING", "running": "RUNNING",
           "succeeded": "SUCCEEDED", "failed": "FAILED", "cancelled": "CANCELLED"}


def error(status: int, message: str, route: str = "other", model: str | None = None, **extra: Any) -> Response:
    return json_response(status, {"error": message, **extra}, route=route, model=model)


def credits(usd: Decimal) -> int | float:
    """Runway credits for a USD amount (1 credit = $0.01)."""
    value = usd * 100
    return int(value) if value == value.to_integral_value() else float(value)


class RunwaySim(ProviderSim):
    """Everything under `/runway`, and the presigned upload form under `/uploads`."""

    provider = "runway"
    title = "Runway"
    #: A Runway-shaped secret: `key_` and 128 hex digits.
    key = "key_" + hashlib.sha512(b"video-runner provider simulator").hexdigest()
    points = {"create": ("submit",), "poll": ("poll", "result"), "cancel": ("cancel",), "upload": ()}

    def __init__(self, app: "SimApp"):
        super().__init__(app)
        runway_models = [cm for cm in app.catalog.models.values() if cm.provider == "runway"]
        self.create_endpoints = {mode.endpoint for cm in runway_models for mode in cm.spec.modes.values()}
        self.uploads = Uploads(app.secret, app.config.upload_ttl_s, log=lambda record: app.persist(record))
        self._spent = Decimal(0)

    def error(self, status: int, message: str) -> Response:
        return error(status, message)

    def routes(self) -> dict[str, Route]:
        return {"uploads/": self.receive_upload}

    def clients(self) -> list[str]:
        return [f'Runway SDK: RunwayML(base_url="{self.url}", api_key=...)']

    def handle(self, request: Request, path: str) -> Response:
        if request.header("Authorization") != f"Bearer {self.app.keys['runway']}":
            return error(401, "Invalid or missing API key: send Authorization: Bearer <key>")
        if request.header("X-Runway-Version") != VERSION:
            got = request.header("X-Runway-Version")
            return error(400, f"Invalid X-Runway-Version header {got!r}: this API version is {VERSION}"
                         if got else f"Missing X-Runway-Version header (use {VERSION})")
        if not path.startswith("v1/"):
            return error(404, "Not found")
        parts = tuple(path[len("v1/"):].strip("/").split("/"))
        handlers: dict[str, Callable[[Request], Response]]
        if len(parts) == 1 and parts[0] in self.create_endpoints:
            handlers = {"POST": lambda r: self.create(r, parts[0])}
        elif len(parts) == 2 and parts[0] == "tasks":
            handlers = {"GET": lambda r: self.retrieve(r, parts[1]), "DELETE": lambda r: self.delete(r, parts[1])}
        elif parts == ("uploads",):
            handlers = {"POST": self.upload}
        elif parts == ("organization",):
            handlers = {"GET": self.organization}
        else:
            return error(404, "Not found")
        if request.method not in handlers:
            return error(405, f"Method {request.method} not allowed")
        return handlers[request.method](request)

    # -- create -----------------------------------------------------------------------------------

    def create(self, request: Request, endpoint: str) -> Response:
        route = "runway.create"
        try:
            body = request.json()
        except ValueError:
            return error(400, "Invalid JSON body", route)
        if not isinstance(body, dict):
            return invalid([("(body)", "Expected an object")], route)
        model_id = body.get("model")
        try:
            if not isinstance(model_id, str):
                raise KeyError(model_id)
            model, mode = self.app.catalog.by_endpoint("runway", endpoint, model_id)
        except KeyError:
            allowed = sorted(cm.model_id for cm in self.app.catalog.models.values()
                             if cm.provider == "runway" and any(m.endpoint == endpoint for m in cm.spec.modes.values()))
            return invalid([("model", f"Invalid model {model_id!r} for /v1/{endpoint}; expected one of: {', '.join(allowed)}")], route)
        payload = {k: v for k, v in body.items() if k != "model"}
        problems = [_split(p) for p in check_payload(model.mode(mode), payload)]
        problems += self.check_inputs(model, mode, payload)
        if problems:
            return invalid(problems, route, model.name)
        estimate = self.app.billing.price(model, mode, payload)
        if estimate is not None and credits(estimate) > self.credit_balance():
            return error(400, "You do not have enough credits to run this task.", route)
        task = self.accept(model, mode, endpoint, body, payload, point="create")
        if isinstance(task, Response):
            return task
        answer: dict[str, Any] = {"id": task.id}
        if task.price is not None:
            answer["estimatedCost"] = {"credits": credits(task.price)}
        return json_response(200, answer, route=route, model=model.name)

    def check_inputs(self, model: CatalogModel, mode: str, payload: dict[str, Any]) -> list[tuple[str, str]]:
        """Problems with input file references: data URI size and type, runway:// validity, URL form."""
        problems = []
        for field, spec in model.mode(mode).params.items():
            if field not in payload or spec.type not in ("image", "video", "audio", "image_list"):
                continue
            kind = "image" if spec.type == "image_list" else spec.type
            limits = model.media_limits(kind)
            for uri in _uris(payload[field]):
                problem = self._check_uri(uri, limits)
                if problem:
                    problems.append((field, problem))
        return problems

    def _check_uri(self, uri: str, limits: MediaLimits | None) -> str | None:
        if uri.startswith("data:"):
            mime = uri[5:].split(";", 1)[0].split(",", 1)[0]
            if "," not in uri:
                return "Invalid data URI"
            if limits is not None and limits.formats and mime not in limits.formats:
                return f"Unsupported data URI type {mime!r}; expected one of: {', '.join(limits.formats)}"
            if len(uri) > MAX_DATA_URI_CHARS:
                return f"Data URI is {len(uri)} characters; at most {MAX_DATA_URI_CHARS} are allowed (upload larger files)"
            return None
        if uri.startswith("runway://"):
            return self.uploads.check_uri(uri)
        if uri.startswith(("https://", "http://")):
            return url_problem(uri)
        return "Expected an HTTPS URL, a runway:// upload URI or a data URI"

    # -- tasks ------------------------------------------------------------------------------------

    def retrieve(self, request: Request, task_id: str) -> Response:
        route = "runway.poll"
        task = self.app.board.get(task_id)
        if task is None or task.provider != "runway" or (task.final == "cancelled" and self.app.config.runway_forget_cancelled):
            return error(404, "Task not found", route)
        now = self.app.board.now()
        phase = task.phase(now)
        kinds = RESPONSE_KINDS | {"expired_url"} if phase == "succeeded" else RESPONSE_KINDS
        fault = self.app.faults.draw(route, task.names, kinds)
        if fault is not None and fault.kind != "expired_url":
            return self.spoil(fault, "poll", task.model.name)
        return json_response(200, self.task_object(task, now, expired=fault is not None), route=route, model=task.model.name)

    def task_object(self, task: Task, now: float, expired: bool = False) -> dict[str, Any]:
        """The task as GET /v1/tasks/{id} shows it; a SUCCEEDED task gets freshly signed URLs."""
        phase = task.phase(now)
        obj: dict[str, Any] = {"id": task.id, "status": _STATUS[phase], "createdAt": iso_time(self.app.board.wall(task.created))}
        if phase == "running":
            obj["progress"] = round(task.progress(now), 3)
        if phase in ("waiting", "pending", "running"):
            if task.price is not None:
                obj["estimatedCost"] = {"credits": credits(task.price)}
            return obj
        if phase == "succeeded":
            obj["output"] = [self.app.outputs.url(self.app.base_url, task, expired=expired)]
        if phase == "failed":
            obj["failure"] = task.failure_message or failure_message(task.failure_code or "INTERNAL")
            obj["failureCode"] = task.failure_code
        if task.billed is not None:  # "final cost ...; fully refunded tasks report 0" (SDK types)
            obj["cost"] = {"credits": credits(task.billed)}
        return obj

    def delete(self, request: Request, task_id: str) -> Response:
        """Cancel a task that has not ended; delete one that has (it then answers 404).

        The SDK's docstring (resources/tasks.py): a cancel that observes RUNNING does not refund,
        and deleting a completed task does not refund its charge; `billing.charge` applies this.
        """
        route = "runway.cancel"
        task = self.app.board.get(task_id)
        if task is None or task.provider != "runway":
            return error(404, "Task not found", route)
        spoiled = self.spoiled("cancel", task)
        if spoiled is not None:
            return spoiled
        if self.app.board.cancel(task) is None:
            self.app.board.delete(task)
        return Response(204, route=route, model=task.model.name)

    # -- uploads and organization -----------------------------------------------------------------

    def upload(self, request: Request) -> Response:
        route = "runway.upload"
        try:
            body = request.json()
        except ValueError:
            return error(400, "Invalid JSON body", route)
        body = body if isinstance(body, dict) else {}
        problems = []
        if not isinstance(body.get("filename"), str) or not body["filename"].strip() or "/" in body["filename"]:
            problems.append(("filename", "Expected a file name"))
        if body.get("type") != "ephemeral":
            problems.append(("type", "Expected 'ephemeral'"))
        if problems:
            return invalid(problems, route)
        spoiled = self.spoiled("upload")
        if spoiled is not None:
            return spoiled
        return json_response(200, self.uploads.create(body["filename"], self.app.base_url), route=route)

    def receive_upload(self, request: Request, upload_id: str) -> Response:
        """The presigned form post of an upload (S3-style: 204 on success, XML errors)."""
        route = "runway.upload"
        if request.method != "POST":
            return Response(405, route=route)
        fault = self.app.faults.draw(route, (), RESPONSE_KINDS - BODY_KINDS)
        if fault is not None:
            return fault_response(fault, text, self.app.config.hang_max_s, route)  # the storage host's plain text
        problem = self.uploads.receive(upload_id, request.header("Content-Type") or "", request.body)
        if problem is None:
            return Response(204, route=route)
        code, _, message = problem.partition(":")
        xml = f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{message.strip() or code}</Message></Error>"
        return Response(404 if code == "NoSuchUpload" else 400, xml.encode(), {"Content-Type": "application/xml"}, route)

    def organization(self, request: Request) -> Response:
        """Credit balance, the tier's per-model limits, and today's usage."""
        config = self.app.config
        usage = self.app.board.usage_today()
        models = {}
        for cm in self.app.catalog.models.values():
            if cm.provider != "runway":
                continue
            limits = [config.model_limit(table, model_names(cm), self.app.providers) for table in (config.concurrency, config.daily_limit)]
            concurrency, daily = [limit if limit is not None else table.get("runway")
                                  for limit, table in zip(limits, (config.concurrency, config.daily_limit))]
            models[cm.model_id] = {"maxConcurrentGenerations": concurrency, "maxDailyGenerations": daily}
        return json_response(200, {
            "creditBalance": self.credit_balance(),
            "tier": {"maxMonthlyCreditSpend": config.credit_balance, "models": models},
            "usage": {"models": {cm.model_id: {"dailyGenerations": usage[cm.name]}
                                 for cm in self.app.catalog.models.values() if cm.provider == "runway" and cm.name in usage}},
        }, route="runway.organization")

    # -- billing and state -------------------------------------------------------------------------

    def over_daily_limit(self, exc: DailyLimitExceeded, message: str | None = None) -> Response:
        return super().over_daily_limit(exc, DAILY_LIMIT_MESSAGE)

    def failure_charged(self, task: Task) -> bool:
        """Runway refunds failures but those of the families it names (input moderation)."""
        return not runway_refunded(task.failure_code, self.app.config.runway_unrefunded_failures)

    def billed(self, task: Task) -> None:
        if task.billed is not None:
            self._spent += task.billed

    def credit_balance(self) -> int:
        """Credits left: the configured balance less what Runway has billed."""
        return int(self.app.config.credit_balance - self._spent * 100)

    def restore(self, snap: Snapshot) -> None:
        self.uploads.secret = self.app.secret  # forms issued before the restart still verify
        self.uploads.restore(snap.records)


def invalid(problems: list[tuple[str, str]], route: str, model: str | None = None) -> Response:
    """Runway's 400 for a body that fails validation, one zod-style issue per field."""
    issues = [{"code": _code(message), "message": message, "path": [] if field == "(body)" else [field]}
              for field, message in problems]
    return error(400, "Validation of body failed", route, model, issues=issues, docUrl=DOC_URL)


def url_problem(uri: str) -> str | None:
    """Why Runway refuses an input URL: "HTTPS only", "domain names only (no IP addresses)", at
    most 2,048 characters (https://docs.dev.runwayml.com/assets/inputs)."""
    parts = urlsplit(uri)
    if parts.scheme != "https":
        return "Input URLs must use HTTPS"
    host = parts.hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not host or "." not in host:
            return "Input URLs must name a domain"
    else:
        return "Input URLs must use a domain name, not an IP address"
    return None if len(uri) <= MAX_URL_CHARS else f"URL is longer than {MAX_URL_CHARS} characters"


def _split(problem: str) -> tuple[str, str]:
    field, _, message = problem.partition(": ")
    return field, message or problem


def _code(message: str) -> str:
    if message == "required":
        return "invalid_type"
    if message.startswith("not a field"):
        return "unrecognized_keys"
    return "custom"


def _uris(value: Any) -> list[str]:
    """The input URIs in a field: a string, {"uri": ...}, or a list of either."""
    items = value if isinstance(value, list) else [value]
    uris = []
    for item in items:
        if isinstance(item, dict):
            item = item.get("uri")
        if isinstance(item, str):
            uris.append(item)
    return uris
