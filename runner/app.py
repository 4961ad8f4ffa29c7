"""The command line: `python -m runner [overrides]`, a Hydra app.

Before Hydra composes anything, the catalogue's models are registered as `model=` options (so a
plugin's models need no file in conf/) and the overrides are checked against the schema, so a typo
gets a suggestion. User mistakes end as one message on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Sequence
from importlib.resources import files

import hydra
from hydra import compose, initialize_config_module
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from runner import installed, plugins
from runner.config import register_schemas
from runner.errors import UserError
from runner.plan import Plan, build_plan
from runner import preflight
from runner.preflight import check_overrides
from runner.report import format_plan
from runner.run import RUN_ID_ENV, check_budget, execute

EXIT_USAGE = 2


def asset_path(name: str) -> str:
    """`${asset:sneaker.png}` in a prompt set: a file bundled with the runner."""
    return str(files("runner") / "assets" / name)


# At import, not in setup(): Hydra's joblib launcher resolves configs in worker processes that
# import this module but never run main().
if not OmegaConf.has_resolver("asset"):
    OmegaConf.register_new_resolver("asset", asset_path)
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
    """Everything Hydra must know before composing: schema, resolvers, launcher, the catalogue's models."""
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
        print(format_plan(plan))
        check_budget(plan, cfg.budget_usd, cfg.allow_unpriced)
        if cfg.dry_run:
            return
        config = OmegaConf.to_container(cfg, resolve=True)
        status = execute(cfg, plan, config, COMMAND or sys.argv[1:])
    except UserError as exc:
        fail(str(exc))
    if status:
        sys.exit(status)


@hydra.main(version_base="1.3", config_path="pkg://runner_conf", config_name="config")
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
    sys.argv = [sys.argv[0], *args]
    try:
        _hydra_main()
    except KeyboardInterrupt:  # outside the engine (planning, the last ledger writes): nothing is half-done
        print("\ninterrupted; the ledger is consistent: run the same command to carry on", file=sys.stderr)
        sys.exit(130)
