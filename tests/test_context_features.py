"""Explicit context features (chroma + sub-frame onsets) and the models that take them."""

import numpy as np
import pytest
import torch

from engine.diffusion.context_features import (
    CHROMA,
    FEATURE_DIM,
    SUBFRAMES,
    context_features,
    features_from_spectra,
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
