"""The manifest schema: how a provider's model catalogue is written down as data.

A manifest file (YAML) describes one provider's models: for each model its modes (text-to-video,
image-to-video, ...), the endpoint each mode calls, every native parameter with its type, allowed
values, default and the canonical name it carries, the rules between parameters, the input limits,
the price rules and where the output URL sits in the result. The core knows no provider by name:
everything it needs to validate, translate and price a job comes from here.

The schema is checked when a manifest is loaded, so a malformed manifest fails with its file, entry
and field rather than surfacing later as a wrong payload or a wrong price. `docs/manifests.md` and
`manifests/manifest.schema.json` are generated from these classes (`python -m runner.manifest_docs`).

The classes are plain frozen dataclasses, checked by pydantic only when a manifest is loaded
(`load_manifest`): a start that finds its manifests compiled (runner.catalog) never imports it.
"""

from __future__ import annotations

import functools
from dataclasses import MISSING, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from runner import values
from runner.errors import UserError

#: The vocabulary a sweep uses across providers, with the inputs a mode can take. A manifest maps
#: each to a native field; a user writes these names whatever the provider calls them.
#: The largest seed the runner sends where a manifest gives no range (an unsigned 64-bit number).
MAX_SEED = 2**64 - 1

CANONICAL_PARAMS = {
    "prompt": "the text prompt (a prompt's `text`)",
    "image": "the input image: first frame, character or subject (a prompt's `image`)",
    "end_image": "the image the video should end on (a prompt's `end_image`)",
    "video": "the input video to transform or follow (a prompt's `video`)",
    "audio_input": "the input audio: speech to convert, dub or clean (a prompt's `audio_input`)",
    "reference_images": "a list of reference images (a prompt's `reference_images`)",
    "duration": "the output length in seconds, e.g. 5",
    "aspect_ratio": "the output shape as a simple ratio such as 16:9 (or the provider's own value)",
    "resolution": "the output resolution such as 720p or 1080p",
    "seed": "the random seed, for repeatable results",
    "negative_prompt": "what the output should not show",
    "audio": "whether the video has generated sound (true/false)",
}

#: Canonical names whose values are input files (local path, URL or data URI), with their kind.
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

#: A condition on one parameter: a value, or a list meaning any of these values.
Condition = Any


PricingUnit = Literal["second", "clip", "image", "character", "request"]

C = TypeVar("C", bound=type)


def _schema(cls: C) -> C:
    """A manifest class: a frozen dataclass of named fields, whose unknown fields pydantic refuses."""
    made = dataclass(frozen=True, kw_only=True)(cls)
    made.__pydantic_config__ = {"extra": "forbid"}  # type: ignore[attr-defined]
    return made


def Field(default: Any = MISSING, *, description: str, default_factory: Any = MISSING) -> Any:  # noqa: N802
    """A field with its description, for the generated reference (pydantic reads it too)."""
    return field(default=default, default_factory=default_factory, metadata={"description": description})


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)  # a frozen instance, still being made


