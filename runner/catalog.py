"""The model catalogue: every manifest the plugins contribute, checked, indexed and queried.

It answers three questions for the rest of the runner, from data alone: which model does a name
mean, what native payload do canonical parameters become for it, and what does a job cost.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from runner import kept, values
from runner.errors import UserError, suggest
from runner.manifest import Constraint, Limits, ManifestFile, MediaLimits, Mode, Model, ParamSpec, Pricing, load_manifest

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

#: Compiled manifests kept: every installed plugin's, with room for the versions a manifest's author
#: goes through (the newest read are the last pruned).
KEEP_MANIFESTS = 64


@dataclass(frozen=True)
class CatalogModel:
    """A manifest entry together with the provider that runs it and where it was declared."""

    provider: str
    spec: Model
    limits: Limits
    source: str  # manifest path, and the plugin that contributed it

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def model_id(self) -> str:
        return self.spec.id or self.spec.name

    def mode(self, name: str) -> Mode:
        return self.spec.modes[name]

    def media_limits(self, kind: str) -> MediaLimits | None:
        return getattr(self.limits, kind)


@dataclass
class Catalog:
    models: dict[str, CatalogModel] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> model name
    owners: dict[str, str] = field(default_factory=dict)  # name or alias -> where it was declared
    note: str = ""  # why some models may be missing (plugins left out), for "unknown model" messages
    digest: str = ""  # of every manifest's bytes and where it came from, in order: what the catalogue is made of

    def extended(self, manifests: Iterable[tuple[str, Path | str]]) -> "Catalog":
        """A new catalogue with these manifests added; a duplicate name or alias names both sources."""
        new = Catalog(dict(self.models), dict(self.aliases), dict(self.owners))
        digest = hashlib.sha256(self.digest.encode())
        for contributor, path in manifests:
            manifest, content = _compiled(Path(path))
            new._add(manifest, f"{path} (plugin {contributor})")
            digest.update(f"\0{contributor}\0{path}\0{content}".encode())
        new.digest = digest.hexdigest()
        return new

    def _add(self, manifest: ManifestFile, source: str) -> None:
        for model in manifest.models:
            for name in [model.name, *model.aliases]:
                if not _NAME.match(name):
                    raise UserError(f"manifest {source}: model {model.name!r}: name {name!r} is not a plain name")
                if name in self.owners:
                    raise UserError(
                        f"model name {name!r} is declared twice: in {self.owners[name]} and in {source}; "
                        f"rename one, or leave one plugin out with RUNNER_LOAD_PLUGINS"
                    )
                self.owners[name] = source
            limits = _merge_limits(manifest.limits, model.limits)
            self.models[model.name] = CatalogModel(manifest.provider, model, limits, source)
            for alias in model.aliases:
                self.aliases[alias] = model.name

    def choices(self) -> list[str]:
        return sorted([*self.models, *self.aliases])

    def resolve(self, name: str, source: str = "model") -> CatalogModel:
        """The model a name or alias means; an unknown one is a UserError with a suggestion."""
        key = self.aliases.get(name, name)
        if key in self.models:
            return self.models[key]
        raise UserError(
            f"unknown model {name!r} (from {source}){suggest(name, self.choices())}. "
            f"`python -m runner.models` lists every model with its modes and prices.{self.note}"
        )

    def by_endpoint(self, provider: str, endpoint: str, model_id: str | None = None) -> tuple[CatalogModel, str]:
        """The model and mode a provider request goes to (the simulator validates bodies with this)."""
        for cm in self.models.values():
            if cm.provider != provider or (model_id is not None and cm.model_id != model_id):
                continue
            for mode_name, mode in cm.spec.modes.items():
                if mode.endpoint == endpoint:
                    return cm, mode_name
        raise KeyError((provider, endpoint, model_id))


def compiled_manifest(path: Path) -> ManifestFile:
    """A manifest checked once, then read back from the cache while its bytes and the schema's code
    are unchanged. Each start would otherwise parse and validate every manifest again. The cache is
    keyed by content, so a stale entry is never found; an unreadable one (a crash mid-write, another
    version's) is ignored and rewritten, and an unwritable cache folder only costs the time."""
    return _compiled(path)[0]


def _compiled(path: Path) -> tuple[ManifestFile, str]:
    """A manifest (compiled_manifest) and the hash of its bytes and the schema's code."""
    try:
        data = path.read_bytes()
    except OSError:
        return load_manifest(path), ""  # which names the file and why it cannot be read
    content = hashlib.sha256(_schema_fingerprint() + data).hexdigest()
    entry = kept.cache_dir() / f"manifest-{content[:32]}.pickle"
    cached = kept.read(entry)  # None when absent, torn, or written by another version: rebuilt
    if isinstance(cached, ManifestFile):
        return cached, content
    manifest = load_manifest(path, data.decode("utf-8"))
    kept.write(entry, manifest, (), time.time(), keep=KEEP_MANIFESTS)  # keyed by content: it reads no other file
    return manifest, content


@functools.cache
def _schema_fingerprint() -> bytes:
    """What a cached manifest depends on besides its bytes: the schema's code and pydantic's version
    (read from its metadata: a start that finds its manifests compiled never imports pydantic)."""
    from importlib.metadata import version

    from runner import manifest

    return Path(manifest.__file__).read_bytes() + version("pydantic").encode()


def build_catalog(manifests: Iterable[tuple[str, Path | str]]) -> Catalog:
    """Index manifests given as (contributor, path)."""
    return Catalog().extended(manifests)


def _merge_limits(base: Limits, override: Limits | None) -> Limits:
    if override is None:
        return base
    merged = {k: getattr(override, k) or getattr(base, k) for k in ("image", "video", "audio", "urls")}
    return Limits(**merged)


# -- canonical <-> native ------------------------------------------------------------------------


def allowed_canonical(spec: ParamSpec) -> str:
    """The values a user may give for a param, as text for an error message."""
    if spec.map is not None:
        return ", ".join(values.text(k) for k in spec.map)
    if spec.enum is not None:
        return ", ".join(values.text(v) for v in spec.enum)
    if spec.minimum is not None or spec.maximum is not None:
        lo = "" if spec.minimum is None else values.text(spec.minimum)
        hi = "" if spec.maximum is None else values.text(spec.maximum)
        return f"{lo}..{hi} ({spec.type})"
    if spec.max_length is not None:
        return f"text of at most {spec.max_length} characters"
    return f"any {spec.type}"


def to_native(spec: ParamSpec, value: Any) -> Any:
    """Translate a canonical value to the native one; ValueError says why it is not allowed.

    A value spelled differently from an allowed one only in case (768P for 768p) means that value,
    and the native spelling the manifest declares is what is sent."""
    if spec.map is not None:
        key = values.spelled(value, spec.map)
        if key is not None:
            return spec.map[key]
        native = values.spelled(value, spec.map.values())  # a native value is accepted as itself
        if native is not None:
            return native
        raise ValueError(f"allowed: {allowed_canonical(spec)}")
    native = spelled_native(spec, _coerce(spec, value))
    problem = check_value(spec, native)
    if problem:
        raise ValueError(problem)
    return native


def spelled_native(spec: ParamSpec, native: Any) -> Any:
    """A native value in the spelling the manifest declares for it (unchanged if it has none)."""
    allowed = list(spec.map.values()) if spec.map is not None else spec.enum
    if allowed is None or isinstance(native, (dict, list)):
        return native
    found = values.spelled(native, allowed)
    return native if found is None else found


def to_canonical(spec: ParamSpec, native: Any) -> Any:
    """The canonical value a native one stands for (used to price a job by its defaults)."""
    if spec.map is not None:
        found = values.spelled(native, spec.map.values())
        for key, value in spec.map.items():
            if found is not None and values.same(value, found):
                return key
    return native


def _coerce(spec: ParamSpec, value: Any) -> Any:
    try:
        if spec.type == "integer" and not isinstance(value, bool):
            if isinstance(value, str) or (isinstance(value, float) and value.is_integer()):
                return int(value)
        if spec.type == "number" and isinstance(value, str):
            return float(value)
        if spec.type == "string" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return values.text(value)
        if spec.type == "boolean" and isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    except ValueError:
        pass
    return value


_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "image": (str,),
    "video": (str,),
    "audio": (str,),
    "image_list": (list,),
    "object": (dict,),
    "array": (list,),
}


