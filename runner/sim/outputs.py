"""Generated results: real media files behind signed, expiring URLs on the simulator itself.

Providers hand out self-authenticating CDN URLs that stop working after a while; clients must
download promptly and re-fetch the task for fresh URLs. The simulator does the same with an HMAC
over the path and an expiry time. The bytes are a pure function of the job (payload + task id),
so each job gets a different, playable file, regenerated identically if it falls out of the cache.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import OrderedDict
from typing import Any

from runner.catalog import effective_params
from runner.sim import media
from runner.sim.tasks import Task

CONTENT_TYPES = {"video": ("video/mp4", "mp4"), "image": ("image/png", "png"), "audio": ("audio/wav", "wav")}
_RATIO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*[:x/]\s*(\d+(?:\.\d+)?)\s*$")


def output_seconds(params: dict[str, Any], default: float = 5.0) -> float:
    """The job's duration in seconds from its effective params (5, "5", "8s"), else `default`."""
    value = params.get("duration")
    try:
        seconds = float(str(value).strip().rstrip("s")) if value is not None else default
    except ValueError:
        return default
    return seconds if 0 < seconds <= 600 else default


def frame_size(params: dict[str, Any], long_side: int = 128) -> tuple[int, int]:
    """Even (width, height) with the job's aspect ratio ("16:9" or "1280:720"); 16:9 when unknown."""
    for key in ("aspect_ratio", "ratio"):
        match = _RATIO.match(str(params.get(key, "")))
        if match and float(match[1]) > 0 and float(match[2]) > 0:
            w, h = float(match[1]), float(match[2])
            break
    else:
        w, h = 16.0, 9.0
    scale = long_side / max(w, h)
    return max(2, round(w * scale / 2) * 2), max(2, round(h * scale / 2) * 2)


class Outputs:
    """Mints and checks output URLs, and serves (and caches) each task's file."""

    def __init__(self, secret: bytes, ttl_s: float, cache_size: int = 256):
        self.secret = secret  # a restored simulator takes its predecessor's, so old URLs stay valid
        self.ttl_s = ttl_s
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    @staticmethod
    def describe(task: Task) -> tuple[str, str]:
        """(content type, file name) of a task's output."""
        content_type, extension = CONTENT_TYPES[task.model.spec.output.media]
        return content_type, f"output.{extension}"

    def url(self, base_url: str, task: Task, *, expired: bool = False) -> str:
        """A freshly signed URL for the task's file (already expired when asked, for fault tests).

        Each call mints a new URL (a fresh nonce), as each GET of a Runway task does.
        """
        _, name = self.describe(task)
        exp = f"{time.time() - 1 if expired else time.time() + self.ttl_s:.3f}"
        nonce = secrets.token_hex(6)
        return f"{base_url}/files/{task.id}/{name}?exp={exp}&n={nonce}&sig={self._sign(task.id, name, exp, nonce)}"

    def check(self, task_id: str, name: str, exp: str, nonce: str, sig: str) -> str | None:
        """Why a signed URL is refused (bad signature, expired), or None when it is good."""
        if not hmac.compare_digest(self._sign(task_id, name, exp, nonce), sig):
            return "Signature does not match"
        if time.time() > float(exp):
            return "Request has expired"
        return None

    def data(self, task: Task) -> bytes:
        """The task's file: the same bytes every time for the same job."""
        with self._lock:
            cached = self._cache.get(task.id)
            if cached is not None:
                self._cache.move_to_end(task.id)
                return cached
        blob = self._generate(task)
        with self._lock:
            self._cache[task.id] = blob
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return blob

    def _generate(self, task: Task) -> bytes:
        params = effective_params(task.model.mode(task.mode), canonical={}, native=task.payload)
        key = f"{task.payload_hash}:{task.id}"
        kind = task.model.spec.output.media
        if kind == "image":
            width, height = frame_size(params)
            return media.make_image(key, width=width, height=height)
        if kind == "audio":
            return media.make_audio(key, output_seconds(params))
        width, height = frame_size(params)
        return media.make_video(key, output_seconds(params), width=width, height=height)

    def _sign(self, task_id: str, name: str, exp: str, nonce: str) -> str:
        message = f"{task_id}/{name}\n{exp}\n{nonce}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()[:32]
