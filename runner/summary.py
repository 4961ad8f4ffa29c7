"""The end of a run: what happened to every job, what it cost, and what a rerun would do."""

from __future__ import annotations

import os
import shlex
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from runner import store as S
from runner.engine import Outcome
from runner.locate import Found
from runner.money import usd_text
from runner.plan import Plan
from runner.publish import Published

EXIT_INCOMPLETE = 1
EXIT_ENVIRONMENT = 3
EXIT_INTERRUPTED = 130

_SHOWN = 10  # lines per kind of problem before "and N more"


def summarize(rows: list[dict[str, Any]], outcome: Outcome, plan: Plan, command: list[str],
              published: tuple[list[Published], str | None], outputs_dir: Path, ledger: Found) -> int:
    """Print the summary (with the outputs folders and galleries `published`, and the ledger used:
    found in a folder above, it is not where a user may expect); returns the exit status."""
    states = Counter(row["state"] for row in rows)
    words = {S.DOWNLOADED: "downloaded", S.GENERATED: "generated (paid, not collected yet)", S.LOST: "lost",
             S.FAILED: "failed", S.CANCELED: "canceled", S.SUBMITTED: "at the provider", S.SUBMITTING: "submitting",
             S.CLAIMED: "claimed", S.PLANNED: "not submitted"}
    lines = [f"{len(rows)} jobs: " + ", ".join(f"{states[s]} {words[s]}" for s in words if states[s])]
    estimated = sum((row["est_micros"] or 0) * (row["attempts"] or 0) for row in rows)
    settled = sum(row["spent_micros"] or 0 for row in rows)
    possible = sum(row["possible_micros"] or 0 for row in rows)
    spend = f"spend: settled {usd_text(settled)} (as billed, or estimated where the provider does not say), estimated {usd_text(estimated)}"
    if plan.unpriced:
        spend += f" (+ {len(plan.unpriced)} job(s) with price unknown)"
    lines.append(spend)
    lines += _where(rows, plan, published, outputs_dir, ledger)
    duplicates = sum(row["possible_duplicates"] or 0 for row in rows)
    if duplicates:
        lines.append(f"possible duplicate charges: {duplicates} submission(s) may have started a generation the runner "
                     f"could not record (the answer was lost); check the provider's usage page")
    if possible:
        lines.append(f"possibly billed on top of the settled spend: up to {usd_text(possible)} (lost answers, and failed "
                     f"generations the provider may still charge for)")
    reopened = outcome.reopened
    if reopened[S.CANCELED]:
        lines.append(f"{reopened[S.CANCELED]} job(s) canceled earlier were generated again (a new charge each)")
    if reopened[S.LOST]:
        lines.append(f"{reopened[S.LOST]} lost job(s) were generated again (regenerate_lost=true: a second charge each)")
    lines += _listed("failed", [row for row in rows if row["state"] == S.FAILED], lambda row: row["error"])
    lines += _listed("lost (paid for; the provider no longer has the output; regenerate_lost=true generates it again)",
                     [row for row in rows if row["state"] == S.LOST], lambda row: row["error"])
    by_key = {row["key"]: row for row in rows}
    parked = [by_key[key] for key in outcome.parked if key in by_key and by_key[key]["state"] not in S.FINAL]
    lines += _listed("left for a later run", parked, lambda row: outcome.parked[row["key"]])
    if outcome.waiting_on_others:
        lines.append(f"{len(outcome.waiting_on_others)} job(s) are being driven by another runner process")
    for provider, why in sorted(outcome.lanes_stopped.items()):
        lines.append(f"stopped sending to {provider}: {why}")
    if outcome.budget_stopped and states[S.PLANNED]:
        lines.append(f"stopped at budget_usd: {states[S.PLANNED]} job(s) not submitted; raise budget_usd and rerun to continue")
    unfinished = sum(states[s] for s in (S.PLANNED, S.CLAIMED, S.SUBMITTING, S.SUBMITTED, S.GENERATED))
    if unfinished:
        resume = "python -m runner " + " ".join(shlex.quote(arg) for arg in command)
        lines.append(f"{unfinished} job(s) unfinished; to carry on (nothing paid for is paid again), run the same command: {resume}")
    print("\n".join(lines))
    if outcome.fault:
        print(f"error: {outcome.fault}; no new generations were started after it, and every task id received is in the "
              f"ledger: fix it and run the same command to collect them", file=sys.stderr)
        return EXIT_ENVIRONMENT
    if outcome.interrupted:
        return EXIT_INTERRUPTED
    return 0 if states[S.DOWNLOADED] == len(rows) else EXIT_INCOMPLETE


def _where(rows: list[dict[str, Any]], plan: Plan, published: tuple[list[Published], str | None], outputs_dir: Path,
           ledger: Found) -> list[str]:
    """The ledger, every outputs folder and its gallery, files no longer on disk, and jobs whose files
    stay where an earlier run put them (`name=` and `outputs_dir=` apply to jobs new to the ledger)."""
    folders, problem = published
    lines = [f"ledger: {_shown(ledger.db)}"]
    lines += [f"outputs: {_shown(done.folder)} ({done.jobs} jobs of that sweep; gallery {_shown(done.report)})" for done in folders]
    if problem:
        lines.append(f"warning: {problem}")
    gone = [row for row in rows if row["state"] == S.DOWNLOADED
            and not (row["output_path"] and os.path.isfile(ledger.absolute(row["output_path"])))]
    if gone:
        lines.append(f"{len(gone)} downloaded file(s) are no longer on disk: `video-runner verify` marks them, then the same "
                     f"command collects them again from the provider (no new generation)")
    named = {job.key: job.sweep for job in plan.jobs}
    earlier = Counter(row["sweep"] for row in rows if named.get(row["key"], row["sweep"]) != row["sweep"])
    for sweep, n in sorted(earlier.items()):
        lines.append(f"{n} job(s) were first planned under sweep {sweep!r} and keep its folder: a job's name= and "
                     f"outputs_dir= are those of the run that first planned it")
    under = _Under(outputs_dir)
    elsewhere = [row for row in rows if row["output_path"] and not under(ledger.absolute(row["output_path"]))]
    if elsewhere:
        where = sorted({_shown(ledger.resolve(row["output_path"]).parents[1]) for row in elsewhere})
        lines.append(f"{len(elsewhere)} file(s) downloaded by an earlier run stay where they are ({', '.join(where)}), "
                     f"outside outputs_dir={outputs_dir}")
    return lines


def _shown(path: Path) -> str:
    """A path as short as it goes: relative to the current folder when it is under it."""
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


class _Under:
    """Is a path in `folder`? Told by its spelling first (a sweep may have 100,000 files), by
    following links only for a path not spelled under the folder."""

    def __init__(self, folder: Path):
        self.real = os.path.realpath(folder)
        self.prefixes = tuple({os.path.join(os.path.abspath(folder), ""), os.path.join(self.real, "")})

    def __call__(self, path: str) -> bool:
        if os.path.normpath(path).startswith(self.prefixes):
            return True
        return Path(os.path.realpath(path)).is_relative_to(self.real)


def _listed(what: str, rows: list[dict[str, Any]], reason: Any) -> list[str]:
    lines = [f"{what} {row['key'][:12]} {row['model']} {row['prompt_id']}: {reason(row)}" for row in rows[:_SHOWN]]
    if len(rows) > _SHOWN:
        lines.append(f"... and {len(rows) - _SHOWN} more {what.split(' ')[0]}")
    return lines
