"""The end of a run: what happened to every job, what it cost, and what a rerun would do."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

from runner import store as S
from runner.lanes import Outcome
from runner.locate import Found
from runner.money import usd_text
from runner.plan import Plan
from runner.publish import Published
from runner.tally import SHOWN, Tally

EXIT_INCOMPLETE = 1
EXIT_ENVIRONMENT = 3
EXIT_INTERRUPTED = 130

def summarize(t: Tally, outcome: Outcome, plan: Plan, command: list[str],
              published: tuple[list[Published], str | None], outputs_dir: Path, ledger: Found) -> int:
    """Print the summary (with the outputs folders and galleries `published`, and the ledger used:
    found in a folder above, it is not where a user may expect); returns the exit status."""
    states = t.states
    words = {S.DOWNLOADED: "downloaded", S.GENERATED: "generated (paid, not collected yet)", S.LOST: "lost",
             S.FAILED: "failed", S.CANCELED: "canceled", S.SUBMITTED: "at the provider", S.SUBMITTING: "submitting",
             S.CLAIMED: "claimed", S.PLANNED: "not submitted"}
    lines = [f"{t.jobs} jobs: " + ", ".join(f"{states[s]} {words[s]}" for s in words if states[s])]
    spend = f"spend: settled {usd_text(t.settled)} (as billed, or estimated where the provider does not say), estimated {usd_text(t.estimated)}"
    if plan.unpriced:
        spend += f" (+ {len(plan.unpriced)} job(s) with price unknown)"
    lines.append(spend)
    lines += _where(t, published, outputs_dir, ledger)
    if t.duplicates:
        lines.append(f"possible duplicate charges: {t.duplicates} submission(s) may have started a generation the runner "
                     f"could not record (the answer was lost); check the provider's usage page")
    if t.possible:
        lines.append(f"possibly billed on top of the settled spend: up to {usd_text(t.possible)} (lost answers, and failed "
                     f"generations the provider may still charge for)")
    reopened = outcome.reopened
    if reopened[S.CANCELED]:
        lines.append(f"{reopened[S.CANCELED]} job(s) canceled earlier were generated again (a new charge each)")
    if reopened[S.LOST]:
        lines.append(f"{reopened[S.LOST]} lost job(s) were generated again (regenerate_lost=true: a second charge each)")
    lines += _listed("failed", t.failed, states[S.FAILED], lambda row: row["error"])
    lines += _listed("lost (paid for; the provider no longer has the output; regenerate_lost=true generates it again)",
                     t.lost, states[S.LOST], lambda row: row["error"])
    parked = [t.parked[key] for key in outcome.parked if key in t.parked]
    lines += _listed("left for a later run", parked[:SHOWN], len(parked), lambda row: outcome.parked[row["key"]])
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
    return 0 if states[S.DOWNLOADED] == t.jobs else EXIT_INCOMPLETE


def _where(t: Tally, published: tuple[list[Published], str | None], outputs_dir: Path, ledger: Found) -> list[str]:
    """The ledger, every outputs folder and its gallery, files no longer on disk, and jobs whose files
    stay where an earlier run put them (`name=` and `outputs_dir=` apply to jobs new to the ledger)."""
    folders, problem = published
    lines = [f"ledger: {_shown(ledger.db)}"]
    lines += [f"outputs: {_shown(done.folder)} ({done.jobs} jobs of that sweep; gallery {_shown(done.report)})" for done in folders]
    if problem:
        lines.append(f"warning: {problem}")
    if t.gone:
        lines.append(f"{t.gone} downloaded file(s) are no longer on disk: `video-runner verify` marks them, then the same "
                     f"command collects them again from the provider (no new generation)")
    for sweep, n in sorted(t.earlier.items()):
        lines.append(f"{n} job(s) were first planned under sweep {sweep!r} and keep its folder: a job's name= and "
                     f"outputs_dir= are those of the run that first planned it")
    if t.elsewhere:
        where = sorted({_shown(Path(path).parents[1]) for path in t.elsewhere})
        lines.append(f"{len(t.elsewhere)} file(s) downloaded by an earlier run stay where they are ({', '.join(where)}), "
                     f"outside outputs_dir={outputs_dir}")
    return lines


def _shown(path: Path) -> str:
    """A path as short as it goes: relative to the current folder when it is under it."""
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def _listed(what: str, rows: list[dict[str, Any]], count: int, reason: Any) -> list[str]:
    """The first rows of a kind of problem, and how many more there are (`count` in all)."""
    lines = [f"{what} {row['key'][:12]} {row['model']} {row['prompt_id']}: {reason(row)}" for row in rows[:SHOWN]]
    if count > SHOWN:
        lines.append(f"... and {count - SHOWN} more {what.split(' ')[0]}")
    return lines
