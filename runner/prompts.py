"""Prompt files: a prompt set is data (YAML, JSON lines or CSV) that the config only points to.

Hydra composes the small run config; the prompts themselves never pass through it, because typed
composition costs milliseconds per prompt and a sweep may have a hundred thousand of them. A file
is read once per process, one row at a time, and every row is checked as it is read: a mistake is
reported with the file and line it is on, every mistake of the file at once (up to a limit), before
anything is planned.

A row: `id` (unique in the file), `text`, the inputs (`image`, `end_image`, `video`, `audio_input`,
`reference_images`: a local path, a URL or a data URI; a relative path is resolved from the file's
folder, `${asset:name}` names an image bundled with the runner), `params` (canonical parameters for
this prompt only) and `native` (native fields for this prompt only).
"""

from __future__ import annotations

import csv
import functools
import itertools
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from runner import values
from runner.config import RUN_LEVEL_PARAMS
from runner.errors import UserError, suggest
from runner.inputs import is_remote
from runner.manifest import MEDIA_PARAMS, YAML_LOADER

FIELDS = ("id", "text", *MEDIA_PARAMS, "params", "native")
FORMATS = {".yaml": "yaml", ".yml": "yaml", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "csv"}
#: What a prompt file is read as: UTF-8, a byte-order mark at its start skipped (spreadsheets and
#: Windows editors write one); UTF-16 where its byte-order mark says so (a spreadsheet's "Unicode" export).
ENCODING = "utf-8-sig"
_UTF16_MARKS = (b"\xff\xfe", b"\xfe\xff")
#: A CSV file's columns named as they are (parameters are `params.<name>` and `native.<field>`).
CSV_COLUMNS = tuple(c for c in FIELDS if c not in ("params", "native"))
#: The separators a CSV file's header is tried with (spreadsheets set to a locale whose decimal
#: mark is a comma save with semicolons); the one that finds the most known columns is used.
CSV_SEPARATORS = (",", ";", "\t")
#: Problems listed before the rest are only counted: enough to fix a file in one go.
MAX_SHOWN = 20
#: CSV cells holding several inputs (`reference_images`) separate them with this.
CSV_LIST_SEPARATOR = "|"

_ASSET = re.compile(r"^\$\{asset:([^}]+)\}$")
#: A prompt id names the prompt's files (outputs/<sweep>/<model>/<id>__...): a plain name, never a path.
_ID = re.compile(r"^[^\W_](?:[\w .+-]{0,98}[\w+-])?$")
ID_RULE = "an id is 1 to 100 letters, digits, spaces and . _ + -, starting with a letter or digit (no / or \\), unique in the file"
#: The longest prompt text accepted whatever the model: far beyond what video models take (Runway
#: documents 1,000 characters), so a longer text is a file pasted by mistake, caught with its line
#: even for a model whose provider documents no limit. A model's own `max_length` is checked when
#: the plan is built.
MAX_TEXT = 20_000


@dataclass(frozen=True, slots=True)
class Prompt:
    id: str
    text: str
    media: dict[str, Any]  # canonical input name -> a path, URL or data URI (a list for reference_images)
    params: dict[str, Any]
    native: dict[str, Any]
    where: str  # "file:line", for messages

    @property
    def label(self) -> str:
        """How messages name this prompt: `prompt 'id' at file:line`."""
        return f"prompt {self.id!r} at {self.where}"


@dataclass(frozen=True)
class PromptSet:
    name: str
    file: str  # as configured, for messages
    prompts: tuple[Prompt, ...]


class _Problems:
    """A file's mistakes, collected so that one run shows them all."""

    def __init__(self, shown: str):
        self.shown = shown
        self.found: list[str] = []

    def add(self, line: int | None, message: str) -> None:
        self.found.append(f"{self.shown}:{line}: {message}" if line else f"{self.shown}: {message}")

    def raise_any(self) -> None:
        if not self.found:
            return
        if len(self.found) == 1:
            raise UserError(self.found[0])
        more = len(self.found) - MAX_SHOWN
        listed = "\n  ".join(self.found[:MAX_SHOWN])
        tail = f"\n  ... and {more} more" if more > 0 else ""
        raise UserError(f"prompt file {self.shown} has {len(self.found)} problems:\n  {listed}{tail}")


_cache: dict[tuple[str, int, int, str | None], PromptSet] = {}


@functools.cache
def asset_path(name: str) -> str:
    """`${asset:sneaker.png}` in a prompt file: an image bundled with the runner."""
    return str(files("runner") / "assets" / name)


def locate(file: str) -> Path:
    """The prompt file a config names: a path (relative to the working folder), or
    `pkg://package/name` for one bundled with a Python package (the runner's own sets)."""
    if file.startswith("pkg://"):
        package, _, name = file.removeprefix("pkg://").partition("/")
        try:
            return Path(str(files(package) / name))
        except ModuleNotFoundError:
            raise UserError(f"prompt_set.file={file}: no installed package {package!r}") from None
    return Path(file).expanduser()


