"""A plan kept for the same command run again.

Planning reads the prompt file and every input, then checks, keys and prices each job: seconds for a
100,000-job sweep, paid again by every rerun of the same command although nothing changed. A plan is
therefore kept in the cache folder (runner.kept), found again by everything it is made from: the
settings the planner is given (runner.plan.PLAN_SETTINGS), Hydra's choices, the catalogue's
manifests, the runner's own code and the working folder. It is used again only while every local
file it was read from (`Plan.sources`: the prompt file, each input looked at, even one refused or
missing) is unchanged; a plan made while one of them was being modified, or a refused one, is not
kept.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from runner import kept
from runner.catalog import Catalog
from runner.plan import PLAN_SETTINGS, JobSpec, Plan, build_plan

KEEP = 4  # plans kept (a 100,000-job plan takes about 12 MiB)
FORMAT = 3


def planned(cfg: DictConfig | Mapping[str, Any], catalog: Catalog, choices: Mapping[str, str] | None = None) -> Plan:
    """`runner.plan.build_plan`, or the plan kept from the same command with the same files."""
    conf: Mapping[str, Any] = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg  # type: ignore[assignment]
    entry = kept.cache_dir() / f"plan-{_key(conf, catalog, choices or {})}.pickle"
    plan = kept.read(entry, _plan, freeze=True)
    if plan is not None:
        return plan
    started = time.time()
    plan = build_plan(conf, catalog, choices)
    if plan.jobs:
        # The jobs as plain tuples: pickled in a third of a named tuple's time.
        rest = {f.name: getattr(plan, f.name) for f in dataclasses.fields(plan) if f.init and f.name not in ("jobs", "_keys")}
        kept.write(entry, (rest, [tuple(job) for job in plan.jobs]), plan.sources, started, keep=KEEP)
    return plan


def _plan(held: tuple[dict[str, Any], list[tuple[Any, ...]]]) -> Plan:
    rest, rows = held
    return Plan(jobs=[JobSpec._make(row) for row in rows], **rest)


def _key(conf: Mapping[str, Any], catalog: Catalog, choices: Mapping[str, str]) -> str:
    return kept.key({
        "settings": {name: conf[name] for name in PLAN_SETTINGS if name in conf},
        "choices": dict(choices),
        "catalog": catalog.digest,
        "cwd": os.getcwd(),  # relative paths are the working folder's
        "home": os.path.expanduser("~"),  # and ~ the user's
        "format": FORMAT,
    })
