"""Which ledger a command means, for the runner and the companion CLI alike.

A project keeps its ledger at `.runner/ledger.db`. A command started in a subfolder of that project
finds it by walking up, as git finds `.git`; `RUNNER_STATE_DIR` names the state folder outright,
and an explicit path (`state_dir=`, `db=`, `--db`) wins over both. With none found the runner
starts a new `.runner/` in the current folder. Output paths recorded relative are relative to the
folder holding `.runner/` (the runner writes to `outputs/` beside it), else to the current folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

STATE_DIR = ".runner"
LEDGER = "ledger.db"
STATE_ENV = "RUNNER_STATE_DIR"


class NoLedger(Exception):
    """No ledger where the command looked; the message says where it looked and what to do."""


@dataclass(frozen=True)
class Found:
    db: Path  # the ledger file
    root: Path  # the folder relative output paths in it are relative to

    def resolve(self, recorded: str) -> Path:
        return Path(self.absolute(recorded))

    def absolute(self, recorded: str) -> str:
        """As `resolve`, as a string: cheap enough for every job of a 100,000-job sweep."""
        return recorded if os.path.isabs(recorded) else os.path.join(self.root, recorded)


def find_ledger(db: str | None = None, cwd: Path | None = None, environ: Mapping[str, str] | None = None) -> Found:
    """`db` if given, else `$RUNNER_STATE_DIR/ledger.db`, else the nearest `.runner/ledger.db` from
    `cwd` up to the file system's root. Raises NoLedger naming what was tried."""
    cwd = (cwd or Path.cwd()).resolve()
    environ = os.environ if environ is None else environ
    if db:
        path = (cwd / db).resolve()
        if not path.is_file():
            raise NoLedger(f"--db {db}: no such ledger file")
        return Found(path, _root(path, cwd))
    if environ.get(STATE_ENV):
        path = (cwd / environ[STATE_ENV] / LEDGER).resolve()
        if not path.is_file():
            raise NoLedger(f"{STATE_ENV}={environ[STATE_ENV]}: no {LEDGER} in that folder")
        return Found(path, _root(path, cwd))
    for folder in (cwd, *cwd.parents):
        path = folder / STATE_DIR / LEDGER
        if path.is_file():
            return Found(path, folder)
    raise NoLedger(f"no {STATE_DIR}/{LEDGER} in {cwd} or any folder above it: run a sweep here first "
                   f"(python -m runner ... simulate=true), or give --db PATH or {STATE_ENV}=FOLDER")


def runner_state_dir(cwd: Path | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The state folder a runner started in `cwd` uses unless `state_dir=` says otherwise:
    `$RUNNER_STATE_DIR`, else the nearest `.runner/` holding a ledger from `cwd` up (so a run
    started in a subfolder of a project joins the project's ledger), else a new `.runner` here."""
    environ = os.environ if environ is None else environ
    if environ.get(STATE_ENV):
        return environ[STATE_ENV]
    cwd = (cwd or Path.cwd()).resolve()
    for folder in (cwd, *cwd.parents):
        if (folder / STATE_DIR / LEDGER).is_file():
            return STATE_DIR if folder == cwd else str(folder / STATE_DIR)
    return STATE_DIR


def outputs_beside(state_dir: str, cwd: Path | None = None) -> str:
    """The default outputs folder for a state folder: `outputs` beside its `.runner/`, as the
    companion CLI resolves recorded paths; said relative to `cwd` when that is where it is."""
    cwd = (cwd or Path.cwd()).resolve()
    root = _root((cwd / state_dir / LEDGER).resolve(), cwd)
    return "outputs" if root == cwd else str(root / "outputs")


def found_at(db: str | Path, cwd: Path | None = None) -> Found:
    """The ledger a runner uses, with the folder its recorded relative paths are relative to."""
    cwd = (cwd or Path.cwd()).resolve()
    path = (cwd / db).resolve()
    return Found(path, _root(path, cwd))


def _root(path: Path, cwd: Path) -> Path:
    """Where the runner that wrote this ledger ran: beside its `.runner/` folder, as by default."""
    return path.parent.parent if path.parent.name == STATE_DIR else cwd
