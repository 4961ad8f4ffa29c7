"""What the simulated providers charge: prices, fal's billing units, and who pays for what.

The price of a job is the manifest's (or, for a model the manifests leave unpriced, the
simulator's `price_list`) times `bill_factor`, a provider billing above its price list. Whether
a task that did not succeed is charged follows each provider's published rules; docs/providers.md
lists them with their sources. `charge` is the single place that decides, so the ledger, the
task objects (Runway's `cost`), fal's `X-Fal-Billable-Units` and the credit balance agree.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from runner.catalog import CatalogModel, effective_params, price
from runner.manifest import Pricing, Rate
from runner.sim.failures import fal_failure, runway_refunded
from runner.sim.outputs import output_seconds
from runner.sim.tasks import Task, model_names

if TYPE_CHECKING:
    from runner.sim.config import SimConfig

#: The billing unit fal's pricing API names for each manifest unit.
FAL_UNITS = {"second": "second", "clip": "video", "image": "image", "character": "character", "request": "request"}


class Billing:
    """Prices and charges for one simulator run (its config and catalogue)."""

    def __init__(self, config: "SimConfig", models: dict[str, CatalogModel]):
        self.config = config
        self.factor = Decimal(str(config.bill_factor))
        self._listed: dict[str, Decimal] = {}  # model name -> price_list rate
        for name, rate in config.price_list.items():
            model = next((m for m in models.values() if name in _names(m)), None)
            if model is None:
                raise ValueError(f"price_list: {name!r} is not a model")
            if any(not model.spec.pricing_for(mode).unknown for mode in model.spec.modes):
                raise ValueError(f"price_list: {name!r} has a price in its manifest (bill_factor bills above it)")
            self._listed[model.name] = Decimal(str(rate))

    def pricing(self, model: CatalogModel, mode: str) -> Pricing | None:
        """The mode's price list: the manifest's, else `price_list`'s one rate; None when unpriced."""
        pricing = model.spec.pricing_for(mode)
        if not pricing.unknown:
            return pricing
        rate = self._listed.get(model.name)
        if rate is None:
            return None
        return pricing.model_copy(update={"rates": [Rate(usd=rate)], "unknown": None})

    def price(self, model: CatalogModel, mode: str, payload: dict[str, Any]) -> Decimal | None:
        """What the provider bills for this job if it is charged: list price times `bill_factor`."""
        pricing = self.pricing(model, mode)
        if pricing is None:
            return None
        listed = price(pricing, effective_params(model.mode(mode), canonical={}, native=payload))
        if listed is None or self.factor == 1:  # no "0.250" for a $0.25 job billed at list price
            return listed
        return listed * self.factor

    def unit_price(self, model: CatalogModel, mode: str) -> tuple[Decimal, str] | None:
        """(USD per unit, unit) as fal's pricing API publishes it: the rate that applies to the
        mode's defaults, else its last (catch-all) rate; None when the model is unpriced."""
        pricing = self.pricing(model, mode)
        if pricing is None:
            return None
        defaults = effective_params(model.mode(mode), canonical={}, native={})
        rate = next((r for r in pricing.rates if all(defaults.get(k) == v for k, v in r.when.items())), pricing.rates[-1])
        unit = FAL_UNITS[pricing.unit]
        return rate.usd / pricing.unit_size if pricing.unit_size > 1 else rate.usd, unit

    def charge(self, task: Task) -> Decimal | None:
        """What an ended task costs (None: charged, at a price the simulator does not know)."""
        charged = task.final == "succeeded"
        if task.final == "cancelled":  # a generation that had started is paid for
            charged = task.cancel_phase == "running"
        elif task.final == "failed" and task.provider == "runway":
            charged = not runway_refunded(task.failure_code, self.config.runway_unrefunded_failures)
        elif task.final == "failed":  # fal: invalid input is refused before any GPU time (0 units)
            charged = not task.problems and fal_failure(task.failure_code).charged and self.config.fal_charges_model_errors
        return task.price if charged else Decimal(0)

    def billable_units(self, task: Task) -> str:
        """fal's `X-Fal-Billable-Units` for an ended request: the charge in units of the published
        unit price (fractional where a resolution or length scales it), as fal formats it."""
        billed = task.billed if task.final is not None else task.price
        listed = self.unit_price(task.model, task.mode)
        if billed == 0:
            return "0"
        if billed is None or listed is None:  # unpriced: count the unit the model is sold by
            pricing = task.model.spec.pricing_for(task.mode)
            if pricing.unit != "second":
                return "1"
            params = effective_params(task.model.mode(task.mode), canonical={}, native=task.payload)
            return str(math.ceil(output_seconds(params)))
        units = billed / listed[0]
        # fal's app framework writes whole units without decimals, others with 8 (fal/api/api.py)
        return str(int(units)) if units == units.to_integral_value() else f"{units:.8f}"


def _names(model: CatalogModel) -> set[str]:
    return {*model_names(model), *(mode.endpoint for mode in model.spec.modes.values())}
