"""The catalogue: every model the providers document loads, with its sources and sane specs."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner import plugins
from runner.catalog import build_catalog, check_payload
from runner.errors import UserError
from runner.manifest import load_manifest

RUNWAY_MODELS = [
    "gen4.5", "gen4_turbo", "gen3a_turbo", "veo3", "veo3.1", "veo3.1_fast", "gen4_aleph", "aleph2", "act_two",
    "gen4_image", "gen4_image_turbo", "gemini_2.5_flash", "eleven_multilingual_v2",
    "eleven_text_to_sound_v2", "eleven_voice_isolation", "eleven_voice_dubbing", "eleven_multilingual_sts_v2",
]

FAL_ENDPOINTS = [
    "fal-ai/kling-video/v2.1/standard/image-to-video",
    "fal-ai/kling-video/v1/standard/image-to-video",
    "fal-ai/veo3/fast",
    "fal-ai/veo3.1/fast/image-to-video",
    "fal-ai/veo3.1/reference-to-video",
    "fal-ai/sora-2/text-to-video",
    "fal-ai/sora-2/image-to-video",
    "fal-ai/sora-2/text-to-video/pro",
    "fal-ai/sora-2/image-to-video/pro",
    "fal-ai/pika/v2.2/text-to-video",
    "fal-ai/pika/v2.2/image-to-video",
    "fal-ai/minimax/hailuo-02/standard/text-to-video",
    "fal-ai/minimax/hailuo-02/standard/image-to-video",
    "fal-ai/minimax/hailuo-02/pro/image-to-video",
    "fal-ai/wan-pro/image-to-video",
    "fal-ai/wan-i2v",
    "fal-ai/bytedance/seedance/v1/lite/image-to-video",
    "fal-ai/pixverse/v4.5/image-to-video",
    "fal-ai/luma-dream-machine/image-to-video",
    "fal-ai/luma-dream-machine/ray-2-flash/image-to-video",
    "fal-ai/magi-distilled/image-to-video",
    "fal-ai/veo2/image-to-video",
    "fal-ai/minimax-video/image-to-video",
]

ALIASES = ["kling", "veo3_fast", "gen4_turbo", "gen45", "sora2", "pika", "hailuo", "wan"]


@pytest.fixture(scope="module")
def catalog():
    return plugins.registry().catalog


def test_every_runway_model_is_catalogued(catalog):
    runway = {m.model_id for m in catalog.models.values() if m.provider == "runway"}
    assert set(RUNWAY_MODELS) <= runway


def test_every_fal_model_id_is_an_endpoint(catalog):
    endpoints = {mode.endpoint for m in catalog.models.values() if m.provider == "fal" for mode in m.spec.modes.values()}
    assert set(FAL_ENDPOINTS) <= endpoints


def test_short_aliases_a_person_would_type(catalog):
    for alias in ALIASES:
        assert catalog.resolve(alias).name


def test_every_builtin_entry_names_its_sources_and_its_defaults_are_valid_payloads(catalog):
    for model in catalog.models.values():
        assert model.spec.sources, model.name
        for mode_name, mode in model.spec.modes.items():
            defaults = {name: spec.default for name, spec in mode.params.items() if spec.default is not None}
            problems = [p for p in check_payload(mode, defaults) if not p.endswith("required")]
            assert not problems, (model.name, mode_name, problems)


def test_every_retired_model_names_a_catalogued_replacement(catalog):
    retired = {m.name: m.spec.retired for m in catalog.models.values() if m.spec.retired}
    assert {name: r.replacement for name, r in retired.items()} == {
        "gen3a_turbo": "gen4_turbo", "veo3": "veo3.1", "gen4_aleph": "aleph2",
    }
    assert all(r.refused and catalog.models[r.replacement].spec.retired is None for r in retired.values())


def _write(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


def test_malformed_manifest_names_file_entry_and_field(tmp_path):
    path = _write(tmp_path, """
provider: acme
models:
  - name: good-model
    output: {url: [video.url]}
    pricing: {unit: clip, rates: [{usd: 1}]}
    modes:
      text-to-video:
        endpoint: acme/t2v
        params:
          prompt: {type: string, canonical: prompt}
          duration: {type: integr, canonical: duration}
""")
    with pytest.raises(UserError) as err:
        load_manifest(path)
    message = str(err.value)
    assert str(path) in message
    assert "'good-model'" in message
    assert "modes.text-to-video.params.duration.type" in message


def test_manifest_without_price_or_reason_is_rejected(tmp_path):
    path = _write(tmp_path, """
provider: acme
models:
  - name: m
    output: {url: [video.url]}
    pricing: {unit: clip}
    modes: {t: {endpoint: e, params: {prompt: {type: string, canonical: prompt}}}}
""")
    with pytest.raises(UserError, match="rates, or `unknown`"):
        load_manifest(path)


def test_duplicate_alias_across_manifests_names_both(tmp_path):
    a = _write(tmp_path, """
provider: acme
models:
  - name: m1
    aliases: [kling]
    output: {url: [video.url]}
    pricing: {unit: clip, rates: [{usd: 1}]}
    modes: {t: {endpoint: e, params: {prompt: {type: string, canonical: prompt}}}}
