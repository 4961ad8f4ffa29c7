"""How parameter values compare: as a config writes them, and as providers' enums treat spelling.

A value reaches the runner from YAML, the command line or a manifest, so `5`, `5.0` and `"5"` are
the same duration and `true` is `"true"`. Providers' enumerations are spelled one way on the wire
(`"768P"`, `"1080p"`) but people (and price tables) write them either way; a value that differs
from an allowed one only in letter case means that value. The runner always sends the spelling the
manifest declares, so the provider sees its own, while prices, constraints and job keys see one
value however it was written.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

#: A number as providers spell durations: 8, "8", "8.5", "8s".
_NUMBER = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*s?\s*$")


def text(value: Any) -> str:
    """A value as a config writes it: 5.0 -> "5", True -> "true"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def shown(value: Any, limit: int = 80) -> str:
    """A value as a message quotes it: its repr, cut short (a 100,000-character prompt is not echoed)."""
    quoted = repr(value)
    return quoted if len(quoted) <= limit else f"{quoted[:limit]}... ({len(str(value)):,} characters)"


def same(a: Any, b: Any) -> bool:
    """Equal as written (5 == "5", True == "true"); bools never equal numbers."""
    return text(a) == text(b)


def key(value: Any) -> str:
    """The form two spellings of one enumeration value share."""
    return text(value).casefold()


def spelled(value: Any, allowed: Iterable[Any]) -> Any | None:
    """The allowed value `value` stands for: an exact match first (an enum may list two spellings,
    one deprecated), else one differing only in case; None when there is none."""
    candidates = list(allowed)
    for candidate in candidates:
        if same(candidate, value):
            return candidate
    for candidate in candidates:
        if key(candidate) == key(value):
            return candidate
    return None


def matches(condition: Any, value: Any) -> bool:
    """Whether a manifest condition (one value, or a list meaning any of them) holds for a value."""
    options = condition if isinstance(condition, list) else [condition]
    return any(key(option) == key(value) for option in options)


def number(value: Any) -> Decimal | None:
    """A count such as a duration however it is spelled (8, 8.0, "8", "8s"); None if it is not one."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return Decimal(str(value))
    match = _NUMBER.match(str(value))
    return Decimal(match.group(1)) if match else None
