"""The engine: drives a sweep's jobs through their providers until every output is on disk.

One asyncio loop, one task per job in flight. Slots and budget are claimed in the ledger (so
several processes share one limit); every step is committed before and after it happens, so a run
killed at any point is resumed by running the same command: finished jobs are skipped, jobs with a
task id are polled again, never resubmitted (DESIGN.md "Job states", "Engine rules").
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from collections import deque
from collections.abc import Callable, Awaitable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import httpx

from runner import store as S
from runner.catalog import Catalog
from runner.config import ProviderConf
from runner.inputs import InputFile
from runner.outputs import download, output_path
from runner.providers import Handle, Job, Provider, ProviderError, Status, make_job
from runner.store import Store

T = TypeVar("T")

#: How often the scheduler looks again for free slots (other processes free them too) and how
#: often it renews its claim on the jobs it drives.
RESCAN_S = 0.5
HEARTBEAT_S = 10.0
SUBMIT_GRACE_S = 5.0  # at an interrupt, how long a submit in progress may take to get its task id


@dataclass
class Lane:
    """One provider as the engine drives it: the plugin instance and the account's limits."""

    provider: Provider
    conf: ProviderConf
    model_limits: dict[str, int] = field(default_factory=dict)


@dataclass
class Options:
    outputs_dir: Path
    max_attempts: int = 3
    budget_usd: float | None = None
    job_timeout_s: float = 3600.0
    retry_failed: bool = False


@dataclass
class Outcome:
    """What a run did, for the summary."""

    budget_stopped: bool = False
    interrupted: bool = False
    past_deadline: list[str] = field(default_factory=list)
    waiting_on_others: list[str] = field(default_factory=list)


