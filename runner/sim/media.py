"""Real, playable media for the provider simulator, generated in pure Python.

The simulator hands these bytes out as a provider's results, so downloads, resumption and
validation are exercised against files that a browser or ffmpeg really plays. Everything is a
pure function of a job's key: the same job always yields byte-identical files, and different
jobs visibly differ.

The video is H.264 without a compressor. Each second opens with an IDR picture whose
macroblocks are I_PCM (raw samples), and the frames in between are P pictures in which every
macroblock is skipped, so the decoder repeats the picture. A clip therefore costs about one raw
picture per second and takes a few milliseconds to build.
"""

from __future__ import annotations

import colorsys
import hashlib
import io
import math
import re
import struct
import wave
import zlib
from typing import TypedDict

# (level_idc, max macroblocks/s, max frame size in macroblocks, max Baseline bit rate in kbit/s)
_LEVELS = (
    (10, 1485, 99, 64),
    (11, 3000, 396, 192),
    (12, 6000, 396, 384),
    (13, 11880, 396, 768),
    (20, 11880, 396, 2000),
    (21, 19800, 792, 4000),
    (22, 20250, 1620, 4000),
    (30, 40500, 1620, 10000),
    (31, 108000, 3600, 14000),
    (32, 216000, 5120, 20000),
    (40, 245760, 8192, 20000),
    (41, 245760, 8192, 50000),
    (42, 522240, 8704, 50000),
    (50, 589824, 22080, 135000),
    (51, 983040, 36864, 240000),
    (52, 2073600, 36864, 240000),
)
_FRAME_NUM_BITS = 4
_PCM_MB_BYTES = 256 + 2 * 64
# Every I_PCM macroblock after the first starts byte-aligned: mb_type ue(25) is the 9 bits
# 000011010, and pcm_alignment_zero_bits pad them to these two bytes.
_PCM_MB_HEADER = b"\x0d\x00"
_START_CODE_PREFIX = re.compile(b"\x00\x00(?=[\x00-\x03])")
_IDENTITY_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


class Mp4Info(TypedDict):
    """Facts about an MP4's first video track, as read back by `mp4_info`."""

    brand: str
    duration: float
    width: int
    height: int
    codec: str
    frames: int
    keyframes: int
    mdat_bytes: int


def make_video(key: str, seconds: float, *, width: int = 128, height: int = 72, fps: int = 8) -> bytes:
    """An MP4 (H.264 Constrained Baseline) of `seconds`, rounded to whole frames, drawn from `key`.

    A grid of coloured blocks with a bar that jumps across the frame once a second, so a player
    visibly shows motion and two jobs are told apart at a glance.
    """
    if width < 2 or height < 2 or width % 2 or height % 2:
        raise ValueError(f"video size must be even and at least 2x2, got {width}x{height}")
    if fps < 1 or seconds <= 0:
        raise ValueError(f"need fps >= 1 and seconds > 0, got fps={fps}, seconds={seconds}")
    digest = hashlib.sha256(key.encode()).digest()
    frames = max(1, round(seconds * fps))
    mb_w, mb_h = -(-width // 16), -(-height // 16)
    sps = _sps(mb_w, mb_h, width, height, _level(mb_w * mb_h, fps))
    pps = _pps()
    skip_run = mb_w * mb_h
    samples = []
    for index in range(frames):
        second, frame_num = divmod(index, fps)
        if frame_num == 0:
            picture = _picture_yuv(digest, width, height, mb_w * 16, mb_h * 16, second)
            nal = _idr_slice(_pcm_macroblocks(*picture, mb_w, mb_h), second % 65536)
        else:
            nal = _skip_slice(frame_num % (1 << _FRAME_NUM_BITS), skip_run)
        samples.append(struct.pack(">I", len(nal)) + nal)
    keyframes = list(range(1, frames + 1, fps))
    return _mp4(samples, keyframes, sps, pps, width, height, fps)


def make_image(key: str, *, width: int = 128, height: int = 72) -> bytes:
    """A PNG (8-bit RGB) with the same kind of picture as the video's first frame for `key`."""
    if width < 1 or height < 1:
        raise ValueError(f"image size must be at least 1x1, got {width}x{height}")
    digest = hashlib.sha256(key.encode()).digest()
    palette = _palette(digest)
    tables = [_translation([colour[channel] for colour in palette]) for channel in range(3)]
    raw = bytearray()
    for row in _index_rows(digest, width, height, 0):
        pixels = bytearray(3 * width)
        for channel, table in enumerate(tables):
            pixels[channel::3] = row.translate(table)
        raw += b"\x00" + pixels
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(bytes(raw), 9))
        + _png_chunk(b"IEND", b"")
    )


