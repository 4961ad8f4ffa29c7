"""The gallery: one self-contained HTML page per sweep folder, opened from disk with no network.

The page (runner/assets/gallery.html: inline CSS and JavaScript, no CDN) gets the sweep's records
as JSON and lays them out as prompts by (model, parameters), each clip a `<video preload="metadata">`
linked relative to the page, so the folder can be moved or zipped whole.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from importlib.resources import files
from typing import Any

#: What the page reads of each record (the rest stays in manifest.jsonl).
_SHOWN = ("key", "prompt_id", "prompt", "column", "model", "state", "spent_usd", "est_usd", "generation_s", "output_path",
          "poster", "error", "mismatch", "duration_s", "width", "height", "fps", "video_codec", "audio_codec", "input_thumb")


def render(name: str, records: Sequence[dict[str, Any]]) -> str:
    """The page for sweep `name` (records from `runner.publish.record`, paths relative to the page)."""
    data = json.dumps([{k: r.get(k) for k in _SHOWN} for r in records], ensure_ascii=False, separators=(",", ":"))
    # Inside <script>, only "</" can end the element early; "<\/" reads the same to JSON.parse.
    data = data.replace("</", "<\\/")
    template = (files("runner") / "assets" / "gallery.html").read_text(encoding="utf-8")
    return template.replace("__TITLE__", html.escape(f"video-runner: {name}")).replace("__DATA__", data)
