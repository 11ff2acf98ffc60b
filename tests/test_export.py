"""Stem/mix export (aligned, equal length, 24-bit) and DAWproject export (schema-valid)."""

import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engine.document.dawproject import export_dawproject
from engine.document.export import export_stems, export_track_for_drag
from engine.document.session import Session, track_from_audio

XSD = Path("/work/shared/data/dawproject/Project.xsd")


def _session():
    s = Session(48000)
    t = np.arange(48000) / 48000
    s.insert_track(track_from_audio("Drums", (0.5 * np.sin(2 * np.pi * 220 * t))[None]))
    s.insert_track(track_from_audio("Bass take", (0.25 * np.ones((2, 24000))), offset=36000,
                                    role="generated", take=2))
    s.tempo, s.key = 120.0, "A minor"
    return s


def test_stems_are_aligned_equal_length_24bit(tmp_path):
    s = _session()
    files = export_stems(s, tmp_path)
    names = [f.name for f in files]
    assert names == ["Drums_120bpm_Am.wav", "Bass_take_take2_120bpm_Am.wav", "mix_120bpm_Am.wav"]
    infos = [sf.info(f) for f in files]
    assert {i.frames for i in infos} == {60000}
    assert {i.samplerate for i in infos} == {48000}
    assert {i.subtype for i in infos} == {"PCM_24"}
    bass, _ = sf.read(files[1], always_2d=True)
    assert np.abs(bass[:36000]).max() == 0  # silence before its offset: aligned to zero
    assert np.allclose(bass[36000:], 0.25, atol=1e-6)
    drums, _ = sf.read(files[0], always_2d=True)
    assert drums.shape[1] == 1
    assert np.allclose(drums[:48000, 0], s.tracks[0].audio[0], atol=1e-6)
    # an independent reader (the standard library's, not libsndfile) sees the same files
    import wave

    for f in files:
        with wave.open(str(f)) as w:
            assert (w.getframerate(), w.getsampwidth(), w.getnframes()) == (48000, 3, 60000)
    p = export_track_for_drag(s, s.tracks[1].id, tmp_path / "drag")
    assert p.exists() and sf.info(p).frames == 60000


def test_dawproject_validates(tmp_path):
    xmlschema = pytest.importorskip("xmlschema")
    s = _session()
    out = export_dawproject(s, tmp_path / "song")
    assert out.suffix == ".dawproject"
    with zipfile.ZipFile(out) as z:
        names = z.namelist()
        xml = z.read("project.xml")
    assert "project.xml" in names and "metadata.xml" in names
    assert sum(n.startswith("audio/") for n in names) == 2
    schema = xmlschema.XMLSchema(str(XSD))
    schema.validate(xml.decode())
    assert b'unit="bpm" value="120"' in xml
    assert xml.count(b'<Clip time="0"') == 2


def _chunks(path):
    import struct

    data = Path(path).read_bytes()
    assert data[:4] == b"RIFF" and struct.unpack("<I", data[4:8])[0] == len(data) - 8
    out, i = {}, 12
    while i + 8 <= len(data):
        cid, size = data[i:i + 4], struct.unpack("<I", data[i + 4:i + 8])[0]
        out[cid] = data[i + 8:i + 8 + size]
        i += 8 + size + (size % 2)
    return out


def test_bext_and_acid_chunks(tmp_path):
    import struct

    s = _session()
    files = export_stems(s, tmp_path)
    ch = _chunks(files[1])
    assert {b"fmt ", b"data", b"bext", b"acid"} <= set(ch)
    bext = ch[b"bext"]
    assert bext[:9] == b"Bass take" and bext[256:266] == b"Riffwright"
    assert struct.unpack("<II", bext[338:346]) == (0, 0)  # time reference: session zero
    flags, root, _, _, beats, den, num, tempo = struct.unpack("<IHHfIHHf", ch[b"acid"])
    assert (tempo, num, den, root, flags & 0x02) == (120.0, 4, 4, 69, 2)  # A, root known
    assert beats == 2  # 1.25 s at 120 BPM, rounded
    # still an ordinary WAV for every reader
    assert sf.info(files[1]).frames == 60000
