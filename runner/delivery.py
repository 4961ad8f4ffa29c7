"""Lifecycle hooks fed from the ledger's events: at least once, in order, nothing missed.

Every state change is an event in the ledger, whichever process made it. A pass reads the events
after each plugin's cursor, calls the plugin's hooks for them, and then moves the cursor. So an
event that happened while no runner ran (a job another process finished, a crash between a
download and its hook) is delivered by the next run; an event is delivered again only if a runner
died between calling a hook and saving the cursor, or two runners delivered the same events at once.
Hooks must therefore be idempotent (the job key and the event's state identify an event).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from runner import plugins
from runner import store as S
from runner.jobview import JobView, RunContext
from runner.writer import Writer

EVERY_S = 1.0
BATCH = 1000
#: The hook each observed state calls, and how the event's detail is passed to it.
HOOKS = {S.SUBMITTED: "job_submitted", S.GENERATED: "job_generated", S.DOWNLOADED: "job_finished",
         S.FAILED: "job_failed", S.LOST: "job_failed"}


class Delivery:
    def __init__(self, writer: Writer, run: RunContext):
        self.db = writer
        self.run = run
        self._stop = asyncio.Event()

    async def until_stopped(self) -> None:
        """Deliver every second, and once more after `stop()`: the run's last events included."""
        while True:
            stopping = self._stop.is_set()
            await self.deliver()
            if stopping:
                return
            try:
                await asyncio.wait_for(self._stop.wait(), EVERY_S)
            except asyncio.TimeoutError:
                pass

    def stop(self) -> None:
        self._stop.set()

    async def deliver(self) -> None:
        observers = plugins.observers()
        if not observers:
            return
        cursors = await self.db(S.hook_cursors, sorted(observers))
        after = min(cursors.values())
        while True:
            events = await self.db(S.observed_events, after, BATCH)
            if not events:
                return
            for name, hooks in observers.items():
                mine = [event for event in events if event["event_id"] > cursors[name]]
                for event in mine:
                    self._call(name, hooks, event)
                if mine and await self.db(S.advance_cursor, name, cursors[name], mine[-1]["event_id"]):
                    cursors[name] = mine[-1]["event_id"]
            after = events[-1]["event_id"]
            if len(events) < BATCH:
                return

    def _call(self, plugin: str, hooks: dict[str, Any], event: dict[str, Any]) -> None:
        hook = HOOKS[event["event_state"]]
        caller = hooks.get(hook)
        if caller is None:
            return
        job = JobView.from_row(event)
        detail = event["event_detail"] or ""
        extra: dict[str, Any] = {
            "job_submitted": {"task_id": detail.removeprefix("task ")},
            "job_finished": {"path": Path(detail)},
            "job_failed": {"error": detail},
        }.get(hook, {})
        try:  # an observer's bug must not stop the sweep or lose state: it is named, the others go on
            caller(job=job, run=self.run, **extra)
        except Exception as exc:
            print(f"warning: plugin {plugin!r}, hook {hook}: {type(exc).__name__}: {exc}", file=sys.stderr)
