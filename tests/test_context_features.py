"""Explicit context features (chroma + sub-frame onsets, the beat grid) and the models that
take them."""

import numpy as np
import pytest
import torch

from engine.diffusion.context_features import (
    BASS_DIM,
    CHROMA,
    FEATURE_DIM,
    GRID_DIM,
    SUBFRAMES,
    BeatGrid,
    bass_features,
    bass_from_spectra,
    bass_spectra,
    context_features,
    feature_layout,
    features_from_spectra,
    grid_features,
    spectra,
)
from engine.models.unet import UNet1d, arch_config, warm_start

SR, HOP = 48000, 4096


def tone(freqs, seconds=4.0, amp=0.3):
    t = np.arange(int(seconds * SR)) / SR
    return (amp * sum(np.sin(2 * np.pi * f * t) for f in freqs)).astype(np.float32)


def test_chroma_names_the_pitch_classes_played():
    f = context_features(tone([440.0]), SR, HOP)
    assert f.shape == (FEATURE_DIM, -(-4 * SR // HOP))
    assert (f[:CHROMA, 2:-2].argmax(axis=0) == 9).all()  # A
    c_major = context_features(tone([261.63, 329.63, 392.0]), SR, HOP)
    mean = c_major[:CHROMA, 2:-2].mean(axis=1)
    assert set(np.argsort(mean)[-3:]) == {0, 4, 7}  # C, E, G
    assert mean[[1, 3, 6, 8, 10]].max() < 0.5


def test_onsets_land_in_the_right_quarter_frame():
    x = np.zeros(6 * SR, np.float32)
    rng = np.random.default_rng(0)
    hits = [(5, 0), (12, 2), (30, 3), (47, 1)]  # (latent frame, quarter)
    for frame, q in hits:
        start = frame * HOP + q * HOP // SUBFRAMES + 100
        x[start:start + 2000] += rng.standard_normal(2000).astype(np.float32) * 0.5
    on = context_features(x, SR, HOP)[CHROMA:]  # (4, frames)
    flat = on.T.reshape(-1)  # quarter frames in time order
    top = set(np.argsort(flat)[-len(hits):].tolist())
    assert top == {frame * SUBFRAMES + q for frame, q in hits}


def test_features_do_not_depend_on_level_and_silence_is_zero():
    x = tone([110.0, 220.0]) * np.linspace(0, 1, 4 * SR, dtype=np.float32)
    a, b = context_features(x, SR, HOP), context_features(0.01 * x, SR, HOP)
    assert np.abs(a - b).max() < 1e-3
    assert not context_features(np.zeros(SR, np.float32), SR, HOP).any()
    assert context_features(np.zeros(0, np.float32), SR, HOP).shape == (FEATURE_DIM, 0)
    assert context_features(x, SR, HOP, frames=7).shape == (FEATURE_DIM, 7)


def test_a_mix_features_equal_the_features_of_its_summed_spectra():
    a, b = tone([196.0], 3.0), np.random.default_rng(1).standard_normal(3 * SR).astype(
        np.float32) * 0.05
    sa, sb = spectra(a, SR, HOP), spectra(b, SR, HOP)
    summed = features_from_spectra(sa[0] + sb[0], sa[1] + sb[1], SR)
    assert np.abs(summed - context_features(a + b, SR, HOP)).max() < 1e-4


def test_warm_start_extends_a_model_without_changing_it():
    old = UNet1d(arch_config("tiny", latent_dim=16, clap_dim=32))
    for p in old.parameters():  # a "trained" model: no zero layers
        torch.nn.init.normal_(p, std=0.05)
    new = UNet1d(arch_config("tiny", latent_dim=16, clap_dim=32, feature_dim=FEATURE_DIM))
    fresh = warm_start(new, old.state_dict())
    assert fresh and all(n.startswith("cond_") for n in fresh)
    x, ctx = torch.randn(2, 16, 37), torch.randn(2, 16 + FEATURE_DIM, 37)
    clap, t = torch.randn(2, 32), torch.zeros(2)
    with torch.no_grad():
        a = old(x, t, context=ctx[:, :16], clap=clap)
        b = new(x, t, context=ctx, clap=clap)
        absent = new(x, t, context=None, clap=clap)
    assert torch.allclose(a, b, atol=1e-6)
    assert absent.shape == b.shape
    with pytest.raises(ValueError, match="lacks"):
        warm_start(old, new.state_dict())


def test_the_context_stream_reaches_the_output_once_trained():
    net = UNet1d(arch_config("tiny", latent_dim=16, clap_dim=32, feature_dim=FEATURE_DIM))
    for proj in net.cond_proj:
        torch.nn.init.normal_(proj.weight, std=0.1)
    torch.nn.init.normal_(net.out.weight, std=0.1)
    x, ctx = torch.randn(1, 16, 40), torch.randn(1, 16 + FEATURE_DIM, 40)
    other = ctx.clone()
    other[:, 16:] = torch.randn(1, FEATURE_DIM, 40)  # same latents, other features
    with torch.no_grad():
        a = net(x, torch.zeros(1), context=ctx)
        b = net(x, torch.zeros(1), context=other)
    assert (a - b).abs().max() > 1e-3


def test_the_beat_grid_gives_each_frame_its_beat_and_bar_phase():
    grid = BeatGrid(bpm=105.0, bar_beats=3.0, downbeat=0.4)
    f = grid_features(grid, 200, HOP, SR)
    assert f.shape == (GRID_DIM, 200)
    t = (np.arange(200) + 0.5) * HOP / SR
    beat = np.angle(f[1] + 1j * f[0]) / (2 * np.pi) % 1.0
    bar = np.angle(f[3] + 1j * f[2]) / (2 * np.pi) % 1.0
    want_beat = ((t - 0.4) * 105.0 / 60.0) % 1.0
    err = np.abs((beat - want_beat + 0.5) % 1.0 - 0.5)
    assert err.max() < 1e-4
    # the bar phase turns once every three beats, and crosses zero on the bar lines
    bars = (t - 0.4) * 105.0 / 60.0 / 3.0
    assert np.abs((bar - bars % 1.0 + 0.5) % 1.0 - 0.5).max() < 1e-4
    # no grid is all zeros, which no phase gives
    assert not grid_features(None, 50, HOP, SR).any()
    assert (np.hypot(f[0], f[1]) > 0.99).all()


def test_a_grid_window_equals_the_grid_of_audio_starting_there():
    grid = BeatGrid.from_meter(128.0, "7/8", downbeat=1.25)
    assert grid.bar_beats == 3.5
    whole = grid_features(grid, 300, HOP, SR)
    part = grid_features(grid, 100, HOP, SR, first_frame=120)
    shifted = grid_features(grid.shifted(120 * HOP / SR), 100, HOP, SR)
    assert np.allclose(part, whole[:, 120:220], atol=1e-5)
    assert np.allclose(shifted, part, atol=1e-4)


@pytest.mark.parametrize("args, match", [
    ((0.0,), "20–400"), ((120.0, 0.0), "0.5–32"), ((float("nan"),), "finite"),
])
def test_a_malformed_grid_is_refused(args, match):
    with pytest.raises(ValueError, match=match):
        BeatGrid(*args)
    with pytest.raises(ValueError, match="like 4/4"):
        BeatGrid.from_meter(120.0, "four")


def test_warm_start_adds_a_beat_grid_without_changing_the_model():
    old = UNet1d(arch_config("tiny", latent_dim=16, clap_dim=32, feature_dim=FEATURE_DIM))
    for p in old.parameters():
        torch.nn.init.normal_(p, std=0.05)
    new = UNet1d(arch_config("tiny", latent_dim=16, clap_dim=32,
                             feature_dim=FEATURE_DIM + GRID_DIM))
    assert warm_start(new, old.state_dict()) == []
    x, ctx = torch.randn(2, 16, 37), torch.randn(2, 16 + FEATURE_DIM, 37)
    grid = torch.randn(2, GRID_DIM, 37)
    clap, t = torch.randn(2, 32), torch.zeros(2)
    with torch.no_grad():
        a = old(x, t, context=ctx, clap=clap)
        b = new(x, t, context=torch.cat([ctx, grid], dim=1), clap=clap)
        a0 = old(x, t, context=None, clap=clap)
        b0 = new(x, t, context=None, clap=clap)
    assert torch.allclose(a, b, atol=1e-6) and torch.allclose(a0, b0, atol=1e-6)
    # and the grid reaches the output once its inputs are trained
    with torch.no_grad():
        new.cond_enc[0].weight[:, -GRID_DIM:].normal_(std=0.5)
        c = new(x, t, context=torch.cat([ctx, grid], dim=1), clap=clap)
    assert (c - b).abs().max() > 1e-4


NAMES = "C C# D D# E F F# G G# A A# B".split()


@pytest.mark.parametrize("hz, name", [(41.2, "E"), (55.0, "A"), (61.7, "B"), (73.4, "D"),
                                      (98.0, "G"), (138.6, "C#"), (207.7, "G#")])
def test_the_low_register_names_its_note_a_semitone_apart(hz, name):
    """Down to E1 (41 Hz), where the chroma's 4096-point bins are four semitones wide."""
    f = bass_features(tone([hz]), SR, HOP)
    assert f.shape == (BASS_DIM, -(-4 * SR // HOP))
    inner = f[:, 3:-3]
    assert (inner.argmax(axis=0) == NAMES.index(name)).all()
    assert np.sort(inner, axis=0)[-2].max() < 0.5  # the neighbours stay well under the note


def test_the_low_register_hears_the_lowest_voice_not_the_melody():
    # a loud A5 melody over a quiet C2: the chroma says A, the low register says C
    x = tone([880.0]) + tone([65.4], amp=0.02)
    assert context_features(x, SR, HOP)[:CHROMA, 10].argmax() == NAMES.index("A")
    assert bass_features(x, SR, HOP)[:, 10].argmax() == NAMES.index("C")
    # nothing in the low register: zeros (not the window's leakage scaled up), except where
    # the tone's abrupt start and end click through every band
    high = bass_features(tone([880.0]), SR, HOP)
    assert not high[:, 3:-3].any()
    assert not bass_features(np.zeros(2 * SR, np.float32), SR, HOP).any()
    assert bass_features(np.zeros(0, np.float32), SR, HOP).shape == (BASS_DIM, 0)


def test_the_low_register_of_a_mix_is_read_off_its_summed_spectra():
    a, b = tone([82.4], 3.0), tone([110.0, 659.3], 3.0, amp=0.1)
    summed = bass_from_spectra(bass_spectra(a, SR, HOP) + bass_spectra(b, SR, HOP), SR)
    assert np.abs(summed - bass_features(a + b, SR, HOP)).max() < 1e-4
    # level-free, as the chroma is
    assert np.abs(bass_features(0.01 * a, SR, HOP) - bass_features(a, SR, HOP)).max() < 1e-3


def test_feature_layouts_are_named_and_others_refused():
    assert feature_layout(0) == (False, False) and feature_layout(FEATURE_DIM) == (False, False)
    assert feature_layout(FEATURE_DIM + GRID_DIM) == (True, False)
    assert feature_layout(FEATURE_DIM + GRID_DIM + BASS_DIM) == (True, True)
    with pytest.raises(ValueError, match="no context-feature layout has 17"):
        feature_layout(17)

