"""The catalogue as the providers' APIs take it: each test pins one class of discrepancy between the
manifests and what Runway (docs, runwayml 5.24 SDK) and fal (model pages) accept and bill."""

from __future__ import annotations

from decimal import Decimal

import pytest

from runner import plugins
from runner.app import plan
from runner.errors import UserError
from runner.report import format_plan

ASSET = "${asset:lighthouse.png}"


@pytest.fixture(scope="module")
def catalog():
    return plugins.registry().catalog


def _error(overrides) -> str:
    with pytest.raises(UserError) as err:
        plan(overrides)
    return str(err.value)


def _one_prompt(prompt_sets, name: str, body: str) -> list[str]:
    return prompt_sets(name, f"""
        name: {name}
        prompts:
          - id: shot
{body}
    """)


# -- retired models: refused by the API, so refused by the plan, naming the replacement -------------


@pytest.mark.parametrize("model, prompt_set, replacement", [
    ("gen3a_turbo", "animate", "gen4_turbo"),
    ("veo3", "nature", "veo3.1"),
    ("gen4_aleph", "animate", "aleph2"),
])
def test_a_model_the_sdk_dropped_is_refused_naming_its_replacement(model, prompt_set, replacement):
    message = _error([f"model={model}", f"prompt_set={prompt_set}"])
    assert f"model {model} is retired" in message and f"use model={replacement} instead" in message


def test_aleph2_edits_a_video_with_an_optional_prompt(prompt_sets, tmp_path):
    from runner.sim.media import make_video

    video = tmp_path / "clip.mp4"
    video.write_bytes(make_video("aleph2 input", 2.0))
    overrides = _one_prompt(prompt_sets, "edit", f"            video: {video}") + ["model=aleph"]
    job = plan(overrides).jobs[0]
    assert (job.model, job.endpoint) == ("aleph2", "video_to_video")
    assert set(job.payload) == {"videoUri"}  # no promptText needed, outputFormat mp4 left to Runway
    assert job.cost is None and "prices.aleph2=" in job.cost_note
    prores = plan([*overrides, "+native.outputFormat=prores"]).jobs[0]
    assert prores.extension == "mov" and prores.key != job.key


# -- allowed values: where the docs and the SDK disagree, the SDK (what the API accepts) wins --------


def test_veo31_takes_only_the_durations_the_sdk_lists():
    message = _error(["model=veo3.1", "prompt_set=nature", "duration=5"])
    assert "duration=5 is not allowed" in message and "allowed: 4, 6, 8" in message
    assert {j.payload["duration"] for j in plan(["model=veo3.1", "prompt_set=nature", "duration=6"]).jobs} == {6}


@pytest.mark.parametrize("model", ["veo3.1", "veo3.1_fast"])
def test_veo31_takes_1080p_ratios_and_a_seed(model):
    job = plan([f"model={model}", "prompt_set=nature", "aspect_ratio=1080:1920", "seed=3"]).jobs[0]
    assert job.payload["ratio"] == "1080:1920" and job.payload["seed"] == 3


def test_gen45_output_format_costs_its_surcharge_and_changes_the_file():
    plain = plan(["model=gen4.5", "prompt_set=nature", "duration=5"]).jobs[0]
    prores = plan(["model=gen4.5", "prompt_set=nature", "duration=5", "+native.outputFormat=prores"]).jobs[0]
    hdr = plan(["model=gen4.5", "prompt_set=nature", "duration=5", "+native.outputFormat=hdr10"]).jobs[0]
    assert (plain.cost, prores.cost, hdr.cost) == (Decimal("0.60"), Decimal("0.85"), Decimal("1.60"))
    assert (plain.extension, prores.extension, hdr.extension) == ("mp4", "mov", "mp4")
    assert "outputFormat" not in plain.payload  # added later, so existing jobs keep their keys


def test_sound_effect_is_priced_per_started_six_seconds_once_its_length_is_given(prompt_sets):
    overrides = prompt_sets("sfx", """
        name: sfx
        prompts:
          - id: thunder
            text: thunder rolling in the distance
            params: {duration: 7.5}
    """) + ["model=sfx"]
    assert plan(overrides).jobs[0].cost == Decimal("0.02")
    assert plan(["model=sfx", "prompt_set=nature"]).jobs[0].cost is None


# -- constraints between parameters the documents state -------------------------------------------


def test_pixverse_1080p_only_at_5_seconds():
    message = _error(["model=pixverse", "prompt_set=animate", "resolution=1080p", "duration=8"])
    assert "takes duration only as 5 when resolution=1080p" in message
    assert "1080p videos are limited to 5 seconds" in message and "duration=8 from the config or command line" in message
    assert plan(["model=pixverse", "prompt_set=animate", "resolution=1080p", "duration=5"]).jobs
    assert plan(["model=pixverse", "prompt_set=animate", "resolution=720p", "duration=8"]).jobs


