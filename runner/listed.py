"""Prices from the providers' own price lists, for models the manifests leave unpriced.

After a plan is validated, and before it is shown or held to the budget, the jobs whose model has
no price in its manifest (and none of the user's, `prices.<model>=`) are priced from their
provider's price list where the provider publishes one (`Provider.price_list`, fal's pricing API),
so the estimate and `budget_usd` count them. A price read is kept in the ledger with the time it
was read and reused for `MAX_AGE_S`, per provider account (its base URL: a simulator's prices never
stand for the real provider's).

Planning never waits on this: one request per provider, a short timeout, and any failure (no key,
no network, an answer it cannot read) leaves the jobs "price unknown" with a warning saying why.
Nothing is written here: the run keeps what was read (`keep`) once it has recorded its plan, and
a dry run keeps nothing.
"""

from __future__ import annotations

import dataclasses
import datetime
import sqlite3
import time
import typing
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from runner import ledger_file, plugins
from runner.catalog import Catalog, effective_params, price
from runner.manifest import Pricing, PricingUnit, Rate
from runner.money import to_micros
from runner.plan import JobSpec, Plan
from runner.providers import ListedPrice, ProviderError, Settings

MAX_AGE_S = 24 * 3600.0  # a price read is reused this long
TIMEOUT_S = 10.0  # planning never waits longer than this on a price list
_UNITS = set(typing.get_args(PricingUnit))  # the manifests' pricing units


@dataclass(frozen=True)
class Listed:
    """A price read from a provider's price list, for the ledger's `listed_prices`."""

    provider: str
    source: str  # the account's base URL it was read for
    endpoint: str
    usd: Decimal
    unit: str
    fetched_at: float  # epoch seconds


@dataclass
class Priced:
    """What pricing from the lists did: the prices read from the providers now (to keep in the
    ledger), and the plan's jobs it priced."""

    read: list[Listed] = field(default_factory=list)
    jobs: list[JobSpec] = field(default_factory=list)


def price_from_lists(plan: Plan, catalog: Catalog, accounts: Mapping[str, Any], key_env: Mapping[str, str], db: str) -> Priced:
    """Price the plan's jobs of models their manifest leaves unpriced, in place, from the price list
    of their provider's account (`accounts`: provider -> Account; a provider not in it has no key
    here, `key_env` names the variable it is read from). Unread lists leave a warning in the plan."""
    priced = Priced()
    prices: dict[tuple[str, str], Listed] = {}
    for provider, endpoints in sorted(wanted(plan, catalog).items()):
        name = plugins.registry().providers[provider].price_list
        account = accounts.get(provider)
        if account is None:
            plan.warnings.append(f"the {name} was not read ({key_env.get(provider, 'its key')} is not set): "
                                 f"{_count(_unpriced(plan, provider))} stay price unknown")
            continue
        now = time.time()
        found = _cached(db, provider, account.base_url, endpoints, now)
        missing = sorted(endpoints - set(found))
        if missing:
            import asyncio  # only when a price list is read: a dry run of priced models never loads it

            try:
                listed = asyncio.run(_read(plugins.registry().providers[provider], account, missing))
            except Exception as exc:  # noqa: BLE001  a plugin's fault as much as the network's: planning goes on
                problem = exc.message if isinstance(exc, ProviderError) else f"{type(exc).__name__}: {exc}"
                plan.warnings.append(f"the {name} could not be read ({problem[:200]}): "
                                     f"{_count(_unpriced(plan, provider))} stay price unknown")
                listed = None
            if listed is not None:
                fresh = [Listed(provider, account.base_url, e, p.usd, p.unit, now) for e, p in listed.items() if e in endpoints]
                priced.read += fresh
                found.update({item.endpoint: item for item in fresh})
                absent = sorted({job.model for job in plan.unpriced if job.provider == provider and job.endpoint not in found})
                if absent:
                    plan.warnings.append(f"the {name} has no price for {', '.join(absent)}: their jobs stay price unknown")
        prices.update({(provider, endpoint): item for endpoint, item in found.items()})
    priced.jobs = _apply(plan, catalog, prices)
    return priced


def _count(jobs: int) -> str:
    return f"{jobs:,} job{'s' if jobs != 1 else ''}"


def _unpriced(plan: Plan, provider: str) -> int:
    return sum(1 for job in plan.unpriced if job.provider == provider)


