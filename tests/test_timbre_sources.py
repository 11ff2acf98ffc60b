"""engine.training.dataset.sources and .mixfx: several timbre sources (SoundFonts, Hydrogen
drumkits played by our sampler), one drawn per stem, and per-stem channel strips."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sf = pytest.importorskip("soundfile")

from engine.errors import RiffwrightError  # noqa: E402
from engine.training.dataset.midi import Note  # noqa: E402
from engine.training.dataset.sources import (  # noqa: E402
    DrumkitSource,
    SoundFontSource,
    instrument_class,
    open_sources,
    pick_source,
    source_specs,
)

SR = 48000
FLUID = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
HAVE_RENDERER = shutil.which("fluidsynth") is not None and FLUID.is_file()
SF2_HEADER = b"RIFF\x00\x00\x00\x00sfbkLIST\x00\x00\x00\x00INFOINAM\x0e\x00\x00\x00"


def _click(n: int, amp: float, freq: float, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    return (amp * np.sin(2 * np.pi * freq * t) * np.exp(-t * 20)).astype(np.float32)


def _layer(fname, lo, hi, gain=1.0):
    return (f"<layer><filename>{fname}</filename><min>{lo}</min><max>{hi}</max>"
            f"<gain>{gain}</gain><pitch>0</pitch></layer>")


def make_kit(root: Path, name: str = "Tiny Test Kit", extra_xml: str = "",
             layers_kick: str | None = None, header: str = "") -> Path:
    """A Hydrogen drumkit folder: a two-layer kick (soft/hard at 48 kHz), a snare sampled at
    44.1 kHz, closed and open hats, and a conga no General MIDI drum maps to."""
    kit = root / name.replace(" ", "_")
    kit.mkdir(parents=True)
    sf.write(kit / "kick_soft.wav", _click(4800, 0.2, 60, SR), SR)
    sf.write(kit / "kick_hard.wav", _click(4800, 0.8, 60, SR), SR)
    sf.write(kit / "snare.flac", _click(4410, 0.5, 200, 44100), 44100)
    sf.write(kit / "hh_closed.wav", _click(2400, 0.3, 5000, SR), SR)
    sf.write(kit / "hh_open.wav", np.full(SR, 0.1, np.float32), SR)  # rings for 1 s
    sf.write(kit / "conga.wav", _click(2400, 0.5, 300, SR), SR)
    kick = layers_kick or (_layer("kick_soft.wav", 0, 0.5) + _layer("kick_hard.wav", 0.5, 1))
    xml = f"""<?xml version="1.0" encoding="UTF-8"?>{header}
<drumkit_info xmlns="http://www.hydrogen-music.org/drumkit">
 <name>{name}</name>
 <instrumentList>
  <instrument><id>0</id><name>Kick</name><volume>1</volume><gain>1</gain>
   <pan_L>1</pan_L><pan_R>1</pan_R>{kick}</instrument>
  <instrument><id>1</id><name>Snare Rock</name><volume>0.5</volume>
   {_layer("snare.flac", 0, 1)}</instrument>
  <instrument><id>2</id><name>Closed HH</name><volume>1</volume>
   {_layer("hh_closed.wav", 0, 1)}</instrument>
  <instrument><id>3</id><name>Open HH</name><volume>1</volume>
   {_layer("hh_open.wav", 0, 1)}</instrument>
  <instrument><id>4</id><name>Conga Hi</name><volume>1</volume>
   {_layer("conga.wav", 0, 1)}</instrument>
  {extra_xml}
 </instrumentList>