def test_prores_profile_only_with_prores_output():
    message = _error(["model=gen4.5", "prompt_set=nature", "+native.proresProfile=4444"])
    assert "takes no proresProfile when outputFormat=mp4 (the default)" in message
    message = _error(["model=gen4.5", "prompt_set=nature", "+native.outputFormat=hdr_prores", "+native.proresProfile='422 LT'"])
    assert "takes proresProfile only as 422, 422 HQ, 4444" in message
    assert plan(["model=gen4.5", "prompt_set=nature", "+native.outputFormat=prores", "+native.proresProfile='422 LT'"]).jobs


# -- native spellings: one value however it is written, sent as the provider spells it ------------


@pytest.mark.parametrize("given", ["resolution=768P", "resolution=768p", "+native.resolution=768p", "+native.resolution=768P"])
def test_a_native_spelling_keeps_its_price_and_its_job(given):
    plain = plan(["model=hailuo", "prompt_set=animate"])
    spelled = plan(["model=hailuo", "prompt_set=animate", given])
    assert [j.key for j in spelled.jobs] == [j.key for j in plain.jobs]
    assert all(j.cost == Decimal("0.270") and j.payload["resolution"] == "768P" for j in spelled.jobs)
    assert spelled.jobs[0].params["resolution"] == "768p"


def test_a_duration_written_as_text_is_priced_in_seconds(prompt_sets):
    # "8s" is 8 seconds, not two characters; "8" in a prompt's params is the number 8.
    native = plan(["model=veo3_fast", "prompt_set=nature", "+native.duration=8s"]).jobs[0]
    assert native.cost == Decimal("3.20") and native.params["duration"] == 8
    overrides = _one_prompt(prompt_sets, "quoted", "            text: hi\n            params: {duration: '8'}")
    job = plan([*overrides, "model=veo3.1_fast", "audio=false"]).jobs[0]
    assert job.payload["duration"] == 8 and job.cost == Decimal("0.80")


def test_an_enum_value_in_another_case_is_sent_as_the_provider_spells_it():
    job = plan(["model=pika", "prompt_set=nature", "resolution=1080P"]).jobs[0]
    assert job.payload["resolution"] == "1080p" and job.cost == Decimal("0.45")


# -- prices only where the provider publishes one ---------------------------------------------------


@pytest.mark.parametrize("ratio, cost", [("1920:1080", "0.08"), ("1:1", "0.08"), ("1280:720", "0.05"), ("1360:768", None)])
def test_gen4_image_is_priced_only_at_720p_and_1080p(ratio, cost):
    job = plan(["model=gen4_image", "prompt_set=nature", f"aspect_ratio={ratio}"]).jobs[0]
    assert job.cost == (None if cost is None else Decimal(cost))
    if cost is None:
        assert "720p (5 credits) and 1080p (8 credits) only" in job.cost_note


def test_unpriced_models_say_how_to_give_a_price_in_a_users_words():
    note = plan(["model=kling", "prompt_set=ads"]).jobs[0].cost_note
    assert "set one with prices.fal-kling-v2.1-standard=" in note and "Kling 2.5 Turbo Pro" in note


# -- required and optional fields as the SDK has them ----------------------------------------------


def test_prompt_text_required_where_the_api_requires_it(prompt_sets):
    silent = _one_prompt(prompt_sets, "silent", f"            image: {ASSET}")
    assert "model gen4.5 (image-to-video) needs prompt" in _error([*silent, "model=gen4.5"])
    for model in ("gen4_turbo", "veo3.1", "veo3.1_fast"):
        assert "promptText" not in plan([*silent, f"model={model}"]).jobs[0].payload


# -- input limits: inline when small, the upload flow up to its cap, URLs the provider fetches ------


def test_runway_takes_a_large_local_image_through_its_upload_flow(prompt_sets, tmp_path, catalog):
    from runner import inputs
    from runner.sim.media import make_image

    image = tmp_path / "big.png"
    image.write_bytes(make_image("big") + b"\x00" * 20_000_000)  # a whole PNG, then padding: 20 MB
    job = plan(_one_prompt(prompt_sets, "big", f"            text: hi\n            image: {image}") + ["model=gen4_turbo"]).jobs[0]
    limits = catalog.resolve("gen4_turbo").media_limits("image")
    assert not inputs.fits_data_uri(job.inputs[0], limits)  # so the plugin uploads it
    assert limits.max_bytes is None and limits.upload_max_bytes == 200_000_000


