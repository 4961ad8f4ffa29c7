"""From a run config to a plan: the jobs a sweep will run, each validated, keyed and priced.

Nothing here touches the network or the ledger: a plan is what `dry_run=true` prints, and what the
engine records and runs. Every mistake a user can make in a config is caught here, before any money
is spent, with a message naming the field, the value, what is allowed and where the value came from.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NamedTuple

from omegaconf import DictConfig, OmegaConf

from runner import inputs, prices, prompts, values
from runner.catalog import (
    Catalog,
    CatalogModel,
    check_value,
    effective_params,
    join,
    spelled_native,
    to_canonical,
    to_native,
    wrap,
)
from runner.config import MAX_JOBS, RUN_LEVEL_PARAMS, raise_max_jobs
from runner.errors import NotTaken, UserError, suggest
from runner.manifest import CANONICAL_PARAMS, MEDIA_PARAMS, Mode
from runner.judging import Judge, refuse_broken_rule
from runner.modes import select_mode
from runner.precedence import CONFIG, Given, Layers, Values, grid, layer
from runner.prompts import Prompt

#: What a job whose values its model does not take does to the plan (`on_invalid=`).
ON_INVALID = ("error", "skip")

#: The settings a plan is made from; the planner is given no other (a kept plan is found again by
#: these: runner.plancache).
PLAN_SETTINGS = ("model", "prices", "prompt_set", "replicates", "on_invalid", *RUN_LEVEL_PARAMS, "native", "sweep",
                 "override_prompt_params", "name", "max_jobs", "mode")

# A named tuple: a sweep may hold 100,000 of them, made in a fraction of a frozen dataclass's time
# and without a __dict__ each.
class JobSpec(NamedTuple):
    """One generation: everything needed to submit it, and the key that identifies it."""

    key: str
    sweep: str
    provider: str
    model: str  # catalogue name
    model_id: str
    mode: str
    endpoint: str
    prompt_id: str
    replicate: int
    params: dict[str, Any]  # canonical values, given or the provider's defaults, inputs as given
    payload: dict[str, Any]  # the native request body, input files as placeholders
    inputs: tuple[inputs.InputFile, ...]
    cost: Decimal | None  # None: price unknown
    cost_note: str  # why the price is unknown
    media: str
    extension: str
    cost_source: str = ""  # where the price comes from, in a user's words ("your price" for prices.<model>=)

    @property
    def short_key(self) -> str:
        return self.key[:12]


@dataclass
class Plan:
    jobs: list[JobSpec] = field(default_factory=list)
    merged: int = 0  # planned points that turned out to be the same job
    warnings: list[str] = field(default_factory=list)  # what a person should know before running it
    #: Jobs left out by on_invalid=skip: why (the message the error would have been) -> the prompts skipped.
    skipped: dict[str, "Skipped"] = field(default_factory=dict)
    #: Every local file the plan was read from (the prompt file, each input looked at), by absolute path.
    sources: set[str] = field(default_factory=set)
    #: The keys of `jobs`, kept with them so adding a job (or a sweep point's plan) never rescans the list.
    _keys: set[str] = field(default_factory=set, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._keys.update(job.key for job in self.jobs)

    def add(self, job: JobSpec) -> None:
        """A job, unless the plan has it already (another point that makes the same request)."""
        if job.key in self._keys:
            self.merged += 1
        else:
            self._keys.add(job.key)
            self.jobs.append(job)

    @property
    def total(self) -> Decimal:
        return sum((j.cost for j in self.jobs if j.cost is not None), Decimal(0))

    @property
    def unpriced(self) -> list[JobSpec]:
        return [j for j in self.jobs if j.cost is None]

    def extend(self, other: "Plan") -> None:
        for job in other.jobs:
            self.add(job)
        self.merged += other.merged
        self.warnings += [w for w in other.warnings if w not in self.warnings]
        self.sources |= other.sources
        for reason, skipped in other.skipped.items():
            self.skip(reason, skipped.prompts, skipped.jobs)

    def skip(self, reason: str, prompts: Iterable[str], jobs: int) -> None:
        entry = self.skipped.setdefault(reason, Skipped())
        entry.jobs += jobs
        entry.prompts.update(dict.fromkeys(prompts))


@dataclass
class Skipped:
    """Jobs on_invalid=skip left out for one reason: how many, and of which prompts (in order)."""

    jobs: int = 0
    prompts: dict[str, None] = field(default_factory=dict)


def job_key(provider: str, model_id: str, endpoint: str, payload: Mapping[str, Any], replicate: int) -> str:
    """sha256 of the canonical JSON of everything that changes the output, so a rerun of the same
    sweep finds the same jobs in the ledger and a changed parameter makes a new one.

    Input files enter through their placeholders, which carry each file's sha256.
    """
    return _keyed(_key_head(provider, model_id, endpoint, payload), replicate)


def job_keys(provider: str, model_id: str, endpoint: str, payload: Mapping[str, Any], replicates: int) -> list[str]:
    """`job_key` of replicates 0..n-1, with the request body encoded once."""
    head = _key_head(provider, model_id, endpoint, payload)
    return [_keyed(head, replicate) for replicate in range(replicates)]


def _key_head(provider: str, model_id: str, endpoint: str, payload: Mapping[str, Any]) -> str:
    """The canonical JSON of a job's identity but its replicate, which sorts last: the replicates'
    bodies differ only in their last characters."""
    return canonical_json({"endpoint": endpoint, "model": model_id, "payload": payload, "provider": provider})[:-1]


def _keyed(head: str, replicate: int) -> str:
    return hashlib.sha256(f'{head},"replicate":{replicate}}}'.encode()).hexdigest()


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def build_plan(cfg: DictConfig | Mapping[str, Any], catalog: Catalog, choices: Mapping[str, str] | None = None) -> Plan:
    """Expand prompts × sweep grid × replicates into validated, keyed, priced jobs.

    `choices` are Hydra's selected options (model=..., prompt_set=...), used to say where a value
    came from.
    """
    given: Mapping[str, Any] = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg  # type: ignore[assignment]
    conf = {name: given[name] for name in PLAN_SETTINGS if name in given}
    choices = dict(choices or {})
    model_choice = choices.get("model", conf["model"]["name"])
    model = catalog.resolve(conf["model"]["name"], source=f"model={model_choice}")
    for name in conf.get("prices") or {}:
        catalog.resolve(str(name), source=f"prices.{name}")
    plan = Plan(warnings=_retirement(model, catalog))
    prompt_set = prompts.load(conf["prompt_set"].get("file"), conf["prompt_set"].get("name"))
    plan.sources.add(str(prompts.locate(conf["prompt_set"]["file"]).resolve()))
    replicates = conf.get("replicates", 1)
    if not isinstance(replicates, int) or replicates < 1:
        raise UserError(f"replicates={replicates!r} is not allowed: give a whole number of 1 or more")

    on_invalid = conf.get("on_invalid", "error")
    if on_invalid not in ON_INVALID:
        raise UserError(f"on_invalid={on_invalid!r} is not allowed: give error (a value a model does not take ends the "
                        f"plan) or skip (its jobs are left out and listed)")
    config = layer({}, {k: conf.get(k) for k in RUN_LEVEL_PARAMS}, CONFIG)
    config_native = layer({}, conf.get("native") or {}, f"{CONFIG} (native)")
    layers = Layers(
        model=layer({}, conf["model"].get("params") or {}, f"model={model_choice} (model.params)"),
        model_native=layer({}, conf["model"].get("native") or {}, f"model={model_choice} (model.native)"),
        points=[(layer(config, canonical, "sweep"), layer(config_native, native, "sweep (native)"))
                for canonical, native in grid(conf.get("sweep") or {})],
        override=bool(conf.get("override_prompt_params")),
    )
    sweep_name = conf.get("name") or prompt_set.name
    _check_size(len(prompt_set.prompts), len(layers.points), replicates, conf.get("max_jobs", MAX_JOBS))

    sweep = _Sweep(model, conf, replicates, sweep_name, plan.sources)
    for prompt in prompt_set.prompts:
        for canonical, native in layers.values(prompt):
            try:
                jobs = _jobs(sweep, prompt, canonical, native)
            except NotTaken as exc:
                if on_invalid == "error":
                    raise NotTaken(f"{exc}; to plan the other jobs and list the ones skipped, add on_invalid=skip") from None
                plan.skip(str(exc), [prompt.id], replicates)
                continue
            for job in jobs:
                plan.add(job)
    plan.warnings += layers.warnings()
    return plan


def _retirement(model: CatalogModel, catalog: Catalog) -> list[str]:
    """Nothing for a model the provider offers; a warning for a deprecated one; an error for one
    its API refuses, naming what to use instead."""
    retired = model.spec.retired
    if retired is None:
        return []
    since = f"; {retired.since}" if retired.since else ""
    instead = ""
    if retired.replacement:
        known = retired.replacement in catalog.models or retired.replacement in catalog.aliases
        instead = f"; use model={retired.replacement} instead" if known else f"; its replacement is {retired.replacement}"
    if retired.refused:
        raise UserError(f"model {model.name} is retired: {model.provider} no longer accepts it{since}{instead}")
    return [f"model {model.name} is deprecated by {model.provider} and may stop working{since}{instead}"]


def _check_size(prompts: int, points: int, replicates: int, max_jobs: int) -> None:
    """A plan over max_jobs is refused before any of its jobs is made (a mistyped grid or replicate
    count must not fill the memory); the count is an upper bound: points making the same job merge."""
    size = prompts * points * replicates
    if size > max_jobs:
        raise UserError(f"the plan would hold {size:,} jobs ({prompts:,} prompts x {points:,} sweep points x {replicates:,} "
                        f"replicates), over max_jobs={max_jobs}; plan fewer{raise_max_jobs(size)}")


@dataclass
class _Sweep:
    """What every job of one plan shares, and what is worked out once per plan rather than per job."""

    model: CatalogModel
    conf: Mapping[str, Any]
    replicates: int
    name: str
    sources: set[str]  # the plan's: each local input looked at joins them
    checked: dict[tuple[str, str], inputs.InputFile | str] = field(default_factory=dict)  # each input read once
    modes: dict[frozenset[str], str] = field(default_factory=dict)  # the inputs a prompt gives -> its mode
    fields: dict[str, dict[str, str]] = field(default_factory=dict)  # mode -> canonical name -> native field
    judge: Judge = field(default_factory=Judge)  # rules and price, once per distinct set of the values they read

    def mode_for(self, media: Mapping[str, Any], where: str) -> str:
        given = frozenset(media)
        if given not in self.modes:
            self.modes[given] = select_mode(self.model, set(given), self.conf.get("mode"), where)
        return self.modes[given]

    def by_canonical(self, mode_name: str) -> dict[str, str]:
        if mode_name not in self.fields:
            params = self.model.mode(mode_name).params
            self.fields[mode_name] = {spec.canonical: name for name, spec in params.items() if spec.canonical}
        return self.fields[mode_name]


def _jobs(sweep: _Sweep, prompt: Prompt, canonical: Values, native: Values) -> list[JobSpec]:
    """The replicates of one (prompt, sweep point): its native payload, checked and priced once, and
    a key per replicate."""
    model, conf, checked = sweep.model, sweep.conf, sweep.checked
    where = prompt.label
    media = {k: Given(v, where) for k, v in prompt.media.items()}
    mode_name = sweep.mode_for(media, where)
    mode = model.mode(mode_name)
    label = f"model {model.name} ({mode_name})"
    by_canonical = sweep.by_canonical(mode_name)

    payload: dict[str, Any] = {}
    params: dict[str, Any] = {}
    text = prompt.text
    if text:
        if "prompt" not in by_canonical:
            raise NotTaken(f"{label} takes no text prompt, but {where} has text; leave `text` empty for it")
        canonical = {**canonical, "prompt": Given(text, where)}
    for name, given in canonical.items():
        field_name = by_canonical.get(name)
        if field_name is None:
            takes = ", ".join(sorted(by_canonical)) or "no canonical parameters"
            raise NotTaken(
                f"{name}={values.shown(given.value)} is not a parameter of {label} (from {given.source}); it takes: {takes}"
            )
        spec = mode.params[field_name]
        try:
            value = to_native(spec, given.value)
        except ValueError as exc:
            raise NotTaken(
                f"{name}={values.shown(given.value)} is not allowed for {label} (from {given.source}); {exc}"
            ) from None
        payload[field_name] = wrap(spec, value)
        params[name] = to_canonical(spec, value)  # one spelling, however it was given (768P, "6", ...)

    files: list[inputs.InputFile] = []
    for name, given in media.items():
        field_name = by_canonical[name]
        spec = mode.params[field_name]
        kind = MEDIA_PARAMS[name]
        items = given.value if isinstance(given.value, list) else [given.value]
        resolved = []
        for value in items:
            item = checked.get((str(value), kind))
            if item is None:
                if not inputs.is_remote(str(value)):  # even one refused: a kept plan depends on what it found
                    sweep.sources.add(os.path.abspath(os.path.expanduser(str(value))))
                try:
                    item = inputs.resolve(str(value), kind, model.media_limits(kind), model.limits.urls)
                except ValueError as exc:
                    raise UserError(f"{name}={str(value)[:120]!r} ({where}) {exc}") from None
                checked[(str(value), kind)] = item
            if isinstance(item, inputs.InputFile):
                files.append(item)
                resolved.append(item.placeholder())
            else:
                resolved.append(item)
        payload[field_name] = wrap(spec, resolved if spec.type == "image_list" else resolved[0])
        params[name] = given.value

    for field_name, given in native.items():
        spec = mode.params.get(field_name)
        if spec is None:
            raise NotTaken(
                f"native.{field_name} is not a field of {label} (from {given.source})"
                f"{suggest(field_name, mode.params)}; its fields: {', '.join(mode.params)}"
            )
        value = spelled_native(spec, given.value)
        problem = check_value(spec, value)
        if problem:
            raise NotTaken(f"native.{field_name}={values.shown(given.value)} is not allowed for {label} (from {given.source}); {problem}")
        payload[field_name] = value

    _normalise(mode, payload, label, where)
    join(mode, payload)

    pricing = model.spec.pricing_for(mode_name)
    effective = effective_params(mode, params, payload)
    broken, cost = sweep.judge(mode_name, mode, pricing, effective)
    if broken:
        refuse_broken_rule(mode, effective, label, canonical, native)
    note = pricing.unknown or (f"no price for these parameters: {pricing.note}" if cost is None else "")
    source = (pricing.source or "the provider's price list") if cost is not None else ""
    mine = prices.yours(conf.get("prices") or {}, model)
    if mine is not None:
        cost, note, source = prices.priced(mine, effective, label), "", "your price"
    params.update({k: effective[k] for k in CANONICAL_PARAMS if k in effective and k not in MEDIA_PARAMS})
    keys = job_keys(model.provider, model.model_id, mode.endpoint, payload, sweep.replicates)
    extension = _extension(model, payload)
    return [
        JobSpec(key=key, sweep=sweep.name, provider=model.provider, model=model.name, model_id=model.model_id,
                mode=mode_name, endpoint=mode.endpoint, prompt_id=prompt.id, replicate=replicate, params=params,
                payload=payload, inputs=tuple(files), cost=cost, cost_note=note, media=model.spec.output.media,
                extension=extension, cost_source=source)
        for replicate, key in enumerate(keys)
    ]


def _extension(model: CatalogModel, payload: Mapping[str, Any]) -> str:
    """The saved file's extension: the model's, unless a field such as outputFormat changes it."""
    output = model.spec.output
    for field_name, by_value in output.extension_by.items():
        if field_name in payload:
            for value, extension in by_value.items():
                if values.same(value, payload[field_name]):
                    return extension
    return output.extension


def _normalise(mode: Mode, payload: dict[str, Any], label: str, where: str) -> None:
    """Fill in defaults (or drop values equal to an unsent default), so a job is keyed by what the
    provider will do: `duration=5` on a model whose default is 5 is the same job as no duration."""
    for field_name, spec in mode.params.items():
        if field_name in payload:
            if not spec.send_default and spec.default is not None and _same_value(payload[field_name], spec.default):
                del payload[field_name]
            continue
        if spec.default is not None and (spec.send_default or spec.required):
            payload[field_name] = spec.default
        elif spec.required:
            what = spec.canonical or f"native.{field_name}"
            raise NotTaken(f"{label} needs {what}, and {where} does not give it")


def _same_value(a: Any, b: Any) -> bool:
    return canonical_json(a) == canonical_json(b)