@_schema
class ParamSpec:
    """One native request field, keyed in `params` by its name on the wire."""

    type: ParamType = Field(description="The value's type; `image`, `video`, `audio` and `image_list` take input files.")
    canonical: str | None = Field(None, description="The canonical parameter this field carries (see the table above).")
    required: bool = Field(False, description="The provider refuses a request without this field.")
    default: Any = Field(
        None,
        description="The value the runner sends when a job gives none (the provider's own default where it "
        "documents one). Sent unless `send_default: false`; a job giving this value plans the same job as one giving none.",
    )
    send_default: bool = Field(
        True,
        description="false: leave the field out when the job gives no value or gives the default "
        "(the provider applies its default). A required field's default is always sent.",
    )
    enum: list[Any] | None = Field(None, description="The values the provider accepts, spelled as it expects them.")
    map: dict[Union[int, str], Any] | None = Field(
        None,
        description="Canonical value -> native value (`{\"16:9\": \"1280:720\"}`): the keys are what a user writes; "
        "a native value is accepted as itself. Give `map` or `enum`, not both.",
    )
    minimum: int | float | None = Field(None, description="Smallest number accepted (a seed with no range: 0).")
    maximum: int | float | None = Field(
        None, description="Largest number accepted (a seed with no range: 18446744073709551615, the largest 64-bit number).")
    max_length: int | None = Field(None, description="Longest text accepted, in characters.")
    wrap: Any = Field(
        None,
        description='JSON template for the native value, with "$value" where the value goes '
        '(`{type: image, uri: "$value"}`); applied per item on lists.',
    )
    into: str | None = Field(
        None,
        description="Send this value inside another field (by native name) instead of under its own name: that field "
        "becomes a list of both, each in its template (Veo's first and last frames, both in promptImage).",
    )
    list_wrap: Any = Field(None, description="This field's template when another field is sent inside it with `into`.")
    description: str = Field("", description="What the field does, for people.")

    def __post_init__(self) -> None:
        if self.canonical is not None and self.canonical not in CANONICAL_PARAMS:
            raise ValueError(f"canonical: unknown canonical name {self.canonical!r}; known: {', '.join(CANONICAL_PARAMS)}")
        if self.canonical == "seed":
            # A seed with no range of its own takes 0..MAX_SEED: a negative seed that means "random"
            # at some providers is never sent (leaving the seed out is random), nor one no provider can hold.
            _set(self, "minimum", 0 if self.minimum is None else self.minimum)
            _set(self, "maximum", MAX_SEED if self.maximum is None else self.maximum)
        if self.map is not None and self.enum is not None:
            raise ValueError("give either map (canonical -> native) or enum, not both")
        if self.canonical in MEDIA_PARAMS:
            expected = "image_list" if self.canonical == "reference_images" else MEDIA_PARAMS[self.canonical]
            if self.type != expected:
                raise ValueError(f"canonical {self.canonical!r} needs type {expected!r}, not {self.type!r}")


@_schema
class Rate:
    """A price per unit, used when every `when` entry matches the job's parameters."""

    when: dict[str, Condition] = Field(default_factory=dict, description="Parameter -> value (or list of values, any of them).")
    usd: Decimal = Field(description="US dollars per unit.")


@_schema
class Multiplier:
    """A factor on the price when every `when` entry matches (e.g. "8 s videos cost double")."""

    when: dict[str, Condition] = Field(description="Parameter -> value (or list of values, any of them).")
    factor: Decimal = Field(description="What the price is multiplied by.")


@_schema
class Pricing:
    """How a job's cost is estimated from its parameters.

    cost = rate(first matching `rates` entry) × units × every matching multiplier, where units is
    ceil(quantity / unit_size) and quantity is the value of the parameter named by `quantity`
    (the length of a text value), a fixed number, or 1 when absent.
    """

    unit: PricingUnit = Field(description="What one rate buys.")
    quantity: str | int | None = Field(None, description="The parameter counting units (e.g. `duration`), or a fixed count.")
    unit_size: int = Field(1, description="Units are billed in blocks of this size, rounded up (50 characters, 6 seconds).")
    rates: list[Rate] = Field(default_factory=list, description="Prices, first match wins; a rate without `when` matches any job.")
    multipliers: list[Multiplier] = Field(default_factory=list, description="Factors applied on top of the rate.")
    unknown: str | None = Field(None, description="Why there is no reliable price (instead of `rates`), in a user's words.")
    source: str = Field("", description="Where the price comes from, as the plan shows it (\"Runway credit table\").")
    note: str = Field("", description="What a person should know about the price; shown when a job matches no rate.")

    def __post_init__(self) -> None:
        if not self.rates and not self.unknown:
            raise ValueError("give rates, or `unknown` with the reason there is no price")
        if self.rates and self.unknown:
            raise ValueError("give rates or `unknown`, not both")


@_schema
class Constraint:
    """A rule between parameters the provider enforces ("1080p videos are limited to 5 seconds").

    When every `when` entry matches a job, each parameter named in `allowed` must take one of its
    values; an empty list means the parameter must not be given at all. Values are compared with
    defaults filled in, so a rule also holds for a value the job leaves to its default.
    """

    when: dict[str, Condition] = Field(description="Parameter -> value (or list of values, any of them).")
    allowed: dict[str, list[Any]] = Field(description="Parameter -> the values it may take then ([] = must not be given).")
    reason: str = Field(description="The provider's rule, in a user's words; the plan's error message quotes it.")


