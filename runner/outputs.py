"""Outputs on disk: where a job's file goes, and how it gets there intact.

A file is streamed to a temporary name beside its final one, its length checked against what the
server announced, its sha256 computed on the way, and only then renamed into place, so a crash or
a cut connection never leaves a partial file under the final name.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from runner.providers import ProviderError, classify_status, classify_transport

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}


def safe_name(text: str, limit: int = 80) -> str:
    """A file name that means the same on every OS, whatever the prompt id or model holds."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    name = _UNSAFE.sub("-", ascii_text).strip(".-")[:limit] or "x"
    return f"_{name}" if name.lower().split(".")[0] in _RESERVED else name


def output_path(root: Path, job: Mapping[str, Any]) -> Path:
    """`outputs/<sweep>/<model>/<prompt-id>__<params>-<short-key>.<ext>`, e.g.
    `outputs/ads/kling/coffee-morning__d10_16x9-1a2b3c4d.mp4`, from a ledger row: a 5 s and a
    10 s clip of one prompt are told apart by name, and the key keeps every job's file its own."""
    tag = param_tag(json.loads(job.get("params") or "{}"), job.get("replicate") or 0)
    stem = f"{safe_name(job['prompt_id'], 60)}__{tag}-{job['key'][:8]}" if tag else f"{safe_name(job['prompt_id'], 60)}-{job['key'][:8]}"
    return root / safe_name(job["sweep"]) / safe_name(job["model"]) / f"{stem}.{safe_name(job['extension'])}"


def param_tag(params: Mapping[str, Any], replicate: int = 0) -> str:
    """The parameters that tell clips of one prompt apart, short and file-safe: `d10_16x9_720p_audio_s42_r1`."""
    parts = []
    if params.get("duration") is not None:
        parts.append(f"d{params['duration']}".rstrip("s"))
    if params.get("aspect_ratio"):
        parts.append(str(params["aspect_ratio"]).replace(":", "x"))
    if params.get("resolution"):
        parts.append(str(params["resolution"]))
    if params.get("audio") is not None:
        parts.append("audio" if params["audio"] else "mute")
    if params.get("seed") is not None:
        parts.append(f"s{params['seed']}")
    if replicate:
        parts.append(f"r{replicate}")
    return safe_name("_".join(parts), 60) if parts else ""


class EnvironmentFault(Exception):
    """This machine cannot take the output (disk full, read-only or forbidden folder): not the
    job's fault, and no other job would fare better. The run stops submitting and says so."""


@dataclass(frozen=True)
class Downloaded:
    path: Path
    size: int
    sha256: str


def clear_partials(path: Path) -> None:
    """Remove temporary files an interrupted download of this output left behind."""
    for stale in path.parent.glob(f"{glob.escape(path.name)}.*.part"):
        stale.unlink(missing_ok=True)


async def download(client: httpx.AsyncClient, url: str, path: Path, tag: str) -> Downloaded:
    """Stream `url` to `path` via a temporary file named with `tag` (unique per attempt, so two
    attempts never write the same file); a short or failed transfer raises ProviderError.

    An expired or refused URL (401/403/404/410) is a permanent error for this URL: the caller may
    ask the provider for a fresh one. A compressed transfer (Content-Encoding) is saved decoded and
    its length checked against the bytes on the wire.
    """
    part = path.with_name(f"{path.name}.{safe_name(tag)}.part")
    digest = hashlib.sha256()
    size = 0
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        async with client.stream("GET", url) as response:
            if response.status_code >= 300:
                await response.aread()
                raise classify_status(response, f"download refused: HTTP {response.status_code}")
            expected = response.headers.get("content-length")
            with open(part, "wb") as out:
                async for chunk in response.aiter_bytes(1 << 16):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            wire = response.num_bytes_downloaded
        if expected is not None and expected.isdigit() and int(expected) != wire:
            raise ProviderError(f"download cut short: {wire} of {expected} bytes", kind="retryable")
        if size == 0:
            raise ProviderError("download is empty", kind="retryable")
        os.replace(part, path)
    except httpx.TransportError as exc:
        part.unlink(missing_ok=True)
        raise classify_transport(exc) from None
    except (httpx.TooManyRedirects, httpx.InvalidURL, httpx.DecodingError, httpx.StreamError) as exc:
        part.unlink(missing_ok=True)
        raise ProviderError(f"download failed: {type(exc).__name__}: {exc}", kind="retryable") from None
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise EnvironmentFault(f"cannot write {exc.filename or path}: {exc.strerror or exc}") from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return Downloaded(path=path, size=size, sha256=digest.hexdigest())
