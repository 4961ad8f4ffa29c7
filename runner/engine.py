"""The engine: schedules a sweep's jobs onto their providers' slots until every output is on disk.

One asyncio loop drives every job this process holds (`runner.driver` follows one job through
submit, poll and collection); the ledger is written by its own thread (`runner.writer`), so the
loop never waits on SQLite. Slots and the budget are claimed in the ledger in batches, so the
limits hold across every process sharing it, and a dead process's tasks keep their slots until the
process that takes them over learns they ended. The loop does no work per queued job while it
waits: each lane keeps its own queue, and a lane that hit a limit is not asked again until a slot
frees or a short rescan interval passes.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from runner import pacing
from runner import store as S
from runner.catalog import Catalog
from runner.driver import Driver, LostJob, Tracked
from runner.lanes import Lane, Options, Outcome
from runner.owners import Identity, Liveness
from runner.outputs import EnvironmentFault
from runner.progress import bucket
from runner.writer import LedgerUnusable, Writer

#: How often the scheduler looks again at what other processes changed (slots they freed, jobs
#: they finished, handed back or abandoned by dying).
RESCAN_S = 0.5
OTHERS_S = 1.0
SUBMIT_GRACE_S = 5.0  # at an interrupt, how long a submit on the wire may take to get its task id
CLAIM_BATCH = 256
QUEUED_PER_PASS = 10_000


class Engine:
    def __init__(
        self,
        writer: Writer,
        sweep_id: str,
        lanes: dict[str, Lane],
        catalog: Catalog,
        options: Options,
        downloads: httpx.AsyncClient,
        me: Identity,
        notify: Callable[[str, dict[str, Any], str], None] = lambda event, row, detail: None,
        on_change: Callable[[Counter[str], int], None] = lambda counts, spent: None,
        more: AsyncIterator[list[str]] | None = None,
    ):
        self.db = writer
        self.sweep_id = sweep_id
        self.lanes = lanes
        self.options = options
        self.me = me
        self.liveness = Liveness(me)
        self.outcome = Outcome()
        self.driver = Driver(self, catalog, downloads, notify)
        self.jobs: dict[str, Tracked] = {}  # the jobs this run drives or watches (queued ones are keys in their lane)
        self.counts: Counter[str] = Counter()  # jobs of this run by state, kept as they change
        self.spent = 0  # micro-dollars settled on this run's jobs
        self.on_change = on_change
        self._running: dict[asyncio.Task[None], str] = {}
        self._ended: deque[asyncio.Task[None]] = deque()
        self._delayed: list[tuple[float, str]] = []  # (monotonic time, key): retries after a backoff
        self._others: set[str] = set()
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._claiming = False
        self._budget_blocked = False
        self.more = more
        self._recording: asyncio.Task[None] | None = None

    # -- what the driver and the run see ----------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self, fault: str | None = None) -> None:
        """Stop submitting; what is in flight keeps its committed state for the next run."""
        if fault and self.outcome.fault is None:
            self.outcome.fault = fault
        if not fault:
            self.outcome.interrupted = True
        self._stopping.set()
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def retry_later(self, key: str, delay_s: float) -> None:
        """A job back in `planned`: claimable again after `delay_s`."""
        heapq.heappush(self._delayed, (time.monotonic() + delay_s, key))
        self._wake.set()

    def park(self, key: str, reason: str) -> None:
        """Left for a later run (still at the provider, or paid and not yet collected)."""
        self.outcome.parked[key] = reason

    def changed(self, before: str, after: str, spent: int = 0) -> None:
        """A job moved between progress buckets (runner.progress.bucket), or money was settled."""
        self.counts[before] -= 1
        self.counts[after] += 1
        self.spent += spent
        self.on_change(self.counts, self.spent)

    def slot_freed(self, lane: Lane, model_id: str) -> None:
        """A slot this process held is free: its lane (and model) is claimed from at once, not
        after the scheduler's next pass (a few passes of the loop a slot would stand idle)."""
        lane.held -= 1
        lane.blocked.discard(None)
        lane.blocked.discard(model_id)
        self._claim_now()
        self._wake.set()

    def budget_reached(self) -> None:
        self._budget_blocked = self.outcome.budget_stopped = True

    def money_freed(self) -> None:
        self._budget_blocked = False
        self._wake.set()

    # -- the scheduler ----------------------------------------------------------------------------

    async def run(self) -> Outcome:
        # Counted in SQL; of each job only what queues it (a job's whole row is read when it is claimed).
        for state, provider_status, jobs, spent in await self.db(S.sweep_totals, self.sweep_id):
            self.counts[bucket(state, provider_status)] += jobs
            self.spent += spent
        slim = await self.db(S.sweep_jobs, self.sweep_id, self._wanted)
        await self._take(slim)
        del slim
        if self.more is not None:  # the rest of a large plan, still being recorded: queued as it goes in
            self._recording = asyncio.create_task(self._record_more(self.more))
        await self._look_at_others()  # first: adopt a dead runner's tasks before claiming new slots
        last_others = last_rescan = time.monotonic()
        while not self.stopping:
            now = time.monotonic()
            if self._others and now - last_others >= OTHERS_S:
                await self._look_at_others()
                last_others = now
            if now - last_rescan >= RESCAN_S:  # other processes free slots and money too
                for lane in self.lanes.values():
                    lane.blocked.clear()
                self._budget_blocked = False
                last_rescan = now
            self._due()
            self._claim_now()
            if self._finished():
                break
            self._wake.clear()
            timeout = min(RESCAN_S, max(0.0, self._delayed[0][0] - now)) if self._delayed else RESCAN_S
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except asyncio.TimeoutError:
                pass
            self._reap()
        await self._wind_down()
        for name, lane in self.lanes.items():
            if lane.stopped:
                self.outcome.lanes_stopped[name] = lane.stopped
            for model_id, why in lane.stopped_models.items():
                self.outcome.lanes_stopped[f"{name} {model_id}"] = why
        self.outcome.waiting_on_others = sorted(self._others)
        return self.outcome

    @property
    def _wanted(self) -> list[str]:
        """The states of the jobs a run takes on: planned, driven, and those it generates again."""
        reopened = [state for state, wanted in ((S.CANCELED, True), (S.FAILED, self.options.retry_failed),
                                                (S.LOST, self.options.regenerate_lost)) if wanted]
        return [S.PLANNED, *S.DRIVEN, *reopened]

    async def _take(self, slim: list[tuple[Any, ...]]) -> None:
        """Jobs of the sweep (SLIM tuples) into the run: planned ones queued, driven ones watched,
        finished ones generated again where the options say so."""
        for model_id in {row[2] for row in slim} - set(self.driver.learned):
            self.driver.learned[model_id] = await self.db(S.latency, model_id)
        for index, values in enumerate(slim):
            if index % QUEUED_PER_PASS == 0:
                await asyncio.sleep(0)  # 100,000 jobs are queued over several passes: a Ctrl-C is heard meanwhile
            key, provider, model_id, state, _, est = values
            if state == S.PLANNED:
                self._queue(key, provider, model_id, est)
            elif state in S.DRIVEN:
                self.jobs[key] = Tracked(dict(zip(S.SLIM, values)))
                self._others.add(key)
            elif await self._reopen(dict(zip(S.SLIM, values))):
                self.changed(bucket(state, values[4]), bucket(S.PLANNED, None))
                self._queue(key, provider, model_id, est)

    async def _record_more(self, more: AsyncIterator[list[str]]) -> None:
        """Take on each part of the plan once recorded (`more` yields the keys of each part)."""
        wanted = set(self._wanted)
        try:
            async for keys in more:
                slim = await self.db(S.jobs_slim, keys)
                for row in slim:
                    self.counts[bucket(row[3], row[4])] += 1
                    self.spent += row[6] or 0
                await self._take([row[:6] for row in slim if row[3] in wanted])
                self.on_change(self.counts, self.spent)
                self._wake.set()
        except (LedgerUnusable, EnvironmentFault) as exc:
            self.stop(str(exc))
        finally:
            self._wake.set()

    def _reap(self) -> None:
        """Drivers that ended: a job another process took over is watched; an environment fault
        stops the run; anything else escaping a driver (or the recording) is a bug and must surface."""
        if self._recording is not None and self._recording.done() and not self._recording.cancelled():
            if self._recording.exception() is not None:
                raise self._recording.exception()  # type: ignore[misc]
        while self._ended:
            task = self._ended.popleft()
            key = self._running.pop(task)
            tracked = self.jobs.get(key)
            if tracked is not None and tracked.row["state"] in S.FINAL:
                del self.jobs[key]  # done with: the run keeps no row per finished job
            if task.cancelled():
                continue
            error = task.exception()
            if isinstance(error, LostJob):
                self._others.add(key)
            elif isinstance(error, (EnvironmentFault, LedgerUnusable)):
                self.stop(str(error))
            elif error is not None:
                raise error

    def _finished(self) -> bool:
        """Nothing running (but jobs past their deadline, followed at leisure), nobody else driving
        our jobs, and nothing left that this run could still claim."""
        if self._claiming or self._others or any(key not in self.driver.overdue for key in self._running.values()):
            return False
        if self._recording is not None and not self._recording.done():  # more of the plan is coming
            return False
        waiting = any(lane.waiting() for lane in self.lanes.values())
        waiting = waiting or any(self._lane_of(key).sendable(self.jobs[key].row["model_id"]) for _, key in self._delayed)
        return not waiting or self._budget_blocked

    def _claimable(self) -> bool:
        if self.stopping or self._budget_blocked:
            return False
        return any(self._ready(lane) for lane in self.lanes.values())

    @staticmethod
    def _ready(lane: Lane) -> bool:
        if lane.stopped or None in lane.blocked:
            return False
        return any(queue and model not in lane.blocked and model not in lane.stopped_models for model, queue in lane.queues.items())

    def _queue(self, key: str, provider: str, model_id: str, est: int | None) -> None:
        self.lanes[provider].queues.setdefault(model_id, deque()).append((key, est or 0))

    def _requeue(self, key: str) -> None:
        """A job this run drove (or watched) claimable again: it is queued, no longer tracked."""
        row = self.jobs.pop(key).row
        self._queue(key, row["provider"], row["model_id"], row["est_micros"])

    def _lane_of(self, key: str) -> Lane:
        return self.lanes[self.jobs[key].row["provider"]]

    def _due(self) -> None:
        now = time.monotonic()
        while self._delayed and self._delayed[0][0] <= now:
            self._requeue(heapq.heappop(self._delayed)[1])

    def _claim_now(self) -> None:
        if not self._claiming and self._claimable():
            self._claiming = True
            asyncio.create_task(self._claim())

    async def _claim(self) -> None:
        """One batch of claims across every lane with room; granted jobs start at once."""
        try:
            candidates: list[tuple[str, str, str, int]] = []
            for name, lane in self.lanes.items():
                if not self._ready(lane):
                    continue
                room = max(1, lane.conf.concurrency - lane.held)
                for model_id, queue in lane.queues.items():
                    left = lane.daily_left.get(model_id)
                    while queue and lane.sendable(model_id) and model_id not in lane.blocked and room and left != 0 \
                            and len(candidates) < CLAIM_BATCH:
                        key, est = queue.popleft()
                        candidates.append((key, name, model_id, est))
                        room -= 1
                        left = None if left is None else left - 1
            if not candidates:
                return
            provider_limits = {name: lane.conf.concurrency for name, lane in self.lanes.items()}
            model_limits = {(name, m): n for name, lane in self.lanes.items() for m, n in lane.model_limits.items()}
            results = await self.db(S.claim, self.me.id, candidates, provider_limits, model_limits, self.options.budget_id)
            for result, (key, name, model_id, est) in reversed(list(zip(results, candidates))):  # put back in order
                lane = self.lanes[name]
                if result.fence is not None:
                    await pacing.turn()  # the granted jobs' first steps spread over the loop's passes
                    if model_id in lane.daily_left:
                        lane.daily_left[model_id] -= 1
                        if lane.daily_left[model_id] <= 0:
                            lane.stop_model(model_id, "the account's daily generation limit for this model is reached")
                    self.jobs[key] = Tracked(result.row)
                    self.changed(bucket(S.PLANNED, None), bucket(S.CLAIMED, None))
                    self._start(key, result.fence, self.driver.claimed)
                    continue
                if result.reason == "state":  # another process claimed it first
                    self.jobs[key] = Tracked(dict(zip(S.SLIM, (key, name, model_id, S.PLANNED, None, est))))
                    self._others.add(key)
                    continue
                lane.queues[model_id].appendleft((key, est))
                if result.reason == "budget":
                    self._budget_blocked = self.outcome.budget_stopped = True
                else:
                    lane.blocked.add(None if result.reason == "provider" else model_id)
        except (LedgerUnusable, EnvironmentFault) as exc:
            self.stop(str(exc))
        finally:
            self._claiming = False
            self._wake.set()

    def _start(self, key: str, fence: S.Fence, step: Callable[[Tracked], Any]) -> None:
        tracked = self.jobs[key]
        tracked.fence = fence
        tracked.row.update(owner=fence.owner, lease=fence.lease)
        if tracked.row["holds_slot"]:
            self._lane_of(key).held += 1
        self._others.discard(key)
        task = asyncio.create_task(step(tracked))
        task.add_done_callback(self._ended_task)
        self._running[task] = key

    def _ended_task(self, task: asyncio.Task[None]) -> None:
        self._ended.append(task)
        self._wake.set()

    async def _reopen(self, row: dict[str, Any]) -> bool:
        """What a rerun generates again: failed jobs when asked, canceled ones always (a new charge),
        lost ones only when asked (a second charge for the same clip)."""
        wanted = {S.CANCELED: True, S.FAILED: self.options.retry_failed, S.LOST: self.options.regenerate_lost}
        if not wanted.get(row["state"]):
            return False
        detail = {S.CANCELED: "canceled earlier: generating again (a new charge)", S.FAILED: "retry requested",
                  S.LOST: "output lost: generating again (a second charge)"}[row["state"]]
        if not await self.db(S.reopen, row["key"], [row["state"]], detail, attempts=0):
            return False
        self.outcome.reopened[row["state"]] += 1
        row.update(state=S.PLANNED, task_id=None, task_urls=None, holds_slot=0)
        return True

    async def _look_at_others(self) -> None:
        """Jobs another process drives: done when it finishes them, ours when it is dead (taken over
        before any new slot is claimed), claimable again when it hands one back for a retry."""
        keys = sorted(self._others)
        rows = await self.db(S.rows, keys, "key, state, provider_status, owner, lease, holds_slot")
        owners = await self.db(S.owners, [r["owner"] for r in rows if r["owner"]])
        for row in rows:
            key = row["key"]
            tracked = self.jobs[key]
            if row["state"] != tracked.row["state"]:
                self.changed(bucket(tracked.row["state"], tracked.row["provider_status"]), bucket(row["state"], row["provider_status"]))
            if row["state"] in (S.PLANNED, *S.FINAL):
                self._others.discard(key)
                tracked.row.update(row)
                if row["state"] == S.PLANNED:
                    self._requeue(key)
                else:
                    del self.jobs[key]
            elif not self.liveness.alive(owners.get(row["owner"])):
                fence = await self.db(S.adopt, key, S.Fence(row["owner"], row["lease"]), self.me.id)
                if fence is not None:
                    tracked.row.update(await self.db(S.job, key) or {})
                    self._start(key, fence, self.driver.resume)
            else:
                tracked.row.update(row)

    async def cancel_in_flight(self) -> int:
        """Cancel at the provider every task this process holds (cancel_on_interrupt, after run())."""
        canceled = 0
        for tracked in self.jobs.values():
            if tracked.fence is None or tracked.row["state"] != S.SUBMITTED:
                continue
            try:
                if await self.driver.cancel(tracked):
                    canceled += 1
                    self.outcome.parked.pop(tracked.key, None)
            except Exception as exc:  # a failed cancel leaves the task running, to be collected later
                self.park(tracked.key, f"cancel failed: {exc}")
        return canceled

    async def _wind_down(self) -> None:
        """Let submits on the wire record their task id (briefly), then stop following the rest."""
        if self._recording is not None:  # what is not recorded yet, the next run records
            self._recording.cancel()
            await asyncio.gather(self._recording, return_exceptions=True)
        deadline = time.monotonic() + SUBMIT_GRACE_S
        while time.monotonic() < deadline:
            on_the_wire = [task for task, key in self._running.items() if not task.done() and self.jobs[key].row["state"] == S.SUBMITTING]
            if not on_the_wire:
                break
            await asyncio.wait(on_the_wire, timeout=min(0.05, deadline - time.monotonic()))  # until each has its task id
        for task in self._running:
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        await self.driver.probing.close()  # a clip not probed now is by `video-runner verify`
        self._reap()
        for key, tracked in self.jobs.items():
            if tracked.row["state"] in (S.SUBMITTED, S.GENERATED) and tracked.fence is not None and key not in self.outcome.parked:
                self.park(key, self.driver.overdue.get(key, "the run stopped before it was collected"))
