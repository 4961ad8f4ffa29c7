"""What the end-of-run summary needs from the ledger, in aggregate.

A sweep may hold 100,000 jobs, and a summary is printed after every run, Ctrl-C included: it is
read as sums and counts in SQL, plus the few rows of each kind of problem it lists, never as a row
per job. Only a run that was not interrupted looks at every downloaded file (is it still on disk,
is it under outputs_dir): a stat per clip, which a Ctrl-C is not made to wait for.
"""

from __future__ import annotations

import os
import sqlite3
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner import store as S
from runner.locate import Found

SHOWN = 10  # rows listed per kind of problem; the rest are counted


@dataclass
class Tally:
    jobs: int = 0
    states: Counter[str] = field(default_factory=Counter)
    estimated: int = 0  # micro-dollars: each job's estimate times its attempts
    settled: int = 0
    possible: int = 0
    duplicates: int = 0
    sweeps: set[str] = field(default_factory=set)  # the outputs folders' sweeps
    failed: list[dict[str, Any]] = field(default_factory=list)  # the first SHOWN of each
    lost: list[dict[str, Any]] = field(default_factory=list)
    parked: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> row, those not yet final
    earlier: Counter[str] = field(default_factory=Counter)  # sweep -> jobs first planned under it
    gone: int | None = None  # downloaded files no longer on disk (None: not looked at)
    elsewhere: list[str] = field(default_factory=list)  # output paths outside outputs_dir


def tally(conn: sqlite3.Connection, sweep_id: str, named: Mapping[str, str], parked: Iterable[str], found: Found,
          outputs_dir: Path | None) -> Tally:
    """The sweep's jobs summed up. `named`: the sweep name the plan gave each job (key -> name; a
    job first planned under another keeps that one); `parked`: keys left for a later run; with
    `outputs_dir`, every downloaded file is looked at too."""
    t = Tally()
    by_sweep: Counter[str] = Counter()
    for state, sweep, jobs, estimated, settled, possible, duplicates in conn.execute(  # one pass over the sweep
        "select jobs.state, jobs.sweep, count(*), coalesce(sum(jobs.est_micros * jobs.attempts), 0), coalesce(sum(jobs.spent_micros), 0), "
        f"coalesce(sum(jobs.possible_micros), 0), coalesce(sum(jobs.possible_duplicates), 0) {S.SWEEP_JOINED} group by 1, 2", [sweep_id]
    ):
        t.jobs += jobs
        t.states[state] += jobs
        by_sweep[sweep] += jobs
        t.estimated += estimated
        t.settled += settled
        t.possible += possible
        t.duplicates += duplicates
    t.sweeps = set(by_sweep)
    names = set(named.values())
    if len(names) <= 1:
        t.earlier = Counter({sweep: n for sweep, n in by_sweep.items() if sweep not in names})
    else:  # a multirun's points may name their sweeps differently: each job against its own point's name
        t.earlier = Counter(sweep for key, sweep in conn.execute(f"select jobs.key, jobs.sweep {S.SWEEP_JOINED}", [sweep_id])
                            if named.get(key, sweep) != sweep)
    t.failed, t.lost = (_first(conn, sweep_id, state) if t.states[state] else [] for state in (S.FAILED, S.LOST))
    t.parked = {r["key"]: r for r in S.rows(conn, parked, "key, model, prompt_id, state") if r["state"] not in S.FINAL}
    if outputs_dir is not None:
        t.gone, t.elsewhere = _files(conn, sweep_id, found, outputs_dir)
    return t


def _first(conn: sqlite3.Connection, sweep_id: str, state: str) -> list[dict[str, Any]]:
    """The sweep's first SHOWN jobs in `state`, found from the jobs in that state (an index), not the sweep's."""
    return [dict(zip(("key", "model", "prompt_id", "state", "error"), r)) for r in conn.execute(
        "select key, model, prompt_id, state, error from jobs where state = ? and key in "
        "(select job_key from sweep_jobs where sweep_id = ?) order by rowid limit ?", [state, sweep_id, SHOWN])]


def _files(conn: sqlite3.Connection, sweep_id: str, found: Found, outputs_dir: Path) -> tuple[int, list[str]]:
    """(downloaded files no longer on disk, output paths outside outputs_dir). A sweep's clips share
    a few folders: each is listed, and told in or out of outputs_dir, once, not each file."""
    under = _Under(outputs_dir)
    folders: dict[str, tuple[set[str], bool]] = {}  # as recorded -> (its files, spelled under outputs_dir)
    gone, elsewhere = 0, []
    for state, recorded in conn.execute(f"select jobs.state, jobs.output_path {S.SWEEP_JOINED} and "
                                        f"(+jobs.state = ? or jobs.output_path is not null)", [sweep_id, S.DOWNLOADED]):
        if not recorded:
            gone += state == S.DOWNLOADED
            continue
        folder, name = os.path.split(recorded)
        known = folders.get(folder)
        if known is None:
            absolute = found.absolute(folder or os.curdir)
            known = folders[folder] = (_file_names(absolute), under.spelled(os.path.join(absolute, "_")))  # "_": any file's name
        names, inside = known
        if state == S.DOWNLOADED:
            gone += name not in names
        if not inside:
            path = found.absolute(recorded)
            if not under(path):
                elsewhere.append(path)
    return gone, elsewhere


def _file_names(folder: str) -> set[str]:
    try:
        with os.scandir(folder) as entries:
            return {entry.name for entry in entries if entry.is_file()}
    except OSError:  # no such folder (any more): none of its files is there
        return set()


class _Under:
    """Is a path in `folder`? Told by its spelling first (a sweep may have 100,000 files), by
    following links only for a path not spelled under the folder."""

    def __init__(self, folder: Path):
        self.real = os.path.realpath(folder)
        self.prefixes = tuple({os.path.join(os.path.abspath(folder), ""), os.path.join(self.real, "")})

    def __call__(self, path: str) -> bool:
        return self.spelled(path) or Path(os.path.realpath(path)).is_relative_to(self.real)

    def spelled(self, path: str) -> bool:
        return os.path.normpath(path).startswith(self.prefixes)
