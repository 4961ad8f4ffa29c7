"""The control API under `/_sim/`: the ledger, statistics, health, and faults scripted over HTTP."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runner.sim.server import Request, Response, json_response

if TYPE_CHECKING:
    from runner.sim.app import SimApp


class Control:
    """`/_sim/ledger`, `/_sim/stats`, `/_sim/faults` (GET pending, POST add, DELETE clear), `/_sim/health`."""

    def __init__(self, app: "SimApp"):
        self.app = app

    def handle(self, request: Request, path: str) -> Response:
        app, route = self.app, "control"
        if path == "ledger" and request.method == "GET":
            return json_response(200, app.ledger.entries(), route=route)
        if path == "stats" and request.method == "GET":
            return json_response(200, self.snapshot(), route=route)
        if path == "health" and request.method == "GET":
            urls = {provider: handler.url for provider, handler in app.handlers.items()}
            return json_response(200, {"ok": True, "urls": urls, **{f"{p}_url": url for p, url in urls.items()},
                                       "ports": app.ports, "state_path": app.state_path}, route=route)
        if path == "faults":
            if request.method == "GET":
                return json_response(200, app.faults.pending(), route=route)
            if request.method == "DELETE":
                app.faults.clear()
                return Response(204, route=route)
            if request.method == "POST":
                try:
                    body = request.json()
                    for spec in body if isinstance(body, list) else [body]:
                        spec = dict(spec)
                        app.faults.add(spec.pop("kind"), on=spec.pop("on"), **spec)
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    return json_response(400, {"error": f"bad fault: {exc}"}, route=route)
                return json_response(201, app.faults.pending(), route=route)
        return json_response(404, {"error": f"no such control path /_sim/{path}"}, route=route)

    def snapshot(self) -> dict[str, Any]:
        """Task counts (max in flight / running) and request counts per provider and model, and server time."""
        app = self.app
        counts = app.board.counts()
        requests = app.stats.per_model()
        models = {}
        for name, counter in counts["models"].items():
            models[name] = {"provider": app.catalog.models[name].provider, **counter, "requests": requests.get(name, {})}
        providers = {}
        for provider, counter in counts["providers"].items():
            totals: dict[str, int] = {}
            for name, entry in models.items():
                if entry["provider"] == provider:
                    for route, n in entry["requests"].items():
                        totals[route] = totals.get(route, 0) + n
            providers[provider] = {**counter, "requests": totals}
        return {"providers": providers, "models": models, "server": app.stats.server()}
