"""Command-line overrides checked against the schema and the catalogue before Hydra runs.

Hydra already rejects an unknown key, but says only that it is not in the config. This check names
the closest valid key or model, so `durration=5` or `model=klingg` is fixed at a glance.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Sequence
from importlib.resources import files
from typing import Any

from hydra._internal.utils import get_args_parser
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException

from runner.catalog import Catalog
from runner.config import RunConfig
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
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,63}$")


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
    try:
        overrides = OverridesParser.create().parse_overrides(parsed.overrides)
    except OverrideParseException:
        return list(args)  # Hydra reports malformed overrides itself, with the position of the mistake
    custom_search_path = parsed.config_dir or any(o.key_or_group.startswith("hydra.searchpath") for o in overrides)
    free_form: set[str] = set()
    for override in overrides:
        key = override.key_or_group
        _check_secret(key, override)
        if key.startswith("hydra") or override.is_add() or override.is_delete() or override.package is not None:
            continue
        if key == "model" and not custom_search_path:
            _check_models(override, catalog)
        elif key not in GROUPS and _check_key(key, override.input_line or key):
            free_form.add(override.input_line)
    return [f"++{arg}" if arg in free_form else arg for arg in args]


def _check_secret(key: str, override: Any) -> None:
    """Keys come from the environment only: a config value would be saved in the ledger and in
    Hydra's run folder. The value given is never repeated back."""
    last = key.split(".")[-1]
    if last == "key_env" and key.startswith("providers."):
        values = [] if override.is_delete() else _values(override)
        if any(not _ENV_NAME.match(value) for value in values):
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


def _check_models(override: Any, catalog: Catalog) -> None:
    choices = set(catalog.choices()) | conf_options("model")
    for value in _values(override):
        if value not in choices:
            raise UserError(
                f"unknown model {value!r} (from the command line){suggest(value, choices)}. "
                f"`python -m runner.models` lists every model with its modes and prices.{catalog.note}"
            )


def conf_options(group: str) -> set[str]:
    folder = files("runner_conf") / group
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
            node = _dict_value_type(node)
            if node is None:
                return True
        path.append(part)
    return False


def _dict_value_type(node: Any) -> Any:
    """The value type of a dict[str, X] annotation (X may be a dataclass), else None."""
    if typing.get_origin(node) is dict:
        value = typing.get_args(node)[1]
        return value if dataclasses.is_dataclass(value) else None
    return None