def make_audio(key: str, seconds: float, *, rate: int = 8000) -> bytes:
    """A WAV (16-bit mono PCM) of `seconds`: a steady tone between about 220 and 880 Hz picked by `key`."""
    if rate < 1 or seconds <= 0:
        raise ValueError(f"need rate >= 1 and seconds > 0, got rate={rate}, seconds={seconds}")
    digest = hashlib.sha256(key.encode()).digest()
    # A whole number of samples per cycle lets one cycle be repeated byte-for-byte.
    period = max(2, round(rate / (220 * 2 ** (digest[0] / 128))))
    cycle = struct.pack(
        f"<{period}h", *(round(9830 * math.sin(2 * math.pi * i / period)) for i in range(period))
    )
    count = max(1, round(seconds * rate))
    samples = (cycle * (count // period + 1))[: 2 * count]
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples)
    return buffer.getvalue()


def mp4_info(data: bytes) -> Mp4Info:
    """Parse an MP4 and describe its first video track; raise ValueError if it is not whole.

    Beyond reading the boxes this proves that the file is complete and self-consistent: every
    box fits, the sample sizes add up to exactly the bytes in mdat, every sample lies inside
    mdat, and each H.264 sample is a whole sequence of length-prefixed NAL units. A truncated or
    damaged download fails one of these checks.
    """
    top = _walk(data, 0, len(data))
    if not top or top[0][0] != "ftyp":
        raise ValueError("not an MP4: the file does not start with an 'ftyp' box")
    moov = _walk(data, *_one(top, "moov"))
    mdats = [(start, end) for kind, start, end in top if kind == "mdat"]
    if not mdats:
        raise ValueError("no 'mdat' box: the file holds no media data")
    mdat_bytes = sum(end - start for start, end in mdats)

    mvhd = _body(data, moov, "mvhd")
    layout, at = (">IQ", 20) if mvhd[:1] == b"\x01" else (">II", 12)  # version 1 has 64-bit times
    timescale, duration = _unpack(layout, mvhd, at, "mvhd")
    if timescale == 0:
        raise ValueError("'mvhd' has a timescale of 0")

    stbl = _walk(data, *_one(_walk(data, *_one(_video_mdia(data, moov), "minf")), "stbl"))
    codec, width, height, nal_length_size = _sample_entry(data, stbl)
    sizes = _sample_sizes(data, stbl, mdat_bytes)
    if sum(sizes) != mdat_bytes:
        raise ValueError(f"samples add up to {sum(sizes)} bytes but 'mdat' holds {mdat_bytes}")
    _check_placement(data, stbl, sizes, mdats, nal_length_size)
    return Mp4Info(
        brand=data[top[0][1] : top[0][1] + 4].decode("latin-1"),
        duration=duration / timescale,
        width=width,
        height=height,
        codec=codec,
        frames=len(sizes),
        keyframes=_keyframe_count(data, stbl, len(sizes)),
        mdat_bytes=mdat_bytes,
    )


# --- Pictures --------------------------------------------------------------------------------


def _palette(digest: bytes) -> list[tuple[int, int, int]]:
    """Three block colours around a hue from the key, plus a pale bar colour that stands out."""
    hue = digest[0] / 256
    shades = (
        (0.0, 0.65, 0.35),
        (0.33 + digest[1] / 1024, 0.55, 0.8),
        (0.66 + digest[2] / 1024, 0.45, 0.6),
        (0.5, 0.1, 1.0),
    )
    colours = []
    for shift, saturation, value in shades:
        r, g, b = colorsys.hsv_to_rgb((hue + shift) % 1, saturation, value)
        colours.append((round(255 * r), round(255 * g), round(255 * b)))
    return colours


def _index_rows(digest: bytes, width: int, height: int, second: int) -> list[bytes]:
    """Palette indices, one bytes object per pixel row: blocks (0-2) under a vertical bar (3).

    Block and bar edges fall on even pixels, so 4:2:0 chroma can be taken by plain subsampling.
    """
    cell = max(2, width // 8 & ~1)
    columns = -(-width // cell)
    pattern = int.from_bytes(digest[4:], "big")
    bar = min(width, max(2, width // 10 & ~1))
    step = max(2, (width - bar) // 5)
    left = (digest[3] + second * step) % (width - bar + 1) & ~1
    rows: list[bytes] = []
    for block_row in range(-(-height // cell)):
        row = bytearray().join(
            bytes([(pattern >> ((block_row * columns + column) * 2 % 224)) % 3]) * cell
            for column in range(columns)
        )[:width]
        row[left : left + bar] = b"\x03" * bar
        rows += [bytes(row)] * min(cell, height - block_row * cell)
    return rows


def _picture_yuv(
    digest: bytes, width: int, height: int, coded_width: int, coded_height: int, second: int
) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """Rows of Y, Cb and Cr samples (BT.601, limited range) padded out to whole macroblocks.

    Limited range keeps every sample at 16 or above, which also keeps start-code look-alikes rare.
    """
    yuv = [_bt601(colour) for colour in _palette(digest)]
    rows = [row + row[-1:] * (coded_width - width) for row in _index_rows(digest, width, height, second)]
    rows += rows[-1:] * (coded_height - height)
    chroma = [row[::2] for row in rows[::2]]
    luma_table, cb_table, cr_table = (_translation([c[i] for c in yuv]) for i in range(3))
    return (
        [row.translate(luma_table) for row in rows],
        [row.translate(cb_table) for row in chroma],
        [row.translate(cr_table) for row in chroma],
    )


def _bt601(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    r, g, b = rgb
    return (
        round(16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255),
        round(128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255),
        round(128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255),
    )


def _translation(values: list[int]) -> bytes:
    """A bytes.translate table mapping palette index i to values[i]."""
    return bytes(values) + bytes(256 - len(values))


# --- H.264 -----------------------------------------------------------------------------------


class _Bits:
    """A big-endian bit writer for parameter sets and slice headers (never for samples)."""

    def __init__(self) -> None:
        self._value = 0
        self._length = 0

    def u(self, bits: int, value: int) -> None:
        self._value = self._value << bits | value
        self._length += bits

    def ue(self, value: int) -> None:
        code = value + 1
        self.u(2 * code.bit_length() - 1, code)

    def se(self, value: int) -> None:
        self.ue(2 * value - 1 if value > 0 else -2 * value)

    def aligned(self) -> bytes:
        """The bits so far, padded with zero bits to a whole byte."""
        pad = -self._length % 8
        return (self._value << pad).to_bytes((self._length + pad) // 8, "big")

    def trailing(self) -> bytes:
        """The bits so far closed with rbsp_trailing_bits (a one bit, then zero bits)."""
        self.u(1, 1)
        return self.aligned()


def _nal(header: int, rbsp: bytes) -> bytes:
    """A NAL unit with emulation prevention: 0x000000-0x000003 in the payload becomes 0x0000 03 xx."""
    return bytes([header]) + _START_CODE_PREFIX.sub(b"\x00\x00\x03", rbsp)


def _level(macroblocks: int, fps: int) -> int:
    """The lowest level whose frame size, macroblock rate and bit rate fit one raw picture a second."""
    kbits_per_second = (macroblocks * (_PCM_MB_BYTES + len(_PCM_MB_HEADER)) + fps * 16) * 8 / 1000
    for level, max_mbps, max_fs, max_kbps in _LEVELS:
        if macroblocks <= max_fs and macroblocks * fps <= max_mbps and kbits_per_second <= max_kbps:
            return level
    return _LEVELS[-1][0]


def _sps(mb_w: int, mb_h: int, width: int, height: int, level: int) -> bytes:
    bits = _Bits()
    bits.u(8, 66)  # profile_idc: Baseline
    bits.u(8, 0b11000000)  # constraint_set0 and set1: Constrained Baseline
    bits.u(8, level)
    bits.ue(0)  # seq_parameter_set_id
    bits.ue(_FRAME_NUM_BITS - 4)
    bits.ue(2)  # pic_order_cnt_type 2: output order is decode order, no POC in slice headers
    bits.ue(1)  # max_num_ref_frames
    bits.u(1, 0)  # gaps_in_frame_num_value_allowed_flag
    bits.ue(mb_w - 1)
    bits.ue(mb_h - 1)
    bits.u(1, 1)  # frame_mbs_only_flag
    bits.u(1, 1)  # direct_8x8_inference_flag
    # Crop offsets count pairs of samples in 4:2:0 progressive video.
    crop_right, crop_bottom = (mb_w * 16 - width) // 2, (mb_h * 16 - height) // 2
    cropped = bool(crop_right or crop_bottom)
    bits.u(1, int(cropped))  # frame_cropping_flag
    if cropped:
        for offset in (0, crop_right, 0, crop_bottom):
            bits.ue(offset)
    bits.u(1, 0)  # vui_parameters_present_flag
    return _nal(0x67, bits.trailing())


def _pps() -> bytes:
    bits = _Bits()
    bits.ue(0)  # pic_parameter_set_id
    bits.ue(0)  # seq_parameter_set_id
    bits.u(1, 0)  # entropy_coding_mode_flag: CAVLC
    bits.u(1, 0)  # bottom_field_pic_order_in_frame_present_flag
    bits.ue(0)  # num_slice_groups_minus1
    bits.ue(0)  # num_ref_idx_l0_default_active_minus1
    bits.ue(0)  # num_ref_idx_l1_default_active_minus1
    bits.u(1, 0)  # weighted_pred_flag
    bits.u(2, 0)  # weighted_bipred_idc
    bits.se(0)  # pic_init_qp_minus26
    bits.se(0)  # pic_init_qs_minus26
    bits.se(0)  # chroma_qp_index_offset
    bits.u(1, 1)  # deblocking_filter_control_present_flag, so slices can switch the filter off
    bits.u(1, 0)  # constrained_intra_pred_flag
    bits.u(1, 0)  # redundant_pic_cnt_present_flag
    return _nal(0x68, bits.trailing())


def _pcm_macroblocks(
    luma: list[bytes], cb: list[bytes], cr: list[bytes], mb_w: int, mb_h: int
) -> list[bytes]:
    """Each macroblock's raw samples in I_PCM order: 16x16 luma, then 8x8 Cb, then 8x8 Cr."""
    macroblocks = []
    for mb_y in range(mb_h):
        luma_band = luma[16 * mb_y : 16 * mb_y + 16]
        chroma_band = cb[8 * mb_y : 8 * mb_y + 8] + cr[8 * mb_y : 8 * mb_y + 8]
        for x in range(0, 16 * mb_w, 16):
            c = x // 2
            samples = [row[x : x + 16] for row in luma_band] + [row[c : c + 8] for row in chroma_band]
            macroblocks.append(b"".join(samples))
    return macroblocks


def _slice_header(slice_type: int, frame_num: int) -> _Bits:
    bits = _Bits()
    bits.ue(0)  # first_mb_in_slice
    bits.ue(slice_type)
    bits.ue(0)  # pic_parameter_set_id
    bits.u(_FRAME_NUM_BITS, frame_num)
    return bits


def _idr_slice(macroblocks: list[bytes], idr_pic_id: int) -> bytes:
    bits = _slice_header(7, 0)  # slice_type 7: I, as are all slices of the picture
    bits.ue(idr_pic_id)  # differs between neighbouring IDRs, which a 1 fps clip has
    bits.u(1, 0)  # no_output_of_prior_pics_flag
    bits.u(1, 0)  # long_term_reference_flag
    bits.se(0)  # slice_qp_delta
    bits.ue(1)  # disable_deblocking_filter_idc: raw samples need no smoothing
    bits.ue(25)  # the first macroblock's mb_type, I_PCM; the rest start at a byte boundary
    rbsp = bits.aligned() + _PCM_MB_HEADER.join(macroblocks) + b"\x80"
    return _nal(0x65, rbsp)


def _skip_slice(frame_num: int, macroblocks: int) -> bytes:
    bits = _slice_header(5, frame_num)  # slice_type 5: P, as are all slices of the picture
    bits.u(1, 0)  # num_ref_idx_active_override_flag
    bits.u(1, 0)  # ref_pic_list_modification_flag_l0
    bits.u(1, 0)  # adaptive_ref_pic_marking_mode_flag
    bits.se(0)  # slice_qp_delta
    bits.ue(1)  # disable_deblocking_filter_idc
    bits.ue(macroblocks)  # mb_skip_run: every macroblock copies the previous picture
    # A reference picture (nal_ref_idc 2), so each P frame can be the next one's reference.
    return _nal(0x41, bits.trailing())


# --- MP4 -------------------------------------------------------------------------------------


def _box(kind: bytes, *parts: bytes) -> bytes:
    payload = b"".join(parts)
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def _full_box(kind: bytes, flags: int, *parts: bytes) -> bytes:
    return _box(kind, struct.pack(">I", flags), *parts)  # version 0


def _mp4(
    samples: list[bytes], keyframes: list[int], sps: bytes, pps: bytes, width: int, height: int, fps: int
) -> bytes:
    """ftyp, then moov (first, so players can start before the download ends), then mdat."""
    timescale = fps * 1000
    duration = len(samples) * 1000
    avcc = _box(
        b"avcC",
        bytes([1, sps[1], sps[2], sps[3], 0xFF, 0xE1]),  # 0xFF: 4-byte NAL lengths; 0xE1: one SPS
        struct.pack(">H", len(sps)), sps,
        b"\x01", struct.pack(">H", len(pps)), pps,
    )
    avc1 = _box(
        b"avc1",
        struct.pack(">6xH16xHHIIIH32xHh", 1, width, height, 0x480000, 0x480000, 0, 1, 0x18, -1),
        avcc,
    )
    sizes = [len(sample) for sample in samples]

    def moov(chunk_offset: int) -> bytes:
        stbl = _box(
            b"stbl",
            _full_box(b"stsd", 0, struct.pack(">I", 1), avc1),
            _full_box(b"stts", 0, struct.pack(">III", 1, len(samples), 1000)),
            _full_box(b"stss", 0, struct.pack(f">I{len(keyframes)}I", len(keyframes), *keyframes)),
            _full_box(b"stsc", 0, struct.pack(">IIII", 1, 1, len(samples), 1)),  # one chunk holds all
            _full_box(b"stsz", 0, struct.pack(f">II{len(sizes)}I", 0, len(sizes), *sizes)),
            _full_box(b"stco", 0, struct.pack(">II", 1, chunk_offset)),
        )
        minf = _box(
            b"minf",
            _full_box(b"vmhd", 1, bytes(8)),
            _box(b"dinf", _full_box(b"dref", 0, struct.pack(">I", 1), _full_box(b"url ", 1))),
            stbl,
        )
        mdia = _box(
            b"mdia",
            _full_box(b"mdhd", 0, struct.pack(">IIIIHH", 0, 0, timescale, duration, 0x55C4, 0)),  # 'und'
            _full_box(b"hdlr", 0, struct.pack(">I4s12x", 0, b"vide"), b"VideoHandler\x00"),
            minf,
        )
        tkhd = struct.pack(">IIIII8xhhhH", 0, 0, 1, 0, duration, 0, 0, 0, 0)
        trak = _box(
            b"trak",
            _full_box(b"tkhd", 3, tkhd, _IDENTITY_MATRIX, struct.pack(">II", width << 16, height << 16)),
            mdia,
        )
        mvhd = struct.pack(">IIIIIH10x", 0, 0, timescale, duration, 0x10000, 0x100)
        next_track_id = struct.pack(">I", 2)
        return _box(b"moov", _full_box(b"mvhd", 0, mvhd, _IDENTITY_MATRIX, bytes(24), next_track_id), trak)

    ftyp = _box(b"ftyp", b"isom", struct.pack(">I", 0x200), b"isomiso2avc1mp41")
    header_size = len(ftyp) + len(moov(0)) + 8  # the offset's value never changes moov's size
    return ftyp + moov(header_size) + _box(b"mdat", *samples)


# --- Reading MP4 -----------------------------------------------------------------------------

_Boxes = list[tuple[str, int, int]]  # (type, payload start, box end)


def _walk(data: bytes, start: int, end: int) -> _Boxes:
    """The boxes that exactly tile data[start:end]; anything that overhangs or is left over is an error."""
    boxes = []
    position = start
    while position < end:
        if end - position < 8:
            raise ValueError(f"{end - position} stray bytes at offset {position}")
        size, raw_kind = struct.unpack_from(">I4s", data, position)
        kind = raw_kind.decode("latin-1")
        header = 8
        if size == 1:
            if end - position < 16:
                raise ValueError(f"box '{kind}' at offset {position} is cut off in its header")
            (size,) = struct.unpack_from(">Q", data, position + 8)
            header = 16
        elif size == 0:
            size = end - position
        if size < header:
            raise ValueError(f"box '{kind}' at offset {position} has an impossible size {size}")
        if position + size > end:
            raise ValueError(
                f"box '{kind}' at offset {position} claims {size} bytes but only {end - position} "
                "remain (truncated?)"
            )
        boxes.append((kind, position + header, position + size))
        position += size
    return boxes


def _one(boxes: _Boxes, kind: str) -> tuple[int, int]:
    for found, start, end in boxes:
        if found == kind:
            return start, end
    raise ValueError(f"missing '{kind}' box")


def _body(data: bytes, boxes: _Boxes, kind: str) -> bytes:
    start, end = _one(boxes, kind)
    return data[start:end]


def _unpack(layout: str, body: bytes, offset: int, kind: str) -> tuple[int, ...]:
    try:
        return struct.unpack_from(layout, body, offset)
    except struct.error:
        raise ValueError(f"'{kind}' box is too short") from None


def _table(body: bytes, layout: str, kind: str, count_at: int = 4) -> list[tuple[int, ...]]:
    """The entries of a sample table box: a count at `count_at`, then that many `layout` records."""
    (count,) = _unpack(">I", body, count_at, kind)
    start = count_at + 4
    end = start + count * struct.calcsize(layout)
    if end > len(body):
        raise ValueError(f"'{kind}' box lists {count} entries but is too short for them")
    return list(struct.iter_unpack(layout, body[start:end]))


def _video_mdia(data: bytes, moov: _Boxes) -> _Boxes:
    for kind, start, end in moov:
        if kind == "trak":
            mdia = _walk(data, *_one(_walk(data, start, end), "mdia"))
            if _body(data, mdia, "hdlr")[8:12] == b"vide":
                return mdia
    raise ValueError("no video track")


def _sample_entry(data: bytes, stbl: _Boxes) -> tuple[str, int, int, int]:
    """(codec, width, height, NAL length size or 0 when the codec is not H.264) from stsd."""
    start, end = _one(stbl, "stsd")
    entries = _walk(data, start + 8, end)
    if not entries:
        raise ValueError("'stsd' describes no samples")
    codec, entry_start, entry_end = entries[0]
    width, height = _unpack(">HH", data[entry_start:entry_end], 24, codec)
    # A visual sample entry's fixed fields take 78 bytes; its child boxes (avcC) follow.
    children = _walk(data, entry_start + 78, entry_end) if entry_end - entry_start >= 78 else []
    if not any(kind == "avcC" for kind, _, _ in children):
        return codec, width, height, 0
    avcc = _body(data, children, "avcC")
    if len(avcc) < 5 or avcc[0] != 1:
        raise ValueError("'avcC' box is malformed")
    return codec, width, height, (avcc[4] & 3) + 1


def _sample_sizes(data: bytes, stbl: _Boxes, mdat_bytes: int) -> list[int]:
    """Each sample's size from stsz, after checking that stts times the same number of samples."""
    stsz = _body(data, stbl, "stsz")
    uniform_size, count = _unpack(">II", stsz, 4, "stsz")
    # A damaged count must not make us build a list of billions of sizes.
    if count > mdat_bytes:
        raise ValueError(f"'stsz' counts {count} samples but 'mdat' holds only {mdat_bytes} bytes")
    timed = sum(n for n, _ in _table(_body(data, stbl, "stts"), ">II", "stts"))
    if timed != count:
        raise ValueError(f"'stts' times {timed} samples but 'stsz' sizes {count}")
    return [uniform_size] * count if uniform_size else [n for (n,) in _table(stsz, ">I", "stsz", 8)]


def _keyframe_count(data: bytes, stbl: _Boxes, count: int) -> int:
    """How many samples stss marks as sync samples; without stss every sample is one."""
    if not any(kind == "stss" for kind, _, _ in stbl):
        return count
    syncs = [number for (number,) in _table(_body(data, stbl, "stss"), ">I", "stss")]
    if any(not 1 <= number <= count for number in syncs):
        raise ValueError("'stss' names a sample that does not exist")
    return len(syncs)


def _check_placement(
    data: bytes, stbl: _Boxes, sizes: list[int], mdats: list[tuple[int, int]], nal_length_size: int
) -> None:
    """Every sample, placed by the chunk tables, lies inside mdat and (for H.264) holds whole NAL units."""
    offsets, per_chunk = _chunks(data, stbl)
    if sum(per_chunk) != len(sizes):
        raise ValueError(f"chunks hold {sum(per_chunk)} samples but 'stsz' sizes {len(sizes)}")
    sample = 0
    for offset, in_chunk in zip(offsets, per_chunk):
        for size in sizes[sample : sample + in_chunk]:
            sample += 1
            if not any(start <= offset and offset + size <= end for start, end in mdats):
                raise ValueError(f"sample {sample} at byte {offset} lies outside 'mdat'")
            if nal_length_size:
                _check_nal_units(data, offset, size, nal_length_size, sample)
            offset += size


def _chunks(data: bytes, stbl: _Boxes) -> tuple[list[int], list[int]]:
    """Each chunk's file offset and its number of samples, expanded from stco/co64 and stsc."""
    if any(kind == "co64" for kind, _, _ in stbl):
        offsets = [o for (o,) in _table(_body(data, stbl, "co64"), ">Q", "co64")]
    else:
        offsets = [o for (o,) in _table(_body(data, stbl, "stco"), ">I", "stco")]
    runs = _table(_body(data, stbl, "stsc"), ">III", "stsc")
    per_chunk: list[int] = []
    for index, (first, in_chunk, _) in enumerate(runs):
        last = runs[index + 1][0] - 1 if index + 1 < len(runs) else len(offsets)
        if first != len(per_chunk) + 1 or last < first:
            raise ValueError("'stsc' does not map samples onto the chunks in order")
        per_chunk += [in_chunk] * (last - first + 1)
    if len(per_chunk) != len(offsets):
        raise ValueError(f"'stsc' covers {len(per_chunk)} chunks but there are {len(offsets)}")
    return offsets, per_chunk


def _check_nal_units(data: bytes, offset: int, size: int, length_size: int, number: int) -> None:
    position, end = offset, offset + size
    while position < end:
        length = int.from_bytes(data[position : position + length_size], "big")
        position += length_size + length
        if length == 0 or position > end:
            raise ValueError(f"sample {number}: its NAL unit lengths do not add up to its size")


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
