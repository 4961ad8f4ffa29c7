"""Outputs that describe themselves: one record per job, `manifest.jsonl` and `report.html`.

A record is what `video-runner export` writes and what each outputs folder's manifest holds: the
prompt, model, parameters, state, cost, generation time, file, sha256, the provider's task id and
what the file turned out to be. Every outputs folder (`outputs/<sweep>/`) gets a manifest and a
gallery covering every job of that sweep in the ledger, so the folder is understood without the
database, and a second run into the same folder (another model, another duration) joins the first.
"""

from __future__ import annotations

import base64
import io
import json
import os
import sqlite3
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from runner import gallery
from runner.locate import Found
from runner.naming import param_tag, safe_name
from runner.views import Selection, each_job, outputs_dirs

MANIFEST = "manifest.jsonl"
REPORT = "report.html"
STAMP = "published.json"  # in _gallery/: what the manifest and the gallery were last written from
THUMB_SIZE = 160
#: At an interrupt, folders of more jobs than this are left as they are: writing a 100,000-job
#: gallery takes seconds, and Ctrl-C is answered at once (the next run, or `video-runner gallery`, writes it).
INTERRUPT_MAX_JOBS = 5000
#: Fields of a record, in the order `export --format csv` writes them.
FIELDS = ("key", "sweep", "prompt_id", "prompt", "model", "model_id", "provider", "mode", "replicate", "params", "state",
          "est_usd", "spent_usd", "generation_s", "output_path", "output_bytes", "sha256", "task_id", "error_class", "error",
          "duration_s", "width", "height", "fps", "video_codec", "audio_codec", "mismatch", "poster")


def record(row: dict[str, Any], found: Found, base: Path | None = None) -> dict[str, Any]:
    """A job as a flat record (row from `runner.views.jobs`); paths relative to `base` when given
    (a manifest's folder), else as the ledger recorded them."""
    params = json.loads(row["params"] or "{}")
    prompt = params.pop("prompt", "")
    started, ended = row.get("submitted_at"), row.get("finished_at")
    return {
        "key": row["key"], "sweep": row["sweep"], "prompt_id": row["prompt_id"], "prompt": prompt, "model": row["model"],
        "model_id": row["model_id"], "provider": row["provider"], "mode": row["mode"], "replicate": row["replicate"],
        "params": params, "state": row["state"],
        "est_usd": _usd(row["est_micros"]), "spent_usd": _usd(row["spent_micros"]),
        "generation_s": round(ended - started, 1) if started and ended and ended >= started else None,
        "output_path": _path(row["output_path"], found, base), "output_bytes": row["output_bytes"],
        "sha256": row["output_sha256"], "task_id": row["task_id"], "error_class": row["error_class"], "error": row["error"],
        "duration_s": row.get("probe_duration_s"), "width": row.get("probe_width"), "height": row.get("probe_height"),
        "fps": row.get("probe_fps"), "video_codec": row.get("probe_video_codec"), "audio_codec": row.get("probe_audio_codec"),
        "mismatch": row.get("probe_mismatch"), "poster": _path(row.get("probe_poster_path"), found, base),
    }


@dataclass(frozen=True)
class Published:
    folder: Path
    manifest: Path
    report: Path
    jobs: int


def folder_rows(conn: sqlite3.Connection, name: str) -> Iterator[dict[str, Any]]:
    """Every job first planned under sweep `name` (the jobs of its outputs folder), with its probe,
    one at a time: a folder may hold a hundred thousand."""
    return each_job(conn, Selection(name, "jobs.sweep = ?", (name,)))


def publish(conn: sqlite3.Connection, found: Found, names: Iterable[str], outputs_dir: Path | None = None, *,
            when_changed: bool = False, max_jobs: int | None = None) -> tuple[list[Published], list[Published]]:
    """Write the manifest and the gallery of each sweep folder named; `outputs_dir` is where the
    folders go when no clip of theirs is on disk yet (else where most of their clips are). With
    `when_changed`, a folder whose jobs have not changed since it was last written is left as it is;
    with `max_jobs`, so is one of more jobs than that. (written or unchanged, left stale)."""
    names = sorted(set(names))
    configured = outputs_dirs(conn, names)
    done, stale = [], []
    for name in names:
        paths = [row[0] for row in conn.execute("select output_path from jobs where sweep = ? and output_path is not null", [name])]
        folder = _folder(paths, found, name, outputs_dir or found.resolve(configured[name]))
        del paths
        stamp, count = _stamp(conn, name)
        marker = folder / "_gallery" / STAMP
        manifest, report = folder / MANIFEST, folder / REPORT
        if when_changed and manifest.is_file() and report.is_file() and _read(marker) == stamp:
            done.append(Published(folder, manifest, report, count))
        elif max_jobs is not None and count > max_jobs:
            stale.append(Published(folder, manifest, report, count))
        else:
            folder.mkdir(parents=True, exist_ok=True)
            count = _write_folder(conn, found, name, folder)
            marker.parent.mkdir(parents=True, exist_ok=True)
            _write(marker, stamp)
            done.append(Published(folder, manifest, report, count))
    return done, stale


