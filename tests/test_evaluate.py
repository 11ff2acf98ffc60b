"""The evaluation figures measure what they claim, and `eval model` runs end to end."""

import json
import struct

import numpy as np
import soundfile as sf

from engine import notes
from engine.bundles.bundle import init_bundle
from engine.training.evaluate import (
    ContextAnalysis,
    evaluate_model,
    frechet_distance,
    harmonic_fit,
    naive_stem,
    rhythmic_fit,
    stem_figures,
    summarise_figure,
)
from tests.test_train_ldm import make_dataset

SR = 48000


def midi_hz(p):
    return 440.0 * 2 ** ((p - 69) / 12)


def melody(pitches, note_s=0.5, amp=0.3):
    """A sine per note, `note_s` long each, with 5 ms fades (a clean monophonic line)."""
    n = int(note_s * SR)
    t = np.arange(n) / SR
    fade = np.minimum(1.0, np.minimum(np.arange(n), np.arange(n)[::-1]) / 240)
    return np.concatenate([amp * np.sin(2 * np.pi * midi_hz(p) * t) * fade
                           for p in pitches]).astype(np.float32)


def chord(freqs, seconds=8.0):
    t = np.arange(int(seconds * SR)) / SR
    return sum(0.2 * np.sin(2 * np.pi * f * t) for f in freqs).astype(np.float32)


def clicks(times, seconds=8.0):
    x = np.zeros(int(seconds * SR), np.float32)
    rng = np.random.default_rng(0)
    for t in times:
        i = int(t * SR)
        x[i:i + 2000] += rng.standard_normal(2000).astype(np.float32) * np.exp(-np.arange(2000) / 200)
    return x


def test_harmonic_fit_prefers_the_same_harmony():
    c_major = chord([261.6, 329.6, 392.0])
    same = chord([130.8, 196.0])  # C and G
    other = chord([277.2, 370.0])  # C# and F#
    assert harmonic_fit(same, c_major, SR, 2.0) > harmonic_fit(other, c_major, SR, 2.0) + 0.2
    # a stem without pitch (noise) does not fit the harmony, however broad its spectrum
    noise = np.random.default_rng(0).standard_normal(c_major.shape).astype(np.float32) * 0.1
    assert abs(harmonic_fit(noise, c_major, SR, 2.0)) < 0.3
    assert harmonic_fit(same, c_major, SR, 2.0) > 0.5


def test_rhythmic_fit_prefers_onsets_on_the_beat():
    beats = np.arange(0, 8, 0.5)  # 120 bpm
    ctx = clicks(beats)
    on = clicks(beats[::2])
    off = clicks(beats[::2] + 0.25)
    assert rhythmic_fit(on, ctx, SR, 120.0) > rhythmic_fit(off, ctx, SR, 120.0) * 1.5


def test_frechet_distance():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((400, 8))
    assert frechet_distance(a, a) < 1e-6
    assert frechet_distance(a, a + 1.0) > 7.0


def test_yin_finds_a_known_pitch():
    t = np.arange(2 * SR) / SR
    for f in (41.2, 98.0, 246.9):
        x = (0.3 * np.sin(2 * np.pi * f * t) + 0.1 * np.sin(4 * np.pi * f * t)).astype(np.float32)
        f0, _ = notes.yin(x, SR)
        assert np.mean(~np.isnan(f0)) > 0.95
        assert abs(np.nanmedian(f0) / f - 1) < 0.01
    # silence and white noise carry no pitch
    assert np.isnan(notes.yin(np.zeros(SR, np.float32), SR)[0]).all()
    noise = np.random.default_rng(0).standard_normal(SR).astype(np.float32) * 0.1
    assert np.mean(~np.isnan(notes.yin(noise, SR)[0])) < 0.1


def test_bass_notes_segment_a_line():
    line = notes.bass_notes(melody([36, 40, 43, 38]), SR)
    assert [n.pitch for n in line] == [36, 40, 43, 38]
    for k, n in enumerate(line):
        assert abs(n.start - 0.5 * k) < 0.06 and abs(n.end - 0.5 * (k + 1)) < 0.06


