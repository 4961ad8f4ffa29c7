"""The manifest schema: how a provider's model catalogue is written down as data.

A manifest file (YAML) describes one provider's models: for each model its modes (text-to-video,
image-to-video, ...), the endpoint each mode calls, every native parameter with its type, allowed
values, default and the canonical name it carries, the input limits, the price rules and where the
output URL sits in the result. The core knows no provider by name: everything it needs to validate,
translate and price a job comes from here.

The schema is checked when a manifest is loaded, so a malformed manifest fails with its file, entry
and field rather than surfacing later as a wrong payload or a wrong price.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from runner.errors import UserError

#: The vocabulary a sweep uses across providers (DESIGN.md "Canonical parameters"), with the
#: inputs a mode can take. A manifest maps each to a native field.
CANONICAL_PARAMS = (
    "prompt",
    "image",
    "end_image",
    "video",
    "audio_input",
    "reference_images",
    "duration",
    "aspect_ratio",
    "resolution",
    "seed",
    "negative_prompt",
    "audio",
)

#: Canonical names whose values are input files (local path, URL or data URI).
MEDIA_PARAMS = {
    "image": "image",
    "end_image": "image",
    "reference_images": "image",
    "video": "video",
    "audio_input": "audio",
}

ParamType = Literal[
    "string",
    "integer",
    "number",
    "boolean",
    "image",  # one input file URI (URL, data URI or provider upload URI)
    "video",
    "audio",
    "image_list",  # a list of image URIs
    "object",  # native pass-through only
    "array",  # native pass-through only
]

MediaKind = Literal["video", "image", "audio"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ParamSpec(_Strict):
    """One native request field.

    `default` is what the provider uses when the field is omitted. The runner sends it whenever the
    job does not set the field, so the request, the price and the job key all see the same value; a
    field with `send_default: false` is left out instead, and an explicit value equal to its default
    is left out too. Either way, giving the default explicitly plans the same job as omitting it. `map` translates canonical values (its keys) to native ones (its values): the keys
    are then the values a user may give. Without `map`, canonical and native values are the same
    and `enum`/`minimum`/`maximum` bound them.
    """

    type: ParamType
    canonical: str | None = None
    required: bool = False
    default: Any = None
    send_default: bool = True
    enum: list[Any] | None = None
    map: dict[Union[int, str], Any] | None = None
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None
    #: JSON template for the native value, with the string "$value" where the value goes
    #: (Runway's act_two `character: {"type": "image", "uri": "$value"}`); applied per item on lists.
    wrap: Any = None
    description: str = ""

    @field_validator("canonical")
    @classmethod
    def _known_canonical(cls, value: str | None) -> str | None:
        if value is not None and value not in CANONICAL_PARAMS:
            raise ValueError(f"unknown canonical name {value!r}; known: {', '.join(CANONICAL_PARAMS)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "ParamSpec":
        if self.map is not None and self.enum is not None:
            raise ValueError("give either map (canonical -> native) or enum, not both")
        if self.canonical in MEDIA_PARAMS:
            expected = "image_list" if self.canonical == "reference_images" else MEDIA_PARAMS[self.canonical]
            if self.type != expected:
                raise ValueError(f"canonical {self.canonical!r} needs type {expected!r}, not {self.type!r}")
        return self


class Rate(_Strict):
    """A price per unit, used when every `when` entry matches the job's parameters."""

    when: dict[str, Any] = Field(default_factory=dict)
    usd: Decimal


class Multiplier(_Strict):
    """A factor on the price when every `when` entry matches (e.g. "8 s videos cost double")."""

    when: dict[str, Any]
    factor: Decimal


class Pricing(_Strict):
    """How a job's cost is estimated from its parameters.

    cost = rate(first matching `rates` entry) × units × every matching multiplier, where units is
    ceil(quantity / unit_size) and quantity is the value of the parameter named by `quantity`
    (the length of a text value), a fixed number, or 1 when absent.
    `when` and `quantity` name canonical parameters first, then native fields.
    A model with no reliable price gives `unknown` (the reason) and no rates.
    """

    unit: Literal["second", "clip", "image", "character", "request"]
    quantity: str | int | None = None
    unit_size: int = 1
    rates: list[Rate] = Field(default_factory=list)
    multipliers: list[Multiplier] = Field(default_factory=list)
    unknown: str | None = None
    note: str = ""

    @model_validator(mode="after")
    def _has_price_or_reason(self) -> "Pricing":
        if not self.rates and not self.unknown:
            raise ValueError("give rates, or `unknown` with the reason there is no price")
        if self.rates and self.unknown:
            raise ValueError("give rates or `unknown`, not both")
        return self


