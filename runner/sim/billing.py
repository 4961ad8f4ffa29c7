"""What the simulated providers charge: the price of each job.

The price of a job is the manifest's (or, for a model the manifests leave unpriced, the
simulator's `price_list`) times `bill_factor`, a provider billing above its price list. Whether
an ended task is charged that price is its provider simulator's rule (`ProviderSim.charged`,
following each provider's published rules: docs/providers.md); the simulator applies it once, as
the task ends, so the ledger, the task objects (Runway's `cost`), fal's `X-Fal-Billable-Units`
and the credit balance agree.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from runner.catalog import CatalogModel, effective_params, price
from runner.manifest import Pricing, Rate
from runner.sim.tasks import model_names

if TYPE_CHECKING:
    from runner.sim.config import SimConfig


class Billing:
    """Prices for one simulator run (its config and catalogue)."""

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
        return dataclasses.replace(pricing, rates=[Rate(usd=rate)], unknown=None)

    def price(self, model: CatalogModel, mode: str, payload: dict[str, Any]) -> Decimal | None:
        """What the provider bills for this job if it is charged: list price times `bill_factor`."""
        pricing = self.pricing(model, mode)
        if pricing is None:
            return None
        listed = price(pricing, effective_params(model.mode(mode), canonical={}, native=payload))
        if listed is None or self.factor == 1:  # no "0.250" for a $0.25 job billed at list price
            return listed
        return listed * self.factor


def _names(model: CatalogModel) -> set[str]:
    return {*model_names(model), *(mode.endpoint for mode in model.spec.modes.values())}
