"""Hydra's own errors in the runner's one-message form.

Hydra reports a malformed override with its grammar's expectations (`mismatched input '<EOF>'
expecting {':', BRACKET_OPEN, ...}`) and a composition error over several lines, exit status 1.
Here each becomes one line naming the override as typed, what is wrong with it in words, and what
is allowed; the command line exits 2 as for every other mistake.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from typing import Any

from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException, OverrideParseException
from omegaconf.errors import OmegaConfBaseException

from runner.config import RunConfig
from runner.errors import suggest


def grammar(arg: str, exc: OverrideParseException) -> str:
    """Why an override cannot be read, in words, naming it."""
    return f"the override {arg!r} (from the command line) cannot be read: {_grammar_reason(arg, exc)}"


def _grammar_reason(arg: str, exc: OverrideParseException) -> str:
    key, sep, value = arg.lstrip("+~").partition("=")
    if not sep:
        return "it has no '=': give setting=value, e.g. duration=5"
    if not key:
        return "nothing before the '=' names a setting, e.g. duration=5"
    text = value.strip()
    if text.endswith(","):
        return (f"it ends with a comma: a sweep lists its values with -m, {key}=a,b; one value has no comma "
                f"(quote a value that holds one: {key}='a, b')")
    if text.startswith(",") or ",," in text:
        return f"it has an empty value between commas: list values as {key}=a,b"
    for quote in "'\"":
        if text.count(quote) % 2:
            return f"its {quote} quote is not closed: {key}={quote}a value{quote}"
    if text.count("${") > text.count("}"):
        return "its ${...} interpolation is not closed"
    for opening, closing in ("[]", "{}", "()"):
        if text.count(opening) != text.count(closing):
            return f"its {opening} and {closing} do not pair up: a list is {key}=[a,b], a table {key}={{a: 1}}"
    reason = (exc.message or str(exc)).splitlines()[0]
    return (f"{reason}; quote a value that holds , [ ] {{ }} ( ) = or spaces: {key}='a value' "
            f"(the grammar: https://hydra.cc/docs/advanced/override_grammar/basic/)")


def composition(exc: HydraException) -> str:
    """A composition error (an option that does not exist, a value of the wrong type) in words."""
    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file and exc.options is not None:
        group, _, name = exc.missing_cfg_file.rpartition("/")
        options = sorted(exc.options)
        note = ""
        if group == "model":  # the catalogue's models come from plugins: say which were left out
            from runner import plugins

            note = plugins.registry().catalog.note
        return (f"{group}={name} is not an option of {group} (from the command line or the config)"
                f"{suggest(name, options)}; options: {', '.join(options) or 'none'}.{note}")
    cause = exc.__cause__
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    ambiguous = re.match(r"Ambiguous value for argument '(.*)'$", first)
    if ambiguous:
        line = ambiguous[1]
        key, _, value = line.partition("=")
        return (f"{line} (from the command line) holds a comma, which means several values: quote it to mean one "
                f"({key}='{value}'), write a list as {key}=[a,b], or add -m to sweep over the values")
    if isinstance(exc, ConfigCompositionException) and isinstance(cause, OmegaConfBaseException) and first.startswith("Error merging override "):
        line = first.removeprefix("Error merging override ")
        key = str(cause.full_key or line.partition("=")[0].lstrip("+~"))
        expected = describe(schema_type(key))
        if expected is None:
            return f"{line} is not allowed (from the command line): {str(cause.msg or cause).splitlines()[0]}"
        return f"{line} is not allowed (from the command line): {key} takes {expected}"
    return f"{first} (from the command line or the config)"


def schema_type(key: str) -> Any:
    """The declared type of a dotted setting in the run schema, or None where the schema does not say."""
    node: Any = RunConfig
    for part in key.split("."):
        if dataclasses.is_dataclass(node):
            fields = {f.name for f in dataclasses.fields(node)}
            if part not in fields:
                return None
            node = typing.get_type_hints(node)[part]
        elif typing.get_origin(node) is dict:
            node = typing.get_args(node)[1]
        else:
            return None
    return node


def describe(tp: Any) -> str | None:
    """A type in a user's words: `a whole number`, `a list of whole numbers, e.g. [5,10]`."""
    if typing.get_origin(tp) is typing.Union:
        inner = [t for t in typing.get_args(tp) if t is not type(None)]
        found = describe(inner[0]) if len(inner) == 1 else None
        return f"{found} (or null)" if found else None
    if typing.get_origin(tp) is list:
        item = describe(typing.get_args(tp)[0])
        return f"a list of {_plural(item)}, e.g. [a,b]" if item else "a list, e.g. [a,b]"
    if typing.get_origin(tp) is dict or dataclasses.is_dataclass(tp):
        return "a table of settings, e.g. {a: 1}"
    return {int: "a whole number", float: "a number", bool: "true or false", str: "text"}.get(tp)


def _plural(item: str) -> str:
    return {"a whole number": "whole numbers", "a number": "numbers", "true or false": "true/false values", "text": "texts"}.get(item, item)
