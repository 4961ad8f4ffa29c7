"""Input files decoded, not just sniffed: a truncated or corrupt file is refused at plan time.

A file's first bytes say what it claims to be; only decoding it says whether it is whole. An image
is decoded in full with Pillow (a PNG cut short, a JPEG missing its last scans, a chunk that fails
its checksum); a video or audio file is opened with PyAV (FFmpeg's demuxers) and the first frame of
its track decoded, which catches a container without its index or a track that cannot start.
Otherwise the provider finds out only after the job was submitted, and some providers bill that.
Each file is decoded once per process, however many jobs share it.
"""

from __future__ import annotations

import io
import warnings

#: sha256 -> what is wrong with the file (None: nothing), so a file shared by many jobs, sweep
#: points or replicates is decoded once.
_verdicts: dict[str, str | None] = {}


def problem(data: bytes, mime: str, sha256: str) -> str | None:
    """Why the file cannot be used as the `mime` it sniffed as, or None when it decodes."""
    if sha256 not in _verdicts:
        kind = mime.split("/")[0]
        _verdicts[sha256] = _image_problem(data, mime) if kind == "image" else _stream_problem(data, kind, mime)
    return _verdicts[sha256]


def _image_problem(data: bytes, mime: str) -> str | None:
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # large but decodable: the provider's call
            with Image.open(io.BytesIO(data)) as image:
                image.load()  # every pixel: a file cut short fails here, not at open
                width, height = image.size
    except Image.DecompressionBombError as exc:
        return f"is an image too large to decode safely ({exc})"
    except Image.UnidentifiedImageError:
        return f"is a truncated or corrupt {mime} file: it does not decode (no image could be read from it)"
    except Exception as exc:  # Pillow reports damage as OSError, SyntaxError, ValueError, EOFError, ...
        return f"is a truncated or corrupt {mime} file: it does not decode ({exc})"
    if not width or not height:
        return f"is a {mime} file of {width}x{height} pixels"
    return None


def _stream_problem(data: bytes, kind: str, mime: str) -> str | None:
    import av  # imported here: plans without video or audio inputs never load FFmpeg's libraries

    try:
        with av.open(io.BytesIO(data)) as container:
            tracks = container.streams.video if kind == "video" else container.streams.audio
            if not tracks:
                return f"is a {mime} file with no {kind} track"
            track = tracks[0]
            decoded, packets = False, 0
            for packet in container.demux(track):  # every packet read (cheap), the first frame decoded
                if packet.size:
                    packets += 1
                    decoded = decoded or bool(packet.decode())
            decoded = decoded or bool(track.codec_context.decode(None))  # a decoder holding frames back
    except (av.FFmpegError, ValueError, EOFError) as exc:
        return f"is a truncated or corrupt {mime} file: it does not decode ({exc})"
    if not decoded:
        return f"is a {mime} file whose {kind} track holds nothing that decodes"
    if track.frames and packets < track.frames:  # the index lists frames the file no longer holds
        return f"is a truncated {mime} file: {packets} of the {track.frames} frames its index lists are there"
    return None
