"""Plugin discovery: entry points in the `video_runner` group, loaded once, lazily.

`RUNNER_LOAD_PLUGINS=a,b` loads only those plugins (empty: none); `RUNNER_TRACE_PLUGINS=1` prints
every hook call. The runner's own plugins load first, then the others by name, so a third-party
plugin can never displace a built-in model. A plugin that fails to import or to contribute (a
malformed manifest, a model name or alias already taken, a bad provider class) is reported by name
and left out whole; the others still load.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

import pluggy

from runner import hookspecs
from runner.catalog import Catalog
from runner.errors import UserError, suggest

GROUP = "video_runner"
#: The distribution whose entry points are the built-in plugins.
BUILTIN_DIST = "video-runner"

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
    skipped: list[str] = field(default_factory=list)  # installed, but not in RUNNER_LOAD_PLUGINS


_registry: Registry | None = None
_untrace: Callable[[], None] | None = None


def registry() -> Registry:
    """Load plugins on first use and index what they contribute."""
    global _registry
    if _registry is None:
        _registry = _load()
    return _registry


def reset() -> None:
    """Forget loaded plugins (tests that change the environment or the installed plugins)."""
    global _registry, _untrace, _observers, _simulators
    _observers = None
    _simulators = None
    _registry = None
    if _untrace is not None:
        _untrace()
        _untrace = None
    for name, plugin in list(pm.list_name_plugin()):
        pm.unregister(plugin, name)


def _allowed() -> set[str] | None:
    value = os.environ.get("RUNNER_LOAD_PLUGINS")
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


def _dist(ep: EntryPoint) -> str:
    """`name version` of the distribution that declares an entry point."""
    return f"{ep.dist.name} {ep.dist.version}" if ep.dist else "unknown distribution"


def is_builtin(ep: EntryPoint) -> bool:
    """Whether an entry point is one of the runner's own plugins."""
    return ep.dist is not None and re.sub(r"[-_.]+", "-", ep.dist.name).lower() == BUILTIN_DIST


def _load() -> Registry:
    global _untrace
    reg = Registry()
    allowed = _allowed()
    tracing = bool(os.environ.get("RUNNER_TRACE_PLUGINS"))
    if tracing and _untrace is None:
        _untrace = pm.add_hookcall_monitoring(_trace_call, _trace_result)
    installed = sorted(entry_points(group=GROUP), key=lambda ep: (not is_builtin(ep), ep.name))
    origin: dict[str, str] = {}
    for ep in installed:
        if allowed is not None and ep.name not in allowed:
            reg.skipped.append(ep.name)
            continue
        if ep.name in origin:
            print(f"warning: plugin name {ep.name!r} is declared by both {origin[ep.name]} and {_dist(ep)}; "
                  f"using the one from {origin[ep.name]}", file=sys.stderr)
            continue
        origin[ep.name] = _dist(ep)
        if tracing:
            print(f"plugin {ep.name}: loading {ep.value} ({_dist(ep)})", file=sys.stderr)
        try:
            module = ep.load()
        except Exception as exc:  # a broken plugin must not hide the others
            reg.broken[ep.name] = f"cannot import {ep.value}: {type(exc).__name__}: {exc}"
            continue
        try:
            pm.register(module, name=ep.name)
            _check_hook_names(ep.name)
        except Exception as exc:  # a hook implementation that does not match runner/hookspecs.py
            if pm.has_plugin(ep.name):
                pm.unregister(name=ep.name)
            reg.broken[ep.name] = f"{ep.value} does not fit the plugin contract (runner/hookspecs.py): {exc}"
            continue
        reg.versions[ep.name] = ep.dist.version if ep.dist else "?"
    for name in list(reg.versions):  # built-ins first: on a clash the later plugin is the one left out
        try:
            catalog, providers = _contributions(name, reg)
        except Exception as exc:
            reg.broken[name] = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
            pm.unregister(name=name)
            del reg.versions[name]
            continue
        reg.catalog = catalog
        for cls in providers:
            reg.providers[cls.name] = cls
            reg.provider_plugin[cls.name] = name
    for name, problem in reg.broken.items():
        print(f"warning: plugin {name!r} ({origin.get(name, '?')}) left out: {problem}", file=sys.stderr)
    if allowed is not None:
        unknown = sorted(allowed - {ep.name for ep in installed})
        if unknown:
            print(f"warning: RUNNER_LOAD_PLUGINS names {', '.join(map(repr, unknown))}, which no installed plugin "
                  f"provides; installed plugins: {', '.join(sorted({ep.name for ep in installed})) or 'none'}", file=sys.stderr)
    if reg.skipped:
        reg.catalog.note += (f" Plugins not loaded because RUNNER_LOAD_PLUGINS={os.environ['RUNNER_LOAD_PLUGINS']!r}: "
                             f"{', '.join(sorted(set(reg.skipped)))}.")
    if reg.broken:
        reg.catalog.note += f" Plugins that failed to load: {', '.join(reg.broken)}."
    return reg


def _contributions(name: str, reg: Registry) -> tuple[Catalog, list[type]]:
    """One plugin's manifests (added to the catalogue so far) and provider classes, checked; a
    problem raises, naming the file, entry and field, or the clash with another plugin."""
    from runner.providers import Provider

    manifests: list[tuple[str, Path]] = []
    _call(name, "register_manifests", lambda path: manifests.append((name, Path(path))))
    catalog = reg.catalog.extended(manifests)
    providers: list[type] = []

    def register(cls: Any) -> None:
        if not (isinstance(cls, type) and issubclass(cls, Provider)):
            raise UserError(f"register_providers: {cls!r} is not a subclass of runner.providers.Provider")
        if not isinstance(getattr(cls, "name", None), str) or not cls.name:
            raise UserError(f"register_providers: provider class {cls.__name__} has no `name`")
        owner = reg.provider_plugin.get(cls.name) or (name if any(p.name == cls.name for p in providers) else None)
        if owner is not None:
            raise UserError(f"provider {cls.name!r} is registered by both plugin {owner} and plugin {name}; "
                            f"leave one out with RUNNER_LOAD_PLUGINS")
        providers.append(cls)

    _call(name, "register_providers", register)
    return catalog, providers


