"""The launcher itself (see the package docstring): all sweep points planned, then run as one."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from runner import plugins
from runner.app import COMMAND, fail
from runner.errors import UserError
from runner.plan import Plan
from runner.plancache import planned
from runner.run import execute, prepare
from runner.validate import check_settings

#: Settings that belong to the run, not to a sweep point: they cannot differ between points.
RUN_SETTINGS = (
    "providers", "state_dir", "db", "outputs_dir", "dry_run", "budget_usd", "prices", "allow_unpriced", "simulate",
    "sim_config", "max_attempts", "retry_failed", "regenerate_lost", "max_outage_s", "job_timeout_s",
    "cancel_on_interrupt", "quiet", "show_jobs", "max_jobs", "confirm_over_usd", "yes",
)


class RunnerLauncher(Launcher):
    def __init__(self) -> None:
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and self.hydra_context is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        points: list[tuple[list[str], DictConfig, DictConfig]] = []
        merged = Plan()
        try:
            for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
                sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
                with open_dict(sweep_config):
                    sweep_config.hydra.job.id = idx
                    sweep_config.hydra.job.num = idx
                hydra_cfg = sweep_config.hydra
                cfg = OmegaConf.masked_copy(sweep_config, [k for k in sweep_config if k != "hydra"])
                point = " ".join(filter_overrides(overrides))
                try:
                    check_settings(cfg, overrides)
                    merged.extend(planned(cfg, plugins.registry().catalog, hydra_cfg.runtime.choices))
                except UserError as exc:
                    raise UserError(f"sweep point #{idx} ({point}): {exc}") from None
                if len(merged.jobs) > cfg.max_jobs:  # every point within it, but not all of them together
                    raise UserError(f"the sweep's points hold {len(merged.jobs):,} jobs by point #{idx} ({point}), over "
                                    f"max_jobs={cfg.max_jobs}; sweep fewer points, or raise max_jobs to run them on purpose")
                points.append((list(overrides), cfg, hydra_cfg))
            first = points[0][1]
            _same_run_settings(points)
            priced = prepare(first, merged)
            status = 0
            if not first.dry_run:
                config = {"points": [OmegaConf.to_container(cfg, resolve=True) for _, cfg, _ in points]}
                status = execute(first, merged, config, COMMAND or sys.argv[1:], priced)
        except UserError as exc:
            fail(str(exc))
        if status:
            sys.exit(status)
        return [
            JobReturn(overrides=overrides, cfg=cfg, hydra_cfg=hydra_cfg, status=JobStatus.COMPLETED, _return_value=len(merged.jobs))
            for overrides, cfg, hydra_cfg in points
        ]


def _same_run_settings(points: list[tuple[list[str], DictConfig, Any]]) -> None:
    first = points[0][1]
    for overrides, cfg, _ in points[1:]:
        for name in RUN_SETTINGS:
            if _value(cfg, name) != _value(first, name):
                raise UserError(
                    f"{name} differs between sweep points ({' '.join(overrides)}): the runner launcher runs all "
                    f"points as one run; sweep it with hydra/launcher=basic instead"
                )


def _value(cfg: DictConfig, name: str) -> Any:
    node = cfg[name]
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
