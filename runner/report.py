"""What the runner shows a person: the plan table (and, as it grows, status and summaries)."""

from __future__ import annotations

from decimal import Decimal

from runner.manifest import Pricing
from runner.plan import Plan

#: Canonical parameters worth a column: what differs between the jobs of a sweep.
_SHOWN = ("duration", "aspect_ratio", "resolution", "audio", "seed")


def money(value: Decimal | None) -> str:
    return "price unknown" if value is None else f"${value:.2f}"


def format_plan(plan: Plan) -> str:
    """A readable table of the jobs (job, model, mode, prompt, key params, est. $) and the total."""
    rows = [("job", "model", "mode", "prompt", "params", "est. $")]
    for job in plan.jobs:
        shown = [f"{k}={_text(job.params[k])}" for k in _SHOWN if k in job.params]
        if job.replicate:
            shown.append(f"replicate={job.replicate}")
        rows.append((job.short_key, job.model, job.mode, job.prompt_id, " ".join(shown) or "-", money(job.cost)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i < 5 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    total = f"{len(plan.jobs)} job{'s' if len(plan.jobs) != 1 else ''}, estimated total {money(plan.total)}"
    unpriced = plan.unpriced
    if unpriced:
        reasons = sorted({j.cost_note for j in unpriced})
        total += f" + {len(unpriced)} job{'s' if len(unpriced) != 1 else ''} with price unknown ({'; '.join(reasons)})"
    if plan.merged:
        total += f"; {plan.merged} repeated point{'s' if plan.merged != 1 else ''} merged into the same job"
    lines.append(total)
    sources = sorted({f"{j.model}: {j.cost_source}" for j in plan.jobs if j.cost is not None and j.cost_source})
    if sources:
        lines.append(f"prices from: {'; '.join(sources)}")
    lines += [f"warning: {warning}" for warning in plan.warnings]
    return "\n".join(lines)


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
