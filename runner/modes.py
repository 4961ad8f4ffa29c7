"""Which of a model's modes a prompt calls for (text-to-video, image-to-video, ...).

A prompt does not name its mode: its inputs do. The mode chosen uses every input the prompt gives
and has every input it requires; when none fits, the message says what the model takes.
"""

from __future__ import annotations

from runner.catalog import CatalogModel
from runner.errors import NotTaken, suggest
from runner.manifest import MEDIA_PARAMS, Mode


def select_mode(model: CatalogModel, present: set[str], forced: str | None, where: str) -> str:
    """The mode the prompt's inputs call for: every input used, every required input present."""
    modes = model.spec.modes

    def needs(mode: Mode) -> set[str]:
        return {s.canonical for s in mode.params.values() if s.required and s.canonical in MEDIA_PARAMS}

    def takes(mode: Mode) -> set[str]:
        return {s.canonical for s in mode.params.values() if s.canonical in MEDIA_PARAMS}

    if forced:
        if forced not in modes:
            raise NotTaken(
                f"mode={forced} is not a mode of model {model.name}{suggest(forced, modes)}; its modes: {', '.join(modes)}"
            )
        candidates = [forced]
    else:
        candidates = list(modes)
    fitting = [m for m in candidates if needs(modes[m]) <= present and present <= takes(modes[m])]
    if fitting:
        return max(fitting, key=lambda m: len(takes(modes[m]) & present))
    name = candidates[0]
    missing = needs(modes[name]) - present
    extra = present - takes(modes[name])
    kinds = ", ".join(candidates)
    if len(candidates) == 1 and missing:
        raise NotTaken(
            f"model {model.name} is {kinds} only and needs {', '.join(sorted(missing))}, "
            f"but {where} has none; use a prompt set whose prompts give {', '.join(sorted(missing))}, or a model that takes text alone"
        )
    given = ", ".join(sorted(present)) or "text only"
    raise NotTaken(
        f"model {model.name} has no mode for {where} ({given}): its modes are {kinds}"
        + (f"; it does not take {', '.join(sorted(extra))}" if extra else "")
    )
