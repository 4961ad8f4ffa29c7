"""fal's Platform API (https://api.fal.ai/v1, served under `/fal-api/v1`): request history and prices.

`GET /v1/models/requests/by-endpoint` lists the requests made to one or more endpoints, with their
input when asked (`expand=payloads`), so a client that lost a submit's answer can find the request
instead of paying for it again (https://fal.ai/docs/platform-apis/v1/models/requests/by-endpoint).
`GET /v1/models/pricing` gives the unit price and unit of each endpoint
(https://fal.ai/docs/platform-apis/v1/models/pricing). Both take the fal key (`Authorization: Key`).

Not documented, so chosen here: requests still queued or running are listed too, with `ended_at`,
`status_code` and `duration` null (sorted first by end time); `start` / `end` bound the time a
request was sent; a malformed parameter answers 422 with a FastAPI-style `detail` list.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from runner.sim.falresult import detail_error, result_of, unit_price
from runner.sim.server import Request, Response, json_response
from runner.sim.tasks import Task, iso_time

if TYPE_CHECKING:
    from runner.sim.app import SimApp

ROUTE = "fal.platform"
MAX_ENDPOINTS = 50
DAY_S, REQUEST_ID_LOOKBACK_S = 86400.0, 90 * 86400.0
_STATUSES = {"success": range(200, 300), "user_error": range(400, 500), "error": range(500, 600)}


class BadParam(ValueError):
    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.name = name


class PlatformAPI:
    """Handlers for everything under `/fal-api`."""

    def __init__(self, app: "SimApp"):
        self.app = app

    def handle(self, request: Request, path: str) -> Response:
        if request.header("Authorization") != f"Key {self.app.keys['fal']}":
            return detail_error(401, "Unauthorized", ROUTE)
        handlers = {"v1/models/requests/by-endpoint": self.requests, "v1/models/pricing": self.pricing}
        if path.strip("/") not in handlers:
            return detail_error(404, "Not Found", ROUTE)
        if request.method != "GET":
            return detail_error(405, "Method Not Allowed", ROUTE)
        try:
            return handlers[path.strip("/")](request)
        except BadParam as exc:
            return detail_error(422, [{"loc": ["query", exc.name], "msg": str(exc), "type": "value_error"}], ROUTE)

    def pricing(self, request: Request) -> Response:
        """`{prices: [{endpoint_id, unit_price, unit, currency}], next_cursor, has_more}`; endpoints
        the simulator cannot price (unknown, or unpriced in the manifests and `price_list`) are left out."""
        prices = []
        for endpoint in _endpoint_ids(request):
            try:
                model, mode = self.app.catalog.by_endpoint("fal", endpoint)
            except KeyError:
                continue
            listed = unit_price(self.app, model, mode)
            if listed is not None:
                prices.append({"endpoint_id": endpoint, "unit_price": float(listed[0]), "unit": listed[1], "currency": "USD"})
        return json_response(200, {"prices": prices, "next_cursor": None, "has_more": False}, route=ROUTE)

    def requests(self, request: Request) -> Response:
        """`{items: [...], next_cursor, has_more}`, newest end first; the cursor is the base64 page number."""
        query, now = request.query, self.app.board.wall(self.app.board.now())
        endpoints = set(_endpoint_ids(request))
        limit = _integer(query.get("limit", "50"), "limit", 1, 100)
        page = _page(query.get("cursor"))
        request_id = query.get("request_id")
        start = _time(query["start"], "start") if "start" in query else now - (REQUEST_ID_LOOKBACK_S if request_id else DAY_S)
        end = _time(query["end"], "end") if "end" in query else float("inf")
        status = query.get("status")
        if status is not None and status not in _STATUSES:
            raise BadParam("status", f"Input should be {', '.join(_STATUSES)}")
        sort_by = query.get("sort_by", "ended_at")
        if sort_by not in ("ended_at", "duration"):
            raise BadParam("sort_by", "Input should be ended_at or duration")
        expand = {item for key, value in request.params if key == "expand" for item in value.split(",")}
        items = []
        for task in self.app.board.tasks("fal"):
            sent = self.app.board.wall(task.created)
            if task.endpoint not in endpoints or not start <= sent < end or (request_id and task.id != request_id):
                continue
            item = self._item(task, "payloads" in expand)
            if status is None or (item["status_code"] is not None and item["status_code"] in _STATUSES[status]):
                items.append(item)
        if sort_by == "duration":
            items.sort(key=lambda item: (item["duration"] is None, -(item["duration"] or 0.0)))
        else:  # by end time, newest first; those still running have not ended yet, so they come first
            items.sort(key=lambda item: item["ended_at"] or "~", reverse=True)
        chunk = items[(page - 1) * limit: page * limit]
        more = len(items) > page * limit
        next_cursor = base64.b64encode(str(page + 1).encode()).decode() if more else None
        return json_response(200, {"items": chunk, "next_cursor": next_cursor, "has_more": more}, route=ROUTE)

    def _item(self, task: Task, payloads: bool) -> dict[str, Any]:
        wall, now = self.app.board.wall, self.app.board.now()
        # it started once its pending time was over, if that happened before it ended (or now)
        started = task.run_at if task.run_at is not None and task.run_at <= (task.ended or now) else None
        item: dict[str, Any] = {
            "request_id": task.id, "endpoint_id": task.endpoint,
            "started_at": None if started is None else iso_time(wall(started)),
            "sent_at": iso_time(wall(task.created)),
            "ended_at": None if task.ended is None else iso_time(wall(task.ended)),
            "status_code": None, "duration": None,
        }
        output = None
        if task.final is not None:
            result = result_of(self.app, task, ROUTE)
            item["status_code"] = result.status
            item["duration"] = round(task.ended - (started if started is not None else task.created), 3)
            output = json.loads(result.body)
        if payloads:
            item["json_input"] = task.body if task.body is not None else task.payload
            item["json_output"] = output
        return item


def _endpoint_ids(request: Request) -> list[str]:
    """`endpoint_id`, repeated or comma-separated (1 to 50)."""
    ids = [part.strip() for key, value in request.params if key == "endpoint_id" for part in value.split(",") if part.strip()]
    if not 1 <= len(ids) <= MAX_ENDPOINTS:
        raise BadParam("endpoint_id", f"Give 1 to {MAX_ENDPOINTS} endpoint ids")
    return ids


def _integer(text: str, name: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise BadParam(name, "Input should be a valid integer") from None
    if not low <= value <= high:
        raise BadParam(name, f"Input should be between {low} and {high}")
    return value


def _page(cursor: str | None) -> int:
    if cursor is None:
        return 1
    try:
        return _integer(base64.b64decode(cursor, validate=True).decode(), "cursor", 1, 10**9)
    except (binascii.Error, UnicodeDecodeError, BadParam):
        raise BadParam("cursor", "Invalid cursor") from None


def _time(text: str, name: str) -> float:
    """ISO 8601 (`2025-01-01T00:00:00Z`) or a date; without a zone it is UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadParam(name, "Input should be an ISO 8601 date or time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()

