"""The simulator's state and request router: one object shared by every connection thread.

Paths: `/<provider>/...` for each provider simulator hosted (runner/sim/provider.py), plus the
other paths each one claims (fal: `/fal-api/`, `/fal-rest/`, `/fal-cdn/`; Runway: `/uploads/`),
`/files/...` (signed output files) and `/_sim/...` (control: ledger, stats, faults).
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from runner.catalog import Catalog, CatalogModel
from runner.errors import suggest
from runner.sim.billing import Billing
from runner.sim.config import SimConfig
from runner.sim.control import Control
from runner.sim.faults import FaultPlan, Points
from runner.sim.files import Files
from runner.sim.ledger import Ledger, entries_from_state
from runner.sim.outputs import Outputs
from runner.sim.provider import ProviderSim, Route
from runner.sim.server import Request, Response, json_response
from runner.sim.state import FORMAT, Snapshot, compact_payload
from runner.sim.stats import RequestStats
from runner.sim.tasks import Task, TaskBoard, model_names


class SimApp:
    """Config, catalogue, task board, ledger, faults and outputs, and the providers' protocol
    handlers, behind one callable."""

    def __init__(self, config: SimConfig, catalog: Catalog, simulators: Sequence[type[ProviderSim]]):
        self.providers = tuple(cls.provider for cls in simulators)
        _check_names(config, catalog, self.providers)
        self.config = config
        self.catalog = catalog
        #: The key each provider accepts: the config's, else its simulator's own.
        self.keys = {cls.provider: config.keys.get(cls.provider, cls.key) for cls in simulators}
        self.billing = Billing(config, catalog.models)
        self.base_url = ""  # set once the server is bound
        self.stopping = threading.Event()
        self._rng = random.Random(config.seed)
        self._rng_lock = threading.Lock()
        self.board = TaskBoard(
            provider_limits={p: n for p, n in config.concurrency.items() if p in self.providers},
            model_limit=lambda task: config.model_limit(config.concurrency, task.names, self.providers),
            daily_limits=self._daily_limits, daily_window_s=config.daily_window_s,
        )
        self.ledger = Ledger(config.ledger_path, wall=self.board.wall)
        #: Where facts are persisted (a state file's `append`); nothing without a state file.
        self.persist: Callable[[dict[str, Any]], None] = lambda record: None
        self.board.on_accept, self.board.on_final = self._accepted, self._settle
        self.board.on_admit, self.board.on_delete, self.board.on_cancel = self._admitted, self._deleted, self._cancelled
        self.points = Points.of(simulators)
        self.faults = FaultPlan(config.faults, config.failure_codes, random.Random(config.seed + 1), config.fault_details, self.points)
        #: Signs output URLs (and what providers sign: upload forms, storage URLs); a restored
        #: simulator takes its predecessor's, so URLs handed out before still verify.
        self.secret = os.urandom(32)
        self.outputs = Outputs(self.secret, config.url_ttl_s)
        self.ports: list[int] = []  # every port served, set by the Simulator
        self.state_path: str | None = None  # the state file restored from and written to, if any
        self.stats = RequestStats()
        self.handlers: dict[str, ProviderSim] = {cls.provider: cls(self) for cls in simulators}
        self.files = Files(self)
        self.control = Control(self)
        self._routes = self._route_table()

    def _route_table(self) -> tuple[tuple[str, Route], ...]:
        """Path prefixes to handlers, longest first; a prefix two providers claim is an error."""
        routes: dict[str, Route] = {"/files/": self.files.serve, "/_sim/": self.control.handle}
        for provider, handler in self.handlers.items():
            for prefix, route in {f"{provider}/": handler.handle, **handler.routes()}.items():
                path = "/" + prefix.strip("/") + "/"
                if path in routes:
                    raise ValueError(f"simulator for {provider!r}: the path {path} is already served "
                                     f"(providers hosted: {', '.join(self.providers)})")
                routes[path] = route
        return tuple(sorted(routes.items(), key=lambda item: -len(item[0])))

    # -- routing ----------------------------------------------------------------------------------

    def __call__(self, request: Request) -> Response:
        if self.stopping.is_set():  # stopped providers answer nothing (and record nothing more)
            return Response(0, abort="reset")
        path = request.path
        for prefix, handler in self._routes:  # each handler gets the path below its prefix
            if path.startswith(prefix):
                return handler(request, path[len(prefix):])
        return json_response(404, {"error": f"no such path {path}"})

    def record(self, response: Response, timing: tuple[float, float] | None) -> None:
        self.stats.record(response.route, response.model, timing)

    # -- tasks ------------------------------------------------------------------------------------

    def new_task(self, provider: str, model: CatalogModel, mode: str, endpoint: str, body: Any,
                 payload: dict[str, Any], *, failure_code: str | None = None, failure: str | None = None,
                 problems: tuple[str, ...] = (), fallback_disabled: bool | None = None,
                 fallback_header: str | None = None) -> Task:
        """Create, price, time and submit a task (DailyLimitExceeded when over a daily limit)."""
        config = self.config
        latency = config.latency_for(model_names(model, endpoint), provider)
        with self._rng_lock:
            seconds = self._rng.uniform(latency.min, latency.max)
        task = Task(
            id=str(uuid.uuid4()), provider=provider, model=model, mode=mode, endpoint=endpoint,
            payload=payload, body=body, latency=0.0 if problems else seconds / config.speed,
            pending=config.pending_s / config.speed,
            price=None if problems else self.billing.price(model, mode, payload),
            failure_code=failure_code, failure_message=failure, problems=problems,
            fallback_disabled=fallback_disabled, fallback_header=fallback_header,
        )
        self.board.submit(task)
        return task

    def received(self, task_id: str) -> dict[str, Any] | None:
        """The native fields a task's request carried (as its provider simulator read them)."""
        task = self.board.get(task_id)
        return None if task is None else task.payload

    def _settle(self, task: Task) -> None:
        """A task ended: its provider decides whether it is billed; persist the bill and ledger it
        (the board's lock is held)."""
        handler = self.handlers[task.provider]
        task.billed = task.price if handler.charged(task) else Decimal(0)
        units = handler.billable_units(task)
        handler.billed(task)
        self.persist({"event": "end", "id": task.id, "final": task.final, "at": self._wall(task.ended),
                      "billed": None if task.billed is None else str(task.billed), "units": units})
        self.ledger.settle(task, units)

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
            "fallback_disabled": task.fallback_disabled, "fallback_header": task.fallback_header,
            "created": self._wall(task.created),
        })
        self.ledger.record(task)

    def _admitted(self, task: Task) -> None:
        self.persist({"event": "admit", "id": task.id, "at": self._wall(task.admitted)})

    def _cancelled(self, task: Task) -> None:
        self.persist({"event": "cancel", "id": task.id, "phase": task.cancel_phase})
        self.ledger.update(task.id, cancelled_at_phase=task.cancel_phase)

    def _deleted(self, task: Task) -> None:
        self.persist({"event": "delete", "id": task.id})
        self.ledger.update(task.id, deleted=True)

    def restore(self, snap: Snapshot) -> list[str]:
        """Take over what an earlier simulator recorded (before serving); returns warnings.

        Tasks keep their ids, times (wall clock), latencies, fates and bills: ended ones stay
        ended, running ones end when they were due, even if that moment passed while nobody ran
        (they end then, and the slots they free go to waiting tasks at that moment), waiting ones
        keep their place in the queue. The signing secret is taken over, so URLs issued before
        still verify; the ledger and the credit spend cover every run on the file.
        """
        warnings = []
        if snap.meta is not None:
            self.secret = self.outputs.secret = bytes.fromhex(snap.meta["secret"])
        else:
            if snap.tasks or snap.records:
                warnings.append("its first line (the URL signing key) is unreadable: URLs issued before no longer verify "
                                "(providers mint fresh ones on the next poll or result)")
            self.persist({"event": "meta", "format": FORMAT, "secret": self.outputs.secret.hex(), "created": round(time.time(), 6)})
        if snap.skipped:
            warnings.append(f"{snap.skipped} unreadable line(s) skipped")
        entries = {entry["task_id"]: entry for entry in entries_from_state(snap)}
        board, tasks, unknown = self.board, [], set()
        for task_id, rec in snap.tasks.items():
            model = self.catalog.models.get(rec["model"])
            if model is None or rec["mode"] not in model.spec.modes or rec["provider"] not in self.handlers:
                unknown.add(f"{rec['model']} ({rec['mode']})")
                continue
            task = Task(
                id=task_id, provider=rec["provider"], model=model, mode=rec["mode"], endpoint=rec["endpoint"],
                payload=rec["payload"], body=None, latency=float(rec["latency"]), pending=float(rec["pending"]),
                price=None if rec["price"] is None else Decimal(rec["price"]), failure_code=rec["failure_code"],
                failure_message=rec["failure_message"], problems=tuple(rec["problems"]),
                fallback_disabled=rec["fallback_disabled"], fallback_header=rec.get("fallback_header"),
                created=board.at_wall(rec["created"]), seq=int(rec["seq"]),
                payload_hash=rec["payload_sha256"], body_hash=rec["body_sha256"], cancel_phase=snap.cancels.get(task_id),
            )
            if task_id in snap.admitted:
                task.admitted = board.at_wall(snap.admitted[task_id])
            if task_id in snap.ended:
                task.final, at = snap.ended[task_id]
                task.ended = board.at_wall(at)
                billed = entries[task_id]["billed_usd"]
                task.billed = None if billed is None else Decimal(billed)
                self.handlers[task.provider].billed(task)
            tasks.append(task)
        if unknown:
            warnings.append(f"tasks of models or providers this simulator lacks are in the ledger but answer 404: "
                            f"{', '.join(sorted(unknown))}")
        self.ledger.load(list(entries.values()))
        for handler in self.handlers.values():
            handler.restore(snap)
        with self._rng_lock:  # continue the latency draws where the last run left them
            for _ in snap.tasks:
                self._rng.random()
        board.restore(tasks, snap.deleted)
        return warnings

    def _daily_limits(self, task: Task) -> list[tuple[str, int]]:
        limits = []
        if task.provider in self.config.daily_limit:
            limits.append((task.provider, self.config.daily_limit[task.provider]))
        per_model = self.config.model_limit(self.config.daily_limit, task.names, self.providers)
        if per_model is not None:
            limits.append((task.model.name, per_model))
        return limits


def _check_names(config: SimConfig, catalog: Catalog, providers: tuple[str, ...]) -> None:
    """A config naming a model or provider the simulator lacks is a typo that would silently do nothing."""
    unknown = sorted(set(config.keys) - set(providers))
    if unknown:
        raise ValueError(f"keys: {', '.join(map(repr, unknown))} is not a simulated provider; simulated: {', '.join(providers) or 'none'}")
    known = {*providers, "default"}
    for cm in catalog.models.values():
        known.update((*model_names(cm), *(m.endpoint for m in cm.spec.modes.values())))
    for table in ("latency", "concurrency", "daily_limit"):
        for name in getattr(config, table):
            if name not in known or (name == "default" and table != "latency"):
                raise ValueError(f"{table}: {name!r} is not a model or provider name{suggest(name, known)}")
