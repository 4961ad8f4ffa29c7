"""The end of a run: what happened to every job, what it cost, and what a rerun would do."""

from __future__ import annotations

import shlex
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from runner import store as S
from runner.engine import Outcome
from runner.money import usd_text
from runner.plan import Plan

EXIT_INCOMPLETE = 1
EXIT_ENVIRONMENT = 3
EXIT_INTERRUPTED = 130

_SHOWN = 10  # lines per kind of problem before "and N more"


def summarize(rows: list[dict[str, Any]], outcome: Outcome, plan: Plan, command: list[str]) -> int:
    """Print the summary; returns the exit status."""
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
    folders = sorted({str(Path(row["output_path"]).parent.parent) for row in rows if row["output_path"]})
    if folders:
        lines.append(f"outputs: {', '.join(folders)}")
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


def _listed(what: str, rows: list[dict[str, Any]], reason: Any) -> list[str]:
    lines = [f"{what} {row['key'][:12]} {row['model']} {row['prompt_id']}: {reason(row)}" for row in rows[:_SHOWN]]
    if len(rows) > _SHOWN:
        lines.append(f"... and {len(rows) - _SHOWN} more {what.split(' ')[0]}")
    return lines