def test_bass_on_chord_tones_scores_one_off_the_chord_zero():
    c_major = chord([midi_hz(60), midi_hz(64), midi_hz(67)])  # C4 E4 G4, 8 s
    ca = ContextAnalysis(c_major, SR, tempo=120.0)
    assert ca.classes_beat[3] == {0, 4, 7}
    on = stem_figures(melody([36, 40, 43, 36] * 4), SR, ca, "bass")  # C2 E2 G2 C2
    off = stem_figures(melody([37, 42, 39, 37] * 4), SR, ca, "bass")  # C#2 F#2 D#2
    assert on["harm_beat"] > 0.95 and on["harm_bar"] > 0.95
    assert off["harm_beat"] < 0.05 and off["harm_bar"] < 0.05
    # a bass with under a second of notes has no harmonic figure
    short = np.zeros(len(c_major), np.float32)
    short[:int(0.5 * SR)] = melody([36])
    assert np.isnan(stem_figures(short, SR, ca, "bass")["harm_beat"])
    # the naive bass plays the context's strongest class: on the chord by construction
    naive = naive_stem(ca, SR, "bass", len(c_major))
    assert stem_figures(naive, SR, ca, "bass")["harm_beat"] > 0.95


def test_onsets_of_a_click_track():
    beats = np.arange(0.1, 8, 0.5)
    found = notes.onsets(clicks(beats), SR)
    assert len(found) == len(beats)
    assert np.abs(found - beats).max() < 0.02
    assert notes.onset_f(found, beats) == 1.0
    assert notes.onset_f(notes.onsets(clicks(beats + 0.25), SR), beats) == 0.0
    half = notes.onsets(clicks(beats[::2]), SR)  # half the onsets: F = 2/3
    assert abs(notes.onset_f(half, beats) - 2 / 3) < 1e-9
    # the notes of a sine line are onsets too, and a steady tone has none after its start
    assert len(notes.onsets(melody([36, 40, 43, 38] * 2), SR)) >= 7
    assert len(notes.onsets(chord([65.4], seconds=4.0), SR)) <= 1


def test_grid_hits_against_chance():
    ctx = clicks(np.arange(0.1, 8, 0.5))  # 120 bpm
    ca = ContextAnalysis(ctx, SR)  # tempo estimated from the clicks
    assert abs(ca.tempo - 120.0) < 2.0
    assert abs(ca.beats[0] - 0.1) < 0.03
    on_grid = notes.onsets(clicks(np.arange(0.35, 8, 1.0)), SR)  # half-beats
    between = notes.onsets(clicks(np.arange(0.225, 8, 0.5)), SR)  # quarter-beats
    assert notes.grid_hits(on_grid, ca.beats) == 1.0
    assert notes.grid_hits(between, ca.beats) == 0.0
    # ±70 ms around a point every 250 ms: 0.56 of the time
    assert abs(ca.grid_chance - 0.56) < 0.02
    figs = stem_figures(naive_stem(ca, SR, "drums", len(ctx)), SR, ca, "drums")
    assert figs["grid_hit"] == 1.0 and figs["onset_f"] > 0.9 and "harm_beat" not in figs


def test_midi_tempo_reads_the_first_tempo_and_metre():
    def track(body):
        return b"MTrk" + struct.pack(">I", len(body)) + body

    meta = (b"\x00\xff\x58\x04\x03\x02\x18\x08"   # 3/4
            b"\x00\xff\x51\x03\x07\xa1\x20"       # 500,000 us a beat: 120 bpm
            b"\x00\xff\x2f\x00")
    notes_ = (b"\x00\x90\x3c\x64\x83\x60\x3c\x00"  # running status in the note-off
              b"\x00\xf0\x03\x7e\x7f\xf7\x00\xff\x2f\x00")
    smf = b"MThd" + struct.pack(">IHHH", 6, 1, 2, 480) + track(notes_) + track(meta)
    assert notes.midi_tempo(smf) == (120.0, 3)
    assert notes.midi_tempo(b"not midi") == (None, None)
    assert notes.midi_tempo(smf[:30]) == (None, None)  # cut short
    # a Set Tempo of 0 us a beat is malformed, not a crash; a later valid one is read
    zero = b"\x00\xff\x51\x03\x00\x00\x00"
    assert notes.midi_tempo(b"MThd" + struct.pack(">IHHH", 6, 0, 1, 480)
                            + track(zero + meta)) == (120.0, 3)


