"""Plans: expansion, job keys, prices from the providers' price tables, and every validation failure."""

from __future__ import annotations

import hashlib
from decimal import Decimal

import pytest

from runner.app import plan
from runner.errors import UserError
from runner.plan import job_key


@pytest.mark.parametrize(
    "overrides, each",
    [
        (["model=gen4_turbo", "prompt_set=animate", "duration=5"], "0.25"),
        (["model=gen4.5", "prompt_set=nature", "duration=10"], "1.20"),
        (["model=veo3.1_fast", "prompt_set=nature", "duration=8", "audio=false"], "0.80"),
        (["model=pika", "prompt_set=nature", "resolution=1080p"], "0.45"),
        (["model=pika", "prompt_set=nature", "resolution=720p"], "0.20"),
        (["model=fal-veo3.1-fast", "prompt_set=animate", "duration=8", "audio=true"], "1.20"),
        (["model=hailuo", "prompt_set=animate", "duration=6"], "0.27"),
        (["model=sora2", "prompt_set=nature", "duration=8"], "0.80"),
    ],
)
def test_prices_follow_the_providers_price_tables(overrides, each):
    p = plan(overrides)
    assert p.jobs and all(job.cost == Decimal(each) for job in p.jobs)
    assert p.total == Decimal(each) * len(p.jobs)


def test_provider_defaults_are_priced_as_sent():
    # hailuo-02 standard defaults to 6 s at 768p: $0.045/s.
    p = plan(["model=hailuo", "prompt_set=animate"])
    assert {job.cost for job in p.jobs} == {Decimal("0.270")}
    assert p.jobs[0].params["duration"] == 6


def test_unknown_price_is_said_not_invented():
    p = plan(["model=kling", "prompt_set=ads"])
    assert all(job.cost is None for job in p.jobs)
    assert "no price" in p.jobs[0].cost_note


def test_sweep_grid_and_replicates_expand_to_distinct_jobs():
    p = plan(["model=gen4_turbo", "prompt_set=animate", "sweep.duration=[5,10]", "replicates=2"])
    assert len(p.jobs) == 2 * 2 * 2
    assert len({job.key for job in p.jobs}) == 8
    assert sorted({job.payload["duration"] for job in p.jobs}) == [5, 10]


def test_prompt_params_win_and_repeated_points_merge():
    # coffee-morning fixes duration=10, so duration=5 and duration=10 give the same job for it.
    p = plan(["model=gen4_turbo", "prompt_set=ads", "sweep.duration=[5,10]"])
    coffee = [job for job in p.jobs if job.prompt_id == "coffee-morning"]
    assert len(coffee) == 1 and coffee[0].payload["duration"] == 10
    assert p.merged == 1


def test_native_payload_uses_native_names_and_values():
    job = plan(["model=gen4_turbo", "prompt_set=animate", "aspect_ratio=9:16", "seed=7"]).jobs[0]
    assert job.payload["ratio"] == "720:1280"
    assert job.payload["seed"] == 7
    assert job.payload["promptImage"] == {"$input": job.inputs[0].sha256}
    fal = plan(["model=fal-veo2", "prompt_set=animate", "duration=6"]).jobs[0]
    assert fal.payload["duration"] == "6s"


def test_keys_are_stable_and_change_only_with_the_output(tmp_path, prompt_sets):
    image = tmp_path / "a.png"
    image.write_bytes(_png(1))
    overrides = prompt_sets("one", f"""
        name: one
        prompts:
          - id: a
            text: hello
            image: {image}
    """) + ["model=gen4_turbo"]
    first = plan(overrides).jobs[0].key
    assert plan(overrides).jobs[0].key == first
    assert plan([*overrides, "seed=3"]).jobs[0].key != first
    image.write_bytes(_png(2))
    assert plan(overrides).jobs[0].key != first


@pytest.mark.parametrize("explicit", [
    ["duration=5"],  # canonical, equal to Kling's default "5"
    ["+native.cfg_scale=0.5", "+native.negative_prompt='blur, distort, and low quality'"],  # native defaults
])
def test_a_value_equal_to_the_default_is_the_same_job(explicit):
    # Otherwise the same clip is generated, and paid for, twice.
    plain = plan(["model=kling", "prompt_set=ads"])
    given = plan(["model=kling", "prompt_set=ads", *explicit])
    assert [j.key for j in given.jobs] == [j.key for j in plain.jobs]
    assert plain.jobs[0].payload["duration"] == "5" and plain.jobs[0].payload["cfg_scale"] == 0.5


def test_job_key_is_the_documented_hash():
    # Changing the key formula would orphan every user's ledger: this pins it.
    key = job_key("runway", "gen4_turbo", "image_to_video", {"promptText": "hi", "duration": 5}, 0)
    canonical = b'{"endpoint":"image_to_video","model":"gen4_turbo","payload":{"duration":5,"promptText":"hi"},"provider":"runway","replicate":0}'
    assert key == hashlib.sha256(canonical).hexdigest()
    assert key == "17748cd7b9887a57b4040a6ba898a6cdeb047cb49d95e0e37a5e5877a90b4266"


