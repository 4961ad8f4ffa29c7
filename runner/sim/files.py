"""Output downloads: every provider's outputs, behind signed, expiring URLs on the simulator.

Outputs are served with Range support, as a CDN serves them; the download faults (expired URL, a
body cut short, gzip encoding) happen here, at the `download` point every simulator has.
"""

from __future__ import annotations

import gzip
import re
from typing import TYPE_CHECKING

from runner.sim.faults import BODY_KINDS, RESPONSE_KINDS
from runner.sim.server import Request, Response, fault_response

if TYPE_CHECKING:
    from runner.sim.app import SimApp

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_DOWNLOAD_KINDS = (RESPONSE_KINDS - BODY_KINDS) | {"expired_url", "truncated", "gzip"}


def text(status: int, message: str, route: str = "other", model: str | None = None) -> Response:
    return Response(status, message.encode(), {"Content-Type": "text/plain; charset=utf-8"}, route, model)


class Files:
    """The handler of `/files/...`."""

    def __init__(self, app: "SimApp"):
        self.app = app

    def serve(self, request: Request, path: str) -> Response:
        """A task's output behind its signed URL (403 when expired or tampered with); Range works."""
        app, route = self.app, "download"
        task_id, _, name = path.partition("/")
        task = app.board.get(task_id)
        if task is None or task.final != "succeeded" or name != app.outputs.describe(task)[1]:
            return text(404, "Not Found", route)
        query, model = request.query, task.model.name
        problem = app.outputs.check(task_id, name, query.get("exp", ""), query.get("n", ""), query.get("sig", ""))
        if problem:
            return text(403, problem, route, model)
        fault = app.faults.draw(route, task.names, _DOWNLOAD_KINDS)
        kind = fault.kind if fault is not None else None
        if kind == "expired_url":
            return text(403, "Request has expired", route, model)
        if fault is not None and kind in RESPONSE_KINDS:
            return fault_response(fault, text, app.config.hang_max_s, route, model)
        data = app.outputs.data(task)
        content_type, _ = app.outputs.describe(task)
        headers = {"Content-Type": content_type, "Accept-Ranges": "bytes", "Cache-Control": "private, max-age=0"}
        if kind == "gzip":  # stored compressed: the encoded bytes, whole (a server may ignore Range)
            headers["Content-Encoding"] = "gzip"
            return Response(200, gzip.compress(data, mtime=0), headers, route, model)
        status, body = 200, data
        match = _RANGE.match(request.header("Range") or "")
        if match and (match[1] or match[2]):
            start = int(match[1]) if match[1] else max(0, len(data) - int(match[2]))
            end = min(len(data) - 1, int(match[2])) if match[1] and match[2] else len(data) - 1
            if start > end or start >= len(data):
                return Response(416, headers={"Content-Range": f"bytes */{len(data)}"}, route=route, model=model)
            status, body = 206, data[start:end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        response = Response(status, body, headers, route, model)
        if kind == "truncated":  # the full Content-Length, part of the body, then close
            response.abort = "truncate"
            response.send_bytes = int(len(body) * min(max(float(fault.detail.get("fraction", 0.5)), 0.0), 0.99))
        return response
