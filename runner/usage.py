"""`python -m runner --help`: what is installed, the options of each group, and every setting in
one line, written from the structured config's own field descriptions (runner/config.py), so the
help cannot drift from the settings. Nothing is composed: the help answers at once.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterator
from typing import Any

from omegaconf import MISSING

from runner import installed, plugins, preflight
from runner.config import ProviderConf, RunConfig


def text() -> str:
    registry = plugins.registry()
    groups = {
        "model": sorted(set(registry.catalog.choices()) | preflight.conf_options("model")),
        "prompt_set": sorted(preflight.conf_options("prompt_set")),
        "provider": sorted(set(registry.providers) | preflight.conf_options("provider")),  # provider@providers.<name>=<option>
    }
    rows = list(_settings(RunConfig))
    width = max(len(key) for key, _ in rows) + 2
    return "\n".join([
        installed.help_text("header"),
        "== Options (group=option) ==",
        *(f"{group}: {', '.join(options)}" for group, options in groups.items()),
        "",
        "== Settings (setting=value; the default in brackets) ==",
        *(f"  {key:<{width}}{line}" for key, line in rows),
        "",
        installed.help_text("footer").rstrip(),
        "The composed config: python -m runner --cfg job <overrides>. The version: python -m runner --version.",
    ])


def _settings(schema: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(setting, `description [default] (range)`) for every field of the schema, nested ones by
    their dotted names, tables by `<name>` entries."""
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        key, tp = f"{prefix}{f.name}", hints[f.name]
        if f.name in ("model", "prompt_set") and not prefix:
            yield key, f"{f.metadata['doc']}; see the options above"
            yield from _settings(tp, f"{key}.")
            continue
        if dataclasses.is_dataclass(tp):
            yield from _settings(tp, f"{key}.")
            continue
        if tp == typing.get_type_hints(RunConfig)["providers"]:
            yield from _settings(ProviderConf, f"{key}.<name>.")
            continue
        limits = f.metadata.get("range")
        shown = f" ({limits.text()})" if limits is not None else ""
        name = f"{key}.{_ENTRIES.get(f.name, '<name>')}" if typing.get_origin(tp) is dict else key
        yield name, f"{f.metadata['doc']}{_default(f)}{shown}"


#: What the keys of each table are, for its line: `prices.<model>`.
_ENTRIES = {"prices": "<model>", "model_concurrency": "<model>", "native": "<field>", "params": "<param>", "endpoints": "<service>"}


def _default(f: dataclasses.Field) -> str:
    if f.default is dataclasses.MISSING or f.default is MISSING:
        return ""
    value = f.default
    shown = "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    return f" [{shown}]"
