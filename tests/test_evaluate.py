"""The evaluation figures measure what they claim, and `eval model` runs end to end."""

import json

import numpy as np

from engine.bundles.bundle import init_bundle
from engine.training.evaluate import evaluate_model, frechet_distance, harmonic_fit, rhythmic_fit
from tests.test_train_ldm import make_dataset

SR = 48000


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
    for k in ("harmonic_generated", "harmonic_ground_truth", "rhythmic_mismatched",
              "prompt_generated"):
        assert k in summary
    assert (tmp_path / "ev" / "report.md").read_text().startswith("# Evaluation")
    # several takes per context: averaged per row, every take's embedding in the Fréchet set
    two = evaluate_model(bundle, data=data, out=tmp_path / "ev2", limit=2, steps=2, seconds=3.0,
                         takes=2, cfg_context=2.0, progress=lambda *_: None)
    assert two["takes"] == 2 and two["cfg_context"] == 2.0
    report = json.loads((tmp_path / "ev2" / "report.json").read_text())
    assert all(0.0 <= r["family_ok_generated"] <= 1.0 for r in report["rows"])
    assert "2 take(s) per context" in (tmp_path / "ev2" / "report.md").read_text()