def check_value(spec: ParamSpec, native: Any) -> str | None:
    """Why a native value breaks the spec, or None. Wrapped values are checked only for shape."""
    if spec.wrap is not None:
        expected = list if spec.type == "image_list" else dict
        return None if isinstance(native, expected) else f"expected {expected.__name__}"
    types = _TYPES[spec.type]
    if not isinstance(native, types) or (isinstance(native, bool) and bool not in types):
        return f"expected {spec.type}, got {type(native).__name__} {native!r}"
    allowed = list(spec.map.values()) if spec.map is not None else spec.enum
    if allowed is not None and not any(values.same(native, a) for a in allowed):
        return f"allowed: {', '.join(values.text(a) for a in allowed)}"
    if spec.minimum is not None and native < spec.minimum:
        return f"allowed: {allowed_canonical(spec)}"
    if spec.maximum is not None and native > spec.maximum:
        return f"allowed: {allowed_canonical(spec)}"
    if spec.max_length is not None and len(native) > spec.max_length:
        return f"at most {spec.max_length} characters, got {len(native)}"
    return None


def check_payload(mode: Mode, payload: Mapping[str, Any]) -> list[str]:
    """Every problem with a native request body: unknown fields, missing required ones, bad values."""
    problems = []
    hosts = {spec.into for spec in mode.params.values() if spec.into}
    for name, value in payload.items():
        spec = mode.params.get(name)
        if spec is None or spec.into:
            problems.append(f"{name}: not a field of this endpoint{suggest(name, mode.params)}")
            continue
        if name in hosts and isinstance(value, list):
            continue  # several fields sent as one list: each item was checked before it was joined
        problem = check_value(spec, value)
        if problem:
            problems.append(f"{name}: {problem}")
    for name, spec in mode.params.items():
        if spec.required and name not in payload:
            problems.append(f"{name}: required")
    return problems


