"""Hydra's composition of a run, kept for the same command run again.

Composing the run config (the defaults list, every config file, the schema, the overrides) costs a
fifth of a second of CPU, and before it the catalogue's models must be registered as `model=`
options: more than a small sweep's planning, paid by every command although nothing changed. The
config Hydra composed for a run is therefore kept in the cache folder (runner.kept), found again by
everything it is made from: the config name, the overrides, Hydra's and OmegaConf's versions, the
config search path, the options the runner registers (`made_of`), the runner's code and the working
folder. It is used only while every config file of every search path folder is unchanged (the
folders too, so a file added is seen). A kept composition is Hydra's own result, with nothing
resolved yet: interpolations (`${now:...}`, `${oc.env:...}`) are resolved as the run reads them.

Only a single run is kept: a multirun composes each point through its launcher, and Hydra's other
commands (--cfg, --info) are not worth it. Nothing is kept when a config source is not a folder on
this machine, or when the config copies environment variables (`hydra.job.env_copy`).
"""

from __future__ import annotations

import importlib.resources
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import hydra
import omegaconf
from hydra.core.utils import JobRuntime
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from runner import kept

KEEP = 8  # compositions kept (about 20 KB each)
FORMAT = 1


class KeptCompositions:
    """Hydra's config loader, reading a run's composition back when it can.

    `made_of` gives what the options registered for Hydra are made of (as plain data), and
    `register` registers them: called only when the config is really composed."""

    def __init__(self, loader: Any, made_of: Callable[[], Mapping[str, Any]], register: Callable[[], None]) -> None:
        self._loader = loader
        self._made_of = made_of
        self._register = register

    def __getattr__(self, name: str) -> Any:  # the rest of Hydra's ConfigLoader, as it is
        if name.startswith("__") or name == "_loader":  # copy and pickle look these up before __init__ ran
            raise AttributeError(name)
        return getattr(self._loader, name)

    def load_configuration(self, config_name: str | None, overrides: list[str], run_mode: RunMode,
                           from_shell: bool = True, validate_sweep_overrides: bool = True) -> DictConfig:
        def compose() -> DictConfig:
            self._register()
            return self._loader.load_configuration(config_name=config_name, overrides=overrides, run_mode=run_mode,
                                                   from_shell=from_shell, validate_sweep_overrides=validate_sweep_overrides)

        if run_mode != RunMode.RUN:
            return compose()
        entry = kept.cache_dir() / f"compose-{self._key(config_name, overrides, from_shell, validate_sweep_overrides)}.pickle"
        cfg = kept.read(entry)
        if isinstance(cfg, DictConfig):
            return cfg
        started = time.time()
        cfg = compose()
        sources = _sources(cfg)
        if sources is not None and not cfg.hydra.job.env_copy:
            OmegaConf.clear_cache(cfg)  # nothing resolved is kept: each run resolves for itself
            kept.write(entry, cfg, sources, started, keep=KEEP)
        return cfg

    def _key(self, config_name: str | None, overrides: list[str], from_shell: bool, validate: bool) -> str:
        return kept.key({
            "config": [config_name, list(overrides), from_shell, validate],
            "versions": [hydra.__version__, omegaconf.__version__],
            "search_path": [(p.provider, p.path) for p in self._loader.get_search_path().get_path()],
            "hydra_plugins": _hydra_plugins(),
            "task": JobRuntime().get("name"),
            "registered": self._made_of(),
            "cwd": os.getcwd(),  # hydra.runtime.cwd, and where relative search paths start
            "format": FORMAT,
        })


def _sources(cfg: DictConfig) -> list[str] | None:
    """Every config folder and file the composition could have read, or None where one is not a
    folder on this machine (a zipped package, a plugin's own kind of source)."""
    found: list[str] = []
    for source in cfg.hydra.runtime.config_sources:
        if source.schema == "structured":  # the ConfigStore: what the runner registered (the key)
            continue
        folder = _folder(source.schema, source.path)
        if folder is None:
            return None
        found += _tree(folder)
    return found


def _folder(schema: str, path: str) -> str | None:
    if schema == "file":
        return os.path.abspath(path)
    if schema == "pkg":
        try:
            where = importlib.resources.files(path)
        except (ImportError, TypeError, ValueError):
            return None
        return str(where) if isinstance(where, Path) else None
    return None


def _tree(folder: str) -> Iterator[str]:
    """A folder (even absent: one that appears later is seen), its folders and its files."""
    yield folder
    for top, folders, files in os.walk(folder):
        folders[:] = [f for f in folders if f != "__pycache__"]
        yield from (os.path.join(top, name) for name in (*folders, *files))


def _hydra_plugins() -> list[tuple[str, kept.Stat]]:
    """Hydra's plugins (launchers, sweepers, search paths) register configs when Hydra imports them:
    every folder and file of the hydra_plugins namespace, so one installed, removed or edited is seen."""
    try:
        import hydra_plugins
    except ImportError:
        return []
    return [(path, kept.stat(path)) for folder in hydra_plugins.__path__ for path in _tree(folder)]
