"""What the runner keeps in its cache folder for the same command run again.

A kept entry is found by a key made of everything it was made from (settings, code, versions), and
used only while every local file it was read from has the same size, modification time and inode,
the way make and git tell a changed file. A file modified within RACY_S of the start of the work
may have changed after it was read: such work is not kept. Entries are written whole (a temporary
file renamed), only the newest few of a kind stay, and a cache that cannot be read or written only
costs the work again. runner.plancache keeps plans, runner.composed Hydra's compositions and
runner.catalog the compiled manifests.
"""

from __future__ import annotations

import gc
import hashlib
import importlib.util
import json
import os
import pickle
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

#: A file whose modification time is this close to the start of the work may have changed after it
#: was read (coarse file system clocks included).
RACY_S = 2.0

T = TypeVar("T")
Stat = tuple[int, int, int] | None  # size, modification time (ns), inode; None: no such file


def cache_dir() -> Path:
    """Where the runner keeps what it can rebuild: RUNNER_CACHE_DIR, else the user's cache folder."""
    given = os.environ.get("RUNNER_CACHE_DIR")
    if given:
        return Path(given)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "video-runner"


def key(made_of: Mapping[str, Any]) -> str:
    """The name of what `made_of` makes, with the Python running and the runner's own code: an
    edited module (an editable install) makes a new key."""
    everything = {**made_of, "python": sys.version, "code": _code()}
    return hashlib.sha256(json.dumps(everything, sort_keys=True, default=str).encode()).hexdigest()[:32]


#: The runner's packages with code: the core, its provider plugins and its Hydra launcher.
PACKAGES = ("runner", "runner_plugins", "hydra_plugins.runner_launcher")


def _code() -> list[tuple[str, Stat]]:
    found = []
    for package in PACKAGES:
        spec = importlib.util.find_spec(package)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            found += [(f"{package}/{name}", stat(os.path.join(folder, name)))
                      for name in sorted(os.listdir(folder)) if name.endswith(".py")]
    return found


def stat(path: str) -> Stat:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino


def read(entry: Path, make: Callable[[Any], T] = lambda held: held, *, freeze: bool = False) -> T | None:
    """`make` of what `entry` holds, or None: absent, torn, another version's, or one of its files
    changed. `freeze`: what was made is kept out of the garbage collector's passes for good (a
    plan's jobs)."""
    try:
        with open(entry, "rb") as stream, _collector_paused(freeze):
            sources: dict[str, Stat] = pickle.load(stream)  # read first: a changed file costs no more
            if any(stat(path) != was for path, was in sources.items()):
                return None
            made = make(pickle.load(stream))
        os.utime(entry)  # the newest used is the last pruned
    except Exception:
        return None
    return made


def write(entry: Path, held: Any, sources: Iterable[str], started: float, *, keep: int) -> None:
    """Keep `held`, read from the files `sources` by work started at `started` (time.time()), unless
    one of them was modified too close to that start; only the `keep` newest entries of its kind stay."""
    stats = {path: stat(path) for path in sorted(sources)}
    if any(was is not None and was[1] >= (started - RACY_S) * 1e9 for was in stats.values()):
        return
    kind = entry.name.split("-", 1)[0]
    out = None
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=entry.parent, prefix=f".{kind}-", delete=False) as out, _collector_paused():
            pickle.dump(stats, out, protocol=pickle.HIGHEST_PROTOCOL)
            pickle.dump(held, out, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(out.name, entry)
        _prune(entry.parent, kind, keep)
    except Exception:  # a full disk, a read-only cache: the command goes on, its work not kept
        if out is not None:
            Path(out.name).unlink(missing_ok=True)


def _prune(folder: Path, kind: str, keep: int) -> None:
    """All but the `keep` newest entries go (another process may be using one: it does the work
    again), and so do unfinished ones a killed process left an hour ago or more."""
    kept = sorted(folder.glob(f"{kind}-*.pickle"), key=lambda p: (stat(str(p)) or (0, 0, 0))[1], reverse=True)
    for old in kept[keep:]:
        old.unlink(missing_ok=True)
    for unfinished in folder.glob(f".{kind}-*"):
        if (stat(str(unfinished)) or (0, time.time_ns(), 0))[1] < time.time_ns() - 3600 * 10**9:
            unfinished.unlink(missing_ok=True)


@contextmanager
def _collector_paused(freeze: bool = False) -> Iterator[None]:
    """Reading or writing 100,000 jobs makes or visits as many objects: with the collector running,
    it walks them again and again (a load takes five times as long). With `freeze`, what was made
    is then kept out of its passes for good, as a run does with its plan (runner.drive): else the
    first pass after the collector is back walks every job at once."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if freeze:
            gc.freeze()
        if was:
            gc.enable()
