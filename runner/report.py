"""What the runner shows a person: the plan table (and, as it grows, status and summaries)."""

from __future__ import annotations

from decimal import Decimal

from runner.errors import UserError
from runner.manifest import Pricing
from runner.plan import JobSpec, Plan

#: Canonical parameters worth a column: what differs between the jobs of a sweep.
_SHOWN = ("duration", "aspect_ratio", "resolution", "audio", "seed")


def money(value: Decimal | None) -> str:
    return "price unknown" if value is None else f"${value:,.2f}"


#: A plan of more jobs than this is summarised unless show_jobs= says otherwise.
SHOW_JOBS = 20
#: Rows of a summarised plan shown as examples, and groups of its summary at most.
EXAMPLE_ROWS = 5
MAX_GROUPS = 30


def format_plan(plan: Plan, show_jobs: str | int = SHOW_JOBS) -> str:
    """Every job (job, model, mode, prompt, key params, est. $) and the total; a plan of more than
    `show_jobs` jobs (`all`: no limit) shows its first rows and then jobs and cost per model, mode
    and parameters, since a table of a hundred thousand rows informs nobody and takes seconds."""
    limit = _limit(show_jobs)
    jobs = plan.jobs
    lines = _table([_job_row(job) for job in (jobs if limit is None or len(jobs) <= limit else jobs[:EXAMPLE_ROWS])],
                   ("job", "model", "mode", "prompt", "params", "est. $")) if jobs else []
    if limit is not None and len(jobs) > limit:
        lines.append(f"... and {len(jobs) - EXAMPLE_ROWS:,} more (show_jobs=all lists every job)")
        lines += [""] + _summary(plan)
    total = f"{len(jobs):,} job{'s' if len(jobs) != 1 else ''}, estimated total {money(plan.total)}"
    unpriced = plan.unpriced
    if unpriced:
        reasons = sorted({j.cost_note for j in unpriced})
        total += f" + {len(unpriced):,} job{'s' if len(unpriced) != 1 else ''} with price unknown ({'; '.join(reasons)})"
    if plan.merged:
        total += f"; {plan.merged:,} repeated point{'s' if plan.merged != 1 else ''} merged into the same job"
    lines.append(total)
    sources = sorted({f"{j.model}: {j.cost_source}" for j in jobs if j.cost is not None and j.cost_source})
    if sources:
        lines.append(f"prices from: {'; '.join(sources)}")
    lines += [f"warning: {warning}" for warning in plan.warnings]
    lines += _skipped(plan)
    return "\n".join(lines)


def _skipped(plan: Plan) -> list[str]:
    """What on_invalid=skip left out: a line per reason (model, parameter, value given, what is
    allowed), with its jobs and prompts."""
    if not plan.skipped:
        return []
    jobs = sum(entry.jobs for entry in plan.skipped.values())
    lines = [f"skipped {jobs:,} job{'s' if jobs != 1 else ''} (on_invalid=skip):"]
    for reason, entry in plan.skipped.items():
        prompts = list(entry.prompts)
        shown = ", ".join(prompts[:3]) + (f" and {len(prompts) - 3:,} more" if len(prompts) > 3 else "")
        lines.append(f"  {entry.jobs:,} job{'s' if entry.jobs != 1 else ''} ({shown}): {reason}")
    return lines


def _limit(show_jobs: str | int) -> int | None:
    text = str(show_jobs).strip().lower()
    if text == "all":
        return None
    if not text.isdigit():
        raise UserError(f"show_jobs={show_jobs!r} is not allowed: give a number of jobs (show_jobs=100) or show_jobs=all")
    return int(text)


def _job_row(job: JobSpec) -> tuple[str, ...]:
    shown = [f"{k}={_text(job.params[k])}" for k in _SHOWN if k in job.params]
    if job.replicate:
        shown.append(f"replicate={job.replicate}")
    return (job.short_key, job.model, job.mode, job.prompt_id, " ".join(shown) or "-", money(job.cost))


def _summary(plan: Plan) -> list[str]:
    """Jobs and estimated cost per model, mode and parameters (seeds and replicates not told apart)."""
    groups: dict[tuple[str, str, str], list[JobSpec]] = {}
    told: dict[int, str] = {}  # by the id of a job's parameters, which its replicates share (the plan holds them)
    for job in plan.jobs:
        shown = told.get(id(job.params))
        if shown is None:
            shown = told[id(job.params)] = " ".join(f"{k}={_text(job.params[k])}" for k in _SHOWN
                                                    if k in job.params and k != "seed") or "-"
        groups.setdefault((job.model, job.mode, shown), []).append(job)
    ordered = sorted(groups.items(), key=lambda item: -len(item[1]))
    rows = [(f"{len(members):,}", *group, _cost(members)) for group, members in ordered[:MAX_GROUPS]]
    lines = _table(rows, ("jobs", "model", "mode", "params", "est. $"))
    if len(ordered) > MAX_GROUPS:
        rest = sum(len(members) for _, members in ordered[MAX_GROUPS:])
        lines.append(f"... and {len(ordered) - MAX_GROUPS:,} more groups ({rest:,} jobs)")
    return lines


def _cost(jobs: list[JobSpec]) -> str:
    priced = [job.cost for job in jobs if job.cost is not None]
    total = money(sum(priced, Decimal(0))) if priced else money(None)
    return total if len(priced) in (0, len(jobs)) else f"{total} + {len(jobs) - len(priced):,} unknown"


def _table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> list[str]:
    """Columns padded to their widest cell; the last (money) right-aligned."""
    rows = [header, *rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    last = len(header) - 1
    lines = ["  ".join(cell.ljust(w) if i < last else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


_UNITS = {"second": "/s", "clip": "/clip", "image": "/image", "character": "/char", "request": "/request"}


def describe_pricing(pricing: Pricing) -> str:
    """A price rule in a line: '$0.40/s if audio=true, else $0.20/s', or 'price unknown'."""
    if pricing.unknown:
        return "price unknown"
    unit = _UNITS[pricing.unit] if pricing.unit_size == 1 else f"/{pricing.unit_size} {pricing.unit}s"
    parts = []
    for rate in pricing.rates:
        price = f"${_usd(rate.usd)}{unit}"
        parts.append(f"{price} if {_when(rate.when)}" if rate.when else price)
    text = ", else ".join(parts)
    for multiplier in pricing.multipliers:
        text += f"; x{multiplier.factor} if {_when(multiplier.when)}"
    return text


def _usd(value: Decimal) -> str:
    """At least cents, more digits only where the price has them ($0.20, $0.045)."""
    text = f"{value.normalize():f}"
    whole, _, cents = text.partition(".")
    return f"{whole}.{cents.ljust(2, '0')}"


def _when(conditions: dict) -> str:
    """`duration=5 resolution=1080p`; a list of values any of which will do as `ratio=1:1|16:9`."""
    return " ".join(f"{k}={'|'.join(_text(x) for x in v) if isinstance(v, list) else _text(v)}" for k, v in conditions.items())


def _text(value: object) -> str:
    """A value as it is written on the command line (audio=false, not audio=False)."""
    return str(value).lower() if isinstance(value, bool) else str(value)
