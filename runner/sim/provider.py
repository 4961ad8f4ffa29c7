"""A provider's protocol as the simulator serves it: the base every provider simulator builds on.

The simulator hosts one `ProviderSim` per provider under `/<provider>` on its one port. Plugins
register theirs through the `register_simulators` hook, the built-in Runway and fal.ai ones
included, so `simulate=true` and the conformance kit (runner/testing.py) work for any provider
that brings one. A subclass speaks the provider's HTTP (paths, bodies, status words, errors); what
lies under it is shared: the task board (latency, queues under account concurrency, daily limits),
fault injection, the billing ledger, signed expiring output URLs and the state file. With the
helpers below, a simple provider's simulator is a few dozen lines
(`tests/example_plugin/runner_acme/sim.py`); docs/simulator.md has the walk-through.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from runner.catalog import CatalogModel, check_payload
from runner.sim.failures import failure_message
from runner.sim.faults import RESPONSE_KINDS, Fault
from runner.sim.server import Request, Response, fault_response, json_response
from runner.sim.state import Snapshot
from runner.sim.tasks import DailyLimitExceeded, Phase, Task, model_names

if TYPE_CHECKING:
    from runner.sim.app import SimApp

Route = Callable[[Request, str], Response]


class ProviderSim:
    """One provider's API, served under `/<provider>/`. Subclass it, set the class attributes and
    implement `handle`; register the class with `register_simulators` (runner/hookspecs.py)."""

    #: The provider's name, as its `Provider.name`: served under `/<provider>`; `concurrency.<provider>`
    #: and `daily_limit.<provider>` in a simulator config limit its whole account.
    provider: ClassVar[str]
    #: The API key it accepts, unless the simulator config's `keys.<provider>` gives another.
    key: ClassVar[str]
    #: How `python -m runner.sim` names it when it starts (default: `provider`).
    title: ClassVar[str] = ""
    #: The request header that carries the key, and its value with `{key}` standing for the key.
    auth: ClassVar[tuple[str, str]] = ("Authorization", "Bearer {key}")
    #: Its fault points, `name -> roles`. Each is `<provider>.<name>` in `inject(on=...)`, fault rates
    #: and the request statistics; the roles say which provider calls its requests serve
    #: (`submit`, `poll`, `result`, `cancel`: runner.sim.faults.ROLES), and so which faults can happen there.
    points: ClassVar[Mapping[str, tuple[str, ...]]] = {"submit": ("submit",), "poll": ("poll", "result"), "cancel": ("cancel",)}

    def __init__(self, app: "SimApp"):
        self.app = app

    # -- what a subclass provides --------------------------------------------------------------------

    def handle(self, request: Request, path: str) -> Response:
        """Answer a request under `/<provider>/`; `path` is what follows that prefix."""
        raise NotImplementedError

    def error(self, status: int, message: str) -> Response:
        """The provider's error answer; fault responses (`http_503`, ...) are built with it too."""
        return json_response(status, {"error": message})

    def routes(self) -> dict[str, Route]:
        """Other top-level paths it serves, by prefix ending in `/` (`"fal-api/"`), for a provider
        with more than one host."""
        return {}

    def endpoints(self) -> dict[str, str]:
        """Its other services, as its plugin's `providers.<name>.endpoints` names them, for a
        runner pointed at this simulator (fal: `platform`, `storage`)."""
        return {}

    def clients(self) -> list[str]:
        """How the provider's official clients reach this simulator, for `python -m runner.sim` to print."""
        return []

    def charged(self, task: Task) -> bool:
        """Whether an ended task is billed: a success, a generation cancelled once it ran, and
        failures as `failure_charged` says."""
        if task.final == "succeeded":
            return True
        if task.final == "cancelled":
            return task.cancel_phase == "running"
        return self.failure_charged(task)

    def failure_charged(self, task: Task) -> bool:
        """Whether a failed generation is billed (by default not)."""
        return False

    def billable_units(self, task: Task) -> str | None:
        """What an ended task was billed in the provider's units, if it says (the ledger's
        `billable_units`)."""
        return None

    def billed(self, task: Task) -> None:
        """A task's bill is known (`task.billed`), as it ends or restored from a state file."""

    def restore(self, snap: Snapshot) -> None:
        """Take over this provider's own facts an earlier simulator wrote to the state file
        (`snap.records`, the events it `persist`ed), before serving."""

    # -- helpers ---------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Its base URL (`providers.<name>.base_url` for a runner pointed here)."""
        return f"{self.app.base_url}/{self.provider}"

    def point(self, name: str) -> str:
        return f"{self.provider}.{name}"

    def refuse(self, request: Request) -> Response | None:
        """401 unless the request carries the key (see `auth`); None when it does."""
        header, value = self.auth
        if request.header(header) != value.format(key=self.app.keys[self.provider]):
            return self.error(401, f"invalid or missing API key: send {header}: {value}")
        return None

    def model_for(self, endpoint: str, model_id: str | None = None,
                  payload: Mapping[str, Any] | None = None) -> tuple[CatalogModel, str] | None:
        """The model and mode a request goes to: this provider's mode at `endpoint` (of the model
        `model_id`, where the request names one), preferring one the payload fits, since modes
        may share an endpoint. None when there is none."""
        found = [(cm, name) for cm in self.app.catalog.models.values()
                 if cm.provider == self.provider and model_id in (None, cm.model_id)
                 for name, mode in cm.spec.modes.items() if mode.endpoint == endpoint]
        fitting = [(cm, name) for cm, name in found if payload is not None and not check_payload(cm.mode(name), payload)]
        return (fitting or found or [None])[0]

    def problems(self, model: CatalogModel, mode: str, payload: Mapping[str, Any]) -> list[str]:
        """What is wrong with a request's native fields by the model's manifest (`field: problem`):
        fields it does not have, required ones missing, values it does not allow."""
        return check_payload(model.mode(mode), payload)

    def accept(self, model: CatalogModel, mode: str, endpoint: str, body: Any, payload: dict[str, Any], *,
               point: str = "submit", problems: tuple[str, ...] = (), **task: Any) -> Task | Response:
        """Create the generation a request asks for (`payload`: its native fields, checked by the
        manifest; `body`: the request as sent, for the ledger's hash), or the answer a fault at
        `point` or a daily limit turns the request into. A `task_failed` fault fates the task to
        fail; `problems` makes it fail as invalid input (a provider that validates later)."""
        fault = self.app.faults.draw(self.point(point), model_names(model, endpoint), RESPONSE_KINDS | {"task_failed"})
        if fault is not None and fault.kind in RESPONSE_KINDS and not fault.after_accept:
            return self.spoil(fault, point, model.name)
        code, message = fault.fate() if fault is not None else (None, None)
        try:
            created = self.app.new_task(self.provider, model, mode, endpoint, body, payload, failure_code=code,
                                        failure=message, problems=problems, **task)
        except DailyLimitExceeded as exc:
            response = self.over_daily_limit(exc)
            response.route, response.model = self.point(point), model.name
            return response
        if fault is not None and fault.after_accept:  # accepted, but the client hears something else
            return self.spoil(fault, point, model.name)
        return created

    def over_daily_limit(self, exc: DailyLimitExceeded, message: str | None = None) -> Response:
        """The answer to a create over a daily limit: 429, with Retry-After when the rolling
        window's oldest entry leaves it."""
        response = self.error(429, message or str(exc))
        response.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
        return response

    def spoil(self, fault: Fault, point: str, model: str | None = None) -> Response:
        """The answer a response fault turns a request at `point` into."""
        return fault_response(fault, self.error, self.app.config.hang_max_s, self.point(point), model)

    def spoiled(self, point: str, task: Task | None = None) -> Response | None:
        """The answer a fault scripted (or drawn) at `point` turns this request into, or None:
        answer it normally."""
        fault = self.app.faults.draw(self.point(point), task.names if task else (), RESPONSE_KINDS)
        return None if fault is None else self.spoil(fault, point, task.model.name if task else None)

    def task(self, task_id: str) -> Task | None:
        """One of this provider's tasks, brought up to date; None when unknown or deleted."""
        task = self.app.board.get(task_id)
        return task if task is not None and task.provider == self.provider else None

    def phase(self, task: Task) -> Phase:
        """waiting (over a concurrency limit), pending, running, succeeded, failed or cancelled."""
        return task.phase(self.app.board.now())

    def cancel(self, task: Task, stop_running: bool = True) -> str | None:
        """Cancel a task that has not ended: the phase it was in; None when it had ended."""
        return self.app.board.cancel(task, stop_running=stop_running)

    def output_url(self, task: Task, point: str | None = None) -> str:
        """A freshly signed URL of a succeeded task's output (a real file, served by the
        simulator); already expired when an `expired_url` fault fires at `point`."""
        expired = point is not None and self.app.faults.draw(self.point(point), task.names, {"expired_url"}) is not None
        return self.app.outputs.url(self.app.base_url, task, expired=expired)

    def failure(self, task: Task) -> tuple[str, str]:
        """(code, message) of a failed task: its invalid input, or the failure code a
        `task_failed` fault gave it (INTERNAL by default) with its message."""
        if task.problems:
            return "INVALID_INPUT", "; ".join(task.problems)
        code = task.failure_code or "INTERNAL"
        return code, task.failure_message or failure_message(code)

    def reply(self, status: int, obj: Any, point: str, task: Task | None = None) -> Response:
        """A JSON answer, counted in the statistics under `<provider>.<point>` (and the task's model)."""
        return json_response(status, obj, route=self.point(point), model=task.model.name if task else None)
