"""`python -m runner.manifest_docs [--check]`: the manifest reference and JSON Schema, from the schema.

`docs/manifests.md` (for people) and `manifests/manifest.schema.json` (for editors) are generated
from the classes in runner/manifest.py (checked by pydantic), so they cannot drift from what the loader checks;
a test fails when either committed file is stale. `--check` only reports whether they are.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from decimal import Decimal
from pathlib import Path
from typing import Any

from runner import manifest
from runner.manifest import CANONICAL_PARAMS, MEDIA_PARAMS

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "manifests.md"
SCHEMA = ROOT / "manifests" / "manifest.schema.json"

#: The reference's sections, in reading order.
CLASSES: tuple[type, ...] = (
    manifest.ManifestFile,
    manifest.Model,
    manifest.Mode,
    manifest.ParamSpec,
    manifest.Constraint,
    manifest.Pricing,
    manifest.Rate,
    manifest.Multiplier,
    manifest.Retired,
    manifest.Output,
    manifest.Limits,
    manifest.MediaLimits,
    manifest.UrlRules,
)

INTRO = """\
# Manifests: the model catalogue as data

<!-- Generated from runner/manifest.py by `python -m runner.manifest_docs`; edit that, not this. -->

A manifest is a YAML file describing one provider's models: for each model its modes
(text-to-video, image-to-video, ...), the endpoint each mode calls, every native request field with
its type, allowed values and default, the rules between fields, the input limits, the prices and
where the output URL sits in the result. The runner knows no provider by name: everything it needs
to validate, translate, key and price a job comes from here. The built-in manifests are
`manifests/runway.yaml` and `manifests/fal.yaml`; a plugin registers its own with the
`register_manifests` hook (see [plugins.md](plugins.md)).

A manifest is checked when it is loaded; a mistake fails naming the file, the model and the field.
`manifests/manifest.schema.json` is the same schema as JSON Schema: point your editor at it (for
the YAML language server, a first line `# yaml-language-server: $schema=<path>/manifest.schema.json`)
to have a manifest checked as you type.

## The rules

**Canonical and native names.** `params` is keyed by the provider's own field names (`promptText`,
`image_url`), as sent on the wire. A field's `canonical` says which of the runner's shared parameters
it carries (table below), so `duration=5` on the command line reaches `duration`, `seconds` or
whatever the provider calls it. Any field can also be set by its native name with `native.<field>=`.
`map` translates the values a user writes to the provider's (`16:9` to `1280:720`); a native value is
accepted as itself.

**Defaults.** A field's `default` is what the runner sends when a job gives no value: the request,
the price estimate and the job key all see it, and a job that gives the default explicitly is the
same job as one that gives nothing. A field with `send_default: false` is left out instead (the
provider applies its own default) and an explicit value equal to the default is left out too; use it
for fields added to a model later, so existing jobs keep their keys. A required field's default is
always sent; a required field without one must come from the job.

**Values.** Values compare as a config writes them (`5`, `5.0` and `"5"` are one duration; `true`
is `"true"`) and regardless of letter case (`768P` is `768p`); the runner always sends the spelling
the manifest declares. A count written with a unit (`"8s"`) counts as the number.

**Rules between parameters.** `constraints` state what a provider refuses: when every `when` entry
matches, each parameter in `allowed` must take one of its values (`[]`: must not be given). Values
are compared with defaults filled in. A plan breaking one fails before anything is spent, quoting the
rule's `reason`. In `when` (here and in prices) a list means any of these values; a parameter is
named by its canonical name (taking canonical values) or its native name (taking native values), and
naming a parameter or value a mode does not have is an error when the manifest loads.

**Prices.** cost = rate × units × multipliers: the first rate whose `when` matches, times
ceil(quantity / unit_size), times every matching multiplier. A model without a reliable price gives
`unknown` with the reason, in words a user can act on; the plan lists such jobs as price unknown.
`source` says where a price comes from (the plan shows it).

**Retired models.** A model the provider no longer offers keeps its entry with `retired`, so its name
gets an answer: planning it is an error naming the replacement when the provider refuses it
(`refused: true`), a warning when it is only deprecated.