def _check_hook_names(name: str) -> None:
    """pluggy accepts an implementation of a hook nobody defines; here that is a typo to report."""
    known = [hook for hook in dir(hookspecs) if hasattr(getattr(hookspecs, hook), "video_runner_spec")]
    for caller in pm.get_hookcallers(pm.get_plugin(name)) or []:
        if caller.spec is None:
            raise UserError(f"it implements {caller.name!r}, which is not a hook{suggest(caller.name, known)}; "
                            f"the hooks are {', '.join(sorted(known))}")


def _call(name: str, hook: str, register: Callable[[Any], None]) -> None:
    """Call one plugin's implementation of a registration hook (traced like any hook call)."""
    plugin = pm.get_plugin(name)
    if not any(impl.plugin is plugin for impl in getattr(pm.hook, hook).get_hookimpls()):
        return
    others = [p for p in pm.get_plugins() if p is not plugin]
    pm.subset_hook_caller(hook, remove_plugins=others)(register=register)


@dataclass(frozen=True)
class Simulators:
    """The provider simulators plugins registered: by provider, with the plugin of each."""

    classes: dict[str, type] = field(default_factory=dict)
    plugin: dict[str, str] = field(default_factory=dict)

    def values(self) -> list[type]:
        return list(self.classes.values())


_simulators: Simulators | None = None


def simulators() -> Simulators:
    """Every provider simulator the loaded plugins register (`register_simulators`), the built-ins'
    first. Asked for only when a simulator is wanted, so a run against the real providers never
    imports one. A registration that is not a `runner.sim.ProviderSim` subclass, or a second
    simulator for one provider, is reported by plugin and left out; the plugin's provider still works."""
    global _simulators
    if _simulators is None:
        from runner.sim.faults import Points
        from runner.sim.provider import ProviderSim

        found = Simulators()
        for name in registry().versions:  # in load order: built-ins first

            def register(cls: Any, name: str = name) -> None:
                if not (isinstance(cls, type) and issubclass(cls, ProviderSim)):
                    raise UserError(f"{cls!r} is not a subclass of runner.sim.ProviderSim")
                if not isinstance(getattr(cls, "provider", None), str) or not cls.provider or not isinstance(getattr(cls, "key", None), str):
                    raise UserError(f"simulator class {cls.__name__} needs `provider` and `key`")
                if cls.provider in found.classes:
                    raise UserError(f"a simulator for provider {cls.provider!r} is registered by both plugin "
                                    f"{found.plugin[cls.provider]} and plugin {name}")
                Points.of([cls])  # its fault points' roles, checked now rather than when a simulator starts
                found.classes[cls.provider], found.plugin[cls.provider] = cls, name

            try:
                _call(name, "register_simulators", register)
            except Exception as exc:  # a broken simulator must not hide the others, nor its plugin's provider
                problem = str(exc) if isinstance(exc, (UserError, ValueError)) else f"{type(exc).__name__}: {exc}"
                print(f"warning: plugin {name!r}: its simulator is left out: register_simulators: {problem}", file=sys.stderr)
        _simulators = found
    return _simulators


# -- RUNNER_TRACE_PLUGINS=1 ---------------------------------------------------------------------------


def _trace_call(hook: str, impls: list[Any], kwargs: dict[str, Any]) -> None:
    """`plugin hook job_submitted(job=<job 1a2b3c4d5e6f>, task_id='...') -> runway, my_plugin`."""
    args = ", ".join(f"{key}={_brief(value)}" for key, value in kwargs.items())
    names = ", ".join(impl.plugin_name for impl in impls) or "no plugin implements it"
    print(f"plugin hook {hook}({args}) -> {names}", file=sys.stderr)


def _trace_result(outcome: Any, hook: str, impls: list[Any], kwargs: dict[str, Any]) -> None:
    if outcome.exception is not None:
        print(f"plugin hook {hook} raised {type(outcome.exception).__name__}: {outcome.exception}", file=sys.stderr)


def _brief(value: Any) -> str:
    if isinstance(value, dict) and "key" in value:
        return f"<job {str(value['key'])[:12]}>"
    if callable(value):
        return "<callback>"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


#: The hooks that observe jobs (runner.delivery feeds them from the ledger's events).
LIFECYCLE_HOOKS = ("job_submitted", "job_generated", "job_finished", "job_failed")
_observers: dict[str, dict[str, Any]] | None = None


def observers() -> dict[str, dict[str, Any]]:
    """Plugin name -> {lifecycle hook: a caller of only that plugin's implementation}: one plugin
    at a time, so a failing observer is reported by name and the others are still called (each call
    is traced like any hook call)."""
    global _observers
    if _observers is None:
        found: dict[str, dict[str, Any]] = {}
        for hook in LIFECYCLE_HOOKS:
            for impl in getattr(pm.hook, hook).get_hookimpls():
                others = [p for p in pm.get_plugins() if p is not impl.plugin]
                found.setdefault(impl.plugin_name, {})[hook] = pm.subset_hook_caller(hook, remove_plugins=others)
        _observers = found
    return _observers