def test_summary_intervals_and_gap_closed():
    rng = np.random.default_rng(0)
    rows = [{"x_generated": g, "x_ground_truth": t, "x_mismatched": m, "x_naive": 0.5}
            for g, t, m in zip(rng.uniform(0.55, 0.65, 30), rng.uniform(0.75, 0.85, 30),
                               rng.uniform(0.35, 0.45, 30))]
    s = summarise_figure(rows, "x")
    assert s["n"] == 30 and s["gen_undefined"] == 0
    for stem, mean in (("generated", 0.6), ("ground_truth", 0.8), ("mismatched", 0.4)):
        assert abs(s[stem]["mean"] - mean) < 0.02
        assert s[stem]["lo"] < s[stem]["mean"] < s[stem]["hi"]
        assert s[stem]["hi"] - s[stem]["lo"] < 0.05
    gap = s["gap_closed"]
    assert abs(gap["value"] - 0.5) < 0.06 and gap["lo"] < gap["value"] < gap["hi"]
    assert gap["bounds_separated"]
    assert s["gen_above_mismatched"] == 30
    # a context whose generated figure is undefined is left out of every column, and counted
    rows[0]["x_generated"] = float("nan")
    rows[0]["x_ground_truth"] = 100.0
    s2 = summarise_figure(rows, "x")
    assert s2["n"] == 29 and s2["gen_undefined"] == 1 and s2["ground_truth"]["mean"] < 1
    # a truth no better than the mismatched stem: the gap divides by noise and is flagged
    flat = [{**r, "x_ground_truth": r["x_mismatched"] + d}
            for r, d in zip(rows[1:], rng.normal(0, 0.05, 29))]
    assert not summarise_figure(flat, "x")["gap_closed"]["bounds_separated"]
    # no generated figure anywhere: the bounds are still reported, the gap is not
    none = summarise_figure([{**r, "x_generated": float("nan")} for r in rows], "x")
    assert none["n"] == 0 and none["gen_undefined"] == 30 and "generated" not in none
    assert "gap_closed" not in none and abs(none["mismatched"]["mean"] - 0.4) < 0.02
    # generated as good as the truth closes the whole gap
    same = [{**r, "x_generated": r["x_ground_truth"]} for r in rows[1:]]
    assert abs(summarise_figure(same, "x")["gap_closed"]["value"] - 1.0) < 1e-9


def _write_cases(root, seconds=3.0):
    """Two pieces, each with a bass and a drum case, in the judge's layout."""
    t = np.arange(int(seconds * SR)) / SR
    meta = []
    for piece, root_pc in (("alpha", 48), ("beta", 50)):
        ctx = chord([midi_hz(root_pc + 12), midi_hz(root_pc + 16), midi_hz(root_pc + 19)],
                    seconds) + clicks(np.arange(0.0, seconds, 0.5), seconds) * 0.3
        for role in ("bass", "drums"):
            case = root / f"{piece}_{role}_20"
            case.mkdir(parents=True)
            if role == "bass":
                target = 0.3 * np.sin(2 * np.pi * midi_hz(root_pc - 12) * t)
            else:
                target = clicks(np.arange(0.0, seconds, 0.5), seconds)
            sf.write(case / "context.flac", ctx, SR)
            sf.write(case / "target.flac", target.astype(np.float32), SR)
            (case / "role.txt").write_text(role + "\n")
            meta.append({"case": case.name, "source": f"{piece}.mid", "offset": 20.0})
    (root / "cases.json").write_text(json.dumps({"cases": meta}))


