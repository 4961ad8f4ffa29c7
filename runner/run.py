"""Running a plan: providers and keys found, the ledger opened, the engine driven, a summary printed.

Everything that can stop a run for a user's reason (a missing key, a provider no plugin provides)
is checked here before the first job is claimed, with a message saying what to set.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import signal
import sys
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from runner import plugins
from runner import store as S
from runner.config import ProviderConf
from runner.engine import Engine, Lane, Options, Outcome
from runner.errors import UserError
from runner.plan import Plan
from runner.progress import Progress
from runner.providers import Settings
from runner.report import money
from runner.store import Store

DEMO = "python -m runner model=kling prompt_set=ads simulate=true"
EXIT_INCOMPLETE = 1
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Account:
    """Where a provider is reached and with which key, for this run."""

    base_url: str
    key: str


def accounts(plan: Plan, providers: Mapping[str, ProviderConf], environ: Mapping[str, str], simulated: Mapping[str, Account] | None) -> dict[str, Account]:
    """The account of every provider the plan needs; a missing key stops the run before it starts."""
    registry = plugins.registry()
    found: dict[str, Account] = {}
    for name in sorted({job.provider for job in plan.jobs}):
        cls = registry.providers.get(name)
        if cls is None:
            raise UserError(f"no installed plugin provides provider {name!r} (plugins: {', '.join(registry.versions) or 'none'})")
        conf = providers.get(name)
        if conf is None:
            raise UserError(f"no settings for provider {name!r}: add provider@providers.{name}=<option> or conf/provider/{name}.yaml")
        if simulated is not None:
            if name not in simulated:
                raise UserError(f"simulate=true covers {', '.join(simulated)}; provider {name!r} has no simulator")
            found[name] = simulated[name]
            continue
        key = cls.key_from_env(environ, conf.key_env)
        if not key:
            raise UserError(
                f"no API key for {name}: set the environment variable {conf.key_env} "
                f"(export {conf.key_env}=...), or try the simulator with no key: {DEMO}"
            )
        found[name] = Account(conf.base_url, key)
    return found


@contextmanager
def simulator(config_path: str | None, state_dir: str) -> Iterator[dict[str, Account]]:
    """The bundled simulator on loopback, for `simulate=true`: demo latencies of a few seconds, or
    the behaviour a simulator config file describes (`sim_config=path.yaml`)."""
    from runner.sim import Latency, SimConfig, Simulator

    try:
        config = SimConfig.load(config_path) if config_path else SimConfig(latency={"default": Latency(2.0, 4.0)})
    except ValueError as exc:
        raise UserError(f"sim_config={config_path}: {exc}") from None
    with Simulator(config, state_path=config.state_path or Path(state_dir) / "simulator.jsonl") as sim:
        yield {"runway": Account(sim.runway_url, sim.keys["runway"]), "fal": Account(sim.fal_url, sim.keys["fal"])}


def execute(cfg: Any, plan: Plan, config: Mapping[str, Any], command: list[str]) -> int:
    """Run a validated plan to the end (or to an interrupt); returns the exit status."""
    for noisy in ("httpx", "httpcore"):  # a line per request drowns the progress display
        logging.getLogger(noisy).setLevel(logging.WARNING)
    providers: dict[str, ProviderConf] = {name: conf for name, conf in cfg.providers.items()}
    if cfg.simulate:
        with simulator(cfg.sim_config, cfg.state_dir) as simulated:
            return _execute(cfg, plan, config, command, accounts(plan, providers, os.environ, simulated))
    return _execute(cfg, plan, config, command, accounts(plan, providers, os.environ, None))


def _execute(cfg: Any, plan: Plan, config: Mapping[str, Any], command: list[str], found: dict[str, Account]) -> int:
    store = Store(cfg.db)
    try:
        sweep_id = store.record_plan(plan, config)
        keys = [job.key for job in plan.jobs]
        unpriced = len(plan.unpriced)
        if cfg.budget_usd is not None and unpriced:
            print(f"note: {unpriced} job(s) have no known price and are not counted against budget_usd", file=sys.stderr)
        progress = Progress(len(keys), quiet=cfg.quiet)
        outcome = asyncio.run(_drive(cfg, store, sweep_id, keys, found, progress))
        progress.close()
        return summarize(store, keys, outcome, plan, command)
    finally:
        store.close()


async def _drive(cfg: Any, store: Store, sweep_id: str, keys: list[str], found: dict[str, Account], progress: Progress) -> Outcome:
    registry = plugins.registry()
    clients = {name: httpx.AsyncClient(timeout=httpx.Timeout(cfg.providers[name].request_timeout_s, connect=15.0)) for name in found}
    downloads = httpx.AsyncClient(timeout=httpx.Timeout(cfg.providers[next(iter(found))].request_timeout_s, connect=15.0), follow_redirects=True)
    try:
        lanes = {}
        for name, account in found.items():
            conf = cfg.providers[name]
            provider = registry.providers[name](Settings(account.base_url, account.key, conf.request_timeout_s), clients[name])
            limits = dict(conf.model_concurrency)
            if conf.limits_from_provider:
                limits = {**await provider.concurrency_limits(), **limits}
            lanes[name] = Lane(provider, conf, limits)

        def notify(event: str, row: dict[str, Any], detail: str) -> None:
            progress.event(event, row, detail)
            call = {
                "submitted": lambda: plugins.pm.hook.job_submitted(job=row, task_id=detail),
                "downloaded": lambda: plugins.pm.hook.job_finished(job=row, path=detail),
                "failed": lambda: plugins.pm.hook.job_failed(job=row, error=detail),
            }.get(event)
            try:
                if call:
                    call()
            except Exception as exc:  # an observer's bug must not stop the sweep or lose state
                print(f"warning: a plugin's {event} hook failed: {type(exc).__name__}: {exc}", file=sys.stderr)

        options = Options(
            outputs_dir=Path(cfg.outputs_dir),
            max_attempts=cfg.max_attempts,
            budget_usd=cfg.budget_usd,
            job_timeout_s=cfg.job_timeout_s,
            retry_failed=cfg.retry_failed,
        )
        engine = Engine(store, sweep_id, keys, lanes, registry.catalog, options, downloads, notify)
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
        watcher = asyncio.create_task(_watch(store, keys, progress))
        try:
            outcome = await engine.run()
            if outcome.interrupted and cfg.cancel_on_interrupt:
                canceled = await engine.cancel_in_flight()
                print(f"canceled {canceled} task(s) at the provider (cancel_on_interrupt=true)", file=sys.stderr)
        finally:
            watcher.cancel()
            loop.remove_signal_handler(signal.SIGINT)
            loop.remove_signal_handler(signal.SIGTERM)
        progress.update(store.jobs(keys))
        return outcome
    finally:
        for client in [*clients.values(), downloads]:
            await client.aclose()


async def _watch(store: Store, keys: list[str], progress: Progress) -> None:
    while True:
        progress.update(store.jobs(keys))
        await asyncio.sleep(0.5)


def summarize(store: Store, keys: list[str], outcome: Outcome, plan: Plan, command: list[str]) -> int:
    """The end of a run: what happened, what it cost, and how to continue."""
    rows = store.jobs(keys)
    states = Counter(row["state"] for row in rows)
    estimated = sum((Decimal(str(row["est_cost"])) * row["attempts"] for row in rows if row["est_cost"] is not None), Decimal(0))
    settled = sum((Decimal(str(row["spent_usd"] or 0)) for row in rows), Decimal(0))
    resume = "python -m runner " + " ".join(shlex.quote(arg) for arg in command)
    lines = [
        f"{len(rows)} jobs: " + ", ".join(f"{states[s]} {s}" for s in (S.DOWNLOADED, S.FAILED, S.CANCELED, S.SUCCEEDED, S.SUBMITTED, S.SUBMITTING, S.PLANNED) if states[s]),
        f"spend: estimated {money(estimated)}, settled {money(settled)}"
        + (f" (+ {len(plan.unpriced)} job(s) with price unknown)" if plan.unpriced else ""),
    ]
    done = [row for row in rows if row["state"] == S.DOWNLOADED]
    if done:
        lines.append(f"outputs: {Path(done[0]['output_path']).parent.parent}")
    duplicates = sum(row["possible_duplicates"] or 0 for row in rows)
    if duplicates:
        lines.append(f"possible duplicate charges: {duplicates} (a submit was interrupted or its answer lost; check the provider's usage)")
    for row in rows:
        if row["state"] == S.FAILED:
            lines.append(f"failed {row['key'][:12]} {row['model']} {row['prompt_id']}: {row['error']}")
    in_flight = [row for row in rows if row["state"] in (*S.IN_FLIGHT, S.SUCCEEDED)]
    if outcome.past_deadline:
        lines.append(f"{len(outcome.past_deadline)} job(s) passed job_timeout_s and still run at the provider")
    if outcome.waiting_on_others:
        lines.append(f"{len(outcome.waiting_on_others)} job(s) are being driven by another runner process")
    if outcome.budget_stopped and states[S.PLANNED]:
        lines.append(f"stopped at budget_usd: {states[S.PLANNED]} job(s) not submitted; raise budget_usd and rerun to continue")
    if in_flight or states[S.PLANNED]:
        lines.append(f"{len(in_flight)} job(s) in flight, {states[S.PLANNED]} not submitted; to resume, run the same command: {resume}")
    print("\n".join(lines))
    if outcome.interrupted:
        return EXIT_INTERRUPTED
    return 0 if states[S.DOWNLOADED] == len(rows) else EXIT_INCOMPLETE
