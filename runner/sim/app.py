"""The simulator's state and request router: one object shared by every connection thread.

Paths: `/runway/...` (Runway API), `/fal/...` (fal queue), `/files/...` (signed output files),
`/uploads/...` (Runway's presigned upload form), `/_sim/...` (control: ledger, stats, faults).
"""

from __future__ import annotations

import math
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from runner.catalog import Catalog, CatalogModel, effective_params, price
from runner.errors import suggest
from runner.sim.config import PROVIDERS, SimConfig
from runner.sim.fal import FalAPI
from runner.sim.faults import RESPONSE_KINDS, FaultPlan
from runner.sim.ledger import Ledger, entries_from_state
from runner.sim.outputs import Outputs, output_seconds
from runner.sim.runway import RunwayAPI
from runner.sim.server import Request, Response, fault_response, json_response
from runner.sim.state import FORMAT, Snapshot, compact_payload
from runner.sim.stats import RequestStats
from runner.sim.tasks import Task, TaskBoard, model_names
from runner.sim.uploads import Uploads

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class SimApp:
    """Config, catalogue, task board, ledger, faults, outputs and uploads, behind one callable."""

    def __init__(self, config: SimConfig, catalog: Catalog):
        _check_names(config, catalog)
        self.config = config
        self.catalog = catalog
        self.base_url = ""  # set once the server is bound
        self.stopping = threading.Event()
        self._rng = random.Random(config.seed)
        self._rng_lock = threading.Lock()
        self.board = TaskBoard(
            provider_limits={p: n for p, n in config.concurrency.items() if p in PROVIDERS},
            model_limit=lambda task: config.model_limit(config.concurrency, task.names),
            daily_limits=self._daily_limits,
        )
        self.ledger = Ledger(config.ledger_path, wall=self.board.wall)
        #: Where facts are persisted (a state file's `append`); nothing without a state file.
        self.persist: Callable[[dict[str, Any]], None] = lambda record: None
        self.board.on_accept, self.board.on_final = self._accepted, self._settle
        self.board.on_admit, self.board.on_delete = self._admitted, self._deleted
        self.faults = FaultPlan(config.faults, config.failure_codes, random.Random(config.seed + 1))
        secret = os.urandom(32)
        self.outputs = Outputs(secret, config.url_ttl_s)
        self.uploads = Uploads(secret, config.upload_ttl_s, log=lambda record: self.persist(record))
        self.ports: list[int] = []  # every port served, set by the Simulator
        self.state_path: str | None = None  # the state file restored from and written to, if any
        self.stats = RequestStats()
        self.runway = RunwayAPI(self)
        self.fal = FalAPI(self)
        self._spent = Decimal(0)

    # -- routing ----------------------------------------------------------------------------------

    def __call__(self, request: Request) -> Response:
        if self.stopping.is_set():  # stopped providers answer nothing (and record nothing more)
            return Response(0, abort="reset")
        path = request.path
        for prefix, handler in (("/runway", self.runway.handle), ("/fal", self.fal.handle),
                                ("/files/", self.serve_file), ("/uploads/", self.receive_upload),
                                ("/_sim/", self.control)):
            if path == prefix or path.startswith(prefix if prefix.endswith("/") else prefix + "/"):
                return handler(request, path[len(prefix):])
        return json_response(404, {"error": f"no such path {path}"})

    def record(self, response: Response, timing: tuple[float, float] | None) -> None:
        self.stats.record(response.route, response.model, timing)

    # -- tasks ------------------------------------------------------------------------------------

    def new_task(self, provider: str, model: CatalogModel, mode: str, endpoint: str, body: Any,
                 payload: dict[str, Any], *, failure_code: str | None = None, failure: str | None = None,
                 problems: tuple[str, ...] = (), fallback_disabled: bool | None = None) -> Task:
        """Create, price, time and submit a task (DailyLimitExceeded when over a daily limit)."""
        config = self.config
        latency = config.latency_for(model_names(model, endpoint), provider)
        with self._rng_lock:
            seconds = self._rng.uniform(latency.min, latency.max)
        task = Task(
            id=str(uuid.uuid4()), provider=provider, model=model, mode=mode, endpoint=endpoint,
            payload=payload, body=body, latency=0.0 if problems else seconds / config.speed,
            pending=config.pending_s / config.speed, price=None if problems else self.price(model, mode, payload),
            failure_code=failure_code, failure_message=failure, problems=problems,
            fallback_disabled=fallback_disabled,
        )
        self.board.submit(task)
        return task

    def price(self, model: CatalogModel, mode: str, payload: dict[str, Any]) -> Decimal | None:
        """What the simulated provider charges: the manifest price times `bill_factor` (a provider
        whose bill differs from its price list), None when the manifest gives no price."""
        params = effective_params(model.mode(mode), canonical={}, native=payload)
        listed = price(model.spec.pricing_for(mode), params)
        return None if listed is None else listed * Decimal(str(self.config.bill_factor))

    def billable_units(self, task: Task) -> int:
        """What fal reports in X-Fal-Billable-Units: seconds for per-second models, else 1."""
        pricing = task.model.spec.pricing_for(task.mode)
        if pricing.unit != "second":
            return 1
        params = effective_params(task.model.mode(task.mode), canonical={}, native=task.payload)
        return math.ceil(output_seconds(params))

    def credit_balance(self) -> int:
        """Runway credits left: the configured balance less what succeeded tasks cost."""
        return int(self.config.credit_balance - self._spent * 100)

    def _settle(self, task: Task) -> None:
        if task.final == "succeeded" and task.price is not None and task.provider == "runway":
            self._spent += task.price
        self.persist({"event": "end", "id": task.id, "final": task.final, "at": self._wall(task.ended)})
        self.ledger.settle(task)

    # -- persistence (see runner/sim/state.py) ----------------------------------------------------

    def _wall(self, t: float | None) -> float:
        return round(self.board.wall(t or 0.0), 6)

    def _accepted(self, task: Task) -> None:
        """Persist, then ledger: called before the client is answered."""
        self.persist({
            "event": "task", "id": task.id, "seq": task.seq, "provider": task.provider, "model": task.model.name,
            "mode": task.mode, "endpoint": task.endpoint, "payload": compact_payload(task.payload),
            "payload_sha256": task.payload_hash, "body_sha256": task.body_hash,
            "latency": task.latency, "pending": task.pending, "price": None if task.price is None else str(task.price),
            "failure_code": task.failure_code, "failure_message": task.failure_message, "problems": list(task.problems),
            "fallback_disabled": task.fallback_disabled, "created": self._wall(task.created),
        })
        self.ledger.record(task)

    def _admitted(self, task: Task) -> None:
        self.persist({"event": "admit", "id": task.id, "at": self._wall(task.admitted)})

    def _deleted(self, task: Task) -> None:
        self.persist({"event": "delete", "id": task.id})

    def restore(self, snap: Snapshot) -> list[str]:
        """Take over what an earlier simulator recorded (before serving); returns warnings.

        Tasks keep their ids, times (wall clock), latencies and fates: ended ones stay ended,
        running ones end when they were due, even if that moment passed while nobody ran (they
        end then, and the slots they free go to waiting tasks at that moment), waiting ones keep
        their place in the queue. The signing secret is taken over, so URLs issued before still
        verify; the ledger and the credit spend cover every run on the file.
        """
        warnings = []
        if snap.meta is not None:
            self.outputs.secret = self.uploads.secret = bytes.fromhex(snap.meta["secret"])
        else:
            if snap.tasks or snap.uploads:
                warnings.append("its first line (the URL signing key) is unreadable: URLs issued before no longer verify "
                                "(Runway and fal mint fresh ones on the next poll or result)")
            self.persist({"event": "meta", "format": FORMAT, "secret": self.outputs.secret.hex(), "created": round(time.time(), 6)})
        if snap.skipped:
            warnings.append(f"{snap.skipped} unreadable line(s) skipped")
        board, tasks, unknown = self.board, [], set()
        for task_id, rec in snap.tasks.items():
            model = self.catalog.models.get(rec["model"])
            if model is None or rec["mode"] not in model.spec.modes:
                unknown.add(f"{rec['model']} ({rec['mode']})")
                continue
            task = Task(
                id=task_id, provider=rec["provider"], model=model, mode=rec["mode"], endpoint=rec["endpoint"],
                payload=rec["payload"], body=None, latency=float(rec["latency"]), pending=float(rec["pending"]),
                price=None if rec["price"] is None else Decimal(rec["price"]), failure_code=rec["failure_code"],
                failure_message=rec["failure_message"], problems=tuple(rec["problems"]),
                fallback_disabled=rec["fallback_disabled"], created=board.at_wall(rec["created"]), seq=int(rec["seq"]),
                payload_hash=rec["payload_sha256"], body_hash=rec["body_sha256"],
            )
            if task_id in snap.admitted:
                task.admitted = board.at_wall(snap.admitted[task_id])
            if task_id in snap.ended:
                task.final, at = snap.ended[task_id]
                task.ended = board.at_wall(at)
                if task.final == "succeeded" and task.price is not None and task.provider == "runway":
                    self._spent += task.price
            tasks.append(task)
        if unknown:
            warnings.append(f"tasks of models this catalogue lacks are in the ledger but answer 404: {', '.join(sorted(unknown))}")
        self.ledger.load(entries_from_state(snap))
        self.uploads.restore(snap.uploads)
        with self._rng_lock:  # continue the latency draws where the last run left them
            for _ in snap.tasks:
                self._rng.random()
        board.restore(tasks, snap.deleted)
        return warnings

    def _daily_limits(self, task: Task) -> list[tuple[str, int]]:
        limits = []
        if task.provider in self.config.daily_limit:
            limits.append((task.provider, self.config.daily_limit[task.provider]))
        per_model = self.config.model_limit(self.config.daily_limit, task.names)
        if per_model is not None:
            limits.append((task.model.name, per_model))
        return limits

    # -- files and uploads ------------------------------------------------------------------------

    def serve_file(self, request: Request, path: str) -> Response:
        """A task's output behind its signed URL (403 when expired or tampered with); Range works."""
        route = "download"
        task_id, _, name = path.partition("/")
        task = self.board.get(task_id)
        if task is None or task.final != "succeeded" or name != self.outputs.describe(task)[1]:
            return _text(404, "Not Found", route)
        query = request.query
        problem = self.outputs.check(task_id, name, query.get("exp", ""), query.get("n", ""), query.get("sig", ""))
        if problem:
            return _text(403, problem, route, task.model.name)
        kinds = (RESPONSE_KINDS - {"malformed_json"}) | {"expired_url", "truncated"}
        fault = self.faults.draw(route, task.names, kinds)
        if fault is not None and fault.kind == "expired_url":
            return _text(403, "Request has expired", route, task.model.name)
        if fault is not None and fault.kind != "truncated":
            response = fault_response(fault, lambda status, message: _text(status, message), self.config.hang_max_s)
            response.route, response.model = route, task.model.name
            return response
        data = self.outputs.data(task)
        content_type, _ = self.outputs.describe(task)
        headers = {"Content-Type": content_type, "Accept-Ranges": "bytes", "Cache-Control": "private, max-age=0"}
        status, body = 200, data
        match = _RANGE.match(request.header("Range") or "")
        if match and (match[1] or match[2]):
            start = int(match[1]) if match[1] else max(0, len(data) - int(match[2]))
            end = min(len(data) - 1, int(match[2])) if match[1] and match[2] else len(data) - 1
            if start > end or start >= len(data):
                return Response(416, headers={"Content-Range": f"bytes */{len(data)}"}, route=route, model=task.model.name)
            status, body = 206, data[start:end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        response = Response(status, body, headers, route, task.model.name)
        if fault is not None:  # truncated: the full Content-Length, part of the body, then close
            response.abort = "truncate"
            response.send_bytes = int(len(body) * min(max(float(fault.detail.get("fraction", 0.5)), 0.0), 0.99))
        return response

    def receive_upload(self, request: Request, upload_id: str) -> Response:
        """The presigned form post of a Runway upload (S3-style: 204 on success, XML errors)."""
        route = "runway.upload"
        if request.method != "POST":
            return Response(405, route=route)
        fault = self.faults.draw(route, (), RESPONSE_KINDS - {"malformed_json"})
        if fault is not None:
            response = fault_response(fault, lambda status, message: _text(status, message), self.config.hang_max_s)
            response.route = route
            return response
        problem = self.uploads.receive(upload_id, request.header("Content-Type") or "", request.body)
        if problem is None:
            return Response(204, route=route)
        code, _, message = problem.partition(":")
        xml = f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{message.strip() or code}</Message></Error>"
        return Response(404 if code == "NoSuchUpload" else 400, xml.encode(), {"Content-Type": "application/xml"}, route)

    # -- control ----------------------------------------------------------------------------------

    def control(self, request: Request, path: str) -> Response:
        """`/_sim/ledger`, `/_sim/stats`, `/_sim/faults` (GET pending, POST add, DELETE clear), `/_sim/health`."""
        route = "control"
        if path == "ledger" and request.method == "GET":
            return json_response(200, self.ledger.entries(), route=route)
        if path == "stats" and request.method == "GET":
            return json_response(200, self.snapshot(), route=route)
        if path == "health" and request.method == "GET":
            return json_response(200, {"ok": True, "runway_url": f"{self.base_url}/runway", "fal_url": f"{self.base_url}/fal",
                                       "ports": self.ports, "state_path": self.state_path}, route=route)
        if path == "faults":
            if request.method == "GET":
                return json_response(200, self.faults.pending(), route=route)
            if request.method == "DELETE":
                self.faults.clear()
                return Response(204, route=route)
            if request.method == "POST":
                try:
                    body = request.json()
                    for spec in body if isinstance(body, list) else [body]:
                        spec = dict(spec)
                        self.faults.add(spec.pop("kind"), on=spec.pop("on"), **spec)
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    return json_response(400, {"error": f"bad fault: {exc}"}, route=route)
                return json_response(201, self.faults.pending(), route=route)
        return json_response(404, {"error": f"no such control path /_sim/{path}"}, route=route)

    def snapshot(self) -> dict[str, Any]:
        """Task counts (max in flight / running) and request counts per provider and model, and server time."""
        counts = self.board.counts()
        requests = self.stats.per_model()
        models = {}
        for name, counter in counts["models"].items():
            models[name] = {"provider": self.catalog.models[name].provider, **counter, "requests": requests.get(name, {})}
        providers = {}
        for provider, counter in counts["providers"].items():
            totals: dict[str, int] = {}
            for name, entry in models.items():
                if entry["provider"] == provider:
                    for route, n in entry["requests"].items():
                        totals[route] = totals.get(route, 0) + n
            providers[provider] = {**counter, "requests": totals}
        return {"providers": providers, "models": models, "server": self.stats.server()}


def _check_names(config: SimConfig, catalog: Catalog) -> None:
    """A config naming a model the catalogue lacks is a typo that would silently do nothing."""
    known = {*PROVIDERS, "default"}
    for cm in catalog.models.values():
        known.update((*model_names(cm), *(m.endpoint for m in cm.spec.modes.values())))
    for table in ("latency", "concurrency", "daily_limit"):
        for name in getattr(config, table):
            if name not in known or (name == "default" and table != "latency"):
                raise ValueError(f"{table}: {name!r} is not a model or provider name{suggest(name, known)}")


def _text(status: int, message: str, route: str = "other", model: str | None = None) -> Response:
    return Response(status, message.encode(), {"Content-Type": "text/plain; charset=utf-8"}, route, model)