def load(file: str | None, name: str | None = None) -> PromptSet:
    """The prompt set in `file`, read and checked once per process (again only if the file changed)."""
    if not file:
        raise UserError("no prompt file: choose a bundled set (prompt_set=ads) or give your own (prompt_set.file=my_prompts.jsonl)")
    path = locate(file)
    try:
        stat = path.stat()
    except OSError:
        raise UserError(f"prompt_set.file={file}: no such file (looked for {path.resolve()})") from None
    cache_key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, name)
    if cache_key not in _cache:
        _cache[cache_key] = _read(path, file, name)
    return _cache[cache_key]


def _read(path: Path, shown: str, name: str | None) -> PromptSet:
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise UserError(f"prompt_set.file={shown}: {path.suffix or 'no extension'} is not a prompt file format; "
                        f"name it .yaml, .jsonl, .csv or .tsv")
    problems = _Problems(shown)
    header: dict[str, Any] = {}
    rows = {"yaml": _yaml_rows, "jsonl": _jsonl_rows, "csv": _csv_rows}[kind]
    prompts: list[Prompt] = []
    first_line: dict[str, int] = {}
    folder = path.resolve().parent
    try:
        for line, row in rows(path, problems, header):
            prompt = _prompt(row, line, shown, folder, problems)
            if prompt is None:
                continue
            if prompt.id in first_line:
                problems.add(line, f"prompt id {prompt.id!r} is used twice (first on line {first_line[prompt.id]}); ids must be unique")
                continue
            first_line[prompt.id] = line
            prompts.append(prompt)
    except OSError as exc:
        raise UserError(f"prompt_set.file={shown}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"prompt_set.file={shown}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    problems.raise_any()
    if not prompts:
        raise UserError(f"prompt_set.file={shown} has no prompts")
    return PromptSet(name=name or header.get("name") or path.stem, file=shown, prompts=tuple(prompts))


# -- one row -------------------------------------------------------------------------------------------


def _prompt(row: Any, line: int, shown: str, folder: Path, problems: _Problems) -> Prompt | None:
    """A checked prompt, or None with its problems added."""
    if not isinstance(row, Mapping):
        problems.add(line, f"a prompt is a mapping with id, text, ...; got {type(row).__name__} {str(row)[:60]!r}")
        return None
    before = len(problems.found)
    for field in row:
        if field not in FIELDS:
            problems.add(line, f"unknown field {str(field)!r}{suggest(str(field), FIELDS)}; a prompt's fields: {', '.join(FIELDS)}")
    prompt_id = row.get("id")
    if prompt_id is None or (isinstance(prompt_id, str) and not prompt_id.strip()):
        problems.add(line, f"a prompt needs an id ({ID_RULE}); got {'none' if prompt_id is None else repr(prompt_id)}")
        return None
    if isinstance(prompt_id, bool) or not isinstance(prompt_id, (str, int)):
        problems.add(line, f"id {values.shown(prompt_id, 60)} is not a name ({ID_RULE})")
        return None
    prompt_id = str(prompt_id)
    if not _ID.match(prompt_id) or prompt_id in (".", ".."):
        problems.add(line, f"id {values.shown(prompt_id, 60)} is not allowed: {ID_RULE}")
        return None
    text = row.get("text") or ""
    if not isinstance(text, str):
        problems.add(line, f"prompt {prompt_id!r}: text must be text, not {type(text).__name__}")
    elif len(text) > MAX_TEXT:
        problems.add(line, f"prompt {prompt_id!r}: text is {len(text):,} characters ({values.shown(text, 40)}); allowed: at most "
                     f"{MAX_TEXT:,} (a model's own limit, where its provider documents one, is checked too)")
    media = {}
    for name in MEDIA_PARAMS:
        value = row.get(name)
        if value in (None, "", []):
            continue
        resolved = _media(value, name == "reference_images", folder)
        if resolved is None:
            problems.add(line, f"prompt {prompt_id!r}: {name} must be a path, URL or data URI"
                         + (" (or a list of them)" if name == "reference_images" else "") + f", not {str(value)[:60]!r}")
        else:
            media[name] = resolved
    params = _table(row.get("params"), f"prompt {prompt_id!r}: params", line, problems)
    for key, value in params.items():
        if key not in RUN_LEVEL_PARAMS:
            problems.add(line, f"prompt {prompt_id!r}: params.{key} is not a parameter{suggest(key, RUN_LEVEL_PARAMS)}; "
                         f"parameters: {', '.join(RUN_LEVEL_PARAMS)} (a model's own fields go under native)")
        elif isinstance(value, (dict, list)):
            problems.add(line, f"prompt {prompt_id!r}: params.{key} must be one value, not {str(value)[:60]!r}")
    native = _table(row.get("native"), f"prompt {prompt_id!r}: native", line, problems)
    if len(problems.found) > before:
        return None
    return Prompt(prompt_id, text, media, {k: v for k, v in params.items() if v is not None},
                  {k: v for k, v in native.items() if v is not None}, f"{shown}:{line}")


def _table(value: Any, what: str, line: int, problems: _Problems) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problems.add(line, f"{what} must be a mapping such as {{duration: 5}}, not {str(value)[:60]!r}")
        return {}
    return {str(k): v for k, v in value.items()}


def _media(value: Any, many: bool, folder: Path) -> Any:
    """Inputs with bundled assets and relative paths resolved; None if not a path, URL or data URI."""
    if many and isinstance(value, list):
        items = [_media(item, False, folder) for item in value]
        return None if any(item is None for item in items) else items
    if not isinstance(value, str):
        return None
    asset = _ASSET.match(value)
    if asset:
        return [asset_path(asset[1])] if many else asset_path(asset[1])
    if not is_remote(value):
        value = str(folder / os.path.expanduser(value))  # an absolute path stays as it is
    return [value] if many else value


# -- the formats ---------------------------------------------------------------------------------------


def _encoding(path: Path) -> str:
    with path.open("rb") as head:
        return "utf-16" if head.read(2) in _UTF16_MARKS else ENCODING


def _jsonl_rows(path: Path, problems: _Problems, header: dict[str, Any]) -> Iterator[tuple[int, Any]]:
    """One JSON object per line; blank lines are skipped."""
    with path.open(encoding=_encoding(path)) as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                problems.add(number, f"not a JSON object ({exc.msg} at column {exc.colno})")


def _csv_rows(path: Path, problems: _Problems, header: dict[str, Any]) -> Iterator[tuple[int, Any]]:
    """A header row naming the columns: id, text, the inputs, and `params.<name>` / `native.<field>`
    for parameters. Empty cells are not given; a cell is read as JSON where it is JSON (5, true)."""
    with path.open(encoding=_encoding(path), newline="") as stream:
        first = stream.readline()
        reader = csv.reader(itertools.chain([first], stream), delimiter=_separator(first))
        columns = next(reader, None)
        if columns is None:
            return
        columns = [c.strip() for c in columns]
        for column in columns:
            if not _is_column(column):
                problems.add(1, f"unknown column {column!r}{suggest(column, CSV_COLUMNS)}; columns: {', '.join(CSV_COLUMNS)}, "
                             f"params.<name>, native.<field>")
        if problems.found:
            return
        start = reader.line_num
        for cells in reader:
            line, start = start + 1, reader.line_num
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) != len(columns):
                problems.add(line, f"{len(cells)} cells for {len(columns)} columns")
                continue
            row: dict[str, Any] = {}
            for column, cell in zip(columns, cells):
                if not cell.strip():
                    continue
                table, _, field = column.partition(".")
                if table in ("params", "native") and field:
                    row.setdefault(table, {})[field] = _cell(cell)
                elif column == "reference_images":
                    row[column] = [item.strip() for item in cell.split(CSV_LIST_SEPARATOR) if item.strip()]
                else:
                    row[column] = cell
            yield line, row


