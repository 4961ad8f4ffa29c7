"""fal's storage: uploading an input file the way `fal-client` does, then serving it by URL.

`fal_client.upload*` (fal-client 1.0.3, client.py) tries fal's CDN first, then its storage API:

1. CDN: `POST {REST_URL}/storage/auth/token?storage_type=fal-cdn-v3` with `{}` and the fal key
   gives `{token, token_type, base_url, expires_at}`; then `POST {CDN_URL}/files/upload` with the
   raw bytes, `Authorization: {token_type} {token}`, `Content-Type` and `X-Fal-File-Name` gives
   `{access_url}`.
2. Storage: `POST {REST_URL}/storage/upload/initiate?storage_type=gcs` with
   `{file_name, content_type}` and the fal key gives `{upload_url, file_url}`; then a `PUT` of
   the raw bytes to `upload_url` (a signed URL: no key).

Here `REST_URL` is `{base}/fal-rest` and `CDN_URL` is `{base}/fal-cdn`; the file URL is served
under `{base}/fal-cdn/files/...` without a key (fal's media URLs are public), and fal submits
accept it as an input URL. Files over 100 MB (fal-client's multipart threshold) are refused:
the multipart flow is not simulated. The bytes are kept in memory only; a state file keeps each
file's facts, so submits naming it are still accepted after a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from runner.sim.faults import BODY_KINDS, RESPONSE_KINDS
from runner.sim.falresult import detail_error
from runner.sim.server import Request, Response, fault_response, json_response

if TYPE_CHECKING:
    from runner.sim.app import SimApp

#: fal-client sends anything larger through the multipart flow, which is not simulated.
MAX_BYTES = 100 * 1024 * 1024
TOKEN_TTL_S = 3600.0
ROUTE = "fal.upload"


@dataclass
class _File:
    id: str
    name: str
    content_type: str
    size: int
    sha256: str
    data: bytes | None  # None: restored from a state file (the bytes are not kept)


class FalStorage:
    """Handlers for `/fal-rest/storage/...` and `/fal-cdn/...`, and the files received."""

    def __init__(self, app: "SimApp", secret: bytes):
        self.app = app
        self.secret = secret  # a restored simulator takes its predecessor's, so issued URLs stay valid
        self._files: dict[str, _File] = {}
        self._lock = threading.Lock()

    def restore(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Files an earlier simulator received (its `fal_file` events): their URLs stay valid inputs."""
        with self._lock:
            for rec in records:
                if rec.get("event") != "fal_file":
                    continue
                try:
                    self._files[rec["id"]] = _File(rec["id"], rec["name"], rec["content_type"], int(rec["size"]), rec["sha256"], None)
                except (KeyError, TypeError, ValueError):
                    continue

    # -- rest.fal.ai -------------------------------------------------------------------------------

    def rest(self, request: Request, path: str) -> Response:
        if request.header("Authorization") != f"Key {self.app.keys['fal']}":
            return detail_error(401, "Unauthorized", ROUTE)
        if request.method != "POST" or path not in ("storage/auth/token", "storage/upload/initiate"):
            return detail_error(404, "Not Found", ROUTE)
        fault = self.app.faults.draw(ROUTE, (), RESPONSE_KINDS)
        if fault is not None:
            return fault_response(fault, lambda status, message: detail_error(status, message), self.app.config.hang_max_s, ROUTE)
        if path == "storage/auth/token":
            expires = time.time() + TOKEN_TTL_S
            return json_response(200, {"token": f"{expires:.0f}.{self._sign(f'{expires:.0f}')}", "token_type": "Bearer",
                                       "base_url": f"{self.app.base_url}/fal-cdn",
                                       "expires_at": datetime.fromtimestamp(expires, timezone.utc).isoformat()}, route=ROUTE)
        try:
            body = request.json()
            name, content_type = str(body["file_name"]), str(body["content_type"])
        except (ValueError, KeyError, TypeError):
            return detail_error(422, "Expected {file_name, content_type}", ROUTE)
        file_id = uuid.uuid4().hex
        query = f"name={quote(name, safe='')}&type={quote(content_type, safe='')}"
        return json_response(200, {
            "upload_url": f"{self.app.base_url}/fal-cdn/upload/{file_id}?{query}&sig={self._sign(f'{file_id}?{query}')}",
            "file_url": self.file_url(file_id, name),
        }, route=ROUTE)

    # -- the CDN -----------------------------------------------------------------------------------

    def cdn(self, request: Request, path: str) -> Response:
        if request.method == "GET" and path.startswith("files/"):
            return self._serve(path[len("files/"):])
        if request.method == "POST" and path == "files/upload":
            token = (request.header("Authorization") or "").removeprefix("Bearer ")
            expires, _, sig = token.partition(".")
            if not hmac.compare_digest(self._sign(expires), sig) or float(expires or 0) < time.time():
                return detail_error(401, "Invalid or expired upload token", ROUTE)
            return self._receive(request, body_kinds=True, name=request.header("X-Fal-File-Name") or "upload.bin",
                                 content_type=request.header("Content-Type") or "application/octet-stream")
        if request.method == "PUT" and path.startswith("upload/"):
            file_id = path[len("upload/"):]
            query = f"name={quote(request.query.get('name', ''), safe='')}&type={quote(request.query.get('type', ''), safe='')}"
            if not hmac.compare_digest(self._sign(f"{file_id}?{query}"), request.query.get("sig", "")):
                return detail_error(403, "Signature does not match", ROUTE)
            return self._receive(request, body_kinds=False, name=request.query["name"], content_type=request.query["type"],
                                 file_id=file_id)
        return detail_error(404, "Not Found", ROUTE)

    def _receive(self, request: Request, *, body_kinds: bool, name: str, content_type: str,
                 file_id: str | None = None) -> Response:
        """Keep an uploaded file: `{access_url}` for the CDN's POST, an empty 200 for the signed PUT."""
        fault = self.app.faults.draw(ROUTE, (), RESPONSE_KINDS if body_kinds else RESPONSE_KINDS - BODY_KINDS)
        if fault is not None:
            return fault_response(fault, lambda status, message: detail_error(status, message), self.app.config.hang_max_s, ROUTE)
        if len(request.body) > MAX_BYTES:
            return detail_error(413, f"File is larger than {MAX_BYTES} bytes: use the multipart upload (not simulated)", ROUTE)
        data = request.body
        file = _File(file_id or uuid.uuid4().hex, name, content_type, len(data), hashlib.sha256(data).hexdigest(), data)
        with self._lock:
            self._files[file.id] = file
        self.app.persist({"event": "fal_file", "id": file.id, "name": file.name, "content_type": file.content_type,
                          "size": file.size, "sha256": file.sha256})
        if file_id is not None:
            return Response(200, route=ROUTE)
        return json_response(200, {"access_url": self.file_url(file.id, name)}, route=ROUTE)

    def _serve(self, rest: str) -> Response:
        file_id, _, name = rest.partition("/")
        with self._lock:
            file = self._files.get(file_id)
        if file is None or unquote(name) != file.name:
            return detail_error(404, "File not found", "fal.file")
        if file.data is None:
            return detail_error(404, "File not kept across simulator restarts", "fal.file")
        return Response(200, file.data, {"Content-Type": file.content_type}, "fal.file")

    # -- as input ----------------------------------------------------------------------------------

    def file_url(self, file_id: str, name: str) -> str:
        return f"{self.app.base_url}/fal-cdn/files/{file_id}/{quote(name, safe='')}"

    def missing(self, url: str) -> str | None:
        """Why fal cannot fetch an input URL naming this storage (None: not ours, or present)."""
        prefix = f"{self.app.base_url}/fal-cdn/files/"
        if not url.startswith(prefix):
            return None
        file_id, _, name = url[len(prefix):].partition("?")[0].partition("/")
        with self._lock:
            file = self._files.get(file_id)
        if file is None or unquote(name) != file.name:
            return f"file {url} could not be downloaded (404: not in fal storage)"
        return None

    def _sign(self, message: str) -> str:
        return hmac.new(self.secret, message.encode(), hashlib.sha256).hexdigest()[:32]
