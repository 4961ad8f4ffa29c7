"""What is installed, in words: the providers the loaded plugins bring, the variable each reads its
key from, whether each has a simulator, and a model of each for examples.

The help, the missing-key message and `python -m runner.models` say this from here, so they name
the providers actually installed (a third-party plugin's included) rather than a fixed list.
"""

from __future__ import annotations

from dataclasses import dataclass

from runner import plugins
from runner.catalog import CatalogModel


@dataclass(frozen=True)
class InstalledProvider:
    name: str
    plugin: str
    key_env: str  # the variable its key is read from by default ("" when the plugin names none)
    simulated: bool  # a plugin registered a simulator of it (simulate=true covers it)


def providers() -> list[InstalledProvider]:
    """Every provider of the loaded plugins, in load order (the runner's own first)."""
    registry = plugins.registry()
    simulated = plugins.simulators().classes
    found = []
    for name, cls in registry.providers.items():
        key_env = cls.key_env[0] if cls.key_env else (cls.default_conf.key_env if cls.default_conf is not None else "")
        found.append(InstalledProvider(name, registry.provider_plugin[name], key_env, name in simulated))
    return found


def key_variables(found: list[InstalledProvider] | None = None) -> str:
    """`RUNWAYML_API_SECRET (runway), FAL_KEY (fal), ...`."""
    return ", ".join(f"{p.key_env or '?'} ({p.name})" for p in (providers() if found is None else found)) or "no provider is installed"


def example_model(provider: str) -> str | None:
    """A model of the provider that animates an image (the bundled `animate` prompt set), by its
    shortest name: the first such in its manifests that the provider still runs."""
    for model in plugins.registry().catalog.models.values():
        if model.provider == provider and "image-to-video" in model.spec.modes and _runs(model):
            return min((model.name, *model.spec.aliases), key=len)
    return None


def _runs(model: CatalogModel) -> bool:
    return model.spec.retired is None or not model.spec.retired.refused


def help_text(part: str) -> str:
    """The `--help` header or footer (runner/usage.py writes the rest)."""
    found = providers()
    names = ", ".join(p.name for p in found) or "none installed"
    examples = [m for m in (example_model(p.name) for p in found) if m]
    simulated = [m for p in found if p.simulated and (m := example_model(p.name))]
    if part == "header":
        lines = [f"runner: batch-generate AI video across the installed providers' models ({names}), resumably.", ""]
        if examples:
            lines.append(f"  python -m runner model={examples[0]} prompt_set=animate dry_run=true   # the jobs and their cost")
        if simulated:
            lines.append(f"  python -m runner model={simulated[0]} prompt_set=animate simulate=true   # run them against the local simulator")
        if len(examples) > 1:
            lines.append(f"  python -m runner -m model={','.join(examples)} prompt_set=animate dry_run=true   # a sweep across providers")
        lines.append("  python -m runner.models   # every model with its modes and prices, the plugins and their key variables")
        return "\n".join(lines) + "\n"
    if part == "footer":
        no_sim = ", ".join(p.name for p in found if not p.simulated)
        unsimulated = f" (no simulator: {no_sim}; simulate=<names> simulates only those named)" if no_sim else ""
        return (f"Keys come from the environment: {key_variables(found)}. simulate=true runs against the local simulator "
                f"with no key{unsimulated}.\n"
                "A rerun of the same command resumes: finished jobs are skipped and jobs already submitted are collected, never paid twice.\n"
                "Hydra's own options: python -m runner --hydra-help\n")
    raise ValueError(f"runner_help: no part {part!r} (header, footer)")
