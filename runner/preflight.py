"""Command-line overrides checked against the schema and the catalogue before Hydra runs.

Hydra already rejects an unknown key, but says only that it is not in the config. This check names
the closest valid key or model, so `durration=5` or `model=klingg` is fixed at a glance.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import typing
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

from hydra._internal.utils import get_args_parser
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException

from runner.catalog import Catalog
from runner.config import RunConfig
from runner import hydra_errors
from runner.errors import UserError, suggest

GROUPS = ("model", "prompt_set", "provider")


#: Words that make a setting's name a secret's (`api_key`, `fal-token`, `secret`): such a setting is
#: never accepted in a config, and its value never echoed. `keyframes` or `key_env` are not secrets.
SECRET_WORDS = {"key", "apikey", "secret", "token", "password", "passwd", "credential", "credentials", "authorization", "bearer"}


def is_secret_name(name: str) -> bool:
    words = set(re.split(r"[_\-.]", name.lower()))
    return bool(words & SECRET_WORDS) and name.lower() != "key_env"


#: An environment variable's name as keys are conventionally named (RUNWAYML_API_SECRET, FAL_KEY);
#: Runway keys (`key_` + hex) are valid identifiers too, so lower case is refused as a likely key.
ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,63}$")


def check_overrides(args: Sequence[str], catalog: Catalog) -> list[str]:
    """Raise UserError for an override whose key or model name does not exist, or that would put a
    secret into the config; return the arguments with entries of free-form tables (`prices.kling=`,
    `native.cfg_scale=`) marked for Hydra as "add or override", so they need no `+`."""
    for arg in args:  # `python -m runner status`: a companion command typed to the runner
        if arg.isidentifier():  # a bare word, not an override: only then is the companion CLI's list worth importing
            from runner.cli import COMMANDS as COMPANION_COMMANDS

            if arg in COMPANION_COMMANDS:
                raise UserError(f"{arg!r} is not a setting: it is a command of the companion CLI; run: video-runner {arg}")
    parsed, _ = get_args_parser().parse_known_args(list(args))
    if parsed.help or parsed.hydra_help or parsed.shell_completion:
        return list(args)
    _check_config_files(parsed)
    overrides = [_parsed(arg) for arg in parsed.overrides]
    custom_search_path = parsed.config_dir or any(o.key_or_group.startswith("hydra.searchpath") for o in overrides)
    free_form: set[str] = set()
    for override in overrides:
        key = override.key_or_group
        if not key:
            raise UserError(f"the override {override.input_line!r} (from the command line) cannot be read: nothing "
                            f"before the '=' names a setting, e.g. duration=5")
        _check_secret(key, override)
        if key.startswith("hydra"):
            continue
        if key in ("model", "prompt_set") and override.package is None and (override.is_delete() or _values(override) == ["None"]):
            raise UserError(f"{override.input_line}: {key} cannot be left out (from the command line); choose one "
                            f"({key}=...){' or give a file (prompt_set.file=my_prompts.jsonl)' if key == 'prompt_set' else ''}")
        if override.is_add() or override.is_delete():
            if override.is_delete() and not override.is_add() and key not in GROUPS and not _check_key(key, override.input_line or key):
                raise UserError(f"{override.input_line}: a setting cannot be removed (from the command line); "
                                f"give {key}=null to leave it unset, or another value")
            continue
        if key in GROUPS and not custom_search_path and not isinstance(override.value(), dict):
            _check_option(override, catalog)
        elif key not in GROUPS and _check_key(key, override.input_line or key):
            free_form.add(override.input_line)
    return [f"++{arg}" if arg in free_form else arg for arg in args]


def _check_config_files(parsed: Any) -> None:
    """`--config-dir` and `--config-name` name a folder and a config that exist."""
    if parsed.config_dir is not None and not Path(parsed.config_dir).is_dir():
        raise UserError(f"--config-dir={parsed.config_dir} (from the command line) is not a folder; allowed: a folder of "
                        f"configs whose files are added to the runner's (conf/ has the layout)")
    name = parsed.config_name
    if name is not None:
        names = conf_options("") | ({p.stem for p in Path(parsed.config_dir).glob("*.yaml")} if parsed.config_dir else set())
        if name.removesuffix(".yaml") not in names:
            raise UserError(f"--config-name={name} (from the command line) is not a config{suggest(name, names)}; "
                            f"configs: {', '.join(sorted(names))}")


def _parsed(arg: str) -> Any:
    """One override, or the one message saying why it cannot be read."""
    try:
        return parse_override(arg)
    except OverrideParseException as exc:
        raise UserError(hydra_errors.grammar(arg, exc)) from None


@functools.lru_cache(maxsize=1024)
def parse_override(line: str) -> Any:
    """One override as Hydra's grammar reads it (OverrideParseException when it cannot), read once
    per command: the settings' checks read the same lines again."""
    return _parser().parse_overrides([line])[0]


