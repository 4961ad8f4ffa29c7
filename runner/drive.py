"""A run: the ledger opened and the plan recorded, the engine driven, the outputs published, a summary printed."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import httpx
from omegaconf import OmegaConf

from runner import connections, ledger_lock, listed, plugins, recording
from runner import store as S
from runner.catalog import Catalog
from runner.config import ProviderConf
from runner.delivery import Delivery
from runner.engine import Engine
from runner.lanes import Lane, Options, Outcome
from runner.errors import UserError
from runner.jobview import RunContext
from runner.locate import found_at
from runner.money import to_micros
from runner.owners import Heartbeat, Identity
from runner.plan import JobSpec, Plan
from runner.progress import Progress
from runner.providers import Settings, Uploads, offers_watch
from runner.publish import publish_run
from runner.run import RUN_ID_ENV, Account, check_outputs_dir
from runner.summary import EXIT_INTERRUPTED, summarize
from runner.tally import tally
from runner.validate import model_limits
from runner.writer import LedgerUnusable, Writer

#: How long a run interrupted outside the engine (while it records its plan, or its summary) waits
#: for its last ledger writes: a ledger another process holds is not waited for.
INTERRUPTED_WAIT_S = 0.5

#: Jobs recorded per transaction when a new sweep is recorded while it runs: its first submission
#: waits for this many, not for a 100,000-job plan to be in the ledger.
RECORD_CHUNK = 2000


def drive(cfg: Any, plan: Plan, config: Mapping[str, Any], command: list[str], found: dict[str, Account],
          priced: listed.Priced | None = None) -> int:
    """Record the plan (and the prices `prepare` read for it) and drive it with the accounts `found`;
    returns the exit status."""
    check_outputs_dir(cfg.outputs_dir)  # once every key is found: a refused run leaves no folder behind
    # Plain dataclasses, not config nodes: the engine reads these settings at every request.
    lanes = {name: _lane_limits(name, OmegaConf.to_object(cfg.providers[name]), plugins.registry().catalog) for name in found}

    try:
        writer = Writer(cfg.db, on_wait=ledger_lock.teller(cfg.db))
    except UserError:
        raise
    except Exception as exc:  # not a ledger this runner can open: say so, with no traceback
        raise UserError(f"db={cfg.db} cannot be opened as a ledger: {exc}") from None
    me = Identity.current()
    heartbeat: Heartbeat | None = None
    interrupted = False
    try:
        writer.sync(S.register_owner, me)
        heartbeat = Heartbeat(writer.path, me.id).start()
        sweep_id, recorded = writer.sync(recording.begin_sweep, plan, config)
        # A new sweep's first jobs are recorded before the engine starts, the rest while it runs them.
        now, later = (plan.jobs[:RECORD_CHUNK], plan.jobs[RECORD_CHUNK:]) if recorded == recording.SWEEP_NEW else (plan.jobs, [])
        if recorded != recording.SWEEP_RECORDED:
            writer.sync(recording.record_jobs, sweep_id, now)
        if priced is not None and (priced.read or priced.jobs):
            writer.sync(listed.keep, priced)
        keys = [job.key for job in plan.jobs]
        budget: tuple[str, int] | None = None
        if cfg.budget_usd is not None:
            budget = (os.environ.get(RUN_ID_ENV) or sweep_id, to_micros(cfg.budget_usd))
            writer.sync(S.join_budget, *budget, [job.key for job in now] if later else keys)
        budget_id = budget[0] if budget else None
        options = Options(
            outputs_dir=Path(cfg.outputs_dir), max_attempts=cfg.max_attempts, budget_id=budget_id, job_timeout_s=cfg.job_timeout_s,
            max_outage_s=cfg.max_outage_s, retry_failed=cfg.retry_failed, regenerate_lost=cfg.regenerate_lost,
        )
        progress = Progress(len(keys), quiet=cfg.quiet)
        context = RunContext(
            run_id=os.environ.get(RUN_ID_ENV) or sweep_id, sweep_id=sweep_id, sweep_names=tuple(sorted({j.sweep for j in plan.jobs})),
            config=MappingProxyType(dict(config)), outputs_dir=Path(cfg.outputs_dir), ledger=writer.path,
        )
        # The plan's objects live as long as the run: frozen out of the collector's full passes,
        # which otherwise walk all of them (100,000 jobs: a third of a second) every so often.
        gc.freeze()
        try:
            more = _recorded(writer, sweep_id, later, budget) if later else None
            outcome = asyncio.run(_drive(cfg, writer, sweep_id, lanes, found, options, me, progress, Delivery(writer, context), more))
        finally:
            progress.close()
        ledger = found_at(writer.path)
        named = {job.key: job.sweep for job in plan.jobs}
        # After a Ctrl-C the files are not looked at one by one: the run is left at once.
        totals = writer.sync(tally, sweep_id, named, outcome.parked, ledger, None if outcome.interrupted else Path(cfg.outputs_dir))
        published = publish_run(ledger, totals.sweeps, Path(cfg.outputs_dir), interrupted=outcome.interrupted)  # manifest.jsonl, report.html
        return summarize(totals, outcome, plan, command, published, Path(cfg.outputs_dir), ledger)
    except LedgerUnusable as exc:
        print(f"error: {exc}; every task id received before this is kept: fix it and run the same command", file=sys.stderr)
        return 3
    except KeyboardInterrupt:  # before the engine or after it (it answers its own): nothing is being sent
        interrupted = True
        raise
    finally:
        if heartbeat is not None:
            heartbeat.stop()
        if not writer.finish(S.owner_gone, me.id, wait_s=INTERRUPTED_WAIT_S if interrupted else None):
            why = "it is held by another process" if writer.held_elsewhere else "its last changes are still being made"
            print(f"\nnot waiting for the ledger {cfg.db} ({why}): the next run starts from what it holds", file=sys.stderr)


async def _recorded(writer: Writer, sweep_id: str, jobs: list[JobSpec], budget: tuple[str, int] | None) -> AsyncIterator[list[str]]:
    """The rest of a new sweep's jobs recorded (and joined to the budget) a part at a time, while
    the engine runs the first: yields the keys of each part once it is in the ledger."""
    for start in range(0, len(jobs), RECORD_CHUNK):
        part = jobs[start : start + RECORD_CHUNK]
        keys = [job.key for job in part]
        await writer(recording.record_jobs, sweep_id, part)
        if budget is not None:
            await writer(S.join_budget, *budget, keys)
        yield keys


def _lane_limits(name: str, conf: ProviderConf, catalog: Catalog) -> Lane:
    limits = model_limits(name, conf.model_concurrency, catalog)  # by any of each model's names (checked before)
    return Lane(provider=None, conf=conf, model_limits=limits)  # type: ignore[arg-type]  # the provider joins in _drive


async def _drive(cfg: Any, writer: Writer, sweep_id: str, lanes: dict[str, Lane], found: dict[str, Account],
                 options: Options, me: Identity, progress: Progress, delivery: Delivery,
                 more: AsyncIterator[list[str]] | None) -> Outcome:
    registry = plugins.registry()
    clients = {name: _client(lanes[name].conf, follow_redirects=False) for name in found}
    # Status streams get clients of their own, a connection per generation the account runs at once.
    streams = {name: connections.client(lanes[name].conf.concurrency, lanes[name].conf.request_timeout_s, follow_redirects=False)
               for name in found if lanes[name].conf.status_stream and offers_watch(registry.providers[name])}
    downloads = _client(next(iter(cfg.providers.values())), follow_redirects=True, pool=sum(c.concurrency for c in cfg.providers.values()))
    engine = None
    try:
        for name, account in found.items():
            lane = lanes[name]
            conf = lane.conf
            settings = Settings(account.base_url, account.key, conf.request_timeout_s, account.endpoints)
            lane.provider = registry.providers[name](settings, clients[name], LedgerUploads(writer, name),
                                                     **({"streams": streams[name]} if name in streams else {}))
            if name in streams:
                lane.watching = asyncio.Semaphore(conf.concurrency)
            if conf.limits_from_provider:
                told = await lane.provider.account_limits()
                lane.model_limits = {**told.concurrency, **lane.model_limits}
                lane.daily_left = dict(told.daily_left)
                for model_id, left in told.daily_left.items():
                    if left <= 0:
                        lane.stop_model(model_id, "the account's daily generation limit for this model is reached")

        engine = Engine(writer, sweep_id, lanes, registry.catalog, options, downloads, me, progress.event, progress.update, more)
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
        if engine is not None:  # closed already unless the run ended in an error
            await engine.driver.probing.close()
        for client in [*clients.values(), *streams.values(), downloads]:
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
    return connections.client(max(10, 2 * (pool or conf.concurrency)), conf.request_timeout_s, follow_redirects=follow_redirects)