@_schema
class Retired:
    """A model the provider no longer offers, kept so its name gets an answer rather than "unknown"."""

    replacement: str | None = Field(None, description="The catalogue model to use instead.")
    refused: bool = Field(
        True,
        description="true: the provider's API refuses the model, so planning it is an error naming the replacement; "
        "false: still accepted but deprecated, so the plan warns.",
    )
    since: str = Field("", description="Since when, and how we know (\"runwayml SDK 5.0.0, 2026-06-10\").")


@_schema
class MediaLimits:
    """What a provider accepts for one kind of input file.

    `max_bytes` caps the file whatever the route; the others cap one route each. A local file goes
    inline as a data URI when it fits, else through the provider's upload flow; with neither route
    capped nor `max_bytes`, any size is planned.
    """

    formats: list[str] = Field(description="MIME types accepted, e.g. image/png.")
    max_bytes: int | None = Field(None, description="Largest file by any route, in bytes.")
    url_max_bytes: int | None = Field(None, description="Largest file the provider fetches from a URL.")
    data_uri_max_bytes: int | None = Field(None, description="Longest data URI, in characters (the encoded file).")
    upload_max_bytes: int | None = Field(None, description="Largest file through the provider's upload flow.")


@_schema
class UrlRules:
    """Which input URLs the provider fetches; a URL breaking them is refused at plan time."""

    schemes: list[str] = Field(default_factory=lambda: ["https", "http"], description="URL schemes accepted (runway for runway:// uploads).")
    domain_names_only: bool = Field(False, description="Refuse URLs whose host is an IP address.")
    max_length: int | None = Field(None, description="Longest URL accepted, in characters.")
    reason: str = Field("", description="The provider's rule, in a user's words, for the error message.")


@_schema
class Limits:
    """Input limits per kind of file, and the URL rules; a model's own limits replace its provider's per entry."""

    image: MediaLimits | None = Field(None, description="Limits for image inputs.")
    video: MediaLimits | None = Field(None, description="Limits for video inputs.")
    audio: MediaLimits | None = Field(None, description="Limits for audio inputs.")
    urls: UrlRules | None = Field(None, description="Which input URLs the provider fetches.")


@_schema
class Output:
    """What a model produces and where its URL sits in the provider's result."""

    media: MediaKind = Field("video", description="What the output is.")
    url: list[str] = Field(description="Paths to the URL in the result, tried in order: dotted keys and [index] (`output[0]`, `video.url`).")
    extension: str = Field("mp4", description="The saved file's extension.")
    extension_by: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="Native field -> {value: extension}, where a field changes the file type (`outputFormat: {prores: mov}`).",
    )


@_schema
class Mode:
    """One way of calling a model (text-to-video, image-to-video, ...): its endpoint and fields.

    The runner picks the mode a prompt's inputs call for: every input used, every required one given.
    """

    endpoint: str = Field(description="The provider's endpoint (path or model id) this mode calls.")
    params: dict[str, ParamSpec] = Field(description="Native field name -> its spec.")
    constraints: list[Constraint] = Field(default_factory=list, description="Rules between this mode's parameters.")
    pricing: Pricing | None = Field(None, description="This mode's price, where it differs from the model's.")
    description: str = Field("", description="What the mode does, for people.")

    def __post_init__(self) -> None:
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
        for native, spec in self.params.items():
            if spec.into is not None and (spec.into not in self.params or self.params[spec.into].into is not None):
                raise ValueError(f"{native!r} goes into {spec.into!r}, which is not another field of this mode")
        for rule in self.constraints:
            _check_conditions("constraints", rule.when, [self])
            _check_conditions("constraints", rule.allowed, [self])

    def spec_for(self, name: str) -> ParamSpec | None:
        """The field a name means: a canonical name first, then a native field."""
        for spec in self.params.values():
            if spec.canonical == name:
                return spec
        return self.params.get(name)


