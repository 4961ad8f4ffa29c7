"""Runway's ephemeral uploads: a presigned form post, then a `runway://` URI usable as input.

`POST /v1/uploads` answers an `uploadUrl` with form `fields` (S3 presigned-POST style) and the
`runwayUri` the file will have; the client posts the fields plus the file as multipart form data
to the URL, without Runway's headers. The URI is valid input only once the file has arrived, and
only until it expires (24 h at Runway).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

#: Runway's documented size bounds for an upload.
MIN_BYTES = 512
MAX_BYTES = 200_000_000


@dataclass
class _Upload:
    id: str
    filename: str
    expires: float
    size: int | None = None  # set when the file has arrived


class Uploads:
    """Issued upload tickets and received files (sizes only: the bytes are not kept)."""

    def __init__(self, secret: bytes, ttl_s: float, log: Callable[[dict[str, object]], None] = lambda record: None):
        self.secret = secret  # a restored simulator takes its predecessor's, so issued forms stay valid
        self._ttl_s = ttl_s
        self._uploads: dict[str, _Upload] = {}
        self._lock = threading.Lock()
        self.log = log  # persists each ticket and each arrival (the simulator's state file)

    def restore(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Tickets and arrivals an earlier simulator recorded (its `upload` and `uploaded` events);
        an unreadable one is skipped, as the state file's other lines are."""
        with self._lock:
            for record in records:
                try:
                    if record["event"] == "upload":
                        upload_id = str(record["id"])
                        self._uploads[upload_id] = _Upload(upload_id, str(record["filename"]), float(record["expires"]))
                    elif record["event"] == "uploaded" and record["id"] in self._uploads:
                        self._uploads[record["id"]].size = int(record["size"])
                except (KeyError, TypeError, ValueError):
                    continue

    def create(self, filename: str, base_url: str) -> dict[str, object]:
        """A new ticket: where to post the file, the form fields to send, and the future URI."""
        upload = _Upload(str(uuid.uuid4()), filename, time.time() + self._ttl_s)
        with self._lock:
            self._uploads[upload.id] = upload
            self.log({"event": "upload", "id": upload.id, "filename": filename, "expires": round(upload.expires, 6)})
        key = f"uploads/{upload.id}/{filename}"
        policy = base64.b64encode(json.dumps({"key": key, "expiration": int(upload.expires)}).encode()).decode()
        fields = {"key": key, "policy": policy, "x-sim-signature": self._sign(policy)}
        return {"uploadUrl": f"{base_url}/uploads/{upload.id}", "fields": fields, "runwayUri": f"runway://{upload.id}"}

    def receive(self, upload_id: str, content_type: str, body: bytes) -> str | None:
        """Accept the form post; the reason it is refused, or None."""
        with self._lock:
            upload = self._uploads.get(upload_id)
        if upload is None:
            return "NoSuchUpload"
        form, files = parse_multipart(content_type, body)
        policy = form.get("policy", "")
        if not hmac.compare_digest(self._sign(policy), form.get("x-sim-signature", "")):
            return "SignatureDoesNotMatch"
        if form.get("key") != f"uploads/{upload.id}/{upload.filename}":
            return "InvalidPolicyDocument: key does not match"
        if time.time() > upload.expires:
            return "AccessDenied: policy expired"
        if "file" not in files:
            return "InvalidArgument: no file field"
        size = len(files["file"])
        if size < MIN_BYTES:
            return f"EntityTooSmall: {size} bytes; at least {MIN_BYTES}"
        if size > MAX_BYTES:
            return f"EntityTooLarge: {size} bytes; at most {MAX_BYTES}"
        with self._lock:
            upload.size = size
            self.log({"event": "uploaded", "id": upload.id, "size": size})
        return None

    def check_uri(self, uri: str) -> str | None:
        """Why a `runway://` URI is not usable input, or None."""
        with self._lock:
            upload = self._uploads.get(uri.removeprefix("runway://"))
        if upload is None:
            return "unknown runway:// URI (not issued by this account)"
        if upload.size is None:
            return "runway:// URI has no file: the upload was never completed"
        if time.time() > upload.expires:
            return "runway:// URI has expired"
        return None

    def _sign(self, policy: str) -> str:
        return hmac.new(self.secret, policy.encode(), hashlib.sha256).hexdigest()


def parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], dict[str, bytes]]:
    """Form fields and files of a multipart/form-data body (the standard library's MIME parser)."""
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    fields: dict[str, str] = {}
    files: dict[str, bytes] = {}
    if not message.is_multipart():
        return fields, files
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        payload = part.get_payload(decode=True) or b""
        if part.get_filename() is not None:
            files[str(name)] = payload
        else:
            fields[str(name)] = payload.decode("utf-8", "replace")
    return fields, files