class Engine:
    def __init__(
        self,
        store: Store,
        sweep_id: str,
        keys: list[str],
        lanes: dict[str, Lane],
        catalog: Catalog,
        options: Options,
        downloads: httpx.AsyncClient,
        notify: Callable[[str, dict[str, Any], str], None] = lambda event, row, detail: None,
    ):
        self.store = store
        self.sweep_id = sweep_id
        self.keys = keys
        self.lanes = lanes
        self.catalog = catalog
        self.options = options
        self.downloads = downloads
        self.notify = notify
        self.outcome = Outcome()
        self._stopping = asyncio.Event()
        self._not_before: dict[str, float] = {}

    def stop(self) -> None:
        """Stop submitting; what is in flight keeps its committed state for the next run."""
        self._stopping.set()
        self.outcome.interrupted = True

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    # -- the scheduler ---------------------------------------------------------------------------

    async def run(self) -> Outcome:
        rows = self.store.jobs(self.keys)
        self._lane_of = {row["key"]: (row["provider"], row["model"], row["model_id"]) for row in rows}
        self._running: dict[asyncio.Task[None], str] = {}
        self._submitting: set[str] = set()
        pending: deque[str] = deque()
        others: set[str] = set()  # in flight in another live process
        for row in rows:
            key = row["key"]
            if row["state"] == S.FAILED and self.options.retry_failed:
                self.store.transition(key, S.PLANNED, expect=[S.FAILED], detail="retry requested", attempts=0)
                row["state"] = S.PLANNED
            elif row["state"] == S.CANCELED:  # stopped by request, not finished: a rerun resumes it
                self.store.transition(key, S.PLANNED, expect=[S.CANCELED], detail="canceled earlier: submitting again")
                row["state"] = S.PLANNED
            if row["state"] == S.PLANNED:
                pending.append(key)
            elif row["state"] in (*S.IN_FLIGHT, S.SUCCEEDED):
                self._adopt_or_wait(key, others)
        last_beat = time.monotonic()
        while not self.stopping:
            self._launch(pending, others)
            if not self._running and not others and (not pending or self.outcome.budget_stopped):
                break
            if self._running:
                done, _ = await asyncio.wait(self._running, timeout=RESCAN_S, return_when=asyncio.FIRST_COMPLETED)
            else:
                done = set()
                await self._sleep(RESCAN_S)
            for task in done:
                key = self._running.pop(task)
                task.result()  # a bug in the engine must surface, not vanish
                if self.store.job(key)["state"] == S.PLANNED:
                    pending.append(key)
            others = self._check_others(others, pending)
            if time.monotonic() - last_beat > HEARTBEAT_S:
                self.store.heartbeat()
                last_beat = time.monotonic()
        if self.stopping:
            await self._wind_down()
        self.outcome.waiting_on_others = sorted(others)
        return self.outcome

    async def _wind_down(self) -> None:
        """Let submits in progress record their task id (briefly), then stop following the rest."""
        submitting = [task for task, key in self._running.items() if key in self._submitting]
        if submitting:
            await asyncio.wait(submitting, timeout=SUBMIT_GRACE_S)
        for task in self._running:
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        self._running.clear()

    async def cancel_in_flight(self) -> int:
        """Cancel at the provider every task this sweep has in flight (on request, at interrupt)."""
        canceled = 0
        for row in self.store.jobs(self.keys):
            if row["state"] != S.SUBMITTED or not row["task_id"]:
                continue
            if row["owner"] != S.this_owner() and S.owner_alive(row["owner"], row["heartbeat_at"]):
                continue  # another runner process drives it
            lane = self.lanes[row["provider"]]
            try:
                await lane.provider.cancel(Handle(row["task_id"], json.loads(row["task_urls"] or "{}")))
            except ProviderError as exc:
                self.store.transition(row["key"], S.SUBMITTED, expect=[S.SUBMITTED], detail=f"cancel failed: {exc.message}")
                continue
            self._settle(row, Decimal(0))
            self.store.transition(row["key"], S.CANCELED, expect=[S.SUBMITTED], detail="canceled on interrupt", finished_at=time.time())
            canceled += 1
        return canceled

    def _adopt_or_wait(self, key: str, others: set[str]) -> None:
        adopted = self.store.adopt(key)
        if adopted is None:
            others.add(key)
        else:
            self._running[asyncio.create_task(self._resume(adopted))] = key

    def _launch(self, pending: deque[str], others: set[str]) -> None:
        """Claim slots for as many pending jobs as the providers, the models and the budget allow."""
        blocked: set[tuple[str, str | None]] = set()
        now = time.monotonic()
        for _ in range(len(pending)):
            key = pending.popleft()
            provider, model, model_id = self._lane_of[key]
            if {(provider, None), (provider, model)} & blocked or self._not_before.get(key, 0) > now:
                pending.append(key)
                continue
            lane = self.lanes[provider]
            claim = self.store.claim(
                key,
                provider_limit=lane.conf.concurrency,
                model_limit=lane.model_limits.get(model_id),
                budget_usd=self.options.budget_usd,
                sweep_id=self.sweep_id,
            )
            if claim.granted:
                self._running[asyncio.create_task(self._drive(self.store.job(key)))] = key
            elif claim.reason in ("provider", "model"):
                blocked.add((provider, None if claim.reason == "provider" else model))
                pending.append(key)
            elif claim.reason == "budget":
                self.outcome.budget_stopped = True
                pending.append(key)
            elif self.store.job(key)["state"] not in S.FINAL:  # another process took it
                others.add(key)

    def _check_others(self, others: set[str], pending: deque[str]) -> set[str]:
        """Jobs another process drives: done when it finishes them, ours if it dies, and claimable
        again (by whichever process claims first) when it hands one back for a retry."""
        still = set()
        for key in others:
            state = self.store.job(key)["state"]
            if state == S.PLANNED:
                pending.append(key)
            elif state not in S.FINAL:
                self._adopt_or_wait(key, still)
        return still

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass

    # -- one job ---------------------------------------------------------------------------------

    def _job(self, row: dict[str, Any]) -> Job:
        inputs = tuple(InputFile(**f) for f in json.loads(row["inputs"]))
        return make_job(row["key"], self.catalog.models[row["model"]], row["endpoint"], json.loads(row["payload"]), inputs)

    async def _drive(self, row: dict[str, Any]) -> None:
        """A claimed job (state `submitting`): submit it, then follow it to a file on disk."""
        lane = self.lanes[row["provider"]]
        job = self._job(row)
        key = row["key"]
        self._submitting.add(key)
        try:
            handle = await self._retrying(lane, lambda: lane.provider.submit(job), key, submitting=True)
        except ProviderError as exc:
            self._generation_failed(row, exc.message, exc.kind, cost=Decimal(0), maybe_accepted=exc.maybe_accepted)
            return
        finally:
            self._submitting.discard(key)
        self.store.transition(
            key,
            S.SUBMITTED,
            expect=[S.SUBMITTING],
            detail=f"task {handle.task_id}",
            task_id=handle.task_id,
            task_urls=json.dumps(handle.urls),
            submitted_at=time.time(),
            provider_status=None,
            progress=None,
        )
        self.notify("submitted", self.store.job(key), handle.task_id)
        await self._follow(self.store.job(key), handle, job)

    async def _resume(self, row: dict[str, Any]) -> None:
        """A job an earlier run left in flight: collect it without paying for it again."""
        key = row["key"]
        if row["state"] == S.SUBMITTING:
            # The submit may or may not have reached the provider: resubmitting is the only way
            # on, and is counted as a possible duplicate charge.
            self.store.transition(
                key,
                S.PLANNED,
                expect=[S.SUBMITTING],
                detail="interrupted while submitting: resubmitting, possible duplicate charge",
                possible_duplicates=(row["possible_duplicates"] or 0) + 1,
                reserved_usd=0.0,
            )
            return
        handle = Handle(row["task_id"], json.loads(row["task_urls"] or "{}"))
        job = self._job(row)
        if row["state"] == S.SUCCEEDED:
            await self._collect(row, handle, job, row["output_url"])
        else:
            await self._follow(row, handle, job, resumed=True)

    async def _follow(self, row: dict[str, Any], handle: Handle, job: Job, resumed: bool = False) -> None:
        """Poll a submitted task until it ends; never faster than the provider allows."""
        lane = self.lanes[row["provider"]]
        key = row["key"]
        interval = lane.conf.min_poll_interval_s
        delay = interval if resumed else self._first_poll_delay(row["model"], interval)
        deadline = (row["submitted_at"] or time.time()) + self.options.job_timeout_s
        last: tuple[Any, ...] = (row["provider_status"], row["progress"])
        while True:
            await asyncio.sleep(delay)
            delay = interval
            try:
                status = await self._retrying(lane, lambda: lane.provider.poll(handle), key)
            except ProviderError as exc:
                if exc.kind == "permanent":
                    self._generation_failed(row, f"polling task {handle.task_id} failed: {exc.message}", "permanent")
                    return
                status = Status("running", detail=f"unreachable: {exc.message}")  # it still runs at the provider
            if status.state in ("queued", "running"):
                now = (status.detail, status.progress)
                if now != last:
                    self.store.update(key, provider_status=status.detail, progress=status.progress)
                    last = now
                if time.time() > deadline:
                    self.store.transition(key, S.SUBMITTED, expect=[S.SUBMITTED], detail=f"past its deadline of {self.options.job_timeout_s:.0f} s; still {status.detail} at the provider")
                    self.outcome.past_deadline.append(key)
                    return
                continue
            if status.state == "succeeded":
                await self._succeeded(row, handle, job, status)
            elif status.state == "canceled":
                self._settle(row, status.cost_usd or Decimal(0))
                self.store.transition(key, S.CANCELED, expect=[S.SUBMITTED], detail="canceled at the provider", provider_status=status.detail, finished_at=time.time())
                self.notify("canceled", self.store.job(key), "")
            else:
                self._generation_failed(row, status.error or "failed", status.error_kind or "retryable", cost=status.cost_usd or Decimal(0))
            return

    def _first_poll_delay(self, model: str, interval: float) -> float:
        """From this model's recent latency (the ledger's history), so a slow model is not polled needlessly."""
        history = self.store.recent_latencies(model)
        if not history:
            return interval
        return max(interval, 0.8 * statistics.median(history))

    async def _succeeded(self, row: dict[str, Any], handle: Handle, job: Job, status: Status) -> None:
        lane = self.lanes[row["provider"]]
        key = row["key"]
        try:
            urls = list(status.outputs) or await self._retrying(lane, lambda: lane.provider.result(handle, job), key)
        except ProviderError as exc:
            self._generation_failed(row, f"result: {exc.message}", "permanent" if exc.kind == "permanent" else "retryable", cost=status.cost_usd)
            return
        cost = status.cost_usd if status.cost_usd is not None else Decimal(str(row["est_cost"] or 0))
        self._settle(row, cost)
        self.store.transition(
            key, S.SUCCEEDED, expect=[S.SUBMITTED], detail="generated", output_url=urls[0], provider_status=status.detail, progress=1.0, finished_at=time.time()
        )
        self.notify("succeeded", self.store.job(key), "")
        await self._collect(self.store.job(key), handle, job, urls[0])

    async def _collect(self, row: dict[str, Any], handle: Handle, job: Job, url: str) -> None:
        """Download the output; an expired URL is renewed from the provider once."""
        lane = self.lanes[row["provider"]]
        key = row["key"]
        path = output_path(self.options.outputs_dir, row["sweep"], row["model"], row["prompt_id"], key, row["extension"])
        renewed = False
        while True:
            try:
                got = await self._retrying(lane, lambda: download(self.downloads, url, path), key)
                break
            except ProviderError as exc:
                if exc.kind == "permanent" and not renewed:
                    renewed = True
                    try:
                        url = (await self._retrying(lane, lambda: lane.provider.result(handle, job), key))[0]
                        self.store.update(key, output_url=url)
                        continue
                    except ProviderError as again:
                        exc = again
                self.store.transition(key, S.FAILED, expect=[S.SUCCEEDED], detail="download failed", error_class=exc.kind, error=f"download failed: {exc.message}")
                self.notify("failed", self.store.job(key), exc.message)
                return
        self.store.transition(
            key, S.DOWNLOADED, expect=[S.SUCCEEDED], detail=str(got.path), output_path=str(got.path), output_bytes=got.size, output_sha256=got.sha256
        )
        self.notify("downloaded", self.store.job(key), str(got.path))

    def _settle(self, row: dict[str, Any], cost: Decimal | None, possible_duplicate: bool = False) -> None:
        self.store.settle(row["key"], float(cost or 0), possible_duplicate)

    def _generation_failed(
        self, row: dict[str, Any], message: str, kind: str, cost: Decimal | None = None, maybe_accepted: bool = False
    ) -> None:
        """A generation ended without output: retry it (a new generation) if allowed, else fail the job.

        `maybe_accepted`: the provider may have started it anyway, so a retry may be a duplicate charge.
        """
        key = row["key"]
        self._settle(row, cost, possible_duplicate=maybe_accepted)
        attempts = self.store.job(key)["attempts"] or 0
        if kind != "permanent" and attempts < self.options.max_attempts and not self.stopping:
            self.store.transition(
                key, S.PLANNED, detail=f"attempt {attempts} failed, will retry: {message}", error_class=kind,
                error=message, task_id=None, task_urls=None,
            )
            self._not_before[key] = time.monotonic() + self._backoff(self.lanes[row["provider"]], attempts)
            return
        self.store.transition(
            key, S.FAILED, detail=message, error_class=kind, error=message, finished_at=time.time()
        )
        self.notify("failed", self.store.job(key), message)

    # -- retries ---------------------------------------------------------------------------------

    @staticmethod
    def _backoff(lane: Lane, attempt: int) -> float:
        """Exponential backoff with full jitter."""
        ceiling = min(lane.conf.retry.backoff_max_s, lane.conf.retry.backoff_base_s * 2 ** max(0, attempt - 1))
        return random.uniform(0, ceiling)

    async def _retrying(self, lane: Lane, call: Callable[[], Awaitable[T]], key: str, submitting: bool = False) -> T:
        """One provider call, retried on 429/5xx/network errors, honouring Retry-After."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return await call()
            except ProviderError as exc:
                if exc.kind == "permanent" or attempt >= lane.conf.retry.max_attempts:
                    raise
                wait = exc.retry_after if exc.retry_after is not None else self._backoff(lane, attempt)
                self.store.note(key, f"retrying in {wait:.1f} s: {exc.message}", possible_duplicate=submitting and exc.maybe_accepted)
                await asyncio.sleep(min(wait, lane.conf.retry.backoff_max_s))