</drumkit_info>
"""
    (kit / "drumkit.xml").write_text(xml)
    return kit


def test_instrument_names_map_to_drum_classes():
    cases = {"Kick (Tama Superstar 22\")": "kick", "BassDrum": "kick", "c3 - bass drum 1": "kick",
             "Snare Jazz": "snare", "Pearl Side Stick": "stick", "Hand Clap": "clap",
             "Hi-Hat Closed (Paiste)": "hat_closed", "Sabian Hat Pedal": "hat_pedal",
             "Hat Op Dirty": "hat_open", "Floor Tom": "tom_low", "Tom Mid": "tom_mid",
             "VariBreaks Tom Hi": "tom_high", "Ride Bell": "ride_bell", "Ride Jazz": "ride",
             "crash16inch": "crash", "Tambourine": "tambourine", "Cowbell": "cowbell",
             "Snare Roll": None, "Djembe1 Slap": None, "Zap 1": None, "17": None}
    assert {n: instrument_class(n) for n in cases} == cases


def test_drumkit_sampler_picks_layers_by_velocity_and_resamples(tmp_path):
    kit = DrumkitSource(make_kit(tmp_path))
    assert kit.name == "Tiny Test Kit"  # namespaced XML is read
    assert kit.classes() == {"kick", "snare", "hat_closed", "hat_open"}  # conga left out
    soft, _ = sf.read(tmp_path / "Tiny_Test_Kit" / "kick_soft.wav", dtype="float32")
    hard, _ = sf.read(tmp_path / "Tiny_Test_Kit" / "kick_hard.wav", dtype="float32")
    n = SR
    out = kit.render([Note(0.25, 0.3, 36, 40), Note(0.5, 0.6, 35, 120)], 0, n, drum=True,
                     reverb=0, seed=0)
    assert out.shape == (n,) and out.dtype == np.float32
    assert np.all(out[:12000] == 0)  # nothing before the first hit
    np.testing.assert_allclose(out[12000:12000 + 4800], soft * 40 / 127, atol=1e-6)
    np.testing.assert_allclose(out[24000:24000 + 4800], hard * 120 / 127, atol=1e-6)

    snare = kit.render([Note(0.0, 0.1, 38, 127)], 0, n, drum=True, reverb=0, seed=0)
    length = int(np.flatnonzero(np.abs(snare) > 1e-4)[-1]) + 1
    assert abs(length - 4800) < 60  # 4410 samples at 44.1 kHz last 0.1 s at 48 kHz too
    assert 0.2 < np.abs(snare).max() < 0.3  # instrument volume 0.5 x sample peak ~0.5

    # a hit past the end, and a note no kit instrument plays, add nothing
    assert not kit.render([Note(1.2, 1.3, 36, 100), Note(0.1, 0.2, 63, 100)], 0, n,
                          drum=True, reverb=0, seed=0).any()


def test_open_hat_is_choked_by_the_closed_hat(tmp_path):
    kit = DrumkitSource(make_kit(tmp_path))
    alone = kit.render([Note(0.0, 0.1, 46, 127)], 0, SR, drum=True, reverb=0, seed=0)
    assert np.abs(alone[SR // 2:]).max() > 0.09  # the open hat rings through the second
    both = kit.render([Note(0.0, 0.1, 46, 127), Note(0.25, 0.3, 42, 127)], 0, SR, drum=True,
                      reverb=0, seed=0)
    closed = kit.render([Note(0.25, 0.3, 42, 127)], 0, SR, drum=True, reverb=0, seed=0)
    np.testing.assert_allclose(both[12000:], closed[12000:], atol=1e-6)  # cut at the close
    assert np.abs(both[:11000]).min() > 0.09  # and untouched before it


def test_drumkit_coverage_decides_which_parts_it_may_render(tmp_path):
    kit = DrumkitSource(make_kit(tmp_path))
    sfont = SoundFontSource(tmp_path / "any.sf2")
    groove = [Note(i * 0.25, i * 0.25 + 0.1, p, 100) for i, p in enumerate([36, 42, 38, 42] * 4)]
    congas = [Note(i * 0.25, i * 0.25 + 0.1, 63, 100) for i in range(16)]
    assert kit.coverage(groove, True) == 1.0
    assert kit.coverage(congas, True) == 0.0
    assert kit.coverage([Note(0, 1, 40, 90)], False) == 0.0  # pitched parts: never a kit
    rng = np.random.default_rng(0)
    drums = [pick_source([sfont, kit], groove, True, rng).kind for _ in range(400)]
    assert 150 < drums.count("drumkit") < 250  # kind first: half the drum stems each
    assert {pick_source([sfont, kit], congas, True, rng).kind for _ in range(50)} == {"soundfont"}
    assert {pick_source([sfont, kit], [Note(0, 1, 40, 90)], False, rng).kind
            for _ in range(50)} == {"soundfont"}
    with pytest.raises(RiffwrightError, match="no timbre source"):
        pick_source([kit], [Note(0, 1, 40, 90)], False, rng)


@pytest.mark.parametrize("bad", ["../outside.wav", "/etc/passwd", "sub/../../outside.wav"])
def test_drumkit_samples_may_not_leave_the_kit_folder(tmp_path, bad):
    sf.write(tmp_path / "outside.wav", _click(480, 0.5, 60, SR), SR)
    kit = make_kit(tmp_path, layers_kick=_layer(bad, 0, 1))
    with pytest.raises(RiffwrightError, match="outside the kit"):
        DrumkitSource(kit)


def test_drumkit_xml_with_a_dtd_or_entities_is_refused(tmp_path):
    kit = make_kit(tmp_path, header='<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>')
    with pytest.raises(RiffwrightError, match="DTD or entities"):
        DrumkitSource(kit)
    # the same declaration in UTF-16, where a byte search would not see it, is refused too
    xml = kit / "drumkit.xml"
    xml.write_bytes(xml.read_text(encoding="utf-8").replace('encoding="UTF-8"', 'encoding="UTF-16"')
                    .encode("utf-16"))
    with pytest.raises(RiffwrightError, match="not UTF-8"):
        DrumkitSource(kit)


def test_reserved_sources_are_refused_in_every_kind(tmp_path, monkeypatch):
    from engine.training.dataset.render import reserved_source

    # an .sf3 bank that is TimGM6mb by its header, a kit named after it inside its XML, a kit
    # folder named after it, and a folder of sources that holds the bank
    sf3 = tmp_path / "bank.sf3"
    sf3.write_bytes(SF2_HEADER + b"TimGM6mb\x00")
    assert "TimGM6mb" in reserved_source(sf3)
    inside = make_kit(tmp_path / "a", name="TimGM6mb drums")
    (tmp_path / "b").mkdir()
    renamed = inside.rename(tmp_path / "b" / "kit")
    folder = tmp_path / "fonts"
    folder.mkdir()
    shutil.copy(sf3, folder / "TimGM6mb.sf2")
    for specs in ([("soundfont", str(sf3))], [("drumkit", str(renamed))]):
        with pytest.raises(RiffwrightError, match="reserved for evaluation"):
            open_sources(specs)
    with pytest.raises(RiffwrightError, match="reserved for evaluation"):
        source_specs(folders=[folder])
    with pytest.raises(RiffwrightError, match="reserved for evaluation"):
        source_specs(soundfonts=[folder / "TimGM6mb.sf2"])


def test_source_specs_scan_folders_and_add_a_soundfont(tmp_path, monkeypatch):
    fonts = tmp_path / "fonts"
    make_kit(fonts / "kits")
    make_kit(fonts / "kits", name="Other Kit")
    (fonts / "gm").mkdir()
    (fonts / "gm" / "Bank.sf2").write_bytes(SF2_HEADER + b"Bank\x00")
    (fonts / "gm" / "Bank2.SF3").write_bytes(SF2_HEADER + b"Bank2\x00")
    (fonts / "gm" / "readme.txt").write_text("x")
    hand = fonts / "kits" / "hand"  # a kit whose instruments no GM drum note maps to
    hand.mkdir()
    (hand / "drumkit.xml").write_text(
        "<drumkit_info><name>hand</name><instrumentList><instrument><name>Djembe</name>"
        "</instrument></instrumentList></drumkit_info>")
    specs = source_specs(folders=[fonts])
    assert [(k, Path(p).name) for k, p in specs] == [
        ("drumkit", "Other_Kit"), ("drumkit", "Tiny_Test_Kit"),
        ("soundfont", "Bank.sf2"), ("soundfont", "Bank2.SF3")]
    # the same kit named twice (also by folder) counts once; flag order does not matter
    again = source_specs(soundfonts=[fonts / "gm" / "Bank.sf2"],
                         drumkits=[fonts / "kits" / "Tiny_Test_Kit"], folders=[fonts])
    assert again == specs
    # only kits named: the default SoundFont renders the pitched parts
    default = tmp_path / "Default.sf2"
    default.write_bytes(SF2_HEADER + b"Default\x00")
    monkeypatch.setenv("RIFFWRIGHT_SOUNDFONT", str(default))
    kits_only = source_specs(drumkits=[fonts / "kits" / "Tiny_Test_Kit"])
    assert kits_only[0] == ("soundfont", str(default.resolve()))
    with pytest.raises(RiffwrightError, match="not a Hydrogen drumkit"):
        open_sources([("drumkit", str(fonts / "gm"))])
    with pytest.raises(RiffwrightError, match="not a SoundFont"):
        open_sources([("soundfont", str(fonts / "gm" / "readme.txt"))])


# ----------------------------------------------------------------------------- mix fx

def test_mix_chains_are_seeded_and_plausible():
    from engine.training.dataset.mixfx import draw_chain

    a = [draw_chain(np.random.default_rng(5), "keys", False) for _ in range(2)]
    assert a[0] == a[1] and json.loads(json.dumps(a[0])) == a[0]
    rng = np.random.default_rng(0)
    chains = [draw_chain(rng, role, role == "drums")
              for role in ("drums", "bass", "keys", "pad", "lead") for _ in range(300)]
    for c in chains:
        assert -3 <= c["gain_db"] <= 3
        assert 20 <= c.get("highpass_hz", 100) <= 220
        assert all(-6 <= c[k]["db"] <= 4 for k in ("low_shelf", "peak", "high_shelf") if k in c)
        if "compressor" in c:
            assert 1.5 <= c["compressor"]["ratio"] <= 8 and c["compressor"]["threshold_db"] < -11
        assert 0 < c.get("reverb", {"wet": 0.1})["wet"] <= 0.3
    bass_hp = [c["highpass_hz"] for c in chains[300:600] if "highpass_hz" in c]
    pad_hp = [c["highpass_hz"] for c in chains[900:1200] if "highpass_hz" in c]
    assert max(bass_hp) <= 45 < min(pad_hp)  # a bass keeps its lows
    for stage, share in (("compressor", 0.7), ("reverb", 0.6), ("saturation_db", 0.17)):
        assert abs(np.mean([stage in c for c in chains]) - share) < 0.1


def test_mix_chain_filters_compresses_and_sends_to_reverb():
    pytest.importorskip("pedalboard")
    from engine.training.dataset.mixfx import apply_chain

    t = np.arange(SR) / SR
    low = (0.3 * np.sin(2 * np.pi * 40 * t)).astype(np.float32)
    mid = (0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    hp = {"gain_db": 0.0, "highpass_hz": 200.0}
    gain_low = np.std(apply_chain(low, hp)[SR // 2:]) / np.std(apply_chain(mid, hp)[SR // 2:])
    assert gain_low < 0.1  # 40 Hz is > 20 dB down behind a 200 Hz high-pass

    bursts = mid * np.where((t % 0.5) < 0.25, 1.0, 0.1).astype(np.float32)  # 20 dB steps
    comp = apply_chain(bursts, {"gain_db": 0.0, "compressor": {
        "threshold_db": -30.0, "ratio": 8.0, "attack_ms": 1.0, "release_ms": 50.0}})
    dry = apply_chain(bursts, {"gain_db": 0.0})
    rng_ratio = [np.std(x[6000:11000]) / np.std(x[18000:23000]) for x in (dry, comp)]
    assert rng_ratio[0] > 9 and rng_ratio[1] < rng_ratio[0] / 2  # the loud part is pulled down

    click = np.zeros(SR, np.float32)
    click[:480] = 0.5
    wet = apply_chain(click, {"gain_db": 0.0, "reverb": {"room_size": 0.7, "damping": 0.3,
                                                          "wet": 0.3}})
    assert np.abs(wet[SR // 4:]).max() > 1e-3 and not click[SR // 4:].any()  # a tail
    silence = np.zeros(1000, np.float32)
    assert not apply_chain(silence, {"gain_db": 0.0, "reverb": {"room_size": 0.5,
                                                                 "damping": 0.5,
                                                                 "wet": 0.2}}).any()


def test_mix_fx_without_pedalboard_is_refused_in_one_line(tmp_path, monkeypatch):
    from engine.training.dataset import build_dataset

    monkeypatch.setitem(sys.modules, "pedalboard", None)
    default = tmp_path / "Default.sf2"
    default.write_bytes(SF2_HEADER + b"Default\x00")
    monkeypatch.setattr("engine.training.dataset.build.find_fluidsynth", lambda: "fluidsynth")
    with pytest.raises(RiffwrightError, match="--mix-fx needs the pedalboard package") as e:
        build_dataset("scores", tmp_path / "ds", songs=1, seconds=5.0, jobs=1, mix_fx=True,
                      sources=[("soundfont", str(default))])
    assert "\n" not in str(e.value)
    assert not (tmp_path / "ds").exists()


# ----------------------------------------------------------------------------- a build

@pytest.mark.skipif(not HAVE_RENDERER, reason="fluidsynth/FluidR3_GM missing")
def test_build_draws_sources_per_stem_and_records_them(tmp_path):
    pytest.importorskip("music21")
    pytest.importorskip("pedalboard")
    from engine.training.dataset import build_dataset, load_manifest

    kit = make_kit(tmp_path / "kits")
    specs = source_specs(soundfonts=[FLUID], drumkits=[kit])
    out = tmp_path / "ds"
    build_dataset("scores", out, seed=2, songs=4, jobs=1, seconds=5.0, sources=specs,
                  mix_fx=True)
    m = load_manifest(out)
    assert m["build"]["timbres"] == ["drumkit:Tiny Test Kit", "soundfont:FluidR3_GM"]
    assert m["build"]["mix_fx"] is True
    stems = [st for s in m["songs"] for st in s["stems"]]
    assert all(st["timbre"]["kind"] in ("soundfont", "drumkit") and "mix_fx" in st
               for st in stems)
    assert all(st["timbre"]["kind"] == "soundfont" for st in stems if not st["drum"])
    by_kit = [st for st in stems if st["timbre"]["kind"] == "drumkit"]  # seed 2: 3 of 4 drums
    assert by_kit and all(st["drum"] and st["instrument"] == "drum kit" for st in by_kit)
    for st in by_kit:
        x, sr = sf.read(out / st["path"], dtype="float32")
        assert sr == SR and len(x) == 5 * SR and np.abs(x).max() > 0.01

    # same seed and sources: the same files; resuming with other sources is refused
    again = tmp_path / "again"
    build_dataset("scores", again, seed=2, songs=4, jobs=1, seconds=5.0, sources=specs,
                  mix_fx=True)
    for st in stems:
        assert (out / st["path"]).read_bytes() == (again / st["path"]).read_bytes()
    with pytest.raises(RiffwrightError, match="timbres"):
        build_dataset("scores", out, seed=2, songs=5, jobs=1, seconds=5.0,
                      sources=source_specs(soundfonts=[FLUID]), mix_fx=True)
