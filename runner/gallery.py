"""The gallery: one self-contained HTML page per sweep folder, opened from disk with no network.

The page (runner/assets/gallery.html: inline CSS and JavaScript, no CDN) gets the sweep's records
as JSON and lays them out as prompts by (model, parameters), each clip a `<video preload="metadata">`
linked relative to the page, so the folder can be moved or zipped whole.
"""

from __future__ import annotations

import hashlib
import html
import json
from collections.abc import Generator, Sequence
from importlib.resources import files
from typing import Any

#: What the page reads of each record (the rest stays in manifest.jsonl).
_SHOWN = ("key", "prompt_id", "prompt", "column", "model", "state", "spent_usd", "est_usd", "generation_s", "output_path",
          "poster", "error", "mismatch", "duration_s", "width", "height", "fps", "video_codec", "audio_codec", "input_thumb")


def render(name: str, records: Sequence[dict[str, Any]]) -> str:
    """The page for sweep `name` (records from `runner.publish.record`, paths relative to the page)."""
    parts = pieces(name)
    page = [next(parts), *(parts.send(r) for r in records)]
    return "".join([*page, *parts])


def pieces(name: str) -> Generator[str, dict[str, Any] | None, None]:
    """The page in pieces, for a folder too large to hold whole: the first piece, then one per
    record sent in (`send`), then the rest once iterated on."""
    title = html.escape(f"video-runner: {name}")
    head, tail = (part.replace("__TITLE__", title) for part in _template().split("__DATA__", 1))
    record = yield head + "["
    first = True
    while record is not None:
        data = json.dumps({k: record.get(k) for k in _SHOWN}, ensure_ascii=False, separators=(",", ":"))
        # Inside <script>, only "</" can end the element early; "<\/" reads the same to JSON.parse.
        record = yield ("" if first else ",") + data.replace("</", "<\\/")
        first = False
    yield "]" + tail


def _template() -> str:
    return (files("runner") / "assets" / "gallery.html").read_text(encoding="utf-8")


#: Changes with the page: a folder written by an older page is written again.
VERSION = hashlib.sha256(_template().encode()).hexdigest()[:12]
