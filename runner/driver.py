"""One job's way from a claimed slot to a file on disk, with every fault kept inside the job.

This module sends (and resolves sends whose answer was lost); `runner.following` follows the task
to its end and collects the output. Every step is committed before the next external one: `submitting` right before the create request
leaves (so only a job whose request may have left is ever counted as a possible duplicate), the task
id right after the answer. Every write is fenced by (owner, lease): if another process took the job
over, the write changes nothing and the driver lets go (LostJob).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from runner import connections
from runner import store as S
from runner.catalog import Catalog
from runner.inputs import InputChanged, InputFile
from runner.probing import Prober
from runner.progress import bucket
from runner.following import Following
from runner.outputs import EnvironmentFault
from runner.providers import Handle, Job, ProviderError, make_job

if TYPE_CHECKING:
    from runner.engine import Engine
    from runner.lanes import Lane

#: Why a job claimed before a Ctrl-C goes back to planned.
STOPPED = "the run stopped before it was sent"


class LostJob(Exception):
    """Another process holds this job now; this one must not touch it."""


@dataclass(eq=False)
class Tracked:
    """A job as this process knows it: its ledger row (kept current) and its fence while driven."""

    row: dict[str, Any]
    fence: S.Fence | None = None

    @property
    def key(self) -> str:
        return self.row["key"]


class Driver(Following):
    def __init__(self, engine: "Engine", catalog: Catalog, downloads: httpx.AsyncClient, notify: Any):
        self.engine = engine
        self.catalog = catalog
        self.downloads = downloads
        self.notify = notify
        self.learned: dict[str, tuple[float, float] | None] = {}  # model id -> (typical, longest) latency
        self._on_the_wire: Counter[str] = Counter()  # request body -> sends whose task id is not recorded yet
        self._settled = asyncio.Event()
        self.overdue: dict[str, str] = {}  # key -> why it is only followed at leisure now
        self.probing = Prober()  # clips are read by a process of their own, in the order downloaded

    # -- entry points -------------------------------------------------------------------------------

    async def claimed(self, job: Tracked) -> None:
        """A job this process just claimed (a slot and its budget held): prepare, send, follow."""
        if self.engine.stopping:  # its turn came after an interrupt: nothing is sent after one
            return await self._guard(job, self._release(job, STOPPED))
        await self._guard(job, self._send(job))

    async def resume(self, job: Tracked) -> None:
        """A job taken over from a process that is gone: carry on from the step it had reached."""
        await self._guard(job, self._resume(job))

    async def _resume(self, job: Tracked) -> None:
        state = job.row["state"]
        if state == S.CLAIMED:  # nothing was sent: not ambiguous
            await self._release(job, "taken over before anything was sent")
        elif state == S.SUBMITTING:  # the create request may have reached the provider
            await self._send(job, lost=(job.row["submitted_at"] or time.time() - self.engine.options.job_timeout_s, None))
        elif state == S.SUBMITTED:
            await self._follow(job, self._handle(job), resumed=True)
        elif state == S.GENERATED:
            await self._collect(job, self._handle(job), resumed=True)

    async def _guard(self, job: Tracked, step: Any) -> None:
        """Faults stay in the job: anything unexpected is recorded on it, and the job is left where
        a rerun carries it on (a claimed job goes back to planned; anything at the provider waits)."""
        try:
            await step
        except (LostJob, EnvironmentFault, asyncio.CancelledError):
            raise
        except Exception as exc:
            message = f"unexpected {type(exc).__name__}: {exc}"
            if job.row["state"] == S.CLAIMED:
                await self._release(job, message)
            else:
                await self._move(job, None, message, error_class="unexpected", error=message)
                self.engine.park(job.key, message)

    # -- sending ------------------------------------------------------------------------------------

    async def _send(self, job: Tracked, lost: tuple[float, ProviderError | None] | None = None) -> None:
        """Prepare and send the create request until the provider answers with a task id, recorded.

        `lost` is a send whose answer never arrived (when it left, and why): it is resolved first
        (`_lost_answer`), by this run after a timeout or a reset, or after a takeover."""
        lane = self._lane(job)
        spec = self._spec(job)
        sends = 0
        while True:
            if lost is None and self.engine.stopping:  # a retry's turn after an interrupt: nothing is sent after one
                return await self._release(job, STOPPED)
            try:
                prepared = await self._retrying(lane, lambda: lane.provider.prepare(spec))
            except InputChanged as exc:
                return await self._finish_failed(job, str(exc), "permanent")
            except ProviderError as exc:
                return await self._not_sent(job, exc)
            body = json.dumps([prepared.endpoint, prepared.payload], sort_keys=True)
            handle: Handle | None = None
            if lost is not None:
                sent_at, error = lost
                found = await self._lost_answer(job, prepared, body, sent_at, error.message if error else "a runner stopped mid-submit")
                if found is None:
                    return
                lost = None
                if isinstance(found, Handle):
                    handle = found
                elif error is not None and (error.kind == "permanent" or self._too_many_unanswered(job, lane)):
                    return await self._finish_failed(job, error.message, error.kind)
                elif error is not None and (sends >= lane.conf.retry.max_attempts or self.engine.stopping):
                    return await self._release(job, error.message, backoff=True)
            if handle is None:
                sent_at = time.time()
                await self._move(job, S.SUBMITTING, submitted_at=sent_at)  # committed before the request leaves
                sends += 1
            self._on_the_wire[body] += 1  # a send of this body whose task id is not recorded yet
            try:
                if handle is None:
                    handle = await self._submit(lane, prepared)
                    if handle is None:  # held at the door by an interrupt: it never left
                        return await self._release(job, STOPPED)
                    lane.reached()
                await self._record(job, handle)
                break
            except ProviderError as exc:
                if not exc.maybe_accepted:
                    return await self._not_sent(job, exc)
                lane.reached()
                lost = (sent_at, exc)
            except sqlite3.IntegrityError:  # another job with the same request recorded this task id
                lost = (sent_at, ProviderError(f"task {handle.task_id} belongs to another job with the same request",
                                               kind="retryable", maybe_accepted=True))
            except (InputChanged, EnvironmentFault, LostJob):
                raise
            except Exception as exc:  # a plugin's bug reading the answer: the task may exist
                message = f"unexpected {type(exc).__name__} while submitting: {exc}"
                await self._ambiguous(job, message)  # counted whatever the budget: it is not sent again
                return await self._finish_failed(job, message, "permanent")
            finally:
                self._on_the_wire[body] -= 1
                self._settled.set()
        self.notify("submitted", job.row, handle.task_id)
        await self._follow(job, handle, submitted=time.monotonic())

    async def _submit(self, lane: "Lane", prepared: Job) -> Handle | None:
        """The provider's create call, or None when an interrupt held it back before any of its
        requests left (its turn for a connection came after the Ctrl-C)."""
        door = connections.Door(lambda: self.engine.stopping)
        token = connections.DOOR.set(door)
        try:
            return await lane.provider.submit(prepared)
        except Exception:
            if door.held:  # whatever the plugin made of connections.Held
                return None
            raise
        finally:
            connections.DOOR.reset(token)

    async def _record(self, job: Tracked, handle: Handle) -> None:
        attempts = (job.row["attempts"] or 0) + 1
        await self._move(job, S.SUBMITTED, f"task {handle.task_id}", task_id=handle.task_id, task_urls=json.dumps(handle.urls),
                         submitted_at=time.time(), attempts=attempts, provider_status=None, progress=None)

    async def _lost_answer(self, job: Tracked, prepared: Job, body: str, sent_at: float, message: str) -> Handle | bool | None:
        """A create request whose answer never arrived may have started a paid generation.

        Where the provider keeps a request history (fal), look it up: adopt the request if it is
        there (nothing paid twice), send again if it provably is not, and leave the job for a later
        run if the history cannot be read. Replicates send identical requests: the lookup waits
        until this process has recorded the task ids of its other sends of the same request, and a
        task id already recorded for another job is never adopted. Elsewhere (Runway) count one
        possible duplicate, held against the budget, and wait as long as the untracked task may run
        before sending again. Returns the adopted task, True to send again, None when the job was
        left or released."""
        while self._on_the_wire[body]:
            self._settled.clear()
            await self._settled.wait()
        lane = self._lane(job)
        try:
            found = await self._retrying(lane, lambda: lane.provider.find(prepared, sent_at))
        except ProviderError as exc:
            await self._park(job, f"a submission's answer was lost ({message}) and the provider's request history "
                                  f"cannot be read ({exc.message}); a later run looks it up again")
            return None
        if found is not None:
            known = await self.engine.db(S.known_tasks, [handle.task_id for handle in found])
            fresh = [handle for handle in found if handle.task_id not in known]
            if fresh:
                await self._move(job, None, f"answer lost ({message}); task {fresh[0].task_id} found in the provider's request history")
                return fresh[0]
            await self._move(job, None, f"answer lost ({message}); the provider has no such request: sending again")
            return True
        if not await self._ambiguous(job, message):
            await self._release(job, message)
            return None
        await asyncio.sleep(self._hold_s(job, lane))
        return True

    def _too_many_unanswered(self, job: Tracked, lane: "Lane") -> bool:
        """A job whose submissions keep going unanswered stops: each one may be a paid generation."""
        return (job.row["possible_duplicates"] or 0) >= self.engine.options.max_attempts * lane.conf.retry.max_attempts

    async def _not_sent(self, job: Tracked, exc: ProviderError) -> None:
        """Nothing reached the provider (or it refused before starting anything): not a generation."""
        lane = self._lane(job)
        if exc.status in (401, 403):
            lane.stopped = lane.stopped or f"{lane.provider.name} refused the API key: {exc.message}"
            return await self._release(job, exc.message)
        if exc.kind == "permanent":
            return await self._finish_failed(job, exc.message, "permanent")
        if exc.never_sent:
            lane.unreachable(self.engine.options.max_outage_s)
        if exc.kind == "rate_limited" and exc.retry_after is not None and exc.retry_after > lane.conf.retry.backoff_max_s * 10:
            # Not a burst to back off from: a quota (Runway's daily generation limit answers 429 with
            # the time until it resets). Retrying would only burn requests; this model waits for a rerun.
            lane.stop_model(job.row["model_id"], f"rate limited for {exc.retry_after:.0f} s (a quota, such as a daily "
                                                 f"generation limit): {exc.message}")
        await self._release(job, exc.message, backoff=True, after=exc.retry_after)

    async def _ambiguous(self, job: Tracked, message: str) -> bool:
        """A create request whose answer never arrived may have started a paid generation the ledger
        cannot follow: count it once and hold its estimate against the budget. True when the job may
        be sent again within the budget (else it goes back to planned, and the run stops at its budget)."""
        fits = await self.engine.db(S.ambiguous, job.key, job.fence, message, self.engine.options.budget_id)
        if fits is None:
            raise LostJob(job.key)
        estimate = job.row["est_micros"] or 0
        job.row["possible_micros"] = (job.row["possible_micros"] or 0) + estimate
        job.row["possible_duplicates"] = (job.row["possible_duplicates"] or 0) + 1
        if not fits:
            self.engine.budget_reached()
        return fits

    def _hold_s(self, job: Tracked, lane: "Lane") -> float:
        """Before sending again after an ambiguous send, wait as long as the untracked task may run:
        it may hold one of the account's slots."""
        learned = self.learned.get(job.row["model_id"])
        hold = learned[1] if learned else lane.conf.min_poll_interval_s
        return min(max(hold, self._backoff(lane, 1)), self.engine.options.job_timeout_s)

    async def _finish_failed(self, job: Tracked, message: str, kind: str, *, spend: int = 0, possible: int = 0) -> None:
        await self._move(job, S.FAILED, message, reserve=0, spend=spend, possible=possible, holds_slot=0,
                         error_class=kind, error=message, finished_at=time.time())
        self.notify("failed", job.row, message)

    async def _release(self, job: Tracked, reason: str, backoff: bool = False, after: float | None = None) -> None:
        """Back to `planned`, its slot and reservation freed: nothing was generated for it."""
        await self._move(job, S.PLANNED, reason, reserve=0, holds_slot=0, error=reason, error_class="retryable")
        if not self.engine.stopping and self._lane(job).sendable(job.row["model_id"]):
            self.engine.retry_later(job.key, after if after is not None else self._backoff(self._lane(job), 1) if backoff else 0.0)

    async def _slot_released(self, job: Tracked, reason: str) -> None:
        if job.row["holds_slot"]:
            await self._move(job, None, reason, holds_slot=0)

    async def _park(self, job: Tracked, reason: str) -> None:
        await self._move(job, None, reason, error=reason)
        self.engine.park(job.key, reason)

    # -- plumbing -----------------------------------------------------------------------------------

    async def _move(self, job: Tracked, state: str | None, detail: str = "", **fields: Any) -> bool:
        """A fenced change of the job, committed before the caller goes on; LostJob if fenced out."""
        if not await self.engine.db(S.move, job.key, job.fence, state, detail, **fields):
            raise LostJob(job.key)
        row = job.row
        before = bucket(row["state"], row["provider_status"])
        if fields.get("holds_slot") == 0 and row["holds_slot"]:
            self.engine.slot_freed(self._lane(job), row["model_id"])
        if "reserve" in fields:
            row["reserved_micros"] = fields.pop("reserve")
            self.engine.money_freed()
        spend = fields.pop("spend", 0)
        row["spent_micros"] = (row["spent_micros"] or 0) + spend
        row["possible_micros"] = (row["possible_micros"] or 0) + fields.pop("possible", 0)
        row.update(fields)
        if state is not None:
            row["state"] = state
        after = bucket(row["state"], row["provider_status"])
        if after != before or spend:
            self.engine.changed(before, after, spend)
        return True

    def _lane(self, job: Tracked) -> "Lane":
        return self.engine.lanes[job.row["provider"]]

    def _spec(self, job: Tracked) -> Job:
        row = job.row
        inputs = tuple(InputFile(**f) for f in json.loads(row["inputs"]))
        return make_job(row["key"], self.catalog.models[row["model"]], row["endpoint"], json.loads(row["payload"]), inputs)

    @staticmethod
    def _handle(job: Tracked) -> Handle:
        return Handle(job.row["task_id"], json.loads(job.row["task_urls"] or "{}"))

    @staticmethod
    def _backoff(lane: "Lane", attempt: int) -> float:
        """Exponential backoff with full jitter."""
        ceiling = min(lane.conf.retry.backoff_max_s, lane.conf.retry.backoff_base_s * 2 ** max(0, attempt - 1))
        return random.uniform(0, ceiling)

    async def _retrying(self, lane: "Lane", call: Any) -> Any:
        """A call that starts nothing at the provider (prepare, poll, result), retried on 429, 5xx
        and network errors with backoff, honouring Retry-After."""
        for attempt in range(1, lane.conf.retry.max_attempts + 1):
            try:
                return await call()
            except ProviderError as exc:
                if exc.kind == "permanent" or attempt == lane.conf.retry.max_attempts or self.engine.stopping:
                    raise
                wait = exc.retry_after if exc.retry_after is not None else self._backoff(lane, attempt)
                await asyncio.sleep(min(wait, lane.conf.retry.backoff_max_s))
        raise AssertionError("unreachable")
