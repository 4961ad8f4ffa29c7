"""Every setting checked before anything is written or sent: one message for the first mistake.

Hydra checks types; this checks what a type cannot say: ranges (a concurrency of 0 would wait
forever, `budget_usd=nan` compares false with everything), names (a `model_concurrency` entry
must name a model of its provider), paths (an empty `state_dir` would put the ledger at `/`), URLs,
and interpolations that cannot be resolved. Each message names the setting, the value given (never
a key), what is allowed and where the value came from: the command line, the environment (through
`${oc.env:...}`) or the config files.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
import typing
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hydra.errors import OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from runner import plugins, values
from runner.catalog import Catalog
from runner.config import ProviderConf, Range, RunConfig, raise_max_jobs
from runner.errors import UserError, suggest
from runner.preflight import ENV_NAME, parse_override


class Origins:
    """Where each setting's value came from, for messages."""

    def __init__(self, overrides: Sequence[str], raw: Mapping[str, Any]):
        self.given: list[tuple[str, str]] = []  # (key, override as typed), the command line's
        if OmegaConf.is_config(overrides):  # Hydra's record of them: read as typed, never resolved
            overrides = OmegaConf.to_container(overrides, resolve=False)  # type: ignore[assignment]
        for line in overrides:
            try:
                override = parse_override(line)
            except OverrideParseException:
                continue
            self.given.append((override.package or override.key_or_group, line))
        self.raw = raw  # the config before interpolation

    def of(self, key: str) -> str:
        for given, line in reversed(self.given):
            if key == given:
                return "from the command line"
            if key.startswith(given + "."):
                return f"from the command line: {line}"
        raw = _at(self.raw, key)
        if isinstance(raw, str) and "${oc.env:" in raw:
            return f"from the environment, through {raw}"
        return "from the config"


def check_settings(cfg: DictConfig, overrides: Sequence[str]) -> None:
    """UserError for the first setting of the run config (the command line's `overrides` applied)
    that is not allowed, naming where its value came from."""
    raw = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(raw, dict)
    origins = Origins(overrides, raw)
    conf = _resolved(cfg, raw, origins)
    for name in ("model", "prompt_set"):
        if not isinstance(conf.get(name), dict):
            raise UserError(f"{name} is not set ({origins.of(name)}): choose one ({name}=...); "
                            f"`python -m runner --help` lists the options")
    for key, value, limits in _ranged(conf, RunConfig):
        problem = limits.problem(value)
        if problem:
            raise UserError(f"{key}={_shown(value)} is not allowed ({origins.of(key)}); allowed: {problem}")
    _check_plan_size(conf, origins)
    catalog = plugins.registry().catalog
    for provider, settings in (conf.get("providers") or {}).items():
        _check_provider(provider, settings, catalog, origins)
    _check_paths(conf, origins)
    _check_simulate(conf, origins)
    _check_no_key_inside(conf)


def _resolved(cfg: DictConfig, raw: Mapping[str, Any], origins: Origins) -> dict[str, Any]:
    """Every interpolation resolved, or one message naming the setting whose interpolation fails."""
    try:
        conf = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", "") or "the config"
        reason = re.sub(r"^\w+ raised while resolving interpolation: ", "", str(getattr(exc, "msg", "") or exc).splitlines()[0]).strip('"')
        shown = _at(raw, key) if key != "the config" else None
        value = f"={shown}" if isinstance(shown, str) else ""
        raise UserError(f"{key}{value} cannot be resolved ({origins.of(key)}): {reason}; "
                        f"give the value itself, or set what it refers to") from None
    assert isinstance(conf, dict)
    return conf


def _ranged(conf: Mapping[str, Any], schema: Any, prefix: str = "") -> Iterator[tuple[str, Any, Range]]:
    """(key, value, range) for every value of a setting with a range, walking the schema; the items
    of a list each, and every entry of a table of providers."""
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        key, value = f"{prefix}{f.name}", conf.get(f.name)
        limits = f.metadata.get("range")
        if limits is not None and value is not None:
            for item in value if isinstance(value, list) else [value]:
                yield key, item, limits
        nested = hints[f.name]
        if dataclasses.is_dataclass(nested) and isinstance(value, dict):
            yield from _ranged(value, nested, f"{key}.")
        elif typing.get_origin(nested) is dict and typing.get_args(nested)[1] is ProviderConf and isinstance(value, dict):
            for name, entry in value.items():
                if isinstance(entry, dict):
                    yield from _ranged(entry, ProviderConf, f"{key}.{name}.")