@_schema
class Model:
    """One model: what a user selects with model=<name>."""

    name: str = Field(description="What a user selects: model=<name>.")
    id: str | None = Field(None, description="The provider's model identifier, where it differs from the name.")
    title: str = Field("", description="A readable name for listings.")
    sources: list[str] = Field(
        default_factory=list,
        description="Where this entry's facts come from, in a reader's words (\"Runway API reference, image_to_video\"). "
        "Optional; recommended for anyone checking the entry later.",
    )
    aliases: list[str] = Field(default_factory=list, description="Other names a user may select it by.")
    modes: dict[str, Mode] = Field(description="Mode name -> mode.")
    pricing: Pricing | None = Field(None, description="The price of every mode without its own.")
    output: Output = Field(description="What the model produces and where to find it.")
    limits: Limits | None = Field(None, description="Input limits of this model, replacing the provider's per entry.")
    retired: Retired | None = Field(None, description="Set when the provider no longer offers the model.")
    notes: str = Field("", description="What a person should know about the entry, including where documents disagree.")

    def __post_init__(self) -> None:
        for mode_name, mode in self.modes.items():
            if mode.pricing is None and self.pricing is None:
                raise ValueError(f"mode {mode_name!r} has no pricing and the model has none")
        shared = [mode for mode in self.modes.values() if mode.pricing is None]
        priced = [(self.pricing, shared, "pricing")] if self.pricing and shared else []
        priced += [(m.pricing, [m], f"modes.{name}.pricing") for name, m in self.modes.items() if m.pricing]
        for pricing, modes, where in priced:
            for entry in [*pricing.rates, *pricing.multipliers]:
                _check_conditions(where, entry.when, modes)
        for native in self.output.extension_by:
            if not any(native in mode.params for mode in self.modes.values()):
                raise ValueError(f"output.extension_by names {native!r}, which is not a field of any mode")

    def pricing_for(self, mode: str) -> Pricing:
        return self.modes[mode].pricing or self.pricing  # type: ignore[return-value]


def _check_conditions(where: str, conditions: dict[str, Any], modes: list[Mode]) -> None:
    """Every parameter a rule names exists in one of its modes, and every value it names is one the
    parameter can take there: a rule that can never match is a mistake, not a rule. A canonical
    name takes canonical values, a native field name native ones (as a job's parameters hold them)."""
    for name, condition in conditions.items():
        specs = [spec for spec in (mode.spec_for(name) for mode in modes) if spec is not None]
        if not specs:
            raise ValueError(f"{where} names {name!r}, which is neither a field nor a canonical parameter of its modes")
        options = [_values_under(spec, name) for spec in specs]
        for value in condition if isinstance(condition, list) else [condition]:
            if all(o is not None and values.spelled(value, o) is None for o in options):
                allowed = ", ".join(values.text(v) for v in options[0] or [])
                raise ValueError(f"{where}: {name}={values.text(value)!r} is not a value {name} takes (allowed: {allowed})")


def _values_under(spec: ParamSpec, name: str) -> list[Any] | None:
    if spec.map is None:
        return spec.enum
    return list(spec.map) if spec.canonical == name else list(spec.map.values())


@_schema
class ManifestFile:
    """One manifest file: a provider and its models."""

    provider: str = Field(description="The provider plugin that runs these models.")
    limits: Limits = Field(default_factory=Limits, description="Input limits and URL rules for every model of the file.")
    models: list[Model] = Field(description="The provider's models.")


#: libyaml's parser where PyYAML has it (its wheels do): a tenth of the pure-Python parser's time.
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_manifest(path: Path, text: str | None = None) -> ManifestFile:
    """Parse and check one manifest file; a malformed one fails naming file, entry and field."""
    from pydantic import ValidationError

    try:
        raw = yaml.load(text if text is not None else path.read_text(encoding="utf-8"), Loader=YAML_LOADER)
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"manifest {path}: cannot read it: {exc}") from None
    try:
        return checker().validate_python(raw)
    except ValidationError as exc:
        raise UserError(_describe(path, raw, exc.errors())) from None


@functools.cache
def checker() -> Any:
    """pydantic's validator of a whole manifest file (a TypeAdapter), made on first use."""
    from pydantic import TypeAdapter

    return TypeAdapter(ManifestFile)


def _describe(path: Path, raw: Any, errors: list[Any]) -> str:
    lines = [f"manifest {path} is malformed:"]
    for err in errors:
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
