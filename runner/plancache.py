"""A plan kept for the same command run again.

Planning reads the prompt file and every input, then checks, keys and prices each job: seconds for a
100,000-job sweep, paid again by every rerun of the same command although nothing changed. A plan is
therefore kept in the cache folder (runner.catalog.cache_dir), found again by everything it is made
from: the settings the planner is given (runner.plan.PLAN_SETTINGS), Hydra's choices, the
catalogue's manifests, the runner's own code and the working folder. It is used again only while
every local file it was read from (`Plan.sources`: the prompt file, each input looked at, even one
refused or missing) has the same size, modification time and inode, the way make and git tell a
changed file. A file modified while the plan was being made may have been read before the change:
such a plan is not kept. Only the newest KEEP plans are kept; a cache that cannot be read or written
only costs the planning time.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import os
import pickle
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from runner.catalog import Catalog, cache_dir
from runner.plan import PLAN_SETTINGS, JobSpec, Plan, build_plan

KEEP = 4  # plans kept (a 100,000-job plan takes about 12 MiB)
#: A file whose modification time is this close to the planning's start may have changed after it
#: was read (coarse file system clocks included): the plan is not kept.
RACY_S = 2.0
FORMAT = 2

Stat = tuple[int, int, int] | None  # size, modification time (ns), inode; None: no such file


def planned(cfg: DictConfig | Mapping[str, Any], catalog: Catalog, choices: Mapping[str, str] | None = None) -> Plan:
    """`runner.plan.build_plan`, or the plan kept from the same command with the same files."""
    conf: Mapping[str, Any] = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg  # type: ignore[assignment]
    entry = cache_dir() / f"plan-{_key(conf, catalog, choices or {})}.pickle"
    plan = _load(entry)
    if plan is None:
        started = time.time()
        plan = build_plan(conf, catalog, choices)
        _keep(entry, plan, started)
    return plan


def _key(conf: Mapping[str, Any], catalog: Catalog, choices: Mapping[str, str]) -> str:
    made_of = {
        "settings": {name: conf[name] for name in PLAN_SETTINGS if name in conf},
        "choices": dict(choices),
        "catalog": catalog.digest,
        "code": _code(),
        "cwd": os.getcwd(),  # relative paths are the working folder's
        "home": os.path.expanduser("~"),  # and ~ the user's
        "python": sys.version,
        "format": FORMAT,
    }
    return hashlib.sha256(json.dumps(made_of, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _code() -> list[tuple[str, Stat]]:
    """The planner is the runner's code: an edited module (an editable install) makes a new key."""
    package = Path(__file__).parent
    return [(name, _stat(str(package / name))) for name in sorted(os.listdir(package)) if name.endswith(".py")]


def _stat(path: str) -> Stat:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino


def _load(entry: Path) -> Plan | None:
    try:
        with open(entry, "rb") as stream, _collector_paused(freeze=True):
            sources: dict[str, Stat] = pickle.load(stream)  # read first: a changed file costs no more
            if any(_stat(path) != stat for path, stat in sources.items()):
                return None
            rest, rows = pickle.load(stream)
            plan = Plan(jobs=[JobSpec._make(row) for row in rows], **rest)
        os.utime(entry)  # the newest used is the last pruned
    except Exception:  # absent, torn, another version's: planned again
        return None
    return plan


def _keep(entry: Path, plan: Plan, started: float) -> None:
    if not plan.jobs:
        return
    sources = {path: _stat(path) for path in sorted(plan.sources)}
    if any(stat is not None and stat[1] >= (started - RACY_S) * 1e9 for stat in sources.values()):
        return
    out = None
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=entry.parent, prefix=".plan-", delete=False) as out, _collector_paused():
            pickle.dump(sources, out, protocol=pickle.HIGHEST_PROTOCOL)
            # The jobs as plain tuples: pickled in a third of a named tuple's time.
            rest = {f.name: getattr(plan, f.name) for f in dataclasses.fields(plan) if f.init and f.name not in ("jobs", "_keys")}
            pickle.dump((rest, [tuple(job) for job in plan.jobs]), out, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(out.name, entry)
        _prune(entry.parent)
    except Exception:  # a full disk, a read-only cache: the run goes on, its plan not kept
        if out is not None:
            Path(out.name).unlink(missing_ok=True)


def _prune(folder: Path) -> None:
    """All but the KEEP newest plans go (another process may be using one: it plans again), and
    so do unfinished ones a killed process left an hour ago or more."""
    kept = sorted(folder.glob("plan-*.pickle"), key=lambda p: (_stat(str(p)) or (0, 0, 0))[1], reverse=True)
    for old in kept[KEEP:]:
        old.unlink(missing_ok=True)
    for unfinished in folder.glob(".plan-*"):
        if (_stat(str(unfinished)) or (0, time.time_ns(), 0))[1] < time.time_ns() - 3600 * 10**9:
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