class MediaLimits(_Strict):
    """What a provider accepts for one kind of input file.

    `max_bytes` caps the file whatever the route; the others cap one route each. A local file goes
    inline as a data URI when it fits, else through the provider's upload flow.
    """

    formats: list[str]  # MIME types
    max_bytes: int | None = None  # any route
    url_max_bytes: int | None = None  # fetched by the provider from a URL
    data_uri_max_bytes: int | None = None  # the encoded data URI
    upload_max_bytes: int | None = None  # through the provider's upload flow


class Limits(_Strict):
    image: MediaLimits | None = None
    video: MediaLimits | None = None
    audio: MediaLimits | None = None


class Output(_Strict):
    """What a model produces and where its URL sits in the provider's result.

    `url` lists paths tried in order: dotted keys and [index], e.g. `output[0]`, `video.url`, `video`.
    """

    media: MediaKind = "video"
    url: list[str]
    extension: str = "mp4"


class Mode(_Strict):
    endpoint: str
    params: dict[str, ParamSpec]
    pricing: Pricing | None = None
    description: str = ""

    @model_validator(mode="after")
    def _one_field_per_canonical(self) -> "Mode":
        seen: dict[str, str] = {}
        for native, spec in self.params.items():
            if spec.canonical and spec.canonical in seen:
                raise ValueError(
                    f"canonical {spec.canonical!r} is mapped twice ({seen[spec.canonical]!r} and {native!r})"
                )
            if spec.canonical:
                seen[spec.canonical] = native
        if "prompt" not in seen and not any(s.type in ("audio", "video") for s in self.params.values()):
            raise ValueError("a mode needs a field carrying canonical 'prompt' or a media input")
        return self


class Model(_Strict):
    name: str  # what a user selects: model=<name>
    id: str | None = None  # the provider's model identifier, where it differs from the endpoint
    title: str = ""
    seeds: list[str]  # the seed documents this entry was written from
    aliases: list[str] = Field(default_factory=list)
    modes: dict[str, Mode]
    pricing: Pricing | None = None
    output: Output
    limits: Limits | None = None
    notes: str = ""

    @model_validator(mode="after")
    def _priced(self) -> "Model":
        for mode_name, mode in self.modes.items():
            if mode.pricing is None and self.pricing is None:
                raise ValueError(f"mode {mode_name!r} has no pricing and the model has none")
        return self

    def pricing_for(self, mode: str) -> Pricing:
        return self.modes[mode].pricing or self.pricing  # type: ignore[return-value]


class ManifestFile(_Strict):
    provider: str
    limits: Limits = Limits()
    models: list[Model]


def load_manifest(path: Path, text: str | None = None) -> ManifestFile:
    """Parse and check one manifest file; a malformed one fails naming file, entry and field."""
    try:
        raw = yaml.safe_load(text if text is not None else path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"manifest {path}: cannot read it: {exc}") from None
    try:
        return ManifestFile.model_validate(raw)
    except ValidationError as exc:
        raise UserError(_describe(path, raw, exc)) from None


def _describe(path: Path, raw: Any, exc: ValidationError) -> str:
    lines = [f"manifest {path} is malformed:"]
    for err in exc.errors():
        loc = list(err["loc"])
        where = ""
        if len(loc) >= 2 and loc[0] == "models" and isinstance(loc[1], int):
            try:
                where = f"model {raw['models'][loc[1]].get('name', '#' + str(loc[1]))!r}, "
            except (KeyError, IndexError, TypeError, AttributeError):
                where = f"model #{loc[1]}, "
            loc = loc[2:]
        field = ".".join(str(part) for part in loc) or "(top level)"
        lines.append(f"  {where}field {field}: {err['msg']}")
    return "\n".join(lines)
