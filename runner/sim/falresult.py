"""What a fal request's result says: the model's output, or its error as fal shapes and bills it.

fal reports a failed or cancelled request as COMPLETED with `error` / `error_type` in its status,
and the result (`GET .../requests/{id}`) answers the error itself: a model's error (a `detail`
list of `{loc, msg, type, url}` with `X-Fal-Retryable`, https://docs.fal.ai/errors) or the
platform's (a flat `detail` with `error_type`, also in `X-Fal-Error-Type`). Every result carries
`X-Fal-Billable-Units`, what the request was billed in units of its published unit price
(0 for one that was not charged; `unit_price` is what fal's pricing API publishes). The Platform
API's request history shows the same answers.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from runner.catalog import CatalogModel, effective_params
from runner.sim.failures import fal_failure, failure_message
from runner.sim.outputs import output_seconds
from runner.sim.server import Response, json_response
from runner.sim.tasks import Task

if TYPE_CHECKING:
    from runner.sim.app import SimApp

NAMESPACES = ("workflows", "comfy")
ERRORS_URL = "https://docs.fal.ai/errors/#"
#: The billing unit fal's pricing API names for each manifest unit.
FAL_UNITS = {"second": "second", "clip": "video", "image": "image", "character": "character", "request": "request"}


def app_id(model_id: str) -> str:
    """`owner/app` of a model id (namespaced apps keep their namespace): the per-request URL prefix."""
    parts = model_id.split("/")
    return "/".join(parts[: 3 if parts[0] in NAMESPACES else 2])


def detail_error(status: int, detail: Any, route: str = "other", model: str | None = None,
                 headers: dict[str, str] | None = None) -> Response:
    return json_response(status, {"detail": detail}, headers, route, model)


def request_error(status: int, message: str, error_type: str, route: str = "other", model: str | None = None,
                  headers: dict[str, str] | None = None) -> Response:
    """fal's infrastructure error: a flat detail plus error_type (also in X-Fal-Error-Type)."""
    return json_response(status, {"detail": message, "error_type": error_type},
                         {"X-Fal-Error-Type": error_type, **(headers or {})}, route, model)


def model_error(loc: list[str], message: str, error_type: str) -> dict[str, Any]:
    """One entry of a model error's `detail` list."""
    return {"loc": loc, "msg": message, "type": error_type, "url": ERRORS_URL + error_type}


def error_of(task: Task) -> tuple[str, str]:
    """(error, error_type) of a failed or cancelled request, as its COMPLETED status shows."""
    if task.final == "cancelled":
        return "Request was cancelled", "client_cancelled"
    if task.problems:
        return "Unprocessable Entity: " + "; ".join(task.problems), "bad_request"
    return task.failure_message or failure_message(task.failure_code or "INTERNAL"), fal_failure(task.failure_code).error_type


def result_of(app: "SimApp", task: Task, route: str, *, expired: bool = False) -> Response:
    """The result of an ended request: its output (with freshly signed URLs) or its error."""
    name = task.model.name
    headers = {"X-Fal-Request-Id": task.id, "X-Fal-Billable-Units": billable_units(app, task)}
    if task.final == "succeeded":
        content_type, file_name = app.outputs.describe(task)
        file = {"url": app.outputs.url(app.base_url, task, expired=expired),
                "content_type": content_type, "file_name": file_name, "file_size": len(app.outputs.data(task))}
        return json_response(200, {task.model.spec.output.media: file}, headers, route, name)
    message, error_type = error_of(task)
    if task.final == "cancelled":
        return request_error(499, message, error_type, route, name, headers)
    if task.problems:  # the input failed the model's schema: refused before any work, 0 units
        detail = [model_error(["body", *([p.split(":", 1)[0]] if ":" in p else [])],
                              p.partition(": ")[2] or p, _problem_type(p)) for p in task.problems]
        return detail_error(422, detail, route, name, {**headers, "X-Fal-Retryable": "false"})
    failure = fal_failure(task.failure_code)
    if not failure.model_error:
        return request_error(failure.status, message, error_type, route, name, headers)
    loc = ["body", "prompt"] if (task.failure_code or "").startswith("SAFETY.INPUT") else ["body"]
    headers["X-Fal-Retryable"] = "true" if failure.retryable else "false"
    return detail_error(failure.status, [model_error(loc, message, error_type)], route, name, headers)


def _problem_type(problem: str) -> str:
    """A pydantic-style error type for a manifest check problem."""
    message = problem.partition(": ")[2]
    if message == "required":
        return "missing"
    if message.startswith("not a field"):
        return "extra_forbidden"
    return "value_error"


def unit_price(app: "SimApp", model: CatalogModel, mode: str) -> tuple[Decimal, str] | None:
    """(USD per unit, unit) as fal's pricing API publishes it: the rate that applies to the
    mode's defaults, else its last (catch-all) rate; None when the model is unpriced."""
    pricing = app.billing.pricing(model, mode)
    if pricing is None:
        return None
    defaults = effective_params(model.mode(mode), canonical={}, native={})
    rate = next((r for r in pricing.rates if all(defaults.get(k) == v for k, v in r.when.items())), pricing.rates[-1])
    unit = FAL_UNITS[pricing.unit]
    return rate.usd / pricing.unit_size if pricing.unit_size > 1 else rate.usd, unit


def billable_units(app: "SimApp", task: Task) -> str:
    """fal's `X-Fal-Billable-Units` for an ended request: the charge in units of the published
    unit price (fractional where a resolution or length scales it), as fal formats it."""
    billed = task.billed if task.final is not None else task.price
    listed = unit_price(app, task.model, task.mode)
    if billed == 0:
        return "0"
    if billed is None or listed is None:  # unpriced: count the unit the model is sold by
        pricing = task.model.spec.pricing_for(task.mode)
        if pricing.unit != "second":
            return "1"
        params = effective_params(task.model.mode(task.mode), canonical={}, native=task.payload)
        return str(math.ceil(output_seconds(params)))
    units = billed / listed[0]
    # fal's app framework writes whole units without decimals, others with 8 (fal/api/api.py)
    return str(int(units)) if units == units.to_integral_value() else f"{units:.8f}"
