"""`python -m runner.models [filter]`: installed plugins, their providers (with the variable each
reads its key from, and whether it has a simulator), and every model with its modes and prices."""

from __future__ import annotations

import sys

from runner import installed, plugins
from runner.report import describe_pricing


def listing(filter_text: str = "") -> str:
    registry = plugins.registry()
    lines = ["plugins:"]
    for name, plugin in sorted(plugins.pm.list_name_plugin()):
        hooks = sorted(impl.name for impl in plugins.pm.get_hookcallers(plugin) or [])
        lines.append(f"  {name} {registry.versions.get(name, '?')}  hooks: {', '.join(hooks)}")
    for name, problem in registry.broken.items():
        lines.append(f"  {name} BROKEN: " + problem.replace("\n", "\n      "))
    for name in sorted(set(registry.skipped)):
        lines.append(f"  {name} not loaded (not in RUNNER_LOAD_PLUGINS)")
    lines.append("providers:")
    for provider in installed.providers():
        simulator = "simulator: yes (simulate=true)" if provider.simulated else "simulator: none"
        lines.append(f"  {provider.name} (plugin {provider.plugin})  key {provider.key_env or '?'}  {simulator}")
    lines.append("models:")
    for model in sorted(registry.catalog.models.values(), key=lambda m: (m.provider, m.name)):
        names = " ".join([model.name, *model.spec.aliases])
        if filter_text and filter_text not in names:
            continue
        aliases = f"; aliases {', '.join(model.spec.aliases)}" if model.spec.aliases else ""
        retired = model.spec.retired
        if retired is not None:
            aliases += f"; {'retired' if retired.refused else 'deprecated'}"
            aliases += f", use {retired.replacement}" if retired.replacement else ""
        lines.append(f"  {model.name} ({model.provider}{aliases}) {model.spec.title}")
        for mode_name, mode in model.spec.modes.items():
            lines.append(f"    {mode_name:<22} {mode.endpoint:<55} {describe_pricing(model.spec.pricing_for(mode_name))}")
    return "\n".join(lines)


def main() -> None:
    print(listing(sys.argv[1] if len(sys.argv) > 1 else ""))


if __name__ == "__main__":
    main()
