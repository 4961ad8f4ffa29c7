"""Running a plan: providers and keys found, the ledger opened, the engine driven, a summary printed.

Everything that can stop a run for a user's reason (a missing key, a provider no plugin provides,
an outputs folder it cannot write, a budget that cannot count every job) is checked here before the
ledger is written or anything is sent, with a message saying what to set.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from omegaconf import OmegaConf

from runner import installed, plugins
from runner import store as S
from runner.catalog import Catalog
from runner.consent import confirm_spending
from runner.config import ProviderConf
from runner.delivery import Delivery
from runner.engine import Engine, Lane, Options, Outcome
from runner.jobview import RunContext
from runner.errors import UserError
from runner.locate import Found
from runner.money import to_micros
from runner.owners import Heartbeat, Identity
from runner.plan import Plan
from runner.progress import Progress
from runner.providers import Settings, Uploads
from runner.publish import publish_run
from runner.summary import EXIT_INTERRUPTED, summarize
from runner.validate import check_key, model_limits
from runner.writer import LedgerUnusable, Writer

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


def accounts(plan: Plan, providers: Mapping[str, ProviderConf], environ: Mapping[str, str], simulated: Mapping[str, Account] | None) -> dict[str, Account]:
    """The account of every provider the plan needs: the simulator's for those simulated, else the
    configured one with its key from the environment; a missing key stops the run before it starts."""
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


@contextmanager
def simulator(config_path: str | None, state_dir: str, providers: Collection[str]) -> Iterator[dict[str, Account]]:
    """The provider simulator on loopback, for `simulate=`: the accounts of the providers named,
    with demo latencies of a few seconds, or the behaviour a simulator config file describes
    (`sim_config=path.yaml`)."""
    from runner.sim import Latency, SimConfig, Simulator

    try:
        config = SimConfig.load(config_path) if config_path else SimConfig(latency={"default": Latency(2.0, 4.0)})
        sim = Simulator(config, state_path=config.state_path or Path(state_dir) / "simulator.jsonl")
    except ValueError as exc:  # a config, or a plugin's simulator, it cannot serve
        raise UserError(f"sim_config={config_path}: {exc}" if config_path else f"the provider simulator cannot start: {exc}") from None
    with sim:
        yield {name: Account(sim.url(name), sim.keys[name], sim.endpoints(name)) for name in providers}


def execute(cfg: Any, plan: Plan, config: Mapping[str, Any], command: list[str]) -> int:
    """Run a validated plan to the end (or to an interrupt); returns the exit status."""
    for noisy in ("httpx", "httpcore"):  # a line per request drowns the progress display
        logging.getLogger(noisy).setLevel(logging.WARNING)
    providers: dict[str, ProviderConf] = {name: conf for name, conf in cfg.providers.items()}
    simulate = OmegaConf.to_container(cfg.simulate) if OmegaConf.is_config(cfg.simulate) else cfg.simulate
    simulated = simulated_providers(simulate, plan)
    confirm_spending(plan, cfg, simulated)
    if simulated:
        with simulator(cfg.sim_config, cfg.state_dir, simulated) as found:
            return _execute(cfg, plan, config, command, accounts(plan, providers, os.environ, found))
    return _execute(cfg, plan, config, command, accounts(plan, providers, os.environ, None))


def _execute(cfg: Any, plan: Plan, config: Mapping[str, Any], command: list[str], found: dict[str, Account]) -> int:
    check_outputs_dir(cfg.outputs_dir)  # once every key is found: a refused run leaves no folder behind
    lanes = {name: _lane_limits(name, cfg.providers[name], plugins.registry().catalog) for name in found}

    def waiting(seconds: float) -> None:
        print(f"waiting for the ledger {cfg.db}: another process has held it for {seconds:.0f} s", file=sys.stderr, flush=True)

    try:
        writer = Writer(cfg.db, on_wait=waiting)
    except Exception as exc:  # not a ledger this runner can open: say so, with no traceback
        raise UserError(f"db={cfg.db} cannot be opened as a ledger: {exc}") from None
    me = Identity.current()
    heartbeat: Heartbeat | None = None
    try:
        writer.sync(S.register_owner, me)
        heartbeat = Heartbeat(writer.path, me.id).start()
        sweep_id = writer.sync(S.record_plan, plan, config)
        keys = [job.key for job in plan.jobs]
        budget_id = None
        if cfg.budget_usd is not None:
            budget_id = os.environ.get(RUN_ID_ENV) or sweep_id
            writer.sync(S.join_budget, budget_id, to_micros(cfg.budget_usd), keys)
        options = Options(
            outputs_dir=Path(cfg.outputs_dir), max_attempts=cfg.max_attempts, budget_id=budget_id, job_timeout_s=cfg.job_timeout_s,
            max_outage_s=cfg.max_outage_s, retry_failed=cfg.retry_failed, regenerate_lost=cfg.regenerate_lost,
        )
        progress = Progress(len(keys), quiet=cfg.quiet)
        context = RunContext(
            run_id=os.environ.get(RUN_ID_ENV) or sweep_id, sweep_id=sweep_id, sweep_names=tuple(sorted({j.sweep for j in plan.jobs})),
            config=MappingProxyType(dict(config)), outputs_dir=Path(cfg.outputs_dir), ledger=writer.path,
        )
        try:
            outcome = asyncio.run(_drive(cfg, writer, keys, lanes, found, options, me, progress, Delivery(writer, context)))
        finally:
            progress.close()
        rows = writer.sync(S.rows, keys)
        published = publish_run(Found(writer.path, Path.cwd()), rows, Path(cfg.outputs_dir))  # manifest.jsonl, report.html
        return summarize(rows, outcome, plan, command, published, Path(cfg.outputs_dir))
    except LedgerUnusable as exc:
        print(f"error: {exc}; every task id received before this is kept: fix it and run the same command", file=sys.stderr)
        return 3
    finally:
        if heartbeat is not None:
            heartbeat.stop()
        try:
            writer.sync(S.owner_gone, me.id)
        except LedgerUnusable:
            pass
        writer.close()


def _lane_limits(name: str, conf: ProviderConf, catalog: Catalog) -> Lane:
    limits = model_limits(name, conf.model_concurrency, catalog)  # by any of each model's names (checked before)
    return Lane(provider=None, conf=conf, model_limits=limits)  # type: ignore[arg-type]  # the provider joins in _drive


async def _drive(cfg: Any, writer: Writer, keys: list[str], lanes: dict[str, Lane], found: dict[str, Account],
                 options: Options, me: Identity, progress: Progress, delivery: Delivery) -> Outcome:
    registry = plugins.registry()
    clients = {name: _client(cfg.providers[name], follow_redirects=False) for name in found}
    downloads = _client(next(iter(cfg.providers.values())), follow_redirects=True, pool=sum(c.concurrency for c in cfg.providers.values()))
    try:
        for name, account in found.items():
            conf = cfg.providers[name]
            lane = lanes[name]
            settings = Settings(account.base_url, account.key, conf.request_timeout_s, account.endpoints)
            lane.provider = registry.providers[name](settings, clients[name], LedgerUploads(writer, name))
            if conf.limits_from_provider:
                told = await lane.provider.account_limits()
                lane.model_limits = {**told.concurrency, **lane.model_limits}
                lane.daily_left = dict(told.daily_left)
                for model_id, left in told.daily_left.items():
                    if left <= 0:
                        lane.stop_model(model_id, "the account's daily generation limit for this model is reached")

        engine = Engine(writer, keys, lanes, registry.catalog, options, downloads, me, progress.event, progress.update)
        loop = asyncio.get_running_loop()
        interrupts = 0

        def on_interrupt() -> None:
            nonlocal interrupts
            interrupts += 1
            if interrupts > 1:
                print("\nsecond interrupt: exiting now; the ledger is consistent, rerun to resume", file=sys.stderr)
                os._exit(EXIT_INTERRUPTED)
            print("\ninterrupt: no new submissions; saving state (interrupt again to exit at once)", file=sys.stderr)
            engine.stop()

        loop.add_signal_handler(signal.SIGINT, on_interrupt)
        loop.add_signal_handler(signal.SIGTERM, on_interrupt)
        observing = asyncio.create_task(delivery.until_stopped())
        try:
            outcome = await engine.run()
            if outcome.interrupted and cfg.cancel_on_interrupt:
                canceled = await engine.cancel_in_flight()
                print(f"canceled {canceled} task(s) at the provider (cancel_on_interrupt=true)", file=sys.stderr)
            progress.update(engine.counts, engine.spent, force=True)
        finally:
            delivery.stop()
            loop.remove_signal_handler(signal.SIGINT)
            loop.remove_signal_handler(signal.SIGTERM)
        await observing  # the run's last events, before the summary
        return outcome
    finally:
        for client in [*clients.values(), downloads]:
            await client.aclose()


class LedgerUploads(Uploads):
    """Files a provider holds, kept in the ledger: reused across jobs, runs and processes."""

    def __init__(self, writer: Writer, provider: str):
        self.writer = writer
        self.provider = provider

    async def get(self, sha256: str) -> str | None:
        return await self.writer(S.upload, self.provider, sha256, time.time())

    async def put(self, sha256: str, uri: str, ttl_s: float) -> None:
        await self.writer(S.keep_upload, self.provider, sha256, uri, time.time() + ttl_s)


def _client(conf: ProviderConf, *, follow_redirects: bool, pool: int | None = None) -> httpx.AsyncClient:
    """An HTTP client sized to the work: a connection per generation in flight, and some for polls."""
    size = max(10, 2 * (pool or conf.concurrency))
    return httpx.AsyncClient(
        timeout=httpx.Timeout(conf.request_timeout_s, connect=15.0),
        limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
        follow_redirects=follow_redirects,
    )
