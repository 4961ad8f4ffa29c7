"""Spending consent: a run estimated over `confirm_over_usd` asks first.

A typo in a grid or a replicate count can turn a $5 sweep into a $10,000 one; the plan printed above
the question shows what was asked for. On a terminal the run asks (y/N); without one (a script, a
pipe, CI) it refuses unless `yes=true` says the spend is meant. A `budget_usd` is consent already:
the run never spends past it. Jobs on the simulator cost nothing and are not counted.
"""

from __future__ import annotations

import sys
from collections.abc import Collection
from decimal import Decimal
from typing import Any, TextIO

from runner.errors import UserError
from runner.plan import Plan


def confirm_spending(plan: Plan, cfg: Any, simulated: Collection[str], stdin: TextIO | None = None) -> None:
    """Return when the run may spend its estimate; UserError (nothing submitted) when not confirmed."""
    if cfg.yes or cfg.budget_usd is not None:
        return
    paid = [job for job in plan.jobs if job.provider not in simulated]
    total = sum((job.cost for job in paid if job.cost is not None), Decimal(0))
    threshold = Decimal(str(cfg.confirm_over_usd))
    if total <= threshold:
        return
    unpriced = sum(1 for job in paid if job.cost is None)
    what = f"${total:,.2f} for {len(paid) - unpriced:,} priced job(s)" + (f" and {unpriced:,} job(s) of unknown price" if unpriced else "")
    over = f"over confirm_over_usd={cfg.confirm_over_usd:g}"
    stdin = stdin or sys.stdin
    if not stdin.isatty():
        raise UserError(f"this run is estimated at {what}, {over}, and there is no terminal to ask: add yes=true to run it, "
                        f"set budget_usd=... to cap it, or raise confirm_over_usd (nothing was submitted)")
    print(f"This run is estimated at {what}, {over}. Run it? [y/N] ", end="", file=sys.stderr, flush=True)
    if stdin.readline().strip().lower() not in ("y", "yes"):
        raise UserError(f"not confirmed: the run estimated at {what} was not started (nothing was submitted); "
                        f"yes=true runs it without asking")