def test_eval_model_reads_the_judges_case_layout(tmp_path):
    _write_cases(tmp_path / "cases")
    bundle = init_bundle("tiny", tmp_path / "b")
    summary = evaluate_model(bundle, contexts=tmp_path / "cases", out=tmp_path / "ev", steps=2,
                             seconds=3.0, progress=lambda *_: None)
    assert summary["items"] == 4
    nl = summary["note_level"]
    assert set(nl) == {"bass", "drums"}
    assert set(nl["bass"]["figures"]) == {"harm_beat", "harm_bar", "onset_f", "grid_hit"}
    assert set(nl["drums"]["figures"]) == {"onset_f", "grid_hit"}
    for f in nl["drums"]["figures"].values():
        assert {"generated", "ground_truth", "mismatched", "naive"} <= set(f)
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    rows = {r["id"]: r for r in report["rows"]}
    # the mismatched stem comes from the other piece: beta's bass is off alpha's chord
    assert rows["alpha_bass_20"]["harm_beat_ground_truth"] > 0.9
    assert rows["alpha_bass_20"]["harm_beat_mismatched"] < 0.1
    assert "chroma_correlation_generated" in report["summary"]["secondary"]
    md = (tmp_path / "ev" / "report.md").read_text()
    assert "per beat" in md and "naive DSP" in md and "Chance level" in md
    assert "chroma" not in md.split("## Judged by")[0].lower()  # not in the headline tables
    # takes made elsewhere (the judge's GEN layout) are measured instead of generating: the
    # real parts as "takes" close the whole gap; contexts without takes are skipped
    gen = tmp_path / "gen"
    for case in ("alpha_bass_20", "beta_bass_20"):
        (gen / case).mkdir(parents=True)
        x, _ = sf.read(tmp_path / "cases" / case / "target.flac", dtype="float32")
        sf.write(gen / case / "take1.wav", x, SR)
    from engine.cli import main  # through the command line, as tools/dev_eval.sh calls it

    assert main(["eval", "model", "--model", str(bundle), "--contexts", str(tmp_path / "cases"),
                 "--generated", str(gen), "--seconds", "3", "--out", str(tmp_path / "ev2")]) == 0
    s2 = json.loads((tmp_path / "ev2" / "report.json").read_text())["summary"]
    assert s2["items"] == 2 and set(s2["note_level"]) == {"bass"}
    harm = s2["note_level"]["bass"]["figures"]["harm_beat"]
    assert harm["generated"]["mean"] == harm["ground_truth"]["mean"]
    assert abs(harm["gap_closed"]["value"] - 1.0) < 1e-9
    assert "takes read from" in (tmp_path / "ev2" / "report.md").read_text()
    # plain context files with their targets: role unknown, so rhythm figures only; the
    # mismatched stem is another file's target
    for d in ("ctx", "tgt"):
        (tmp_path / d).mkdir()
    for case in ("alpha_bass_20", "beta_bass_20"):
        for d, f in (("ctx", "context"), ("tgt", "target")):
            x, _ = sf.read(tmp_path / "cases" / case / f"{f}.flac", dtype="float32")
            sf.write(tmp_path / d / f"{case}.wav", x, SR)
    s3 = evaluate_model(bundle, contexts=tmp_path / "ctx", targets=tmp_path / "tgt",
                        generated=gen, out=tmp_path / "ev4", seconds=3.0,
                        progress=lambda *_: None)
    assert s3["items"] == 2 and set(s3["note_level"]) == {"other"}
    assert set(s3["note_level"]["other"]["figures"]) == {"onset_f", "grid_hit"}
    assert "mismatched" in s3["note_level"]["other"]["figures"]["onset_f"]
    # a folder without takes for any case is a one-line error, not a crash
    (tmp_path / "empty").mkdir()
    assert main(["eval", "model", "--model", str(bundle), "--contexts", str(tmp_path / "cases"),
                 "--generated", str(tmp_path / "empty"), "--out", str(tmp_path / "ev3")]) == 2


