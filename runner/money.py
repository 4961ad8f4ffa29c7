"""Money as the ledger keeps it: whole micro-dollars (integers), so sums and budget checks are exact.

Prices and provider bills arrive as Decimal; the ledger stores integers (1 USD = 1,000,000), which
SQLite adds up without rounding. A sweep that costs exactly its budget is within it.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal

MICROS = 1_000_000


def to_micros(usd: Decimal | float | int | str | None) -> int | None:
    """USD to micro-dollars, rounded up (a fraction of a micro-dollar is never free); None stays None."""
    if usd is None:
        return None
    return int((Decimal(str(usd)) * MICROS).to_integral_value(rounding=ROUND_CEILING))


def to_usd(micros: int | None) -> Decimal | None:
    return None if micros is None else Decimal(micros) / MICROS


def usd_text(micros: int | None) -> str:
    """`$1.25`, with more digits only where a price has them (`$0.045`)."""
    if micros is None:
        return "price unknown"
    value = Decimal(micros) / MICROS
    return f"${value:.2f}" if value == value.quantize(Decimal("0.01")) else f"${value.normalize():f}"