**Provenance.** `sources` names where an entry's facts come from, in a reader's words ("Runway API
reference, image_to_video"). It is optional; a third-party manifest may leave it out.

**Inputs.** A local input file goes to the provider inline (a data URI) when it fits
`data_uri_max_bytes`, else through the provider's upload flow up to `upload_max_bytes`; `max_bytes`
caps every route. URLs are passed through once they pass the provider's `urls` rules.
"""

EXAMPLE = """\
## Example

```yaml
provider: acme
limits:
  image: {formats: [image/jpeg, image/png], data_uri_max_bytes: 4000000}
models:
  - name: acme-v1
    sources: [Acme API reference]
    output: {media: video, url: [video_url], extension: mp4}
    pricing:
      unit: second
      quantity: duration
      source: Acme price list
      rates: [{when: {resolution: 1080p}, usd: 0.04}, {usd: 0.02}]
    modes:
      image-to-video:
        endpoint: generations
        constraints:
          - when: {resolution: 1080p}
            allowed: {duration: [4]}
            reason: 1080p videos are at most 4 seconds
        params:
          prompt: {type: string, canonical: prompt, required: true, max_length: 500}
          image: {type: image, canonical: image, required: true}
          seconds: {type: integer, canonical: duration, enum: [4, 8], default: 4}
          resolution: {type: string, canonical: resolution, enum: [720p, 1080p], default: 720p}
          style: {type: string, enum: [film, anime], default: film, send_default: false}
```
"""


def markdown() -> str:
    """docs/manifests.md."""
    parts = [INTRO, _canonical_table(), "## Reference\n"]
    parts += [_section(cls) for cls in CLASSES]
    parts.append(EXAMPLE)
    return "\n".join(parts)


def json_schema() -> str:
    """manifests/manifest.schema.json."""
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **manifest.checker().json_schema()}
    schema["title"] = "video-runner manifest"
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def _canonical_table() -> str:
    rows = ["## Canonical parameters\n", "| name | meaning | input file |", "|---|---|---|"]
    rows += [f"| `{name}` | {meaning} | {MEDIA_PARAMS.get(name, '')} |" for name, meaning in CANONICAL_PARAMS.items()]
    return "\n".join(rows) + "\n"


def _section(cls: type) -> str:
    paragraphs = (cls.__doc__ or "").strip().split("\n\n")
    doc = "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)
    rows = [f"### {cls.__name__}\n", doc, "", "| field | type | default | meaning |", "|---|---|---|---|"]
    types_ = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = _default(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = _default(f.default_factory())
        else:
            default = "required"
        rows.append(f"| `{f.name}` | {_type(types_[f.name])} | {default} | {f.metadata.get('description', '')} |")
    return "\n".join(rows) + "\n"


def fields(cls: type) -> dict[str, str]:
    """A manifest class's fields and their descriptions."""
    return {f.name: f.metadata.get("description", "") for f in dataclasses.fields(cls)}


def _default(value: Any) -> str:
    if value is None or value == "" or value == [] or value == {}:
        return "-"
    if dataclasses.is_dataclass(value):
        return "-"
    return f"`{json.dumps(value)}`"


def _type(annotation: Any) -> str:
    """A field's type as a reader says it: `list of string`, `one of: second, clip`."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of: " + ", ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        shown = [_type(a) for a in args if a is not type(None)]
        return " or ".join(shown)
    if origin is list:
        return f"list of {_type(args[0])}"
    if origin is dict:
        return f"map of {_type(args[0])} to {_type(args[1])}"
    if dataclasses.is_dataclass(annotation):
        return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
    names = {str: "string", int: "integer", float: "number", bool: "boolean", Decimal: "number"}
    return names.get(annotation, "any")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    wanted = {DOC: markdown(), SCHEMA: json_schema()}
    stale = [path for path, text in wanted.items() if not path.exists() or path.read_text(encoding="utf-8") != text]
    if "--check" in args:
        for path in stale:
            print(f"{path.relative_to(ROOT)} is stale: run python -m runner.manifest_docs")
        return 1 if stale else 0
    for path in stale:
        path.write_text(wanted[path], encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
