"""Following a job the provider has: polling until it ends, and what each ending means.

Generation and collection are separate. Up to the provider saying the generation succeeded, a
failure may start a new generation (a new charge, counted in `attempts`). From then on the job is
paid for: it is settled at once, its task id is kept for good, and fetching the result and
downloading are collection, retried on the same task, by this run or any later plain rerun. Only the
provider saying the output is gone makes a job `lost`.

A mixin of `runner.driver.Driver`: it uses the driver's fenced `_move` and its plumbing.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import TYPE_CHECKING

from runner import store as S
from runner.money import to_micros
from runner.outputs import clear_partials, download, output_path
from runner.polling import Schedule, first_delay
from runner.progress import bucket
from runner.providers import GenerationFailed, Handle, ProviderError, Result, Status

if TYPE_CHECKING:
    from runner.driver import Tracked


class Following:
    async def _follow(self, job: Tracked, handle: Handle, resumed: bool = False, submitted: float | None = None) -> None:
        """Poll a task until it ends (`runner.polling` says when); never faster than the provider allows."""
        lane = self._lane(job)
        interval = lane.conf.min_poll_interval_s
        learned = self.learned.get(job.row["model_id"])
        delay = interval if resumed else first_delay(interval, learned)
        schedule = Schedule(interval, learned, job.row["submitted_at"] or time.time())
        deadline = (job.row["submitted_at"] or time.time()) + self.engine.options.job_timeout_s
        last_seen_running = submitted
        watching = lane.watching is not None
        while True:
            status = await self._watched(job, handle, deadline) if watching else None
            watching = False  # one stream per task: one that broke or ended early leaves the task to polls
            if status is not None and submitted is not None:
                last_seen_running = time.monotonic()  # a stream sees the end as it happens
            if status is None:
                await asyncio.sleep(delay)
                delay = interval if job.key not in self.overdue else max(60.0, 10 * interval)
                try:
                    status = await self._retrying(lane, lambda: lane.provider.poll(handle))
                except ProviderError as exc:
                    if exc.status in (404, 410):
                        return await self._finish_failed(job, f"task {handle.task_id} no longer exists at the provider", "permanent",
                                                         release=True, possible=job.row["est_micros"] or 0)
                    if exc.kind == "permanent":
                        if exc.status in (401, 403):
                            lane.stopped = lane.stopped or f"{lane.provider.name} refused the API key: {exc.message}"
                        return await self._park(job, f"polling failed: {exc.message}")
                    lane.unreachable(self.engine.options.max_outage_s)
                    if lane.stopped:
                        return await self._park(job, f"polling failed: {exc.message}")
                    continue  # it still runs at the provider
                lane.reached()
            if status.state in ("queued", "running"):
                last_seen_running = time.monotonic() if submitted is not None else None
                self._seen(job, status)
                if time.time() > deadline and job.key not in self.overdue:
                    await self._past_deadline(job, status)
                if job.key not in self.overdue:  # and looked at again by its deadline, to give its slot back then
                    now = time.time()
                    delay = min(schedule.next(status.progress, now), max(interval, deadline - now))
                continue
            self.overdue.pop(job.key, None)
            if submitted is not None:
                self._learn(job, (last_seen_running or submitted) - submitted, time.monotonic() - submitted)
            if status.state == "succeeded":
                return await self._succeeded(job, handle, status)
            if status.state == "canceled":
                return await self._canceled(job, status.cost_usd)
            return await self._generation_failed(job, status.error or "failed", status.error_kind or "retryable", status.cost_usd,
                                                 status.may_be_billed)

    def _seen(self, job: Tracked, status: Status) -> None:
        """A queued or running task's status word and progress, recorded when they change (the display counts them)."""
        if (status.detail, status.progress) != (job.row["provider_status"], job.row["progress"]):
            before = bucket(S.SUBMITTED, job.row["provider_status"])
            job.row.update(provider_status=status.detail, progress=status.progress)
            self.engine.db.post(S.move, job.key, job.fence, None, "", provider_status=status.detail, progress=status.progress)
            if bucket(S.SUBMITTED, status.detail) != before:
                self.engine.changed(before, bucket(S.SUBMITTED, status.detail))

    async def _watched(self, job: Tracked, handle: Handle, deadline: float) -> Status | None:
        """The task followed over the provider's status stream (`Provider.watch`) until it ends or
        its deadline passes; None when no stream place is free or the stream failed: then it is
        polled. A stream's failure says nothing of the task: it is counted as a failed poll
        (towards max_outage_s), never fails the job or spends an attempt."""
        lane = self._lane(job)
        timeout = deadline - time.time()
        if lane.watching is None or lane.watching.locked() or timeout <= 0:
            return None
        async with lane.watching:
            try:
                status = await lane.provider.watch(handle, timeout, seen=lambda now: self._seen(job, now))
            except ProviderError:
                lane.unreachable(self.engine.options.max_outage_s)
                return None
        if status is not None:
            lane.reached()
        return status

    async def _past_deadline(self, job: Tracked, status: Status) -> None:
        """Past job_timeout_s: give the slot back (the run must not wait on it) and follow it slowly."""
        reason = f"passed job_timeout_s ({self.engine.options.job_timeout_s:g} s); still {status.detail} at the provider"
        self.overdue[job.key] = reason
        await self._slot_released(job, reason)

    def _learn(self, job: Tracked, low_s: float, high_s: float) -> None:
        model_id = job.row["model_id"]
        before = self.learned.get(model_id)
        self.learned[model_id] = (low_s, high_s) if not before else (0.8 * before[0] + 0.2 * low_s, max(before[1], high_s))
        self.engine.db.post(S.note_latency, model_id, low_s, high_s)

    # -- outcomes -------------------------------------------------------------------------------------

    async def _succeeded(self, job: Tracked, handle: Handle, status: Status) -> None:
        """Generated and paid for: settle it now and keep the task for good, then collect."""
        lane = self._lane(job)
        result = Result(status.outputs, status.cost_usd)
        if not result.outputs:
            # Ended at the provider, so no longer held against its concurrency: the next generation
            # goes out while this one's result is fetched (a round trip per job a slot would stand
            # idle). Not under a budget: the result says what it cost, and the next claim must know.
            if self.engine.options.budget_id is None:
                await self._slot_released(job, "")
            try:
                result = await self._retrying(lane, lambda: lane.provider.result(handle, self._spec(job)))
            except GenerationFailed as exc:
                return await self._generation_failed(job, exc.message, exc.kind, exc.cost_usd, exc.may_be_billed)
            except ProviderError as exc:
                if exc.status in (404, 410):
                    return await self._lost(job, f"the provider no longer has the result: {exc.message}", settle=True)
                await self._slot_released(job, f"result not fetched yet: {exc.message}")
                return await self._park(job, f"finished at the provider, result not fetched yet: {exc.message}")
        cost = result.cost_usd if result.cost_usd is not None else status.cost_usd
        spend = to_micros(cost) if cost is not None else (job.row["est_micros"] or 0)
        await self._move(job, S.GENERATED, "generated", reserve=0, spend=spend, holds_slot=0, output_url=result.outputs[0],
                         provider_status=status.detail, progress=1.0, finished_at=time.time(), error=None, error_class=None)
        self.notify("generated", job.row, "")
        await self._collect(job, handle)

    async def _collect(self, job: Tracked, handle: Handle, resumed: bool = False) -> None:
        """Download the output to disk; an expired URL is renewed from the provider, a failed
        transfer retried. What this run cannot collect stays `generated` for the next one.

        A download leaves a partial file only when its process died mid-transfer, and its job was
        then `generated`: only a job resumed at that step (`resumed`) can have one to clear."""
        lane = self._lane(job)
        row = job.row
        path = output_path(self.engine.options.outputs_dir, row)
        if resumed:
            clear_partials(path)
        url, renewed, problem = row["output_url"], False, ""
        for attempt in range(1, lane.conf.retry.max_attempts + 1):
            try:
                got = await download(self.downloads, url, path, tag=f"{job.fence.owner}-{job.fence.lease}-{attempt}")
            except ProviderError as exc:
                problem = exc.message
                if exc.kind == "permanent" and exc.status in (401, 403, 404, 410):
                    if renewed and exc.status in (404, 410):
                        return await self._lost(job, f"the provider's output file is gone: {exc.message}")
                    try:
                        url = (await self._retrying(lane, lambda: lane.provider.result(handle, self._spec(job)))).outputs[0]
                    except ProviderError as again:
                        if again.status in (404, 410):
                            return await self._lost(job, f"the provider no longer has the output: {again.message}")
                        problem = again.message
                        break
                    renewed = True
                    self.engine.db.post(S.move, job.key, job.fence, None, "output URL renewed", output_url=url)
                    continue
                await asyncio.sleep(self._backoff(lane, attempt))
                continue
            await self._move(job, S.DOWNLOADED, str(got.path), output_path=str(got.path), output_bytes=got.size,
                             output_sha256=got.sha256, error=None, error_class=None)
            facts = await self.probing.examine(got.path, row["params"], got.sha256)  # what was delivered
            self.engine.db.post(S.record_probe, job.key, facts)
            self.notify("downloaded", job.row, str(got.path))
            return
        await self._park(job, f"paid for, not collected yet: download failed: {problem}")

    async def _generation_failed(self, job: Tracked, message: str, kind: str, cost: Decimal | None,
                                 may_be_billed: bool = False) -> None:
        """A generation ended without output: a new generation if allowed (a new charge), else failed."""
        spend = to_micros(cost) or 0
        possible = (job.row["est_micros"] or 0) if cost is None and may_be_billed else 0
        attempts = job.row["attempts"] or 0
        if kind != "permanent" and attempts < self.engine.options.max_attempts:
            await self._move(job, S.PLANNED, f"attempt {attempts} failed, will retry: {message}", reserve=0, spend=spend,
                             possible=possible, holds_slot=0, error_class=kind, error=message, task_id=None, task_urls=None)
            self.engine.retry_later(job.key, self._backoff(self._lane(job), attempts))
            return
        await self._finish_failed(job, message, kind, spend=spend, possible=possible)

    async def _canceled(self, job: Tracked, cost: Decimal | None) -> None:
        """Canceled at the provider: settled at its bill, or at the estimate if it may have run."""
        queued = bucket(S.SUBMITTED, job.row["provider_status"]) == "queued"
        spend = to_micros(cost) if cost is not None else (0 if queued else job.row["est_micros"] or 0)
        await self._move(job, S.CANCELED, "canceled at the provider", reserve=0, spend=spend, holds_slot=0, finished_at=time.time())
        self.notify("canceled", job.row, "")

    async def cancel(self, job: Tracked) -> bool:
        """Cancel a task this process holds at the provider (cancel_on_interrupt); False when it had
        already finished: then it is paid for and is collected as usual by a rerun."""
        lane = self._lane(job)
        if not await lane.provider.cancel(self._handle(job)):
            return False
        await self._canceled(job, None)
        return True

    async def _lost(self, job: Tracked, reason: str, settle: bool = False) -> None:
        await self._move(job, S.LOST, reason, reserve=0, spend=(job.row["est_micros"] or 0) if settle else 0,
                         holds_slot=0, error_class="lost", error=reason, finished_at=time.time())
        self.notify("lost", job.row, reason)