@functools.cache
def _parser() -> OverridesParser:
    return OverridesParser.create()  # a few milliseconds each: one per command


def _check_secret(key: str, override: Any) -> None:
    """Keys come from the environment only: a config value would be saved in the ledger and in
    Hydra's run folder. The value given is never repeated back."""
    last = key.split(".")[-1]
    if last == "key_env" and key.startswith("providers."):
        values = [] if override.is_delete() else _values(override)
        if any(not ENV_NAME.match(value) for value in values):
            raise UserError(f"{key} must name an environment variable (capital letters, digits and _), and the value given is "
                            f"not one; if you pasted a key there, export it instead: export RUNWAYML_API_SECRET=... "
                            f"(the value is not shown here, and nothing was saved)")
    elif is_secret_name(last):
        raise UserError(f"{key}: API keys are never given in the config (they would be saved in the ledger and in "
                        f"Hydra's run folder); export the provider's key variable instead, e.g. "
                        f"export RUNWAYML_API_SECRET=... (the value is not shown here, and nothing was saved)")


def _values(override: Any) -> list[str]:
    if override.is_sweep_override():
        return [str(v) for v in override.sweep_string_iterator()]
    return [str(override.value())]


def _check_option(override: Any, catalog: Catalog) -> None:
    """`model=`, `prompt_set=` and `provider@providers.<name>=` name options that exist."""
    group = override.key_or_group
    if group == "model":
        choices = set(catalog.choices()) | conf_options("model")
    elif group == "provider":
        from runner import plugins

        choices = set(plugins.registry().providers) | conf_options("provider")
    else:
        choices = conf_options(group)
    for value in _values(override):
        if value in choices:
            continue
        if group == "model":
            raise UserError(
                f"unknown model {value!r} (from the command line){suggest(value, choices)}. "
                f"`python -m runner.models` lists every model with its modes and prices.{catalog.note}"
            )
        where = f"{group}@{override.package}" if override.package else group
        raise UserError(f"{where}={value} is not an option of {group} (from the command line){suggest(value, choices)}; "
                        f"options: {', '.join(sorted(choices))}")


def conf_options(group: str) -> set[str]:
    """The options of a config group in conf/ (its top-level configs for "")."""
    folder = files("runner_conf") / group if group else files("runner_conf")
    if not folder.is_dir():
        return set()
    return {p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")}


def _check_key(key: str, line: str) -> bool:
    """Walk the dotted key through the dataclass schema; True when it ends in a free-form table
    (any key accepted), False at a typed setting; UserError for a key the schema does not have."""
    node: Any = RunConfig
    path: list[str] = []
    for part in key.split("."):
        if dataclasses.is_dataclass(node):
            fields = {f.name: f for f in dataclasses.fields(node)}
            if part not in fields:
                where = ".".join(path) or "the top level"
                shown = part if is_secret_name(part) else line
                raise UserError(
                    f"unknown setting {'.'.join([*path, part])!r} in {shown!r}{suggest(part, fields)}; "
                    f"settings at {where}: {', '.join(fields)}"
                )
            node = typing.get_type_hints(node)[part]
        else:
            if node == _PROVIDERS:
                _check_provider_name(part, line)
            node = _dict_value_type(node)
            if node is None:
                return True
        path.append(part)
    return typing.get_origin(node) is dict and _dict_value_type(node) is None  # a whole free-form table: {a: 1}


_PROVIDERS = typing.get_type_hints(RunConfig)["providers"]


def _check_provider_name(name: str, line: str) -> None:
    from runner import plugins

    known = set(plugins.registry().providers) | conf_options("provider")
    if name not in known:
        raise UserError(f"unknown provider {name!r} in {line!r} (from the command line){suggest(name, known)}; "
                        f"providers: {', '.join(sorted(known)) or 'none installed'}")


def _dict_value_type(node: Any) -> Any:
    """The value type of a dict[str, X] annotation (X may be a dataclass), else None."""
    if typing.get_origin(node) is dict:
        value = typing.get_args(node)[1]
        return value if dataclasses.is_dataclass(value) else None
    return None