""")
    fal = Path(__file__).parent.parent / "manifests" / "fal.yaml"
    with pytest.raises(UserError) as err:
        build_catalog([("fal", fal), ("acme", a)])
    assert "'kling'" in str(err.value) and "fal.yaml" in str(err.value) and "acme" in str(err.value)


# -- rules that name parameters: a rule that can never match is refused when the manifest loads -----

RULED = """
provider: acme
models:
  - name: m
    output: {{url: [video.url], extension_by: {extension_by}}}
    pricing: {{unit: clip, rates: [{{when: {when}, usd: 1}}]}}
    modes:
      t:
        endpoint: e
        constraints: [{{when: {{resolution: 1080p}}, allowed: {allowed}, reason: r}}]
        params:
          prompt: {{type: string, canonical: prompt}}
          res: {{type: string, canonical: resolution, map: {{720p: 720P, 1080p: 1080P}}}}
          seconds: {{type: integer, canonical: duration, enum: [5, 8]}}
"""


@pytest.mark.parametrize("when, allowed, extension_by, problem", [
    ("{resolution: 1080P}", "{duration: [5]}", "{}", None),  # a canonical value in another case
    ("{res: 1080P}", "{seconds: [5]}", "{res: {1080P: mov}}", None),  # native names take native values
    ("{resolution: 4k}", "{duration: [5]}", "{}", "pricing: resolution='4k' is not a value resolution takes (allowed: 720p, 1080p)"),
    ("{res: 1080p}", "{duration: [5]}", "{}", None),  # 1080p is 1080P in another case
    ("{size: 1080p}", "{duration: [5]}", "{}", "pricing names 'size', which is neither a field nor a canonical parameter"),
    ("{}", "{duration: [7]}", "{}", "constraints: duration='7' is not a value duration takes (allowed: 5, 8)"),
    ("{}", "{length: []}", "{}", "constraints names 'length'"),
    ("{}", "{duration: [5]}", "{format: {prores: mov}}", "output.extension_by names 'format', which is not a field of any mode"),
])
def test_rules_must_name_what_the_modes_take(tmp_path, when, allowed, extension_by, problem):
    path = _write(tmp_path, RULED.format(when=when, allowed=allowed, extension_by=extension_by))
    if problem is None:
        assert load_manifest(path).models[0].sources == []  # sources are optional
        return
    with pytest.raises(UserError) as err:
        load_manifest(path)
    assert problem in str(err.value) and "'m'" in str(err.value)


def test_a_deprecated_model_plans_with_a_warning_naming_its_replacement(tmp_path):
    from runner.plan import build_plan
    from runner.report import format_plan

    path = _write(tmp_path, """
provider: acme
models:
  - name: old
    retired: {replacement: kling, refused: false, since: "Acme's changelog, 2026-10"}
    output: {url: [video.url]}
    pricing: {unit: clip, rates: [{usd: 1}]}
    modes: {t: {endpoint: e, params: {prompt: {type: string, canonical: prompt}}}}
""")
    fal = Path(__file__).parent.parent / "manifests" / "fal.yaml"
    catalog = build_catalog([("fal", fal), ("acme", path)])
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "a", "text": "hi"}\n')
    conf = {"model": {"name": "old"}, "prompt_set": {"file": str(prompts)}}
    plan = build_plan(conf, catalog)
    assert len(plan.jobs) == 1
    assert plan.warnings == ["model old is deprecated by acme and may stop working; Acme's changelog, 2026-10; use model=kling instead"]
    assert "warning: model old is deprecated" in format_plan(plan)


# -- the compiled-manifest cache: used while the bytes are unchanged, never wrong when stale ----------


def test_a_checked_manifest_is_cached_by_content_and_a_bad_entry_is_rebuilt(tmp_path, monkeypatch):
    from runner.catalog import compiled_manifest

    monkeypatch.setenv("RUNNER_CACHE_DIR", str(tmp_path / "cache"))
    path = _write(tmp_path, MINIMAL.format(price=1))
    assert compiled_manifest(path).models[0].pricing.rates[0].usd == 1
    entries = list((tmp_path / "cache").glob("manifest-*.pickle"))
    assert len(entries) == 1
    entries[0].write_bytes(b"torn")  # a crash mid-write, or another version's entry
    assert compiled_manifest(path).models[0].pricing.rates[0].usd == 1
    assert entries[0].read_bytes() != b"torn"  # rewritten
    path.write_text(MINIMAL.format(price=2))  # edited: another key, so the old entry is never read
    assert compiled_manifest(path).models[0].pricing.rates[0].usd == 2
    assert len(list((tmp_path / "cache").glob("manifest-*.pickle"))) == 2


def test_an_unwritable_cache_only_costs_the_parse(tmp_path, monkeypatch):
    from runner.catalog import compiled_manifest

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("RUNNER_CACHE_DIR", str(blocker / "cache"))
    assert compiled_manifest(_write(tmp_path, MINIMAL.format(price=3))).models[0].pricing.rates[0].usd == 3


MINIMAL = """
provider: acme
models:
  - name: one
    output: {{url: [video.url]}}
    pricing: {{unit: clip, rates: [{{usd: {price}}}]}}
    modes: {{t: {{endpoint: e, params: {{prompt: {{type: string, canonical: prompt}}}}}}}}
"""
