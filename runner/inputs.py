"""Input files for a job (images, videos, audio): found, identified, checked against provider limits.

A prompt names an input as a local path, a URL or a data URI. Local files and data URIs are read
once at plan time: their sha256 goes into the job key (so editing the file makes a new job), their
type is sniffed from the bytes (not the file name) and the file decoded (runner.decoding), and the
provider's size limits for the route the file will take are checked before anything is spent. URLs are passed to the provider as they are, once they pass the
provider's URL rules (Runway fetches only HTTPS URLs naming a domain, for instance).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from runner import decoding
from runner.manifest import MediaLimits, UrlRules

#: In a planned payload an input file stands as {"$input": sha256}; the provider plugin replaces it
#: with a data URI or an upload URI at submit time, so the ledger never holds the file's bytes.
PLACEHOLDER = "$input"

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w-]+=[^;,]*)*)(?P<b64>;base64)?,(?P<data>.*)$", re.S)


class InputChanged(Exception):
    """An input file is gone or no longer holds the bytes that were planned (and keyed)."""


@dataclass(frozen=True)
class InputFile:
    """A local input: where its bytes come from, what they are, and their identity."""

    source: str  # a path, or a data URI
    sha256: str
    mime: str
    size: int

    def read(self) -> bytes:
        """The planned bytes; InputChanged if the file is gone or changed since it was planned, so a
        job never sends other bytes than its key stands for."""
        if self.source.startswith("data:"):
            return _decode_data_uri(self.source)[1]
        try:
            data = Path(self.source).read_bytes()
        except OSError as exc:
            raise InputChanged(f"input file {self.source} cannot be read any more ({exc.strerror}); "
                               f"rerun the command to plan it again") from None
        if hashlib.sha256(data).hexdigest() != self.sha256:
            raise InputChanged(f"input file {self.source} changed since it was planned; "
                               f"rerun the command to plan a job for its new content")
        return data

    def data_uri(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.read()).decode('ascii')}"

    def placeholder(self) -> dict[str, str]:
        return {PLACEHOLDER: self.sha256}


def sniff_mime(data: bytes) -> str | None:
    """The media type from the file's first bytes, for the formats providers take."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "audio/wav"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[4:8] == b"ftyp":  # ISO media: the brand tells M4A audio from MP4 and QuickTime video
        return {b"M4A ": "audio/mp4", b"qt  ": "video/quicktime"}.get(data[8:12], "video/mp4")
    if data.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm"
    if data.startswith(b"ID3") or data[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "audio/mpeg"
    if data.startswith(b"fLaC"):
        return "audio/flac"
    if data[:2] in (b"\xff\xf1", b"\xff\xf9"):  # ADTS, the stream form of AAC
        return "audio/aac"
    return None


def _decode_data_uri(uri: str) -> tuple[str | None, bytes]:
    match = _DATA_URI.match(uri)
    if not match:
        raise ValueError("is not a data URI of the form data:<type>;base64,<data>")
    if match["b64"]:
        try:
            return match["mime"], base64.b64decode(match["data"], validate=True)
        except binascii.Error as exc:
            raise ValueError(f"has invalid base64 data ({exc})") from None
    return match["mime"], match["data"].encode()


def is_remote(value: str) -> bool:
    """A URL (any scheme://) or a data URI, as opposed to a local path."""
    return bool(_URL.match(value)) or value.startswith("data:")


def resolve(value: str, kind: str, limits: MediaLimits | None, urls: UrlRules | None = None) -> InputFile | str:
    """A local input as an InputFile, or a URL as itself; ValueError says what is wrong with it.

    A local file is sized before it is read (one too large for every route to the provider is not
    read at all), identified from its bytes, then decoded (runner.decoding): a file the provider
    would refuse is refused here, before anything is spent."""
    if _URL.match(value):
        problem = url_problem(value, urls or UrlRules())
        if problem:
            raise ValueError(problem)
        return value
    declared = None
    if value.startswith("data:"):
        declared, data = _decode_data_uri(value)
        source = value
    else:
        path = Path(value).expanduser()
        if not path.exists():
            raise ValueError(f"does not exist (looked for {path.resolve()})")
        if not path.is_file():
            raise ValueError(f"is not a file ({path.resolve()} is a {'folder' if path.is_dir() else 'special file'})")
        try:
            _check_size(path.stat().st_size, limits)
            data = path.read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot be read ({exc.strerror})") from None
        source = str(path.resolve())
    mime = sniff_mime(data)
    allowed = limits.formats if limits else None
    if mime is None or not mime.startswith(kind + "/") or (allowed and mime not in allowed):
        what = mime or ("an empty file" if not data else "not a recognised media file")
        raise ValueError(f"is {what}; allowed: {', '.join(allowed or [kind + '/*'])}")
    if declared and declared != mime:
        raise ValueError(f"is a data URI that says {declared} but holds {mime}")
    _check_size(len(data), limits)
    sha256 = hashlib.sha256(data).hexdigest()
    broken = decoding.problem(data, mime, sha256)
    if broken:
        raise ValueError(broken)
    return InputFile(source=source, sha256=sha256, mime=mime, size=len(data))


def url_problem(url: str, rules: UrlRules) -> str | None:
    """Why the provider would not fetch this URL, or None."""
    if any(c.isspace() or ord(c) < 32 for c in url):
        return "is a URL with spaces or control characters in it; percent-encode them (a space is %20)"
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    why = f"; {rules.reason}" if rules.reason else ""
    if scheme not in rules.schemes:
        takes = ", ".join(f"{s}://" for s in rules.schemes)
        return f"is a {scheme}:// URL, which this provider does not fetch (it takes {takes}){why}"
    if rules.max_length is not None and len(url) > rules.max_length:
        return f"is a URL of {len(url)} characters; allowed: at most {rules.max_length}{why}"
    if scheme in ("http", "https"):
        host = parts.hostname or ""
        try:
            parts.port  # noqa: B018 -- urlsplit checks the port only when asked for it
        except ValueError:
            return f"is a URL with an invalid port ({parts.netloc}){why}"
        if not host:
            return f"is a URL without a host name{why}"
        if rules.domain_names_only:
            try:
                ipaddress.ip_address(host)
            except ValueError:
                return None
            return f"names its host by IP address ({host}), not by a domain name{why}"
    elif not (parts.netloc or parts.path.strip("/")):
        return f"is a {scheme}:// URL naming nothing{why}"
    return None


def _check_size(size: int, limits: MediaLimits | None) -> None:
    """A local file reaches the provider as a data URI or through its upload flow: the larger route
    applies, under the model's overall cap (the plugin sends it by the route it fits)."""
    if limits is None:
        return
    inline = _raw_bytes_for_data_uri(limits.data_uri_max_bytes)
    routes = [c for c in (limits.upload_max_bytes, inline) if c]
    ceiling = limits.max_bytes or (max(routes) if routes else None)
    if ceiling is not None and size > ceiling:
        how = [f"inline as a data URI up to {_mb(inline)}" if inline else "",
               f"through the provider's upload flow up to {_mb(limits.upload_max_bytes)}" if limits.upload_max_bytes else "",
               f"at most {_mb(limits.max_bytes)} by any route" if limits.max_bytes else ""]
        raise ValueError(f"is {_mb(size)}; allowed: at most {_mb(ceiling)} for this model ({'; '.join(h for h in how if h)})")


def _raw_bytes_for_data_uri(encoded_limit: int | None) -> int | None:
    return None if encoded_limit is None else encoded_limit * 3 // 4 - 64


def fits_data_uri(file: InputFile, limits: MediaLimits | None) -> bool:
    """Whether the file may go inline as a data URI (else the provider's upload flow is needed)."""
    if limits is None or limits.data_uri_max_bytes is None:
        return True
    return len(file.data_uri()) <= limits.data_uri_max_bytes


def _mb(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"


def replace_inputs(payload: Any, files: dict[str, str]) -> Any:
    """The payload with every {"$input": sha256} replaced by the URI prepared for that file."""
    if isinstance(payload, dict):
        if set(payload) == {PLACEHOLDER}:
            return files[payload[PLACEHOLDER]]
        return {k: replace_inputs(v, files) for k, v in payload.items()}
    if isinstance(payload, list):
        return [replace_inputs(v, files) for v in payload]
    return payload