@pytest.mark.parametrize("kind, size, inline", [("image", 3_300_000, True), ("image", 3_400_000, False), ("video", 3_700_000, True), ("video", 3_800_000, False)])
def test_runway_inline_limits(catalog, kind, size, inline):
    from runner.inputs import InputFile

    # A data URI is 4/3 of the file: images go inline up to 3.3 MB, video and audio up to a 5 MB URI.
    file = InputFile(source="data:,", sha256="0", mime=f"{kind}/png" if kind == "image" else "video/mp4", size=size)
    limits = catalog.resolve("gen4_turbo").media_limits(kind)
    uri_length = len(f"data:{file.mime};base64,") + (size + 2) // 3 * 4
    assert (uri_length <= limits.data_uri_max_bytes) is inline


@pytest.mark.parametrize("url, problem", [
    ("http://example.com/a.png", "is a http:// URL, which this provider does not fetch (it takes https://, runway://)"),
    ("https://203.0.113.7/a.png", "names its host by IP address (203.0.113.7)"),
    ("https://[2001:db8::1]/a.png", "names its host by IP address (2001:db8::1)"),
    ("https://example.com/" + "a" * 2100, "is a URL of 2120 characters; allowed: at most 2048"),
])
def test_runway_urls_must_be_https_with_a_domain_name(prompt_sets, url, problem):
    overrides = _one_prompt(prompt_sets, "remote", f"            text: hi\n            image: '{url}'") + ["model=gen4_turbo"]
    message = _error(overrides)
    assert problem in message and "Runway fetches inputs only over HTTPS from a domain name" in message


@pytest.mark.parametrize("model, url", [
    ("gen4_turbo", "https://example.com/a.png"),
    ("gen4_turbo", "runway://upload/abc"),
    ("kling", "http://example.com/a.png"),
])
def test_urls_the_provider_fetches_pass_through(prompt_sets, model, url):
    job = plan(_one_prompt(prompt_sets, "remote", f"            text: hi\n            image: '{url}'") + [f"model={model}"]).jobs[0]
    assert url in job.payload.values() and not job.inputs


def test_a_runway_upload_uri_is_not_a_fal_input(prompt_sets):
    message = _error(_one_prompt(prompt_sets, "remote", "            text: hi\n            image: 'runway://upload/abc'") + ["model=kling"])
    assert "is a runway:// URL, which this provider does not fetch" in message


def test_m4a_audio_is_audio(tmp_path):
    from runner.inputs import sniff_mime

    assert sniff_mime(b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00") == "audio/mp4"
    assert sniff_mime(b"\xff\xf1\x50\x80") == "audio/aac"
    assert sniff_mime(b"\x00\x00\x00\x20ftypisom") == "video/mp4"


# -- the plan shows what it knows -------------------------------------------------------------------


def test_the_plan_names_where_its_prices_come_from():
    text = format_plan(plan(["model=gen4_turbo", "prompt_set=animate"]))
    assert "prices from: gen4_turbo: Runway credit table" in text


@pytest.mark.parametrize("model", ["veo3.1", "veo3.1_fast"])
def test_veo31_takes_a_first_and_a_last_frame(prompt_sets, catalog, model):
    from runner.catalog import check_payload

    overrides = _one_prompt(prompt_sets, "frames", f"            text: hi\n            image: {ASSET}\n            end_image: ${{asset:portrait.jpg}}")
    job = plan([*overrides, f"model={model}"]).jobs[0]
    first, last = (f.placeholder() for f in job.inputs)
    assert job.payload["promptImage"] == [{"uri": first, "position": "first"}, {"uri": last, "position": "last"}]
    assert check_payload(catalog.resolve(model).mode(job.mode), job.payload) == []
    single = plan(_one_prompt(prompt_sets, "first", f"            text: hi\n            image: {ASSET}") + [f"model={model}"]).jobs[0]
    assert single.payload["promptImage"] == single.inputs[0].placeholder()  # one frame: the plain form, as before
    assert "does not take end_image" in _error([*overrides, "model=gen4.5"])


def test_price_lists_read_as_alternatives():
    from runner.report import describe_pricing

    text = describe_pricing(plugins.registry().catalog.resolve("gen4_image").spec.pricing_for("text-to-image"))
    assert text.startswith("$0.08/image if ratio=1920:1080|1080:1920|1080:1080|1440:1080|1080:1440, else $0.05/image if ratio=1280:720|")


def test_each_input_file_is_read_once_per_plan(monkeypatch):
    from runner import inputs

    reads = []
    real = inputs.resolve
    monkeypatch.setattr(inputs, "resolve", lambda value, *rest: reads.append(value) or real(value, *rest))
    p = plan(["model=gen4_turbo", "prompt_set=animate", "sweep.duration=[5,10]", "replicates=3"])
    assert len(p.jobs) == 12 and len(reads) == 2
