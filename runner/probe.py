"""What a downloaded clip actually is: duration, frame size, frame rate, codecs, audio, a poster.

Providers fall back and truncate silently (a 10 s request that comes back 5 s, 720p instead of
1080p), so a comparison of models must show what was delivered, not what was asked. PyAV reads the
container with FFmpeg's own demuxers and decoders; Pillow writes the poster from the first decoded
picture. Probing never fails a job: whatever goes wrong is recorded as the probe's `error`.
"""

from __future__ import annotations

import json
import re
from fractions import Fraction
from pathlib import Path
from typing import Any

#: The shorter side of a frame for each resolution a model may be asked for.
_SHORT_SIDE = {"360p": 360, "480p": 480, "540p": 540, "580p": 580, "720p": 720, "768p": 768, "1080p": 1080,
               "1440p": 1440, "2k": 1440, "4k": 2160, "2160p": 2160}
_RATIO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*[:x/]\s*(\d+(?:\.\d+)?)\s*$")
DURATION_SLACK_S = 0.5  # containers round the last frame; less than this is the same length
SIZE_SLACK = 0.1  # encoders pad or crop to macroblocks: 10% off the asked size is the same size
POSTER_WIDTH = 320


def probe(path: str | Path) -> dict[str, Any]:
    """The media facts of a file: duration_s, width, height, fps, video_codec, audio_codec (None when
    there is no such track). Raises what PyAV raises for a file it cannot read."""
    import av  # imported here: the CLI and the planner never pay for FFmpeg's libraries

    with av.open(str(path)) as container:
        return _facts(container)


def poster(path: str | Path, dest: Path) -> Path | None:
    """A JPEG of the clip's first picture, POSTER_WIDTH wide, so the gallery shows every clip
    without loading any video; None for a file with no picture."""
    import av

    with av.open(str(path)) as container:
        return _poster(container, dest)


def _facts(container: Any) -> dict[str, Any]:
    import av

    video = next(iter(container.streams.video), None)
    audio = next(iter(container.streams.audio), None)
    duration = None
    if video is not None and video.duration is not None and video.time_base is not None:
        duration = float(video.duration * video.time_base)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    rate = video.average_rate if video is not None else None
    return {
        "duration_s": round(duration, 3) if duration is not None else None,
        "width": video.codec_context.width if video is not None else None,
        "height": video.codec_context.height if video is not None else None,
        "fps": round(float(rate), 3) if isinstance(rate, (Fraction, int, float)) and rate else None,
        "video_codec": video.codec_context.name if video is not None else None,
        "audio_codec": audio.codec_context.name if audio is not None else None,
    }


def _poster(container: Any, dest: Path) -> Path | None:
    if not container.streams.video:
        return None
    stream = container.streams.video[0]
    # One picture: FFmpeg's own decoding threads would cost more to start than the picture does.
    stream.codec_context.thread_count = 1
    for frame in container.decode(stream):
        scale = min(1.0, POSTER_WIDTH / max(frame.width, frame.height, 1))
        small = frame.reformat(width=max(2, round(frame.width * scale)), height=max(2, round(frame.height * scale)),
                               format="rgb24")  # scaled by FFmpeg, not by Pillow: a tenth of the pixels to convert
        dest.parent.mkdir(parents=True, exist_ok=True)
        small.to_image().save(dest, "JPEG", quality=80)
        return dest
    return None


def poster_path(clip: Path) -> Path:
    """`outputs/<sweep>/_gallery/<model>/<clip>.jpg`: gallery files apart from the clips themselves."""
    return clip.parent.parent / "_gallery" / clip.parent.name / f"{clip.stem}.jpg"


def mismatch(params: dict[str, Any], facts: dict[str, Any]) -> str | None:
    """How the delivered file differs from what was asked, in words ('asked 10 s, got 5.0 s'), or None."""
    found = []
    asked = _seconds(params.get("duration"))
    got = facts.get("duration_s")
    if asked is not None and got is not None and abs(asked - got) > DURATION_SLACK_S:
        found.append(f"asked {asked:g} s, got {got:.1f} s")
    width, height = facts.get("width"), facts.get("height")
    if width and height:
        side = _SHORT_SIDE.get(str(params.get("resolution", "")).lower())
        if side and abs(min(width, height) - side) > SIZE_SLACK * side:
            found.append(f"asked {params['resolution']}, got {width}x{height}")
        ratio = _ratio(params.get("aspect_ratio"))
        if ratio and abs(width / height - ratio) > SIZE_SLACK * ratio / 2:
            found.append(f"asked {params['aspect_ratio']}, got {width}x{height}")
    if params.get("audio") is True and facts.get("video_codec") and not facts.get("audio_codec"):
        found.append("asked audio, got none")
    return "; ".join(found) or None


def examine(path: str | Path, params_json: str | None, sha256: str) -> dict[str, Any]:
    """Probe a downloaded file, write its poster, and compare it with the job's parameters: the
    row `runner.store.record_probe` keeps. Never raises: a file PyAV cannot read is an `error`."""
    clip = Path(path)
    facts: dict[str, Any] = {"output_sha256": sha256}
    try:
        import av

        with av.open(str(clip)) as container:  # opened once for the facts and the poster
            facts.update(_facts(container))
            made = _poster(container, poster_path(clip))
        facts["poster_path"] = str(made) if made else None
        facts["mismatch"] = mismatch(json.loads(params_json or "{}"), facts)
    except Exception as exc:  # a damaged file, an unknown format, a missing library: never the job's fault
        facts["error"] = f"{type(exc).__name__}: {exc}"
    return facts


def _seconds(value: Any) -> float | None:
    try:
        return float(str(value).strip().rstrip("s")) if value is not None else None
    except ValueError:
        return None


def _ratio(value: Any) -> float | None:
    match = _RATIO.match(str(value or ""))
    return float(match[1]) / float(match[2]) if match and float(match[2]) else None


def serve() -> None:
    """The probe process (`runner.probing`): one JSON request per line on stdin (path, params as
    JSON, sha256), one `examine` row per line on stdout, in order, until stdin closes."""
    import os
    import signal
    import sys

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner's to handle, where no session of its own keeps it away
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # a library printing cannot break the protocol
    for line in sys.stdin.buffer:
        path, params_json, sha256 = json.loads(line)
        answers.write(json.dumps(examine(path, params_json, sha256)).encode() + b"\n")
        answers.flush()


if __name__ == "__main__":
    serve()