def _png(variant: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + bytes([variant, 0, 0]) * 4 for _ in range(4))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


# -- validation: each failure names the field, the value, what is allowed, and where it came from --


def _error(overrides) -> str:
    with pytest.raises(UserError) as err:
        plan(overrides)
    return str(err.value)


def test_unknown_model_suggests_the_closest():
    message = _error(["model=kling", "model.name=klingg"])
    assert "unknown model 'klingg'" in message and "did you mean 'kling'" in message


def test_parameter_the_model_does_not_take():
    message = _error(["model=kling", "prompt_set=ads", "resolution=1080p"])
    assert "resolution='1080p' is not a parameter of model fal-kling-v2.1-standard" in message
    assert "it takes: duration, image, negative_prompt, prompt" in message
    assert "command line" in message


def test_value_outside_enum():
    message = _error(["model=kling", "prompt_set=ads", "duration=7"])
    assert "duration=7 is not allowed" in message and "allowed: 5, 10" in message


def test_aspect_ratio_outside_text_to_video_set():
    message = _error(["model=gen4.5", "prompt_set=nature", "aspect_ratio=21:9"])
    assert "aspect_ratio='21:9' is not allowed for model gen4.5 (text-to-video)" in message
    assert "allowed: 16:9, 9:16" in message


def test_value_outside_range():
    message = _error(["model=gen4_turbo", "prompt_set=animate", "duration=12"])
    assert "duration=12 is not allowed" in message and "2..10" in message


def test_image_to_video_only_model_with_text_only_prompt():
    message = _error(["model=kling", "prompt_set=nature"])
    assert "image-to-video only" in message and "needs image" in message and "'forest-dawn'" in message


def test_per_prompt_value_names_the_prompt(prompt_sets):
    overrides = prompt_sets("p", """
        name: p
        prompts:
          - id: tall
            text: hi
            params: {duration: 3}
    """) + ["model=sora2"]
    message = _error(overrides)
    assert "duration=3 is not allowed" in message and "prompt 'tall' at " in message and "p.yaml:4 (params)" in message


def test_empty_sweep_and_unknown_native_field():
    assert "non-empty list" in _error(["model=gen4_turbo", "prompt_set=animate", "sweep.duration=[]"])
    message = _error(["model=gen4_turbo", "prompt_set=animate", "+native.promptTxt=x"])
    assert "native.promptTxt is not a field" in message and "did you mean 'promptText'" in message


@pytest.mark.parametrize(
    "content, expected",
    [
        (None, "does not exist"),
        ("dir", "is not a file"),
        (b"GIF89a" + b"\x00" * 64, "is image/gif; allowed: image/jpeg, image/png, image/webp"),
        (b"just some text", "is not a recognised media file; allowed: image/jpeg"),
    ],
)
def test_bad_input_image(tmp_path, prompt_sets, content, expected):
    image = tmp_path / "input.img"
    if content == "dir":
        image.mkdir()
    elif content is not None:
        image.write_bytes(content)
    overrides = prompt_sets("bad", f"""
        name: bad
        prompts:
          - id: shot
            text: hi
            image: {image}
    """) + ["model=gen4_turbo"]
    message = _error(overrides)
    assert "image=" in message and "prompt 'shot'" in message and expected in message


def test_input_image_over_the_model_limit(tmp_path, prompt_sets):
    image = tmp_path / "huge.png"
    image.write_bytes(_png(1) + b"\x00" * 9_000_000)
    overrides = prompt_sets("big", f"""
        name: big
        prompts:
          - id: shot
            text: hi
            image: {image}
    """) + ["model=veo2"]
    message = _error(overrides)
    assert "is 9.0 MB; allowed: at most 8.0 MB" in message


def test_data_uri_input_is_identified_by_its_bytes(prompt_sets):
    import base64

    uri = "data:image/png;base64," + base64.b64encode(_png(5)).decode()
    overrides = prompt_sets("inline", f"""
        name: inline
        prompts:
          - id: shot
            text: hi
            image: "{uri}"
    """) + ["model=gen4_turbo"]
    job = plan(overrides).jobs[0]
    assert job.inputs[0].mime == "image/png" and job.inputs[0].read() == _png(5)


def test_model_preset_sets_default_parameters():
    p = plan(["model=veo31_fast_silent", "prompt_set=nature", "duration=8"])
    assert {job.model for job in p.jobs} == {"veo3.1_fast"}
    assert all(job.payload["audio"] is False and job.cost == Decimal("0.80") for job in p.jobs)


def test_your_price_per_clip_or_per_second_by_any_of_the_models_names():
    per_clip = plan(["model=kling", "prompt_set=ads", "+prices.kling=0.40"])
    assert {job.cost for job in per_clip.jobs} == {Decimal("0.40")} and per_clip.jobs[0].cost_source == "your price"
    per_second = plan(["model=kling", "prompt_set=ads", "+prices.kling_std=0.08/s"])
    assert sorted(job.cost for job in per_second.jobs) == [Decimal("0.40"), Decimal("0.40"), Decimal("0.80")]
    assert "prices.kling='cheap' is not a price" in _error(["model=kling", "prompt_set=ads", "+prices.kling=cheap"])