def join(mode: Mode, payload: dict[str, Any]) -> None:
    """Move each field sent inside another (`into`) there: the other becomes a list of both."""
    for name, spec in mode.params.items():
        if spec.into and name in payload:
            joined = payload.pop(name)
            host = payload.get(spec.into)
            first = [] if host is None else [_fill(mode.params[spec.into].list_wrap or "$value", host)]
            payload[spec.into] = [*first, joined]


def wrap(spec: ParamSpec, value: Any) -> Any:
    """Put a value into the spec's JSON template (per item for lists)."""
    if spec.wrap is None:
        return value
    if isinstance(value, list):
        return [_fill(spec.wrap, item) for item in value]
    return _fill(spec.wrap, value)


def _fill(template: Any, value: Any) -> Any:
    if template == "$value":
        return value
    if isinstance(template, dict):
        return {k: _fill(v, value) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill(v, value) for v in template]
    return template


# -- pricing -------------------------------------------------------------------------------------


def effective_params(mode: Mode, canonical: Mapping[str, Any], native: Mapping[str, Any]) -> dict[str, Any]:
    """Native fields and canonical values as the provider will see them, defaults included."""
    found: dict[str, Any] = {}
    for name, spec in mode.params.items():
        value = native.get(name, spec.default)
        if value is None:
            continue
        found[name] = value
        if spec.canonical:
            found[spec.canonical] = canonical.get(spec.canonical, to_canonical(spec, value))
    for key, value in canonical.items():
        found.setdefault(key, value)
    return found


def price(pricing: Pricing, params: Mapping[str, Any]) -> Decimal | None:
    """The estimated cost in USD, or None where the price is unknown."""
    if pricing.unknown:
        return None
    rate = next((r for r in pricing.rates if matches(r.when, params)), None)
    if rate is None:
        return None
    if pricing.quantity is None:
        quantity: Any = 1
    elif isinstance(pricing.quantity, int):
        quantity = pricing.quantity
    else:
        given = params.get(pricing.quantity)
        # Text is priced per character; anything else counts as written ("8s" is 8 seconds).
        quantity = len(given) if pricing.unit == "character" and isinstance(given, str) else values.number(given)
        if quantity is None:
            return None
    units = math.ceil(Decimal(str(quantity)) / pricing.unit_size)
    cost = rate.usd * units
    for multiplier in pricing.multipliers:
        if matches(multiplier.when, params):
            cost *= multiplier.factor
    return cost


def matches(when: Mapping[str, Any], params: Mapping[str, Any]) -> bool:
    """Whether every condition holds: a value, or a list of values any of which will do."""
    return all(key in params and values.matches(value, params[key]) for key, value in when.items())


def broken_rule(mode: Mode, params: Mapping[str, Any]) -> tuple[Constraint, str] | None:
    """The first of the mode's constraints the parameters break, with the parameter breaking it."""
    for rule in mode.constraints:
        if not matches(rule.when, params):
            continue
        for name, allowed in rule.allowed.items():
            if name in params and not (allowed and values.matches(allowed, params[name])):
                return rule, name
    return None
