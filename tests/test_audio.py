"""engine.audio: formats in, atomic WAV out, and one clear message per unreadable input."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engine.audio import (
    SUPPORTED_EXTENSIONS,
    audio_info,
    iter_blocks,
    load_audio,
    resample,
    to_mono,
    write_audio,
)
from engine.errors import AudioError, RiffwrightError

SR = 48000


def tone(freq=440.0, seconds=0.5, sr=SR, channels=2) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    ch = [0.5 * np.sin(2 * np.pi * freq * (1 + 0.5 * c) * t) for c in range(channels)]
    return np.stack(ch).astype(np.float32)


def dominant_freq(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * sr / len(x))


@pytest.mark.parametrize(
    "ext, fmt, subtype, tol",
    [
        (".wav", "WAV", "PCM_16", 1e-4),
        (".wav", "WAV", "FLOAT", 1e-7),
        (".flac", "FLAC", "PCM_24", 1e-6),
        (".aiff", "AIFF", "PCM_16", 1e-4),
        (".ogg", "OGG", "VORBIS", None),
        (".mp3", "MP3", "MPEG_LAYER_III", None),
    ],
)
def test_reads_every_supported_format_keeping_channels(tmp_path, ext, fmt, subtype, tol):
    a = tone(seconds=1.0)
    p = tmp_path / f"clip{ext}"
    sf.write(p, a.T, SR, format=fmt, subtype=subtype)
    assert ext in SUPPORTED_EXTENSIONS
    x, sr = load_audio(p)
    assert sr == SR and x.dtype == np.float32 and x.shape[0] == 2
    if tol is not None:
        assert x.shape == a.shape
        np.testing.assert_allclose(x, a, atol=tol)
    else:  # lossy codecs: length within a frame of the original, same pitch per channel
        assert abs(x.shape[1] - a.shape[1]) < 2400
        mid = slice(4800, 4800 + 24000)
        assert abs(dominant_freq(x[0, mid], SR) - 440) < 5
        assert abs(dominant_freq(x[1, mid], SR) - 660) < 5


def test_mono_fold_and_resample(tmp_path):
    a = tone(seconds=1.0, sr=44100)
    p = tmp_path / "a.wav"
    write_audio(p, a, 44100, "FLOAT")
    x, sr = load_audio(p, sample_rate=48000)
    assert sr == 48000 and x.shape == (2, 48000)
    assert abs(dominant_freq(x[0, 2000:40000], 48000) - 440) < 3
    m = to_mono(x)
    assert m.shape == (48000,) and m.dtype == np.float32
    np.testing.assert_allclose(m, x.mean(0), atol=1e-7)
    y = resample(m, 48000, 24000)
    assert y.shape == (24000,)
    assert resample(x, 48000, 48000).shape == x.shape


def test_offset_and_duration_read_a_window(tmp_path):
    a = np.arange(SR * 2, dtype=np.float32)[None] / (SR * 4)
    p = tmp_path / "ramp.wav"
    write_audio(p, a, SR, "FLOAT")
    x, _ = load_audio(p, offset=0.5, duration=0.25)
    np.testing.assert_array_equal(x, a[:, SR // 2 : SR // 2 + SR // 4])
    with pytest.raises(AudioError, match="past the end"):
        load_audio(p, offset=5.0)
    with pytest.raises(AudioError, match="0:02 long; at most 0:01"):
        load_audio(p, max_seconds=1.0)
    assert load_audio(p, duration=1.0, max_seconds=1.0)[0].shape == (1, SR)


def test_iter_blocks_streams_the_same_audio(tmp_path):
    a = tone(seconds=3.0, sr=44100)
    p = tmp_path / "long.flac"
    write_audio(p, a, 44100, "PCM_24")
    full, _ = load_audio(p)
    blocks = list(iter_blocks(p, 10000))
    assert all(b.shape[1] <= 10000 for b in blocks) and len(blocks) == 14
    np.testing.assert_array_equal(np.concatenate(blocks, axis=1), full)
    rs = np.concatenate(list(iter_blocks(p, 10000, sample_rate=48000)), axis=1)
    ref, _ = load_audio(p, sample_rate=48000)
    assert abs(rs.shape[1] - ref.shape[1]) <= 2
    n = min(rs.shape[1], ref.shape[1])
    assert np.abs(rs[:, 1000 : n - 1000] - ref[:, 1000 : n - 1000]).max() < 1e-3


@pytest.mark.parametrize("subtype, step", [("PCM_16", 2**-15), ("PCM_24", 2**-23), ("FLOAT", 0)])
def test_write_subtypes_round_trip(tmp_path, subtype, step):
    a = tone(seconds=0.2)
    p = write_audio(tmp_path / "o.wav", a, SR, subtype)
    assert sf.info(p).subtype == subtype
    x, _ = load_audio(p)
    assert np.abs(x - a).max() <= step
    # PCM clips, float keeps overs
    loud = write_audio(tmp_path / "loud.wav", 2 * a, SR, subtype)
    peak = np.abs(load_audio(loud)[0]).max()
    assert (peak <= 1.0) if subtype != "FLOAT" else peak == pytest.approx(1.0, rel=1e-6)


def test_write_is_atomic(tmp_path):
    p = tmp_path / "keep.wav"
    write_audio(p, tone(seconds=0.1), SR)
    before = p.read_bytes()
    bad = tone(seconds=0.1)
    bad[0, 10] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        write_audio(p, bad, SR)
    assert p.read_bytes() == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["keep.wav"]  # no temp files left
    with pytest.raises(AudioError, match="subtype"):
        write_audio(p, tone(), SR, "PCM_8")


# ------------------------------------------------------------------ unreadable inputs


def _wav_bytes(tmp_path, **kw) -> bytes:
    p = tmp_path / "src.wav"
    sf.write(p, tone(seconds=0.1, channels=1).T, SR, subtype=kw.get("subtype", "PCM_16"))
    return p.read_bytes()


def _patch_fmt(data: bytes, channels=None, rate=None) -> bytes:
    i = data.index(b"fmt ") + 8
    fmt = bytearray(data)
    if channels is not None:
        fmt[i + 2 : i + 4] = struct.pack("<H", channels)
    if rate is not None:
        fmt[i + 4 : i + 8] = struct.pack("<I", rate)
    return bytes(fmt)


def make_bad(tmp_path: Path, case: str) -> Path:
    if case == "missing":
        return tmp_path / "nope.wav"
    if case == "folder":
        (tmp_path / "dir.wav").mkdir()
        return tmp_path / "dir.wav"
    p = tmp_path / {"m4a": "song.m4a", "aac": "song.aac", "m4a_disguised": "song.wav"}.get(
        case, f"{case}.wav"
    )
    if case == "empty":
        p.write_bytes(b"")
    elif case in ("m4a", "m4a_disguised"):
        p.write_bytes(b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00" + bytes(200))
    elif case == "aac":
        p.write_bytes(b"\xff\xf1\x50\x80" + bytes(300))
    elif case == "garbage":
        p.write_bytes(np.random.default_rng(0).bytes(4000))
    elif case == "truncated":
        p.write_bytes(_wav_bytes(tmp_path)[:3000])
    elif case == "zero":
        sf.write(p, np.zeros((0, 1), np.float32), SR)
    elif case == "nan":
        x = tone(seconds=0.1, channels=1)
        x[0, 100] = np.nan
        sf.write(p, x.T, SR, subtype="FLOAT")
    elif case == "inf":
        x = tone(seconds=0.1, channels=1)
        x[0, 7] = np.inf
        sf.write(p, x.T, SR, subtype="FLOAT")
    elif case == "channels":
        p.write_bytes(_patch_fmt(_wav_bytes(tmp_path), channels=1000))
    elif case == "rate":
        p.write_bytes(_patch_fmt(_wav_bytes(tmp_path), rate=7))
    return p


BAD = {
    "missing": "not found",
    "folder": "is a folder",
    "empty": "empty file",
    "m4a": "M4A/AAC",
    "m4a_disguised": "M4A/AAC",
    "aac": "AAC",
    "garbage": "not a readable audio file",
    "truncated": "truncated",
    "zero": "no audio (0 samples)",
    "nan": "NaN or infinite",
    "inf": "NaN or infinite",
    "channels": "1000 channels",
    "rate": "sample rate of 7 Hz",
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_each_unreadable_input_has_its_own_message(tmp_path, case):
    p = make_bad(tmp_path, case)
    with pytest.raises(AudioError) as err:
        load_audio(p, sample_rate=SR)
    msg = str(err.value)
    assert BAD[case] in msg and "\n" not in msg
    assert isinstance(err.value, RiffwrightError)
    assert err.value.__suppress_context__ or err.value.__cause__ is None
    if case not in ("nan", "inf", "truncated"):  # header-level problems: info fails too
        with pytest.raises(AudioError, match=BAD[case].split(" (")[0]):
            audio_info(p)


def test_truncated_flac_is_named(tmp_path):
    p = tmp_path / "t.flac"
    sf.write(p, tone(seconds=2.0).T, SR, subtype="PCM_16")
    cut = tmp_path / "cut.flac"
    cut.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(AudioError, match="truncated|damaged"):
        load_audio(cut)
