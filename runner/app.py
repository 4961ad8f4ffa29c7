"""The command line: `python -m runner [overrides]`, a Hydra app.

Before Hydra composes anything, the catalogue's models are registered as `model=` options (so a
plugin's models need no file in conf/) and the overrides are checked against the schema, so a typo
gets a suggestion. User mistakes end as one message on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import hydra
from hydra import compose, initialize_config_module
from hydra._internal.utils import get_args_parser
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from runner import home, hydra_errors, plugins, preflight, usage
from runner.composed import KeptCompositions
from runner.config import register_schemas
from runner.errors import UserError
from runner.plan import Plan, build_plan
from runner.plancache import planned
from runner.preflight import check_overrides
from runner.report import format_plan
from runner.run import RUN_ID_ENV, execute, prepare
from runner.validate import check_settings

EXIT_USAGE = 2
CONFIG_PATH = "pkg://runner_conf"
CONFIG_NAME = "config"
TASK_NAME = "app"  # what hydra.main names the job after this module (Hydra's log file: app.log)

# At import, not in setup(): Hydra's joblib launcher resolves configs in worker processes that
# import this module but never run main().
home.register_resolvers()  # state_dir and outputs_dir found as git finds its repository


def catalog_options() -> list[dict[str, Any]]:
    """Plugins' contributions as config options: every model and alias becomes `model=<name>`, and
    every registered provider an entry of `providers` (from conf/provider/ or the plugin's defaults).
    As plain data, which is also what a kept composition is found by (runner.composed)."""
    registry = plugins.registry()
    catalog = registry.catalog
    options = [{"group": "model", "name": name, "node": {"name": name}, "provider": model.source}
               for name, model in catalog.models.items()]
    options += [{"group": "model", "name": alias, "node": {"name": name}, "provider": catalog.models[name].source}
                for alias, name in catalog.aliases.items()]
    files = preflight.conf_options("provider")
    defaults = []
    for name, cls in sorted(registry.providers.items()):
        if name not in files and cls.default_conf is not None:
            options.append({"group": "provider", "name": name, "node": cls.default_conf, "provider": registry.provider_plugin[name]})
        if name in files or cls.default_conf is not None:
            defaults.append({f"/provider@providers.{name}": name})
    options.append({"name": "provider_defaults", "node": {"defaults": defaults}})
    return options


def register_catalog_options() -> None:
    store = ConfigStore.instance()
    for option in catalog_options():
        store.store(**option)


def register_launcher() -> None:
    """`hydra/launcher=runner`. Hydra finds launchers by walking the hydra_plugins namespace, which
    an editable install hides from it, so the runner registers its own explicitly."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.runner_launcher.launcher import RunnerLauncher

    Plugins.instance().register(RunnerLauncher)


def setup() -> None:
    """Everything Hydra must know before composing: schema, launcher, the catalogue's models."""
    register_schemas()
    register_launcher()
    register_catalog_options()


def compose_config(overrides: Sequence[str] = ()) -> tuple[DictConfig, dict[str, str]]:
    """The run config the command line would compose, and the chosen options (model=..., ...)."""
    setup()
    with initialize_config_module(version_base="1.3", config_module="runner_conf"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    choices = {k: v for k, v in cfg.hydra.runtime.choices.items() if not k.startswith("hydra")}
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, choices


def plan(overrides: Sequence[str] = ()) -> Plan:
    """The plan `python -m runner <overrides> dry_run=true` prints, as data."""
    cfg, choices = compose_config(overrides)
    return build_plan(cfg, plugins.registry().catalog, choices)


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


def run(cfg: DictConfig) -> None:
    """One sweep point: its settings checked, then planned and checked, then shown (dry run) or run."""
    try:
        if not (HydraConfig.get().mode == RunMode.RUN and _checked_at_start()):
            check_settings(cfg, HydraConfig.get().overrides.task)
        catalog = plugins.registry().catalog
        plan = planned(cfg, catalog, HydraConfig.get().runtime.choices)
        if not plan.jobs and HydraConfig.get().mode == RunMode.MULTIRUN:  # one point of Hydra's own launchers
            print(format_plan(plan, cfg.show_jobs))  # on_invalid=skip left this point nothing: the others go on
            return
        priced = prepare(cfg, plan)
        if cfg.dry_run:
            return
        config = OmegaConf.to_container(cfg, resolve=True)
        status = execute(cfg, plan, config, COMMAND or sys.argv[1:], priced)
    except UserError as exc:
        with contextlib.suppress(Exception):  # tidying up never hides the message (state_dir may be the mistake)
            _forget_run_folder(cfg.state_dir)
        fail(str(exc))
    if status:
        sys.exit(status)


def _forget_run_folder(state_dir: str) -> None:
    """A refused command leaves nothing behind: the folder Hydra made for this run under state_dir
    (its saved config and log) goes, and so do the folders between it and state_dir (state_dir
    included) that hold nothing else: nothing above state_dir is ever touched."""
    if HydraConfig.get().mode != RunMode.RUN:
        return
    folder = Path(HydraConfig.get().runtime.output_dir).resolve()
    top = Path(state_dir).resolve()
    if top not in folder.parents or not folder.is_dir():
        return
    if any(p.name not in (".hydra", f"{TASK_NAME}.log") for p in folder.iterdir()):
        return
    shutil.rmtree(folder, ignore_errors=True)
    for parent in folder.parents:  # <date>/, hydra/, then state_dir itself when this run made it
        if parent == top and top in _EXISTED:
            return
        try:
            parent.rmdir()
        except OSError:  # not empty: everything above stays
            return
        if parent == top:
            return


#: state_dir folders that were there before this command (a refused command leaves them even empty).
_EXISTED: set[Path] = set()
#: Whether CheckSettings checked a single run's settings when it started (they are its task's).
_CHECKED: list[bool] = []


def _checked_at_start() -> bool:
    checked = bool(_CHECKED)
    _CHECKED.clear()
    return checked


class CheckSettings(Callback):
    """Every setting checked once Hydra has composed the config, before Hydra makes its run or sweep
    folder under state_dir (an empty state_dir would make it at the root) and before any point runs
    (conf/config.yaml lists this callback)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config)
        _CHECKED[:] = [True]  # the run's task need not check the same settings again

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config)  # the settings every point shares; each point's own are checked as it is planned

    @staticmethod
    def _check(config: DictConfig) -> None:
        with contextlib.suppress(Exception):  # a state_dir that cannot be resolved is reported just below
            if Path(config.state_dir).is_dir():
                _EXISTED.add(Path(config.state_dir).resolve())
        settings = copy.deepcopy(config)
        with open_dict(settings):
            del settings["hydra"]
        try:
            check_settings(settings, config.hydra.overrides.task)
        except UserError as exc:
            fail(str(exc))  # SystemExit: Hydra turns a callback's exceptions into warnings


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=CONFIG_NAME)
def _hydra_main(cfg: DictConfig) -> None:
    run(cfg)


#: The command line as the user typed it, for the "run the same command" hint.
COMMAND: list[str] = []


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    COMMAND[:] = args
    if "--version" in args:  # the runner's version, not Hydra's
        print(f"video-runner {version('video-runner')}")
        return
    os.environ.setdefault(RUN_ID_ENV, uuid.uuid4().hex)  # one budget for every point of this command
    try:
        args = check_overrides(args, plugins.registry().catalog)
    except UserError as exc:
        fail(str(exc))
    parsed = get_args_parser().parse_args(args)
    try:
        if _only(parsed, "run"):  # the options are registered only if the composition is not kept
            _with_hydra(lambda app: app.run(config_name=CONFIG_NAME, task_function=run,
                                            overrides=[*parsed.overrides, "hydra.mode=RUN"]), kept=True)
        elif parsed.multirun and _only(parsed, "multirun"):
            _registered()
            _with_hydra(lambda app: app.multirun(config_name=CONFIG_NAME, task_function=run,
                                                 overrides=[*parsed.overrides, "hydra.mode=MULTIRUN"]))
        elif parsed.help and _only(parsed, "help"):  # with --resolve, Hydra's own help prints the config
            print(usage.text())
        else:
            _registered()
            sys.argv = [sys.argv[0], *args]
            _hydra_main()
    except KeyboardInterrupt:  # outside the engine (planning, the last ledger writes): nothing is half-done
        print("\ninterrupted; the ledger is consistent: run the same command to carry on", file=sys.stderr)
        sys.exit(130)


def _registered() -> None:
    try:
        setup()
    except UserError as exc:
        fail(str(exc))


def _only(parsed: argparse.Namespace, *flags: str) -> bool:
    """No Hydra flag but these (and overrides), and no override of hydra.mode."""
    others = {k: v for k, v in vars(parsed).items() if k not in ("overrides", *flags)}
    return not any(others.values()) and not any(o.lstrip("+~").startswith("hydra.mode") for o in parsed.overrides)


def _with_hydra(command: Callable[[Any], Any], kept: bool = False) -> None:
    """Run a command on a Hydra app as `hydra.main` does, less the work it does for every command.

    For a run or a multirun `hydra.main` composes the whole config once only to read `hydra.mode`
    (does the config ask for a multirun?), then again to run; the runner's config never sets
    hydra.mode and `_only` saw no override of it, so the mode is the command line's (-m or not):
    the config is composed once, and run in Hydra's run or sweep folder with its logging, as
    hydra.main would. With `kept` (a run), the composition is read back when the same command ran
    before (runner.composed), and the options are registered only if the config is composed.
    """
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_automatic_config_search_path, run_and_report
    from hydra.core.global_hydra import GlobalHydra

    search_path = create_automatic_config_search_path(None, None, CONFIG_PATH)

    def explained() -> None:
        try:
            app = Hydra.create_main_hydra2(task_name=TASK_NAME, config_search_path=search_path)
            if kept:
                app.config_loader = KeptCompositions(app.config_loader, lambda: {"options": catalog_options()}, _registered)
            command(app)
        except HydraException as exc:  # composition: an option or a value the config cannot take
            fail(hydra_errors.composition(exc))

    try:
        run_and_report(explained)
    finally:
        GlobalHydra.instance().clear()