def _check_plan_size(conf: Mapping[str, Any], origins: Origins) -> None:
    """Replicates alone over max_jobs is refused before any prompt is read or any job planned."""
    replicates, max_jobs = conf.get("replicates"), conf.get("max_jobs")
    if isinstance(replicates, int) and isinstance(max_jobs, int) and replicates > max_jobs:
        raise UserError(f"replicates={replicates} is over max_jobs={max_jobs} ({origins.of('replicates')}): the plan would "
                        f"hold at least {replicates:,} jobs; give fewer replicates{raise_max_jobs(replicates)}")


def _check_provider(name: str, conf: Mapping[str, Any], catalog: Catalog, origins: Origins) -> None:
    where = f"providers.{name}"
    for key in ("base_url", *(f"endpoints.{e}" for e in conf.get("endpoints") or {})):
        url = _at(conf, key)
        if url is None:
            continue
        parts = urlsplit(str(url))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UserError(f"{where}.{key}={url!r} is not allowed ({origins.of(f'{where}.{key}')}); "
                            f"allowed: an http:// or https:// address, e.g. https://api.example.com")
    key_env = conf.get("key_env")
    if not isinstance(key_env, str) or not ENV_NAME.match(key_env):  # the value may be a pasted key: never shown
        raise UserError(f"{where}.key_env must name an environment variable (capital letters, digits and _), and the "
                        f"value given ({origins.of(f'{where}.key_env')}) is not one; if it is a key, export it instead "
                        f"(the value is not shown here)")
    retry = conf.get("retry") or {}
    if isinstance(retry.get("backoff_max_s"), (int, float)) and retry["backoff_max_s"] < retry.get("backoff_base_s", 0):
        raise UserError(f"{where}.retry.backoff_max_s={_shown(retry['backoff_max_s'])} is not allowed "
                        f"({origins.of(f'{where}.retry.backoff_max_s')}); allowed: at least "
                        f"{where}.retry.backoff_base_s={_shown(retry['backoff_base_s'])}")
    model_limits(name, conf.get("model_concurrency") or {}, catalog, origins)


def model_limits(provider: str, given: Mapping[str, Any], catalog: Catalog, origins: Origins | None = None) -> dict[str, int]:
    """`model_concurrency` by model id. An entry may name a model by catalogue name, alias or provider
    id; one that names no model of this provider is a mistake, not a limit silently ignored."""
    limits: dict[str, int] = {}
    models = [m for m in catalog.models.values() if m.provider == provider]
    for name, limit in given.items():
        key = f"providers.{provider}.model_concurrency.{name}"
        origin = f" ({origins.of(key)})" if origins else ""
        found = [m for m in models if name in (m.name, m.model_id, *m.spec.aliases)]
        if not found:
            names = {n for m in models for n in (m.name, m.model_id, *m.spec.aliases)}
            raise UserError(f"{key}: {name!r} is not a model of {provider}{origin}{suggest(str(name), names)}; its models: "
                            f"{', '.join(sorted(m.name for m in models)) or 'none installed'}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise UserError(f"{key}={_shown(limit)} is not allowed{origin}; allowed: a whole number of 1 or more "
                            f"(generations of {found[0].name} in flight at once)")
        limits[found[0].model_id] = limit
    return limits


