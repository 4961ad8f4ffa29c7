"""The simulator's media files are real: they parse, play, differ per job and fail loudly when cut short."""

from __future__ import annotations

import io
import json
import math
import shutil
import struct
import subprocess
import wave
import zlib
from pathlib import Path

import pytest

from runner.sim.media import make_audio, make_image, make_video, mp4_info


@pytest.mark.parametrize(
    ("seconds", "fps", "width", "height"),
    [(5, 8, 128, 72), (2.3, 24, 64, 48), (1, 1, 32, 32), (3, 30, 30, 18)],
)
def test_clip_reports_its_duration_size_and_frames(seconds: float, fps: int, width: int, height: int) -> None:
    clip = make_video("job-1", seconds, width=width, height=height, fps=fps)
    info = mp4_info(clip)
    frames = round(seconds * fps)
    assert info["brand"] == "isom"
    assert info["codec"] == "avc1"
    assert (info["width"], info["height"]) == (width, height)
    assert info["frames"] == frames
    assert info["duration"] == pytest.approx(frames / fps)
    assert info["keyframes"] == math.ceil(frames / fps)  # one each second
    assert 0 < info["mdat_bytes"] < len(clip)


def test_default_clip_is_small() -> None:
    assert len(make_video("job-1", 5)) < 100_000


def test_same_job_same_bytes_other_job_other_bytes() -> None:
    assert make_video("job-1", 2) == make_video("job-1", 2)
    assert make_video("job-1", 2) != make_video("job-2", 2)
    assert make_image("job-1") == make_image("job-1") != make_image("job-2")
    assert make_audio("job-1", 1) == make_audio("job-1", 1) != make_audio("job-2", 1)


def test_truncated_clip_is_rejected() -> None:
    with pytest.raises(ValueError, match="truncated"):
        mp4_info(make_video("job-1", 3)[:-100])


@pytest.mark.parametrize(("box", "delta"), [("moov", 1), ("stsz", -4), ("stco", 8), ("mdat", -1)])
def test_corrupted_box_size_is_rejected(box: str, delta: int) -> None:
    clip = bytearray(make_video("job-1", 3))
    at = clip.index(box.encode()) - 4
    (size,) = struct.unpack_from(">I", clip, at)
    struct.pack_into(">I", clip, at, size + delta)
    with pytest.raises(ValueError):
        mp4_info(bytes(clip))


def test_chunk_offset_outside_mdat_is_rejected() -> None:
    clip = bytearray(make_video("job-1", 3))
    struct.pack_into(">I", clip, clip.index(b"stco") + 12, 0)  # after version/flags and entry count
    with pytest.raises(ValueError, match="outside 'mdat'"):
        mp4_info(bytes(clip))


def test_other_files_are_not_taken_for_mp4() -> None:
    with pytest.raises(ValueError):
        mp4_info(make_image("job-1"))
    with pytest.raises(ValueError):
        mp4_info(b"")


def test_odd_video_size_is_refused() -> None:
    with pytest.raises(ValueError, match="even"):
        make_video("job-1", 1, width=127)


def test_image_is_a_valid_png() -> None:
    width, height = 96, 40
    png = make_image("job-1", width=width, height=height)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    chunks: dict[bytes, bytes] = {}
    position = 8
    while position < len(png):
        (length,) = struct.unpack_from(">I", png, position)
        kind = png[position + 4 : position + 8]
        payload = png[position + 8 : position + 8 + length]
        (crc,) = struct.unpack_from(">I", png, position + 8 + length)
        assert crc == zlib.crc32(kind + payload), kind
        chunks[kind] = chunks.get(kind, b"") + payload
        position += 12 + length
    assert list(chunks) == [b"IHDR", b"IDAT", b"IEND"]
    assert struct.unpack(">II", chunks[b"IHDR"][:8]) == (width, height)
    assert len(zlib.decompress(chunks[b"IDAT"])) == height * (1 + width * 3)


def test_audio_is_a_wav_of_the_requested_length() -> None:
    with wave.open(io.BytesIO(make_audio("job-1", 2.5, rate=16000))) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 16000)
        assert wav.getnframes() / wav.getframerate() == pytest.approx(2.5)
        samples = struct.unpack(f"<{wav.getnframes()}h", wav.readframes(wav.getnframes()))
    assert max(samples) > 1000  # audible, not silence


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffmpeg is not installed")
def test_ffmpeg_decodes_the_clip_and_sees_it_move(tmp_path: Path) -> None:
    width, height, fps = 64, 48, 4
    path = tmp_path / "clip.mp4"
    path.write_bytes(make_video("job-1", 3, width=width, height=height, fps=fps))

    decoded = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "gray", "-"],
        capture_output=True,
        check=True,
    )
    assert decoded.stderr == b""
    frame = width * height
    frames = [decoded.stdout[i : i + frame] for i in range(0, len(decoded.stdout), frame)]
    assert len(frames) == 3 * fps
    assert frames[1] == frames[0]  # skipped frames repeat the second's picture
    assert frames[fps] != frames[0]  # and the next second's picture has moved on

    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
        capture_output=True,
        check=True,
        text=True,
    )
    stream = json.loads(probe.stdout)["streams"][0]
    assert (stream["codec_name"], stream["profile"]) == ("h264", "Constrained Baseline")
    assert (stream["width"], stream["height"], int(stream["nb_frames"])) == (width, height, 3 * fps)
    assert float(json.loads(probe.stdout)["format"]["duration"]) == pytest.approx(3)
