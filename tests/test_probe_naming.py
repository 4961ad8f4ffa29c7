"""What a clip turned out to be (runner.probe), how clips are named (runner.naming), and which
ledger a companion command finds (runner.locate)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.locate import NoLedger, find_ledger
from runner.naming import output_path, param_tag
from runner.probe import examine, mismatch, poster_path, probe
from runner.sim.media import make_audio, make_video


def test_probe_reads_what_the_file_is(tmp_path):
    clip = tmp_path / "m" / "clip.mp4"
    clip.parent.mkdir()
    clip.write_bytes(make_video("k", 3.0, width=160, height=90, fps=8))
    assert probe(clip) == {"duration_s": 3.0, "width": 160, "height": 90, "fps": 8.0, "video_codec": "h264", "audio_codec": None}
    wav = tmp_path / "sound.wav"
    wav.write_bytes(make_audio("k", 2.0))
    facts = probe(wav)
    assert facts["audio_codec"] and facts["video_codec"] is None and facts["duration_s"] == pytest.approx(2.0, abs=0.01)


def test_examine_writes_a_poster_and_flags_what_differs(tmp_path):
    clip = tmp_path / "ads" / "kling" / "coffee__d10-1a2b3c4d.mp4"
    clip.parent.mkdir(parents=True)
    clip.write_bytes(make_video("k", 5.0, width=128, height=72))
    facts = examine(clip, json.dumps({"duration": 10, "resolution": "1080p", "aspect_ratio": "16:9", "audio": True}), "sha")
    assert facts["mismatch"] == "asked 10 s, got 5.0 s; asked 1080p, got 128x72; asked audio, got none"
    assert Path(facts["poster_path"]) == tmp_path / "ads" / "_gallery" / "kling" / "coffee__d10-1a2b3c4d.jpg" == poster_path(clip)
    assert Path(facts["poster_path"]).read_bytes()[:2] == b"\xff\xd8"  # a JPEG
    assert examine(clip, json.dumps({"duration": 5, "aspect_ratio": "16:9"}), "sha")["mismatch"] is None


@pytest.mark.parametrize("params, facts, expected", [
    ({"duration": "8s"}, {"duration_s": 8.04}, None),  # containers round the last frame
    ({"duration": 10}, {"duration_s": 9.2}, "asked 10 s, got 9.2 s"),
    ({"resolution": "720p"}, {"width": 1280, "height": 720}, None),
    ({"resolution": "1080p"}, {"width": 1280, "height": 720}, "asked 1080p, got 1280x720"),
    ({"aspect_ratio": "9:16"}, {"width": 1280, "height": 720}, "asked 9:16, got 1280x720"),
    ({"resolution": "768P"}, {"width": 1366, "height": 768}, None),
])
def test_mismatch_in_words(params, facts, expected):
    assert mismatch(params, facts) == expected


def test_a_file_that_cannot_be_read_is_recorded_not_raised(tmp_path):
    bad = tmp_path / "m" / "bad.mp4"
    bad.parent.mkdir()
    bad.write_bytes(b"not a video at all")
    facts = examine(bad, "{}", "sha")
    assert facts["error"] and "mismatch" not in facts and facts["output_sha256"] == "sha"


def test_file_names_carry_the_key_parameters_and_are_safe_everywhere():
    row = {"sweep": "ads", "model": "fal-kling-v2.1-standard", "prompt_id": "coffee-morning", "key": "1a2b3c4d" + "0" * 56,
           "extension": "mp4", "replicate": 0, "params": json.dumps({"duration": 10, "aspect_ratio": "16:9", "prompt": "x"})}
    assert output_path(Path("outputs"), row) == Path("outputs/ads/fal-kling-v2.1-standard/coffee-morning__d10_16x9-1a2b3c4d.mp4")
    odd = {**row, "sweep": "a/b:c", "prompt_id": "CON", "params": "{}", "replicate": 2}
    assert output_path(Path("o"), odd) == Path("o/a-b-c/fal-kling-v2.1-standard/_CON__r2-1a2b3c4d.mp4")
    assert param_tag({"duration": "8s", "resolution": "1080p", "audio": False, "seed": 42}, 1) == "d8_1080p_mute_s42_r1"


def test_the_ledger_is_found_by_walking_up_or_as_told(tmp_path):
    ledger = tmp_path / "project" / ".runner" / "ledger.db"
    ledger.parent.mkdir(parents=True)
    ledger.write_bytes(b"")
    deep = tmp_path / "project" / "a" / "b"
    deep.mkdir(parents=True)
    found = find_ledger(cwd=deep, environ={})
    assert found.db == ledger and found.root == tmp_path / "project"
    assert found.resolve("outputs/x.mp4") == tmp_path / "project" / "outputs" / "x.mp4"
    assert find_ledger(cwd=tmp_path, environ={"RUNNER_STATE_DIR": "project/.runner"}).root == tmp_path / "project"
    assert find_ledger(str(ledger), cwd=deep, environ={"RUNNER_STATE_DIR": "nowhere"}).db == ledger  # --db wins
    with pytest.raises(NoLedger, match="no .runner/ledger.db in"):
        find_ledger(cwd=tmp_path, environ={})
    with pytest.raises(NoLedger, match="RUNNER_STATE_DIR=nowhere"):
        find_ledger(cwd=deep, environ={"RUNNER_STATE_DIR": "nowhere"})