def test_eval_model_end_to_end(tmp_path):
    data = make_dataset(tmp_path / "data", songs=4, seconds=4.0)
    m = json.loads((data / "manifest.json").read_text())
    for s in m["songs"][2:]:
        s["split"] = "test"
    (data / "manifest.json").write_text(json.dumps(m))
    bundle = init_bundle("tiny", tmp_path / "b")
    summary = evaluate_model(bundle, data=data, out=tmp_path / "ev", limit=2, steps=2,
                             seconds=3.0, progress=lambda *_: None)
    assert summary["items"] == 2
    assert "prompt_generated" in summary
    for k in ("chroma_correlation_generated", "chroma_correlation_ground_truth",
              "beat_onset_strength_mismatched"):
        assert k in summary["secondary"]
    for role in summary["note_level"].values():  # the dataset knows the tempo
        assert role["tempo"].startswith("on the known tempo")
        assert "onset_f" in role["figures"]
    assert (tmp_path / "ev" / "report.md").read_text().startswith("# Evaluation")
    # several takes per context: averaged per row, every take's embedding in the Fréchet set
    two = evaluate_model(bundle, data=data, out=tmp_path / "ev2", limit=2, steps=2, seconds=3.0,
                         takes=2, cfg_context=2.0, progress=lambda *_: None)
    assert two["takes"] == 2 and two["cfg_context"] == 2.0
    report = json.loads((tmp_path / "ev2" / "report.json").read_text())
    assert all(0.0 <= r["family_ok_generated"] <= 1.0 for r in report["rows"])
    assert "2 take(s) per context" in (tmp_path / "ev2" / "report.md").read_text()


def test_generations_get_the_beat_grid_the_data_knows(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from engine.generation import driver
    from engine.training import evaluate as ev

    assert ev._grid(96.0, "6/8") == (96.0, 3.0, 0.0)
    assert ev._grid(None, "4/4") is None and ev._grid(0.0, "4/4") is None
    assert ev._grid(120.0, "x") is None
    seen = []

    class Gen:  # records the request; its "take" is silence
        def run(self, req):
            seen.append(req.beat_grid)
            return [SimpleNamespace(audio=np.zeros((1, 4800), np.float32))]

    monkeypatch.setattr(driver, "run_to_end", lambda stems: stems)
    it = {"id": "c", "context": np.zeros(4800, np.float32), "prompt": "drums",
          "grid": (96.0, 3.0, 0.0)}
    for use in (True, False):
        ev._takes(0, it, None, Gen(), tmp_path, 48000, 4800, {"takes": 1}, use)
    assert seen == [(96.0, 3.0, 0.0), None]


def test_the_dev_scripts_check_set_is_the_rest_of_each_role(tmp_path):
    """tools/dev_eval.sh: SET=dev picks PER_ROLE cases per role at an even stride; SET=check
    is every other case, so a choice made on one set can be confirmed on the other."""
    import os
    import subprocess
    from pathlib import Path

    for role, n in (("bass", 7), ("drums", 4)):
        for i in range(n):
            (tmp_path / f"song{i}_{role}_20").mkdir()
            (tmp_path / f"song{i}_{role}_20" / "role.txt").write_text(role)
    script = Path(__file__).resolve().parents[1] / "tools" / "dev_eval.sh"

    def listed(**env):
        out = subprocess.run(["bash", str(script), "list"], capture_output=True, text=True,
                             env={**os.environ, "CASES": str(tmp_path), "PER_ROLE": "3", **env})
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    dev, check = listed(ROLES="bass"), listed(ROLES="bass", SET="check")
    assert dev == ["song0_bass_20", "song2_bass_20", "song4_bass_20"]
    assert check == ["song1_bass_20", "song3_bass_20", "song5_bass_20", "song6_bass_20"]
    both = listed(SET="check")
    assert set(both) == set(check) | {"song3_drums_20"}
    bad = subprocess.run(["bash", str(script), "list"], capture_output=True, text=True,
                         env={**os.environ, "CASES": str(tmp_path), "SET": "all"})
    assert bad.returncode != 0 and "SET must be dev or check" in bad.stderr
