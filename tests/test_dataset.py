"""engine.training.dataset: rendered score songs, multitrack import, splits, training pairs."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sf = pytest.importorskip("soundfile")

from engine.training.dataset import FAMILIES, build_dataset, load_manifest, split_for  # noqa: E402
from engine.training.dataset.pairs import PairRules, iter_pairs  # noqa: E402

SR = 48000
HAVE_RENDERER = shutil.which("fluidsynth") is not None and any(
    Path(p).is_file() for p in ("/usr/share/sounds/sf2/FluidR3_GM.sf2",
                                "/usr/share/soundfonts/FluidR3_GM.sf2"))
needs_renderer = pytest.mark.skipif(not HAVE_RENDERER, reason="fluidsynth/FluidR3_GM missing")
SECONDS = 5.0


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((root / "songs").rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def scores_ds(tmp_path_factory):
    pytest.importorskip("music21")
    if not HAVE_RENDERER:
        pytest.skip("fluidsynth/FluidR3_GM missing")
    out = tmp_path_factory.mktemp("scores")
    build_dataset("scores", out, seed=0, songs=3, jobs=1, seconds=SECONDS)
    return out


@needs_renderer
def test_scores_render_valid_stems(scores_ds):
    m = load_manifest(scores_ds)
    assert m["version"] == 1 and m["sample_rate"] == SR
    assert len(m["songs"]) == 3
    sources = set()
    for song in m["songs"]:
        assert song["split"] in ("train", "valid", "test")
        assert song["split"] == split_for(song["piece"])
        assert song["seconds"] == SECONDS and song["tempo"] > 0 and song["key"]
        assert 2 <= len(song["stems"]) <= 7
        sources.add("corpus" if song["piece"].startswith("music21:") else "groove")
        for st in song["stems"]:
            assert st["path"].startswith(f"songs/{song['id']}/")
            assert st["family"] in FAMILIES
            assert st["family"] in st["caption"] and "bpm" in st["caption"]
            x, sr = sf.read(scores_ds / st["path"], dtype="float32", always_2d=True)
            assert sr == SR and x.shape == (int(SECONDS * SR), 1)
            assert 20 * np.log10(np.sqrt(np.mean(x**2)) + 1e-12) > -45  # not silent
            assert np.abs(x).max() <= 1.0
        mix = sum(sf.read(scores_ds / st["path"], dtype="float32")[0] for st in song["stems"])
        assert np.abs(mix).max() <= 0.96  # one gain per song keeps the mix from clipping
    assert sources == {"corpus", "groove"}  # seed 0 draws both kinds among the first 3


@needs_renderer
def test_scores_deterministic_and_resumable(scores_ds, tmp_path):
    again = tmp_path / "again"
    build_dataset("scores", again, seed=0, songs=3, jobs=2, seconds=SECONDS)
    assert _digest(again) == _digest(scores_ds)  # bit-identical, even built in parallel

    before = {p: p.stat().st_mtime_ns for p in (again / "songs").rglob("*.wav")}
    msgs = []
    build_dataset("scores", again, seed=0, songs=3, jobs=1, seconds=SECONDS,
                  progress=lambda d, t, msg: msgs.append(msg))
    assert msgs[0].startswith("3 already built, 0 to go")
    assert {p: p.stat().st_mtime_ns for p in (again / "songs").rglob("*.wav")} == before

    # a song lost mid-build is rendered again, identically; nothing else is touched
    shutil.rmtree(again / "songs" / "score-00001")
    build_dataset("scores", again, seed=0, songs=3, jobs=1, seconds=SECONDS)
    assert _digest(again) == _digest(scores_ds)
    assert len(load_manifest(again)["songs"]) == 3


def test_split_assignment_is_stable_and_proportioned():
    assert split_for("music21:bach/bwv66.6") == split_for("music21:bach/bwv66.6")
    ids = [f"groove:0:{i}" for i in range(6000)]
    splits = [split_for(i) for i in ids]
    assert abs(splits.count("test") / len(ids) - 0.10) < 0.015
    assert abs(splits.count("valid") / len(ids) - 0.05) < 0.01
    # pinned values: changing the hash would silently leak test pieces into training
    assert [split_for(f"piece-{i}") for i in range(4)] == ["test", "train", "test", "train"]
    assert split_for("piece-53") == "valid"


def test_split_hash_is_sha256_based():
    u = int.from_bytes(hashlib.sha256(b"piece-0").digest()[:8], "big") / 2.0**64
    want = "test" if u < 0.10 else ("valid" if u < 0.15 else "train")
    assert split_for("piece-0") == want


def _tone(freq, seconds, amp=0.3, sr=44100):
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _fake_multitracks(root: Path):
    # MUSDB18-HQ: test/<song>/{bass,drums,other,vocals,mixture}.wav at 44.1 kHz stereo
    song = root / "musdb" / "test" / "Artist - Song"
    song.mkdir(parents=True)
    for i, name in enumerate(("bass", "drums", "other", "vocals")):
        x = _tone(55 * (i + 1), 11.0)
        if name == "vocals":
            x[: len(x) // 2] = 0  # silent in the first segment: dropped there
        sf.write(song / f"{name}.wav", np.stack([x, x], axis=1), 44100)
    sf.write(song / "mixture.wav", np.zeros((44100, 2), np.float32), 44100)
    # Slakh2100: Track00001/metadata.yaml + stems/S0N.flac
    tr = root / "slakh" / "train" / "Track00001"
    (tr / "stems").mkdir(parents=True)
    (tr / "metadata.yaml").write_text(
        "UUID: abc\naudio_dir: stems\nstems:\n"
        "  S00:\n    audio_rendered: true\n    inst_class: Bass\n    is_drum: false\n"
        "    midi_program_name: Electric Bass (finger)\n    program_num: 33\n"
        "  S01:\n    audio_rendered: true\n    inst_class: Drums\n    is_drum: true\n"
        "    program_num: 0\n"
        "  S02:\n    audio_rendered: true\n    inst_class: Synth Pad\n    is_drum: false\n"
        "    program_num: 89\n"
        "  S03:\n    audio_rendered: false\n    inst_class: Piano\n    is_drum: false\n"
        "    program_num: 0\n")
    for i in range(3):
        sf.write(tr / "stems" / f"S0{i}.flac", _tone(110 * (i + 1), 6.0, sr=48000), 48000)
    # MoisesDB: <song>/data.json + <stem>/<track>.wav
    ms = root / "moises" / "prov" / "0001"
    (ms / "guitar").mkdir(parents=True)
    (ms / "wind").mkdir()
    (ms / "data.json").write_text(json.dumps({"genre": "Rock", "stems": [
        {"stemName": "guitar", "tracks": [{"trackType": "electric guitar (clean)", "id": "g1"},
                                          {"trackType": "electric guitar (clean)", "id": "g2"}]},
        {"stemName": "wind", "tracks": [{"trackType": "trumpet", "id": "w1"}]}]}))
    sf.write(ms / "guitar" / "g1.wav", _tone(196, 6.0), 44100)
    sf.write(ms / "guitar" / "g2.wav", _tone(247, 6.0), 44100)
    sf.write(ms / "wind" / "w1.wav", _tone(440, 6.0), 44100)


def test_multitrack_import_layouts(tmp_path):
    _fake_multitracks(tmp_path / "in")
    out = tmp_path / "ds"
    build_dataset(str(tmp_path / "in"), out, seconds=5.0, jobs=1)
    m = load_manifest(out)
    by_piece: dict[str, list[dict]] = {}
    for s in m["songs"]:
        by_piece.setdefault(s["piece"], []).append(s)
        for st in s["stems"]:
            x, sr = sf.read(out / st["path"], dtype="float32", always_2d=True)
            assert sr == SR and x.shape == (5 * SR, 1)
    musdb = by_piece["musdb:Artist - Song"]
    assert len(musdb) == 2 and {s["split"] for s in musdb} == {"test"}  # from the folder
    fams0 = [st["family"] for st in musdb[0]["stems"]]
    assert fams0 == ["bass", "drums", None]  # vocals silent in segment 0, mixture skipped
    assert [st["family"] for st in musdb[1]["stems"]] == ["bass", "drums", None, "voice"]
    slakh = by_piece["slakh:Track00001"]
    assert slakh[0]["split"] == "train"
    assert [(st["family"], st["instrument"]) for st in slakh[0]["stems"]] == [
        ("bass", "fingered electric bass"), ("drums", "drums"), ("synth", "warm pad")]
    moises = by_piece["moisesdb:0001"]
    assert [(st["family"], st["instrument"]) for st in moises[0]["stems"]] == [
        ("guitar", "electric guitar (clean)"), ("brass", "trumpet")]
    assert moises[0]["style"] == "rock"
    # resumable: nothing new the second time
    msgs = []
    build_dataset(str(tmp_path / "in"), out, seconds=5.0, jobs=1,
                  progress=lambda d, t, msg: msgs.append(msg))
    assert any(msg.endswith(": exists") for msg in msgs)


def test_training_refuses_the_evaluation_sources(tmp_path, monkeypatch):
    """The dev set's SoundFont and MIDI tunes, and the judge's case folders, never feed
    training: they are refused by name, by symlink, by SoundFont header, and inside a folder."""
    from engine.errors import RiffwrightError
    from engine.training.dataset.render import find_soundfont, reserved_source

    header = b"RIFF\x00\x00\x00\x00sfbkLIST\x00\x00\x00\x00INFOINAM\x0e\x00\x00\x00"
    tim = tmp_path / "TimGM6mb.sf2"
    tim.write_bytes(header + b"Other.sf2\x00")
    renamed = tmp_path / "mybank.sf2"
    renamed.write_bytes(header + b"TimGM6mb1.sf2\x00")
    linked = tmp_path / "default-GM.sf2"
    linked.symlink_to(tim)
    fine = tmp_path / "FluidR3_GM.sf2"
    fine.write_bytes(header + b"Fluid R3 GM\x00")
    for bad in (tim, renamed, linked):
        with pytest.raises(RiffwrightError, match="reserved for evaluation.*TimGM6mb"):
            find_soundfont(bad)
    monkeypatch.setenv("RIFFWRIGHT_SOUNDFONT", str(renamed))
    with pytest.raises(RiffwrightError, match="reserved for evaluation"):
        find_soundfont()
    assert find_soundfont(fine) == fine

    tunes = tmp_path / "baseset" / "openmsx"
    tunes.mkdir(parents=True)
    (tunes / "tune.mid").write_bytes(b"MThd")
    holder = tmp_path / "mixed"  # a folder that merely contains the tunes somewhere below
    (holder / "x").mkdir(parents=True)
    (holder / "x" / "openmsx.obm").write_text("[metadata]")
    case = tmp_path / "cases" / "piece_bass_20"
    case.mkdir(parents=True)
    sf.write(case / "context.flac", _tone(110, 5.0, sr=SR), SR)
    sf.write(case / "target.flac", _tone(55, 5.0, sr=SR), SR)
    (case / "role.txt").write_text("bass")
    for src, what in ((tunes, "openttd-openmsx"), (holder, "openttd-openmsx"),
                      (tmp_path / "cases", "evaluation case folder")):
        assert what in reserved_source(src)
        with pytest.raises(RiffwrightError, match="reserved for evaluation"):
            build_dataset(str(src), tmp_path / "ds", seconds=5.0, jobs=1)
    assert not (tmp_path / "ds").exists()  # refused before anything was written
    _fake_multitracks(tmp_path / "ok")
    assert reserved_source(tmp_path / "ok") is None


def test_slakh_yaml_without_pyyaml(monkeypatch):
    from engine.training.dataset.multitrack import read_simple_yaml

    monkeypatch.setitem(sys.modules, "yaml", None)
    meta = read_simple_yaml("a: 1\nstems:\n  S00:\n    is_drum: false\n    program_num: 33\n"
                            "    name: 'Bass (finger)'\n  S01:\n    is_drum: true\n")
    assert meta == {"a": 1, "stems": {"S00": {"is_drum": False, "program_num": 33,
                                              "name": "Bass (finger)"},
                                      "S01": {"is_drum": True}}}


def _tiny_dataset(root: Path, n_songs=3, n_stems=4, seconds=4.0):
    """A hand-made dataset: every stem is a distinct tone, so sums can be checked."""
    songs = []
    for s in range(n_songs):
        stems = []
        d = root / "songs" / f"t{s}"
        d.mkdir(parents=True)
        for k in range(n_stems):
            x = _tone(100 + 50 * k + 7 * s, seconds, amp=0.1 + 0.02 * k, sr=SR)
            sf.write(d / f"{k}.wav", x, SR, subtype="FLOAT")
            stems.append({"path": f"songs/t{s}/{k}.wav", "instrument": f"i{k}",
                          "family": FAMILIES[k], "program": k, "register": "mid",
                          "caption": f"i{k}, {FAMILIES[k]}"})
        songs.append({"id": f"t{s}", "split": "train", "tempo": 100, "key": "C major",
                      "meter": "4/4", "style": "x", "seconds": seconds, "stems": stems})
    (root / "manifest.json").write_text(json.dumps(
        {"version": 1, "sample_rate": SR, "songs": songs}))
    return root


def test_pairs_exclude_target_and_are_deterministic(tmp_path):
    root = _tiny_dataset(tmp_path / "ds")
    win = 2 * SR
    pairs = list(iter_pairs(root / "manifest.json", "train", win, seed=3, count=40,
                            rules=PairRules(clap_samples=SR)))
    seen_empty = False
    for p in pairs:
        assert p["target"].shape == (win,) and p["context"].shape == (win,)
        assert p["clap_source"].shape == (SR,)
        assert p["target_stem"] not in p["context_stems"]
        song = next(s for s in json.loads((root / "manifest.json").read_text())["songs"]
                    if s["id"] == p["song"])
        want = np.zeros(win, np.float32)
        for i in p["context_stems"]:
            want += sf.read(root / song["stems"][i]["path"], dtype="float32",
                            start=p["offset"], stop=p["offset"] + win)[0]
        np.testing.assert_allclose(p["context"], want, atol=1e-6)
        tgt = sf.read(root / song["stems"][p["target_stem"]]["path"], dtype="float32",
                      start=p["offset"], stop=p["offset"] + win)[0]
        np.testing.assert_array_equal(p["target"], tgt)
        seen_empty |= not p["context_stems"]
    assert seen_empty  # the subset may be empty
    assert any(p["drop_context"] for p in pairs) and any(p["drop_clap"] for p in pairs)
    again = list(iter_pairs(root / "manifest.json", "train", win, seed=3, count=40,
                            rules=PairRules(clap_samples=SR)))
    assert [(p["song"], p["offset"], p["target_stem"], p["context_stems"]) for p in pairs] == [
        (p["song"], p["offset"], p["target_stem"], p["context_stems"]) for p in again]


class _FakeCAE:
    """Non-linear stand-in for the CAE (|x| pooled), so a mix's latent != sum of latents."""

    id = "fake-cae"
    hop = 4096
    latent_dim = 64
    sample_rate = SR

    def encode(self, wave):
        import torch

        b, t = wave.shape
        f = -(-t // self.hop)
        x = torch.nn.functional.pad(wave, (0, f * self.hop - t)).reshape(b, f, 64, self.hop // 64)
        return x.abs().mean(-1).transpose(1, 2) + 0.01


def test_latent_pairs_use_encoded_mixes(tmp_path):
    pytest.importorskip("torch")
    import torch

    from engine.training.dataset.pairs import LatentPairs, encode_dataset_latents

    root = _tiny_dataset(tmp_path / "ds", n_songs=2, n_stems=4, seconds=4.0)
    cae = _FakeCAE()
    idx = encode_dataset_latents(root, cae, tmp_path / "lat", max_mixes=16)
    index = json.loads(idx.read_text())
    song = index["songs"][0]
    assert len(song["mixes"]) == 10  # 4 "all but one" + 6 pairs
    # a stored mix is the encoding of the summed audio, not the sum of latents
    mix = song["mixes"][0]
    audio = sum(sf.read(root / song["stems"][i]["audio"], dtype="float32")[0]
                for i in mix["members"])
    want = cae.encode(torch.from_numpy(audio[None].astype(np.float32)))[0].numpy()
    got = np.load(tmp_path / "lat" / mix["latent"]).astype(np.float32)
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3)

    lp = LatentPairs(idx, "train", frames=16, seed=1, rules=PairRules(clap_samples=SR))
    for _ in range(30):
        p = lp.sample()
        assert p["target"].shape == (64, 16) and p["context"].shape == (64, 16)
        assert p["target_stem"] not in p["context_stems"]
        assert p["clap_audio"].shape == (SR,)
    # resumable: a second encode keeps what exists
    mtime = (tmp_path / "lat" / song["mixes"][0]["latent"]).stat().st_mtime_ns
    encode_dataset_latents(root, cae, tmp_path / "lat")
    assert (tmp_path / "lat" / song["mixes"][0]["latent"]).stat().st_mtime_ns == mtime


def test_arrange_corpus_piece_places_voices_in_range():
    pytest.importorskip("music21")
    from engine.training.dataset.gm import program_range
    from engine.training.dataset.scores import arrange_piece

    song = arrange_piece(np.random.default_rng(0), 8.0, "bach/bwv66.6", "chorale")
    assert song.piece == "music21:bach/bwv66.6" and len(song.parts) == 4
    for part in song.parts:
        lo, hi = program_range(part.program)
        pitches = [n.pitch for n in part.notes]
        assert all(0 <= n.start < n.end <= 8.0 for n in part.notes)
        assert lo - 7 <= float(np.median(pitches)) <= hi + 7