def wanted(plan: Plan, catalog: Catalog) -> dict[str, set[str]]:
    """provider -> the endpoints of its unpriced jobs whose manifest gives no price, for providers
    that publish a price list."""
    providers = plugins.registry().providers
    found: dict[str, set[str]] = {}
    unknown: dict[tuple[str, str], bool] = {}
    for job in plan.unpriced:
        if providers.get(job.provider) is None or providers[job.provider].price_list is None:
            continue
        if (job.model, job.mode) not in unknown:
            unknown[(job.model, job.mode)] = bool(catalog.models[job.model].spec.pricing_for(job.mode).unknown)
        if unknown[(job.model, job.mode)]:
            found.setdefault(job.provider, set()).add(job.endpoint)
    return found


async def _read(cls: type, account: Any, endpoints: list[str]) -> dict[str, ListedPrice]:
    from runner import connections

    settings = Settings(account.base_url, account.key, TIMEOUT_S, account.endpoints)
    async with connections.client(4, TIMEOUT_S, follow_redirects=False) as client:  # as the run's: one HTTP stack
        return await cls(settings, client).listed_prices(endpoints)


def _apply(plan: Plan, catalog: Catalog, prices: Mapping[tuple[str, str], Listed]) -> list[JobSpec]:
    """Each unpriced job with a listed price gets its estimate and says where it came from; the jobs priced."""
    if not prices:
        return []
    providers = plugins.registry().providers
    cannot: Counter = Counter()
    priced = []
    for index, job in enumerate(plan.jobs):
        listed = prices.get((job.provider, job.endpoint))
        if job.cost is not None or listed is None:
            continue
        model = catalog.models[job.model]
        pricing = _pricing(model.spec.pricing_for(job.mode), listed)
        cost = None if pricing is None else price(pricing, effective_params(model.mode(job.mode), job.params, job.payload))
        if cost is None:
            cannot[(job.model, listed.unit)] += 1
            continue
        when = datetime.datetime.fromtimestamp(listed.fetched_at).date().isoformat()
        plan.jobs[index] = job._replace(cost=cost, cost_note="",
                                        cost_source=f"{providers[job.provider].price_list}, fetched {when}")
        priced.append(plan.jobs[index])
    for (model, unit), jobs in sorted(cannot.items()):
        plan.warnings.append(f"{model}: its price list prices it per {unit}, which this runner cannot estimate "
                             f"for {_count(jobs)}; they stay price unknown")
    return priced


def _pricing(manifest: Pricing, listed: Listed) -> Pricing | None:
    """The manifest's pricing rule with the listed price as its one rate, as the provider bills
    it (units x unit price); a rule of its own when the list counts in another unit."""
    rates = [Rate(usd=listed.usd)]
    if listed.unit == manifest.unit:
        return dataclasses.replace(manifest, rates=rates, unknown=None)
    if listed.unit not in _UNITS:
        return None
    return Pricing(unit=listed.unit, quantity="duration" if listed.unit == "second" else None, rates=rates)  # type: ignore[arg-type]


# -- the ledger's cache ------------------------------------------------------------------------------


def _cached(db: str, provider: str, source: str, endpoints: Iterable[str], now: float) -> dict[str, Listed]:
    """Prices this ledger read from the account less than MAX_AGE_S ago, read without writing
    (no ledger yet, or one from before the cache: none)."""
    path = Path(db)
    if not path.is_file():
        return {}
    asked = set(endpoints)
    try:
        conn = ledger_file.read_only(path, timeout=5)  # a refused run leaves not even a -shm file
        try:
            rows = conn.execute("select endpoint, usd, unit, fetched_at from listed_prices where provider = ? and source = ? "
                                "and fetched_at > ?", [provider, source, now - MAX_AGE_S]).fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return {}
    return {e: Listed(provider, source, e, Decimal(usd), unit, at) for e, usd, unit, at in rows if e in asked}


def keep(conn: sqlite3.Connection, priced: Priced) -> None:
    """Keep the prices read for MAX_AGE_S, and give the ledger's jobs planned earlier with no price
    their estimate, so the budget reserves it (a job's row otherwise keeps what it was first planned with)."""
    conn.executemany("insert or replace into listed_prices (provider, source, endpoint, usd, unit, fetched_at) "
                     "values (?, ?, ?, ?, ?, ?)",
                     [(i.provider, i.source, i.endpoint, str(i.usd), i.unit, i.fetched_at) for i in priced.read])
    conn.executemany("update jobs set est_micros = ?, cost_source = ? where key = ? and est_micros is null",
                     [(to_micros(job.cost), job.cost_source, job.key) for job in priced.jobs])
