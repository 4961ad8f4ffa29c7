"""A job's parameters against its mode's rules and its price, as planning asks for every job.

Both read only a few of a job's parameters, which a sweep's jobs mostly share (a 100,000-job sweep
may have a handful of distinct sets): each distinct set is judged once. A combination the provider
refuses is explained with where each of its values came from.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from runner import values
from runner.catalog import broken_rule, price
from runner.errors import NotTaken
from runner.manifest import Mode, Pricing
from runner.precedence import Given

_ABSENT = object()


class Judge:
    def __init__(self) -> None:
        self.looked_at: dict[str, tuple[str, ...]] = {}  # mode -> the parameters its rules and price read
        self.judged: dict[tuple[Any, ...], tuple[bool, Decimal | None]] = {}

    def __call__(self, mode_name: str, mode: Mode, pricing: Pricing, effective: Mapping[str, Any]) -> tuple[bool, Decimal | None]:
        """(whether the parameters break one of the mode's rules, their price or None)."""
        names = self.looked_at.get(mode_name)
        if names is None:
            names = self.looked_at[mode_name] = _looked_at(mode, pricing)
        key = (mode_name, *(_hashable(effective[n]) if n in effective else _ABSENT for n in names))
        judged = self.judged.get(key)
        if judged is None:
            judged = self.judged[key] = (broken_rule(mode, effective) is not None, price(pricing, effective))
        return judged


def _looked_at(mode: Mode, pricing: Pricing) -> tuple[str, ...]:
    """Every parameter `broken_rule` and `price` read for this mode."""
    names = {n for rule in mode.constraints for n in (*rule.when, *rule.allowed)}
    names |= {n for rule in (*pricing.rates, *pricing.multipliers) for n in rule.when}
    if isinstance(pricing.quantity, str):
        names.add(pricing.quantity)
    return tuple(sorted(names))


def _hashable(value: Any) -> Any:
    """A value as a dictionary key telling apart what the rules could (5, 5.0, "5" and True differ)."""
    return (type(value), value) if isinstance(value, (str, int, float, bool)) else json.dumps(value, sort_keys=True, default=str)


def refuse_broken_rule(
    mode: Mode, effective: Mapping[str, Any], label: str, canonical: Mapping[str, Given], native: Mapping[str, Given]
) -> None:
    """Refuse a combination the provider refuses ("1080p videos are limited to 5 seconds")."""
    broken = broken_rule(mode, effective)
    if broken is None:
        return
    rule, name = broken
    allowed = rule.allowed[name]
    given = {**canonical, **native}  # where each value came from, under its canonical and native names
    for field_name, spec in mode.params.items():
        if spec.canonical in canonical:
            given.setdefault(field_name, canonical[spec.canonical])
        if spec.canonical and field_name in native:
            given.setdefault(spec.canonical, native[field_name])

    def shown(key: str) -> str:
        origin = f" from {given[key].source}" if key in given else " (the default)"
        return f"{key}={values.text(effective[key])}{origin}"

    conditions = ", ".join(shown(k) for k in rule.when)
    what = f"takes {name} only as {', '.join(values.text(v) for v in allowed)}" if allowed else f"takes no {name}"
    raise NotTaken(f"{label} {what} when {conditions}; {shown(name)} is not allowed: {rule.reason}")
