"""The command line: `python -m runner [overrides]`, a Hydra app.

Before Hydra composes anything, the catalogue's models are registered as `model=` options (so a
plugin's models need no file in conf/) and the overrides are checked against the schema, so a typo
gets a suggestion. User mistakes end as one message on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import copy
import os
import string
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import hydra
from hydra import compose, initialize_config_module
from hydra._internal.utils import get_args_parser
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from runner import home, installed, plugins
from runner.config import register_schemas
from runner.errors import UserError
from runner.plan import Plan, build_plan
from runner import preflight
from runner.preflight import check_overrides
from runner.report import format_plan
from runner.run import RUN_ID_ENV, execute, prepare

EXIT_USAGE = 2
CONFIG_PATH = "pkg://runner_conf"
CONFIG_NAME = "config"
TASK_NAME = "app"  # what hydra.main names the job after this module (Hydra's log file: app.log)

# At import, not in setup(): Hydra's joblib launcher resolves configs in worker processes that
# import this module but never run main().
home.register_resolvers()  # state_dir and outputs_dir found as git finds its repository
if not OmegaConf.has_resolver("runner_help"):  # `--help`, naming what is installed (runner/installed.py)
    OmegaConf.register_new_resolver("runner_help", lambda part: installed.help_text(part))


def register_catalog_options() -> None:
    """Plugins' contributions as config options: every model and alias becomes `model=<name>`, and
    every registered provider an entry of `providers` (from conf/provider/ or the plugin's defaults)."""
    store = ConfigStore.instance()
    registry = plugins.registry()
    catalog = registry.catalog
    for name, model in catalog.models.items():
        store.store(group="model", name=name, node={"name": name}, provider=model.source)
    for alias, name in catalog.aliases.items():
        store.store(group="model", name=alias, node={"name": name}, provider=catalog.models[name].source)
    files = preflight.conf_options("provider")
    defaults = []
    for name, cls in sorted(registry.providers.items()):
        if name not in files and cls.default_conf is not None:
            store.store(group="provider", name=name, node=cls.default_conf, provider=registry.provider_plugin[name])
        if name in files or cls.default_conf is not None:
            defaults.append({f"/provider@providers.{name}": name})
    store.store(name="provider_defaults", node={"defaults": defaults})


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
    """One sweep point: plan it, check it, then show it (dry run) or run it."""
    try:
        catalog = plugins.registry().catalog
        plan = build_plan(cfg, catalog, HydraConfig.get().runtime.choices)
        if not plan.jobs and HydraConfig.get().mode == RunMode.MULTIRUN:  # one point of Hydra's own launchers
            print(format_plan(plan, cfg.show_jobs))  # on_invalid=skip left this point nothing: the others go on
            return
        priced = prepare(cfg, plan)
        if cfg.dry_run:
            return
        config = OmegaConf.to_container(cfg, resolve=True)
        status = execute(cfg, plan, config, COMMAND or sys.argv[1:], priced)
    except UserError as exc:
        fail(str(exc))
    if status:
        sys.exit(status)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=CONFIG_NAME)
def _hydra_main(cfg: DictConfig) -> None:
    run(cfg)


#: The command line as the user typed it, for the "run the same command" hint.
COMMAND: list[str] = []


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    COMMAND[:] = args
    os.environ.setdefault(RUN_ID_ENV, uuid.uuid4().hex)  # one budget for every point of this command
    try:
        setup()
        args = check_overrides(args, plugins.registry().catalog)
    except UserError as exc:
        fail(str(exc))
    parsed = get_args_parser().parse_args(args)
    try:
        if _only(parsed, "run"):
            _with_hydra(lambda app: app.run(config_name=CONFIG_NAME, task_function=run,
                                            overrides=[*parsed.overrides, "hydra.mode=RUN"]))
        elif parsed.multirun and _only(parsed, "multirun"):
            _with_hydra(lambda app: app.multirun(config_name=CONFIG_NAME, task_function=run,
                                                 overrides=[*parsed.overrides, "hydra.mode=MULTIRUN"]))
        elif parsed.help and _only(parsed, "help", "resolve"):
            _with_hydra(lambda app: print(_app_help(app, parsed.overrides, parsed.resolve)))
        else:
            sys.argv = [sys.argv[0], *args]
            _hydra_main()
    except KeyboardInterrupt:  # outside the engine (planning, the last ledger writes): nothing is half-done
        print("\ninterrupted; the ledger is consistent: run the same command to carry on", file=sys.stderr)
        sys.exit(130)


def _only(parsed: argparse.Namespace, *flags: str) -> bool:
    """No Hydra flag but these (and overrides), and no override of hydra.mode."""
    others = {k: v for k, v in vars(parsed).items() if k not in ("overrides", *flags)}
    return not any(others.values()) and not any(o.lstrip("+~").startswith("hydra.mode") for o in parsed.overrides)


def _with_hydra(command: Callable[[Any], Any]) -> None:
    """Run a command on a Hydra app as `hydra.main` does, less the work it does for every command.

    For a run or a multirun `hydra.main` composes the whole config once only to read `hydra.mode`
    (does the config ask for a multirun?), then again to run; the runner's config never sets
    hydra.mode and `_only` saw no override of it, so the mode is the command line's (-m or not):
    the config is composed once, and run in Hydra's run or sweep folder with its logging, as
    hydra.main would.
    """
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_automatic_config_search_path, run_and_report
    from hydra.core.global_hydra import GlobalHydra

    search_path = create_automatic_config_search_path(None, None, CONFIG_PATH)
    app = run_and_report(lambda: Hydra.create_main_hydra2(task_name=TASK_NAME, config_search_path=search_path))
    try:
        run_and_report(lambda: command(app))
    finally:
        GlobalHydra.instance().clear()


def _app_help(app: Any, overrides: list[str], resolve: bool) -> str:
    """`--help` as Hydra prints it (its template, from hydra.help), less its cost: Hydra lists the
    options of every config group, each of its own too, copying the whole config repository for
    each one, which takes seconds with an option per catalogue model. Here the app's groups are
    listed, and Hydra's only if the template asks for them."""

    cfg = app.compose_config(config_name=CONFIG_NAME, overrides=overrides, run_mode=RunMode.RUN)
    HydraConfig.instance().set_config(cfg)
    clean = app.get_sanitized_cfg(copy.deepcopy(cfg), "job")
    loader = app.config_loader

    def app_groups() -> str:
        return "".join(f"{group}: {', '.join(sorted(loader.get_group_options(group)))}\n" for group in sorted(_groups(loader)))

    fields = {
        "FLAGS_HELP": lambda: app.format_args_help(get_args_parser()),
        "HYDRA_CONFIG_GROUPS": lambda: app.format_config_groups(lambda group: group.split("/")[0] == "hydra"),
        "APP_CONFIG_GROUPS": app_groups,
        "CONFIG": lambda: OmegaConf.to_yaml(clean, resolve=resolve),
    }
    return string.Template(cfg.hydra.help.template).substitute(_Computed(fields))


def _groups(loader: Any, parent: str = "") -> Iterator[str]:
    """The config groups holding options, below `parent`, Hydra's own left out."""
    for group in loader.list_groups(parent):
        name = f"{parent}/{group}" if parent else group
        if name == "hydra":
            continue
        if loader.get_group_options(name):
            yield name
        yield from _groups(loader, name)


class _Computed(dict):
    """A mapping whose values are computed when looked up: a help template names only some."""

    def __getitem__(self, key: str) -> Any:
        return super().__getitem__(key)()
