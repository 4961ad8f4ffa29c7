"""Which value each job of a plan gets, and where it came from.

Lowest first: the manifest's defaults (filled in by the plan), `model.params`, the config and
command line, the sweep grid, then a prompt's own `params` / `native`. With
`override_prompt_params=true` a prompt's own values sit just above `model.params` instead, so the
config, the command line and the grid win over them. Every value keeps its source, so a message
can say where a refused value came from; a command-line value a prompt's own value hides is
noted, so the plan can say why `duration=5` did not apply to a prompt pinned to 10 s.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from runner import values
from runner.errors import UserError
from runner.prompts import Prompt

#: Where the config's and the command line's values come from, as messages say it.
CONFIG = "the config or command line"


@dataclass(frozen=True, slots=True)
class Given:
    value: Any
    source: str


Values = dict[str, Given]


def layer(under: Mapping[str, Given], over: Mapping[str, Any], source: str) -> Values:
    """`over`'s values (None means not given) on top of `under`'s, each with its source."""
    merged = dict(under)
    merged.update({k: Given(v, source) for k, v in over.items() if v is not None})
    return merged


def grid(sweep: Mapping[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The cartesian product of the in-config sweep, as (canonical values, native values) points."""
    axes = [[(name, v) for v in axis] for name, axis in _axes(sweep)]
    points = []
    for combo in itertools.product(*axes):
        canonical = {k: v for k, v in combo if not k.startswith("native.")}
        native = {k.removeprefix("native."): v for k, v in combo if k.startswith("native.")}
        points.append((canonical, native))
    return points


def _axes(sweep: Mapping[str, Any]) -> list[tuple[str, list[Any]]]:
    named = [(k, v) for k, v in sweep.items() if k != "native" and v is not None]
    named += [(f"native.{k}", v) for k, v in (sweep.get("native") or {}).items()]
    for name, axis in named:
        if not isinstance(axis, list) or not axis:
            raise UserError(f"sweep.{name}={axis!r} is not allowed: give a non-empty list, e.g. sweep.{name}=[a,b]")
    return named


@dataclass
class Layers:
    """The values a plan's jobs start from (the model's, and each sweep point's: the config, the
    command line and the grid), merged with each prompt's own by the precedence above."""

    model: Values
    model_native: Values
    points: list[tuple[Values, Values]]  # per sweep point: the config's and the grid's values, without the model's
    override: bool = False  # override_prompt_params: the config and the grid win over a prompt's own values
    #: (value as given, its source) -> the prompts whose own value hid it (when not `override`).
    hidden: dict[tuple[str, str], dict[str, None]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._merged = [({**self.model, **canonical}, {**self.model_native, **native}) for canonical, native in self.points]

    def values(self, prompt: Prompt) -> Iterator[tuple[Values, Values]]:
        """The canonical and native values of the prompt at each sweep point."""
        own = layer({}, prompt.params, f"{prompt.label} (params)")
        own_native = layer({}, prompt.native, f"{prompt.label} (native)")
        for (canonical, native), (base, base_native) in zip(self.points, self._merged):
            if self.override:
                yield {**self.model, **own, **canonical}, {**self.model_native, **own_native, **native}
                continue
            if own or own_native:
                self._note(prompt.id, own, canonical, "")
                self._note(prompt.id, own_native, native, "native.")
            yield {**base, **own}, {**base_native, **own_native}

    def _note(self, prompt_id: str, own: Values, point: Values, prefix: str) -> None:
        for name, mine in own.items():
            theirs = point.get(name)
            if theirs is not None and not values.same(theirs.value, mine.value):
                self.hidden.setdefault((f"{prefix}{name}={values.text(theirs.value)}", theirs.source), {})[prompt_id] = None

    def warnings(self) -> list[str]:
        """A line per value that some prompts' own values hid, naming the switch that changes it."""
        lines = []
        for (given, source), hiding in self.hidden.items():
            ids = list(hiding)
            shown = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
            lines.append(f"{given} (from {source}) does not apply to {len(ids)} prompt{'s' if len(ids) != 1 else ''} "
                         f"that set{'s' if len(ids) == 1 else ''} {given.split('=')[0]} {'itself' if len(ids) == 1 else 'themselves'} "
                         f"({shown}); add override_prompt_params=true to make the config and command line win")
        return lines
