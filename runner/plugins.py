"""Plugin discovery: entry points in the `video_runner` group, loaded once, lazily.

`RUNNER_LOAD_PLUGINS=a,b` loads only those plugins (empty: none); `RUNNER_TRACE_PLUGINS=1` prints
every hook call. A plugin that fails to import or to contribute is reported by name and left out;
the others still load.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pluggy

from runner import hookspecs
from runner.catalog import Catalog
from runner.errors import UserError

GROUP = "video_runner"

pm = pluggy.PluginManager(GROUP)
pm.add_hookspecs(hookspecs)


@dataclass
class Registry:
    """What the loaded plugins contributed, and which plugins failed and why."""

    catalog: Catalog = field(default_factory=Catalog)
    providers: dict[str, type] = field(default_factory=dict)
    provider_plugin: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)


_registry: Registry | None = None


def registry() -> Registry:
    """Load plugins on first use and index what they contribute."""
    global _registry
    if _registry is None:
        _registry = _load()
    return _registry


def reset() -> None:
    """Forget loaded plugins (tests that change the environment or the installed plugins)."""
    global _registry
    _registry = None
    for name, plugin in list(pm.list_name_plugin()):
        pm.unregister(plugin, name)


def _allowed() -> set[str] | None:
    value = os.environ.get("RUNNER_LOAD_PLUGINS")
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


def _load() -> Registry:
    reg = Registry()
    allowed = _allowed()
    for ep in entry_points(group=GROUP):
        if allowed is not None and ep.name not in allowed:
            continue
        if pm.has_plugin(ep.name):
            continue
        try:
            pm.register(ep.load(), name=ep.name)
        except Exception as exc:  # a broken plugin must not hide the others
            reg.broken[ep.name] = f"cannot import {ep.value}: {type(exc).__name__}: {exc}"
            continue
        reg.versions[ep.name] = ep.dist.version if ep.dist else "?"
    if os.environ.get("RUNNER_TRACE_PLUGINS"):
        pm.trace.root.setwriter(lambda msg: print(msg, end="", file=sys.stderr))
        pm.enable_tracing()
    for name, impl_call in _per_plugin("register_manifests"):
        contributed: list[tuple[str, Path]] = []
        try:
            impl_call(lambda path, _c=contributed, _n=name: _c.append((_n, Path(path))))
            reg.catalog = reg.catalog.extended(contributed)
        except Exception as exc:
            reg.broken[name] = str(exc)
    for name, impl_call in _per_plugin("register_providers"):
        def register(cls: type, _n: str = name) -> None:
            if cls.name in reg.providers:
                raise UserError(f"provider {cls.name!r} is registered by both {reg.provider_plugin[cls.name]} and {_n}")
            reg.providers[cls.name] = cls
            reg.provider_plugin[cls.name] = _n
        try:
            impl_call(register)
        except Exception as exc:
            reg.broken[name] = str(exc)
    for name, problem in reg.broken.items():
        print(f"warning: plugin {name!r} left out: {problem}", file=sys.stderr)
    skipped = sorted(ep.name for ep in entry_points(group=GROUP) if allowed is not None and ep.name not in allowed)
    if skipped:
        reg.catalog.note += f" Plugins not loaded because RUNNER_LOAD_PLUGINS={os.environ['RUNNER_LOAD_PLUGINS']!r}: {', '.join(skipped)}."
    if reg.broken:
        reg.catalog.note += f" Plugins that failed to load: {', '.join(reg.broken)}."
    return reg


def _per_plugin(hook: str) -> list[tuple[str, Callable[[Callable[..., Any]], Any]]]:
    """Each plugin's implementation of a hook, callable on its own, so a failure is attributed."""
    calls = []
    for impl in getattr(pm.hook, hook).get_hookimpls():
        caller = pm.subset_hook_caller(hook, remove_plugins=[p for p in pm.get_plugins() if p is not impl.plugin])
        calls.append((impl.plugin_name, lambda register, _c=caller: _c(register=register)))
    return calls
