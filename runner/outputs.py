"""Outputs on disk: how a job's file gets there intact (where it goes: `runner.naming`).

A file is streamed to a temporary name beside its final one, its length checked against what the
server announced, its sha256 computed on the way, and only then renamed into place, so a crash or
a cut connection never leaves a partial file under the final name.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import httpx

from runner.naming import output_path, safe_name
from runner.providers import ProviderError, classify_status, classify_transport

__all__ = ["Downloaded", "EnvironmentFault", "clear_partials", "download", "output_path"]


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


def _discard(part: Path) -> None:
    """Remove a partial file if it is there. Never raises: on a read-only file system even the
    removal of a missing file fails (EROFS comes before ENOENT), and the error being handled is the
    one worth reporting."""
    with contextlib.suppress(OSError):
        part.unlink(missing_ok=True)


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
                async for chunk in response.aiter_bytes():  # as they arrive: no re-chunking
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                # On disk before the ledger says downloaded; on a thread: flushing a clip of a
                # hundred MB to a disk takes longer than the loop may stand still.
                await asyncio.to_thread(_durable, out)
            wire = response.num_bytes_downloaded
        if expected is not None and expected.isdigit() and int(expected) != wire:
            raise ProviderError(f"download cut short: {wire} of {expected} bytes", kind="retryable")
        if size == 0:
            raise ProviderError("download is empty", kind="retryable")
        os.replace(part, path)
    except httpx.TransportError as exc:
        _discard(part)
        raise classify_transport(exc) from None
    except (httpx.TooManyRedirects, httpx.InvalidURL, httpx.DecodingError, httpx.StreamError) as exc:
        _discard(part)
        raise ProviderError(f"download failed: {type(exc).__name__}: {exc}", kind="retryable") from None
    except OSError as exc:
        _discard(part)
        raise EnvironmentFault(f"cannot write {exc.filename or path}: {exc.strerror or exc}") from None
    except BaseException:
        _discard(part)
        raise
    return Downloaded(path=path, size=size, sha256=digest.hexdigest())


def _durable(out: BinaryIO) -> None:
    out.flush()
    os.fsync(out.fileno())