def _is_column(name: str) -> bool:
    table, _, field = name.partition(".")
    return name in CSV_COLUMNS or (table in ("params", "native") and bool(field))


def _separator(header: str) -> str:
    def found(separator: str) -> int:
        return sum(_is_column(c.strip()) for c in next(csv.reader([header], delimiter=separator), []))

    return max(CSV_SEPARATORS, key=found)  # the first of the best: a comma unless another finds more


def _cell(cell: str) -> Any:
    try:
        return json.loads(cell)
    except ValueError:
        return cell


def _yaml_rows(path: Path, problems: _Problems, header: dict[str, Any]) -> Iterator[tuple[int, Any]]:
    """A list of prompts, or a mapping with `name`, `description` and `prompts` (the form of the
    bundled sets). The parser builds the node tree; each prompt is then built alone, so its line
    is known."""
    loader = YAML_LOADER(path.read_text(encoding=_encoding(path)))
    try:
        try:
            root = loader.get_single_node()
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            problems.add(mark.line + 1 if mark else None, f"not valid YAML: {getattr(exc, 'problem', None) or exc}")
            return
        items = root
        if isinstance(root, yaml.MappingNode):
            items = None
            for key_node, value_node in root.value:
                key = key_node.value
                if key == "prompts":
                    items = value_node
                elif key in ("name", "description"):
                    header[key] = loader.construct_object(value_node, deep=True)
                else:
                    problems.add(key_node.start_mark.line + 1,
                                 f"unknown key {key!r}{suggest(key, ['name', 'description', 'prompts'])}; "
                                 f"a prompt file is a list of prompts, or has name, description and prompts")
        if items is None or root is None:
            return
        if not isinstance(items, yaml.SequenceNode):
            problems.add(items.start_mark.line + 1, "prompts must be a list of prompts (- id: ..., text: ...)")
            return
        for node in items.value:
            yield node.start_mark.line + 1, loader.construct_object(node, deep=True)
            loader.constructed_objects.clear()  # each prompt is built on its own: memory stays flat
    finally:
        loader.dispose()
