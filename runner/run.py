"""Before a plan runs: providers and keys found, the simulator started when asked, then `runner.drive`.

Everything that can stop a run for a user's reason (a missing key, a provider no plugin provides,
an outputs folder it cannot write, a budget that cannot count every job) is checked here before the
ledger is written or anything is sent, with a message saying what to set. The engine, the ledger
and the HTTP clients are imported only once a run starts: a dry run never loads them.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from runner import installed, ledger_file, listed, plugins
from runner.consent import confirm_spending
from runner.config import ProviderConf
from runner.errors import UserError
from runner.plan import Plan
from runner.report import format_plan
from runner.simshare import shared_accounts
from runner.validate import check_key

#: Set once per command (inherited by Hydra's joblib workers): every point of a multirun, in any
#: process, shares the one budget of the command that started it.
RUN_ID_ENV = "RUNNER_RUN_ID"


@dataclass(frozen=True)
class Account:
    """Where a provider is reached and with which key, for this run."""

    base_url: str
    key: str = field(repr=False)
    endpoints: Mapping[str, str] = field(default_factory=dict)  # else the provider's configured ones


def check_budget(plan: Plan, budget_usd: float | None, allow_unpriced: bool) -> None:
    """Before anything runs: the estimate fits the budget, and the budget can count every job."""
    if budget_usd is None:
        return
    budget = Decimal(str(budget_usd))
    if plan.total > budget:
        raise UserError(
            f"the estimated total ${plan.total:.2f} is over budget_usd={budget_usd}; "
            f"raise budget_usd or plan fewer jobs (nothing was submitted)"
        )
    unpriced = Counter(job.model for job in plan.unpriced)
    if unpriced and not allow_unpriced:
        models = ", ".join(f"{model} ({n} job{'s' if n != 1 else ''})" for model, n in sorted(unpriced.items()))
        example = sorted(unpriced)[0]
        raise UserError(
            f"budget_usd={budget_usd} cannot count jobs with no known price: {models}; give their price "
            f"(prices.{example}=0.40 per clip, or prices.{example}=0.08/s per second of video), or add "
            f"allow_unpriced=true to run them counted at $0 (nothing was submitted)"
        )


def prepare(cfg: Any, plan: Plan) -> listed.Priced:
    """A validated plan, before anything is written or sent: jobs of models the manifests leave
    unpriced priced from their provider's price list (read with the key, or from the simulator
    for `simulate=`), the plan shown, and the estimate held to the budget. Returns what the run
    keeps of the prices read (a dry run keeps nothing)."""
    if not plan.jobs and plan.skipped:
        print(format_plan(plan, cfg.show_jobs))
        raise UserError("on_invalid=skip skipped every job (listed above): nothing to run")
    # Before anything touches the file (even the price cache's read-only look) or writes beside it:
    # the outputs folder, the simulator's state.
    ledger_file.check(cfg.db, f"db={cfg.db}")
    _quiet_http()
    catalog = plugins.registry().catalog
    providers: dict[str, ProviderConf] = {name: conf for name, conf in cfg.providers.items()}
    wanted = listed.wanted(plan, catalog)
    simulated = [name for name in simulated_providers(cfg.simulate, plan) if name in wanted] if wanted else []
    # a simulator of its own, keeping no state: its prices are its config's, the same as the run's
    with simulator(cfg.sim_config, None, simulated) if simulated else nullcontext({}) as found:
        reachable = accounts(plan, providers, os.environ, found, required=False) if wanted else {}
        priced = listed.price_from_lists(plan, catalog, reachable, {n: c.key_env for n, c in providers.items()}, cfg.db)
    priced.read = [item for item in priced.read if item.provider not in simulated]  # this simulator is gone after this
    print(format_plan(plan, cfg.show_jobs))
    check_budget(plan, cfg.budget_usd, cfg.allow_unpriced)
    return priced


def _quiet_http() -> None:
    for noisy in ("httpx", "httpcore"):  # a line per request drowns the plan and the progress display
        logging.getLogger(noisy).setLevel(logging.WARNING)


def check_outputs_dir(outputs_dir: str) -> None:
    """The outputs folder takes files, found out before a generation is paid for, not after."""
    folder = Path(outputs_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise UserError(f"outputs_dir={outputs_dir} is not a folder this run can write to ({exc.strerror or exc}); "
                        f"choose another with outputs_dir=...") from None


def accounts(plan: Plan, providers: Mapping[str, ProviderConf], environ: Mapping[str, str], simulated: Mapping[str, Account] | None,
             *, required: bool = True) -> dict[str, Account]:
    """The account of every provider the plan needs: the simulator's for those simulated, else the
    configured one with its key from the environment; a missing key stops the run before it starts
    (`required=False`: that provider is left out)."""
    registry = plugins.registry()
    found: dict[str, Account] = {}
    for name in sorted({job.provider for job in plan.jobs}):
        cls = registry.providers.get(name)
        if cls is None:
            raise UserError(f"no installed plugin provides provider {name!r} (plugins: {', '.join(registry.versions) or 'none'})")
        conf = providers.get(name)
        if conf is None:
            raise UserError(f"no settings for provider {name!r}: add provider@providers.{name}=<option> or conf/provider/{name}.yaml")
        if simulated and name in simulated:
            found[name] = simulated[name]
            continue
        key = cls.key_from_env(environ, conf.key_env)
        if not key and not required:
            continue
        if not key:
            simulate = f"simulate={name} (or simulate=true)" if name in plugins.simulators().classes else "no simulator for it is installed"
            raise UserError(
                f"no API key for {name}: set the environment variable {conf.key_env} (export {conf.key_env}=...); "
                f"to run with no key against the local simulator: {simulate}. "
                f"The installed providers read their keys from: {installed.key_variables()}"
            )
        given = [v for v in dict.fromkeys((conf.key_env, *cls.key_env)) if v and environ.get(v)]
        check_key(name, key, " / ".join(given) or f"the {name} key variables")  # a plugin may build the key from several
        found[name] = Account(conf.base_url, key, dict(conf.endpoints))
    return found


def simulated_providers(simulate: Any, plan: Plan) -> list[str]:
    """The providers of the plan `simulate=` names: `true` every one (each must have a simulator),
    a name or a list of names those only (the others use their configured accounts)."""
    if OmegaConf.is_config(simulate):  # a list given on the command line
        simulate = OmegaConf.to_container(simulate)
    if simulate is None or simulate is False:
        return []
    needed = sorted({job.provider for job in plan.jobs})
    simulators = plugins.simulators()
    if simulate is True:
        missing = [name for name in needed if name not in simulators.classes]
        if missing:
            models = sorted({job.model for job in plan.jobs if job.provider in missing})
            others = [name for name in needed if name not in missing]
            simulate_others = f"simulate only the others with simulate=[{','.join(others)}] and " if others else ""
            raise UserError(
                f"simulate=true: no simulator is installed for provider(s) {', '.join(missing)} (models "
                f"{', '.join(models)}): their plugins register none. {simulate_others}give "
                f"{'them their keys' if len(missing) > 1 else 'it its key'} "
                f"({', '.join(f'export {p.key_env}=...' for p in installed.providers() if p.name in missing)}), "
                f"or leave those models out of the sweep"
            )
        return needed
    named = [str(name) for name in (simulate if isinstance(simulate, (list, tuple)) else [simulate])]  # checked by runner.validate
    return [name for name in needed if name in named]


def new_simulator(config_path: str | None, state_dir: str | None) -> Any:
    """The provider simulator for `simulate=` (not started): demo latencies of a few seconds, or the
    behaviour a simulator config file describes (`sim_config=path.yaml`). With no `state_dir`, one
    that writes nothing (to read its prices)."""
    from runner.sim import Latency, SimConfig, Simulator

    try:
        config = SimConfig.load(config_path) if config_path else SimConfig(latency={"default": Latency(2.0, 4.0)})
        if state_dir is None:
            return Simulator(dataclasses.replace(config, state_path=None, ledger_path=None), state_path=None)
        return Simulator(config, state_path=config.state_path or Path(state_dir) / "simulator.jsonl")
    except ValueError as exc:  # a config, or a plugin's simulator, it cannot serve
        raise UserError(f"sim_config={config_path}: {exc}" if config_path else f"the provider simulator cannot start: {exc}") from None


@contextmanager
def simulator(config_path: str | None, state_dir: str | None, providers: Collection[str]) -> Iterator[dict[str, Account]]:
    """The accounts of the providers named at the provider simulator on loopback: the one a
    multirun shares between its processes (runner.simshare), else one started for this run (with
    no `state_dir`, a stateless one of its own)."""
    sim = new_simulator(config_path, state_dir)
    shared = None if state_dir is None else shared_accounts(Path(str(sim.state_path)), config_path)
    if shared is not None:
        yield {name: Account(shared[name]["url"], shared[name]["key"], shared[name]["endpoints"]) for name in providers}
        return
    with sim:
        yield {name: Account(sim.url(name), sim.keys[name], sim.endpoints(name)) for name in providers}


def execute(cfg: Any, plan: Plan, config: Mapping[str, Any], command: list[str], priced: listed.Priced | None = None) -> int:
    """Run a validated plan (made ready by `prepare`) to the end (or to an interrupt); returns the exit status."""
    from runner.drive import drive

    providers: dict[str, ProviderConf] = {name: conf for name, conf in cfg.providers.items()}
    simulated = simulated_providers(cfg.simulate, plan)
    confirm_spending(plan, cfg, simulated)
    if simulated:
        with simulator(cfg.sim_config, cfg.state_dir, simulated) as found:
            return drive(cfg, plan, config, command, accounts(plan, providers, os.environ, found), priced)
    return drive(cfg, plan, config, command, accounts(plan, providers, os.environ, None), priced)