def _check_paths(conf: Mapping[str, Any], origins: Origins) -> None:
    """Path settings name places this run can write, found out before anything is written or paid
    for: not empty (an empty state_dir would put the ledger at the root), not a file where a folder
    goes, and under a folder that exists or can be made and is writable."""
    for key, folder in (("state_dir", True), ("outputs_dir", True), ("db", False)):
        value = conf.get(key)
        if not isinstance(value, str) or not value.strip():
            raise UserError(f"{key}={_shown(value)} is not allowed ({origins.of(key)}); allowed: a path, e.g. "
                            f"{RunConfig.__dataclass_fields__[key].default}")
        path = Path(value).expanduser()
        if path.exists() and path.is_dir() != folder:
            what = "a file" if folder else "a folder"
            raise UserError(f"{key}={value} is {what} ({origins.of(key)}); allowed: "
                            f"{'a folder (or a path where one can be made)' if folder else 'a ledger file'}")
        problem = _unwritable(path if folder else path.parent)
        if problem:
            raise UserError(f"{key}={value} cannot be written ({origins.of(key)}): {problem}; choose another with {key}=...")
    name = conf.get("name")
    if name is not None and (not str(name).strip() or any(c in str(name) for c in "/\\") or str(name).strip(".") == ""):
        raise UserError(f"name={_shown(name)} is not allowed ({origins.of('name')}); allowed: a sweep name (its outputs "
                        f"folder), e.g. name=ads_v2: not empty, no / or \\, not . or ..")
    sim_config = conf.get("sim_config")
    if sim_config is not None and conf.get("simulate") not in (None, False) and not Path(str(sim_config)).is_file():
        raise UserError(f"sim_config={sim_config} is not a file ({origins.of('sim_config')}); allowed: a simulator config "
                        f"file (docs/simulator.md)")


def _unwritable(path: Path) -> str | None:
    """Why a folder cannot be written or made, tried in its nearest existing ancestor with a folder
    made and removed at once (permissions alone do not tell: root passes them on a read-only or
    virtual file system), so a dry run or a refused run leaves no folder behind."""
    for ancestor in [path, *path.absolute().parents]:
        if ancestor.exists():
            if not ancestor.is_dir():
                return f"{ancestor} is a file, not a folder"
            try:
                tempfile.TemporaryDirectory(dir=ancestor, prefix=".runner-write-check-").cleanup()
            except OSError as exc:
                return f"{ancestor} is not writable ({exc.strerror or exc})"
            return None
    return None


def _check_simulate(conf: Mapping[str, Any], origins: Origins) -> None:
    """`simulate=`: true, false, or names of installed providers that have a simulator."""
    simulate = conf.get("simulate")
    if simulate is None or isinstance(simulate, bool):
        return
    registry, simulators = plugins.registry(), plugins.simulators()
    for name in [str(n) for n in (simulate if isinstance(simulate, list) else [simulate])]:
        if name not in registry.providers:
            raise UserError(f"simulate={name}: no installed provider is named {name!r} ({origins.of('simulate')}); "
                            f"allowed: simulate=true, false, or provider names ({', '.join(registry.providers) or 'none installed'})")
        if name not in simulators.classes:
            raise UserError(f"simulate={name}: no simulator is installed for provider {name} (its plugin "
                            f"{registry.provider_plugin[name]} registers none); leave it out of simulate= "
                            f"and give its key, or leave its models out of the sweep")


def _check_no_key_inside(conf: Mapping[str, Any]) -> None:
    """A setting that resolves to a provider's key (`name=${oc.env:FAL_KEY}`) would save the key in
    the ledger and Hydra's run folder: refused, naming the variable, never the value."""
    variables = {v for cls in plugins.registry().providers.values() for v in cls.key_env or ()}
    variables |= {str(p.get("key_env")) for p in (conf.get("providers") or {}).values() if isinstance(p, dict)}
    keys = {name: os.environ.get(name, "") for name in variables}
    keys = {name: value for name, value in keys.items() if len(value) >= 8}  # shorter: too likely to match by chance
    for key, value in _strings(conf):
        for variable, secret in keys.items():
            if secret in value:
                raise UserError(f"{key} holds the value of {variable}, an API key: keys are read from the environment only, "
                                f"never put in settings (they would be saved in the ledger); the value is not shown here")


def check_key(provider: str, key: str, variable: str) -> None:
    """A key from the environment that no HTTP header can carry (a pasted line break, a space, a
    non-ASCII character) is refused before any request, never shown."""
    if not key.isascii() or not key.isprintable() or any(c.isspace() for c in key):
        raise UserError(f"{variable} (the environment) holds a {provider} key with a space, a line break or a non-ASCII "
                        f"character, which no HTTP header can carry: export it again as the provider shows it "
                        f"(the value is not shown here)")


def _strings(value: Any, key: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield key, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{key}[{i}]")


def _at(tree: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(tree, Mapping) or part not in tree:
            return None
        tree = tree[part]
    return tree


def _shown(value: Any) -> str:
    """A value as the command line writes it: -1 (not -1.0), nan, '' for an empty string."""
    return "''" if value == "" else values.text(value)
