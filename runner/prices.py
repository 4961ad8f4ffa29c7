"""Your own prices (`prices.<model>=` in the config): where the price list has none, or instead of it.

A price is USD per clip (`prices.kling=0.40`) or per second of output (`prices.kling=0.08/s`); the
entry may name the model by any of its names.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from runner.catalog import CatalogModel
from runner.errors import UserError


def yours(prices: Mapping[str, Any], model: CatalogModel) -> tuple[str, Any] | None:
    """The `prices.<name>` entry that names this model by any of its names: (key, value)."""
    for name in (model.name, model.model_id, *model.spec.aliases):
        if name in prices:
            return name, prices[name]
    return None


def priced(given: tuple[str, Any], params: Mapping[str, Any], label: str) -> Decimal:
    """A user's price: a number per clip, or `<usd>/s` per second of output."""
    name, value = given
    text = str(value).strip().lower().replace("$", "")
    amount, _, unit = text.partition("/")
    try:
        usd = Decimal(amount)
    except ArithmeticError:
        usd = Decimal(-1)
    if not usd.is_finite() or usd < 0 or unit not in ("", "clip", "s", "second"):
        raise UserError(f"prices.{name}={value!r} is not a price; give USD per clip (prices.{name}=0.40) "
                        f"or per second of output (prices.{name}=0.08/s)")
    if unit in ("", "clip"):
        return usd
    seconds = str(params.get("duration", "")).strip().rstrip("s")
    try:
        return usd * Decimal(seconds)
    except ArithmeticError:
        raise UserError(f"prices.{name}={value!r} is per second, but {label} has no duration to multiply it by; "
                        f"give a price per clip") from None
