"""Names on disk: where a job's file goes, spelled the same on every OS.

Apart from `runner.outputs` (which downloads) so that the companion CLI and the gallery name
folders and files without loading an HTTP client.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}


@functools.lru_cache(maxsize=1024)  # a sweep's, model's and extension's names, asked for every file
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