def _write_folder(conn: sqlite3.Connection, found: Found, name: str, folder: Path) -> int:
    """The manifest and the gallery of one folder, written as its rows are read (each replaced whole)."""
    count = 0
    with _Replacing(folder / MANIFEST) as manifest, _Replacing(folder / REPORT) as report:
        pieces = gallery.pieces(name)
        report.write(next(pieces))
        for row in folder_rows(conn, name):
            r = record(row, found, folder)
            manifest.write(json.dumps(r, ensure_ascii=False) + "\n")
            r["input_thumb"] = _thumbnail(row, found, folder)
            r["column"] = " ".join(x for x in (r["model"], param_tag(r["params"], r["replicate"] or 0)) if x)
            r["output_path"] = quote(r["output_path"]) if r["output_path"] else None
            r["poster"] = quote(r["poster"]) if r["poster"] else None
            report.write(pieces.send(r))
            count += 1
        for piece in pieces:
            report.write(piece)
    return count


def _stamp(conn: sqlite3.Connection, name: str) -> tuple[str, int]:
    """What a folder's manifest and gallery were written from: its jobs' number and latest change,
    its probes', and the gallery page's version. (stamp, jobs)."""
    jobs_, changed = conn.execute("select count(*), max(updated_at) from jobs where sweep = ?", [name]).fetchone()
    probed = conn.execute("select count(*), max(probes.probed_at) from probes join jobs on jobs.key = probes.job_key "
                          "where jobs.sweep = ?", [name]).fetchone()
    return json.dumps([jobs_, changed, *probed, gallery.VERSION]), jobs_


def publish_run(found: Found, sweeps: Iterable[str], outputs_dir: Path, *,
                interrupted: bool = False) -> tuple[list[Published], str | None]:
    """After a run: the manifest and gallery of every sweep folder its jobs belong to (`sweeps`; those whose
    jobs changed since they were written), read from the ledger on a connection of its own (the
    runner's writer is left alone); after an interrupt, only the small ones. (published, problem)."""
    conn = sqlite3.connect(found.db, timeout=60)
    conn.row_factory = sqlite3.Row
    try:
        done, stale = publish(conn, found, sweeps, outputs_dir, when_changed=True,
                              max_jobs=INTERRUPT_MAX_JOBS if interrupted else None)
    except (OSError, sqlite3.Error) as exc:  # the clips are safe; only their description could not be written
        return [], f"the gallery could not be written: {exc}"
    finally:
        conn.close()
    if not stale:
        return done, None
    folders = ", ".join(f"{p.folder} ({p.jobs:,} jobs)" for p in stale)
    return done, (f"interrupted: the manifest and gallery of {folders} were left as they were (writing them takes a while): "
                  f"the next run writes them, or `video-runner gallery` now")


def _folder(paths: list[str], found: Found, name: str, fallback: Path) -> Path:
    """Where most of the sweep's clips are (`<outputs_dir>/<sweep>/<model>/<file>`), else the fallback's."""
    roots: Counter[str] = Counter()
    for folder, clips in Counter(os.path.dirname(path) for path in paths).items():  # a few folders, many clips
        roots[os.path.dirname(os.path.dirname(found.absolute(os.path.join(folder, "_"))))] += clips
    return Path(roots.most_common(1)[0][0]) if roots else fallback / safe_name(name)


def _thumbnail(row: dict[str, Any], found: Found, folder: Path) -> str | None:
    """A small JPEG of the job's first input image, made once per input (by its sha256), as a path
    relative to the gallery; None when it has none or the file is no longer where it was."""
    images = [f for f in json.loads(row["inputs"] or "[]") if str(f.get("mime", "")).startswith("image/")]
    if not images:
        return None
    first = images[0]
    dest = folder / "_gallery" / "inputs" / f"{first['sha256'][:16]}.jpg"
    if not dest.exists():
        try:
            from PIL import Image

            source = str(first["source"])
            data = base64.b64decode(source.split(",", 1)[1]) if source.startswith("data:") else found.resolve(source).read_bytes()
            with Image.open(io.BytesIO(data)) as image:
                image.thumbnail((THUMB_SIZE, THUMB_SIZE))
                dest.parent.mkdir(parents=True, exist_ok=True)
                image.convert("RGB").save(dest, "JPEG", quality=80)
        except Exception:  # the input moved or is not a picture Pillow reads: the row shows its text only
            return None
    return quote(os.path.relpath(dest, folder).replace(os.sep, "/"))


def _write(path: Path, text: str) -> Path:
    """Replace a file whole (a reader never sees half of it; two runs writing it leave one version)."""
    with _Replacing(path) as out:
        out.write(text)
    return path


class _Replacing:
    """A text file written beside `path` and renamed over it once complete (never on an error)."""

    def __init__(self, path: Path):
        self.path = path
        self.part = path.with_name(f".{path.name}.{os.getpid()}.part")

    def __enter__(self) -> io.TextIOWrapper:
        self.file = self.part.open("w", encoding="utf-8")
        return self.file

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        self.file.close()
        if kind is None:
            os.replace(self.part, self.path)
        else:
            self.part.unlink(missing_ok=True)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None


def _usd(micros: int | None) -> float | None:
    return None if micros is None else micros / 1_000_000


def _path(recorded: str | None, found: Found, base: Path | None) -> str | None:
    """A recorded path relative to `base` (strings, not pathlib: a sweep may have 100,000 of them)."""
    if not recorded:
        return None
    if base is None:
        return recorded
    full = found.absolute(recorded)
    prefix = os.path.join(base, "")
    if full.startswith(prefix):
        return full[len(prefix):].replace(os.sep, "/")
    return os.path.relpath(full, base).replace(os.sep, "/")
