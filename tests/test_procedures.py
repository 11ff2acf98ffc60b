"""Guidance, inpainting, loop sampling, windows and the audio splice."""

import numpy as np
import pytest
import torch

from engine.diffusion.edm import EDMPrecond, karras_sigmas, sample
from engine.generation.procedures import (
    equal_power_fade,
    guidance_branches,
    guided,
    harmony_guided,
    inpaint_hook,
    loop_hook,
    off_beat,
    off_harmony,
    onset_places,
    plan_windows,
    quarter_frames,
    randn_per_take,
    region_frames,
    rhythm_guided,
    sounding_classes,
    splice,
    tile_period,
)
from engine.models.unet import UNet1d, arch_config


@pytest.fixture(scope="module")
def precond():
    torch.manual_seed(0)
    net = UNet1d(arch_config("tiny", clap_dim=16)).eval()
    for p in net.parameters():
        p.data.normal_(0, 0.05)
    return EDMPrecond(net)


class Counting:
    def __init__(self, precond):
        self.precond, self.calls = precond, 0

    def __call__(self, *a, **k):
        self.calls += 1
        return self.precond(*a, **k)


def branch(precond, x, sigma, ctx, clap, use_ctx, use_clap):
    return precond(x, sigma, context=ctx if use_ctx else None, clap=clap if use_clap else None)


@torch.no_grad()
def test_two_scale_guidance_matches_the_formula_in_one_pass(precond):
    x, sigma = torch.randn(2, 64, 20), torch.full((2,), 1.5)
    ctx, clap = torch.randn(1, 64, 20), torch.randn(1, 16)
    counting = Counting(precond)
    w_ctx, w_clap = 1.7, 0.6
    d = guided(counting, ctx, clap, w_ctx, w_clap)(x, sigma)
    assert counting.calls == 1  # all branches in one batched forward pass
    ctx2, clap2 = ctx.expand(2, -1, -1), clap.expand(2, -1)
    d00 = branch(precond, x, sigma, ctx2, clap2, False, False)
    dc0 = branch(precond, x, sigma, ctx2, clap2, True, False)
    dce = branch(precond, x, sigma, ctx2, clap2, True, True)
    want = d00 + w_ctx * (dc0 - d00) + w_clap * (dce - dc0)
    torch.testing.assert_close(d, want, atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_weights_of_one_return_exactly_the_conditional_branch(precond):
    x, sigma = torch.randn(3, 64, 9), torch.full((3,), 0.7)
    ctx, clap = torch.randn(1, 64, 9), torch.randn(1, 16)
    d = guided(precond, ctx, clap, 1.0, 1.0)(x, sigma)
    want = precond(x, sigma, context=ctx.expand(3, -1, -1), clap=clap.expand(3, -1))
    assert torch.equal(d, want)
    d_ctx = guided(precond, ctx, None, 1.0, 3.0)(x, sigma)
    assert torch.equal(d_ctx, precond(x, sigma, context=ctx.expand(3, -1, -1)))


@torch.no_grad()
def test_absent_condition_reduces_to_ordinary_cfg(precond):
    x, sigma = torch.randn(1, 64, 9), torch.full((1,), 2.0)
    ctx, clap = torch.randn(1, 64, 9), torch.randn(1, 16)
    uncond = precond(x, sigma)
    only_ctx = guided(precond, ctx, None, 2.0, 5.0)(x, sigma)
    torch.testing.assert_close(only_ctx, uncond + 2.0 * (precond(x, sigma, context=ctx) - uncond),
                               atol=1e-5, rtol=1e-5)
    only_clap = guided(precond, None, clap, 5.0, 1.5)(x, sigma)
    torch.testing.assert_close(only_clap, uncond + 1.5 * (precond(x, sigma, clap=clap) - uncond),
                               atol=1e-5, rtol=1e-5)
    assert torch.equal(guided(precond, None, None, 3.0, 3.0)(x, sigma), uncond)


def test_branch_bookkeeping():
    assert [b.coef for b in guidance_branches(True, True, 1.25, 1.25)] == [-0.25, 1.25]
    assert len(guidance_branches(True, True, 2.0, 1.0)) == 3
    assert guidance_branches(False, False, 9, 9)[0].coef == 1.0


def test_noise_per_take_depends_only_on_its_own_seed():
    a = randn_per_take([torch.Generator().manual_seed(s) for s in (1, 2)], (3, 4))
    b = randn_per_take([torch.Generator().manual_seed(2)], (3, 4))
    assert torch.equal(a[1], b[0]) and not torch.equal(a[0], a[1])


@torch.no_grad()
def test_inpainting_keeps_known_frames_and_blends_the_rest(precond):
    known = torch.randn(1, 64, 24)
    keep = torch.ones(24, dtype=torch.bool)
    keep[8:16] = False
    gens = [torch.Generator().manual_seed(0)]
    sig = karras_sigmas(8)
    x = torch.randn(1, 64, 24, generator=torch.Generator().manual_seed(5)) * sig[0]
    hook = inpaint_hook(known, keep, gens)
    seen = []

    def spy(i, x, s):
        x = hook(i, x, s)
        seen.append((x[..., keep] - known[..., keep]).std().item() / max(s, 1e-9))
        return x

    out = sample(guided(precond, None, None, 1, 1), x, sig, step_hook=spy)
    # at every step the kept frames are the known latents plus noise of exactly sigma
    assert all(abs(r - 1.0) < 0.15 for r in seen)
    assert not torch.allclose(out[..., ~keep], known[..., ~keep])


def test_loop_hook_makes_the_window_periodic():
    x = torch.randn(2, 64, 94)
    t = tile_period(x, 4)
    period = 24  # ceil(94 / 4)
    assert torch.equal(t[..., :period], x[..., :period])
    assert torch.equal(t[..., period:2 * period], t[..., :period])
    assert torch.equal(t[..., 3 * period:], t[..., : 94 - 3 * period])
    hook = loop_hook(4, 0.5, 10)
    assert hook.loop_steps == 5
    assert torch.equal(hook(4, x, 1.0), t)
    assert torch.equal(hook(5, x, 1.0), x)


def test_windows_cover_everything_and_overlap_by_the_held_frames():
    assert plan_windows(100, 128, 32) == plan_windows(100, 128, 32)[:1]
    for frames in (129, 300, 411, 1000):
        ws = plan_windows(frames, 128, 32)
        assert ws[0].start == 0 and ws[-1].end == frames
        assert all(w.end - w.start <= 128 for w in ws)
        assert all(w.end - w.start == 128 for w in ws)  # every window as trained
        for prev, cur in zip(ws, ws[1:]):
            assert cur.held == 32 and cur.start + cur.held <= prev.end  # holds made frames
            assert cur.start > prev.start
    assert [(w.start, w.end, w.held) for w in plan_windows(141, 128, 32)] == [(0, 128, 0),
                                                                              (13, 141, 32)]


def test_a_long_take_has_no_burst_at_its_end():
    """A take of 141 latent frames (two windows) keeps its level to the end: the last
    window holds only the overlap (holding 115 of 128 frames made its free tail 10-15 dB
    louder than the rest)."""
    from engine.bundles.bundle import default_bundle_dir, is_bundle, load_bundle
    from engine.generation.driver import Generator, run_to_end
    from engine.generation.request import GenerationRequest

    if not is_bundle(default_bundle_dir()):
        pytest.skip("needs the default bundle")
    from engine.audio import load_audio

    gen = Generator(load_bundle(default_bundle_dir(), device="cpu"))
    ctx, sr = load_audio(default_bundle_dir().parent.parent / "demo" /
                         "soul_74bpm_G_drums_rhodes.flac", sample_rate=48000)
    stems = run_to_end(gen.run(GenerationRequest(
        context=ctx[:, :12 * 48000], steps=6, takes=2, prompt="fingered electric bass",
        seed=1151402143, stereo_width=0.0)))
    rms = lambda v: 20 * np.log10(np.sqrt(np.mean(v ** 2)) + 1e-12)  # noqa: E731
    for stem in stems:
        x = stem.audio[0]
        body = np.median([rms(x[i:i + 24000]) for i in range(0, 9 * 48000, 24000)])
        assert rms(x[-48000:]) < body + 6.0, (rms(x[-48000:]), body)


def test_region_frames_cover_the_region_with_a_margin():
    m = region_frames(2.0, 4.0, 48000, 4096, 118)
    idx = torch.nonzero(m).flatten()
    assert idx[0] * 4096 <= 2.0 * 48000 - 4096 and (idx[-1] + 1) * 4096 >= 4.0 * 48000 + 4096


def test_splice_is_sample_exact_outside_and_equal_power_across():
    sr = 48000
    rng = np.random.default_rng(0)
    orig = rng.standard_normal((2, 6 * sr)).astype(np.float32)
    gen = rng.standard_normal((2, 6 * sr)).astype(np.float32)
    fade = int(0.03 * sr)
    out = splice(orig, gen, 2 * sr, 4 * sr, fade)
    lo, hi = 2 * sr - fade // 2, 4 * sr + fade - fade // 2
    assert np.array_equal(out[:, :lo], orig[:, :lo])
    assert np.array_equal(out[:, hi:], orig[:, hi:])
    inner = slice(2 * sr + fade, 4 * sr - fade)
    assert np.array_equal(out[:, inner], gen[:, inner])
    fin, fout = equal_power_fade(256)
    np.testing.assert_allclose(fin**2 + fout**2, 1.0, atol=1e-6)


# ----------------------------------------------------------------------------- harmony guidance

def _chroma(frames: int, classes: dict[int, float]) -> torch.Tensor:
    c = torch.zeros(1, 12, frames)
    for pc, v in classes.items():
        c[0, pc] = v
    return c


def test_sounding_classes_count_strong_classes_and_reach_two_frames_either_side():
    ctx = torch.zeros(1, 12, 9)
    ctx[0, 0, 4], ctx[0, 4, 4], ctx[0, 7, 4] = 1.0, 0.6, 0.2  # C strong, E half, G faint
    s = sounding_classes(ctx)
    assert s[0, 0, 4] == 1.0 and s[0, 4, 4] == 1.0 and s[0, 7, 4] == 0.0
    assert torch.equal(s[0, 0, 2:7], torch.ones(5)) and s[0, 0, 1] == 0 and s[0, 0, 7] == 0
    assert 0.0 < float(sounding_classes(_chroma(1, {2: 0.35}))[0, 2, 0]) < 1.0  # the ramp


def test_off_harmony_is_the_share_of_chroma_off_the_context_over_sounding_frames():
    snd = sounding_classes(_chroma(6, {0: 1.0, 7: 1.0}), spread=0)
    snd[..., 4:] = 0.0  # the context falls silent: those frames do not count
    assert float(off_harmony(_chroma(6, {0: 1.0, 7: 0.5}), snd)) < 1e-3
    assert float(off_harmony(_chroma(6, {1: 1.0, 6: 1.0}), snd)) > 0.99
    half = _chroma(6, {0: 1.0, 1: 1.0})
    half[0, :, 4:] = _chroma(2, {3: 1.0})[0]  # off the context where it is silent: ignored
    assert abs(float(off_harmony(half, snd)) - 0.5) < 1e-3


class _ChromaReadout(torch.nn.Module):
    """A stand-in probe: the chroma is the exponential of the first 12 latent channels."""

    def forward(self, z):
        return z[:, :12].exp()


def test_harmony_guidance_moves_a_take_into_the_harmony_and_leaves_a_fitting_one():
    torch.manual_seed(0)
    snd = sounding_classes(_chroma(16, {0: 1.0, 4: 1.0, 7: 1.0}))  # a C major chord
    probe = _ChromaReadout()
    off_take = torch.full((1, 16, 16), -4.0)
    off_take[:, 1] = off_take[:, 6] = 1.0  # C# and F#: outside the chord
    fitting = torch.full((1, 16, 16), -8.0)
    fitting[:, 0] = fitting[:, 7] = 1.0
    x = torch.cat([off_take, fitting])

    def identity(x, sigma):
        return x

    guided_d = harmony_guided(identity, probe, snd, scale=0.5)
    d = x
    with torch.inference_mode():  # as the driver samples
        for _ in range(10):  # a sampler calls it at every step
            d = guided_d(d, torch.ones(2))
    before, after = off_harmony(probe(x), snd), off_harmony(probe(d), snd)
    assert before[0] > 0.98 and after[0] < 0.5
    assert torch.allclose(d[1], x[1], atol=1e-2)  # already in the chord: barely moved
    assert torch.equal(harmony_guided(identity, probe, snd, scale=0.0)(x, torch.ones(2)), x)


class _WithDrumRow(torch.nn.Module):
    """The stand-in chroma, and a 13th row that says how much the take is a drum part."""

    def __init__(self, drums: float):
        super().__init__()
        self.drums = drums

    def forward(self, z):
        chroma = z[:, :12].exp()
        return torch.cat([chroma, torch.full_like(chroma[:, :1], self.drums)], dim=1)


def test_harmony_guidance_leaves_what_the_probe_hears_as_drums_alone():
    snd = sounding_classes(_chroma(16, {0: 1.0, 4: 1.0, 7: 1.0}))
    x = torch.full((1, 16, 16), -4.0)
    x[:, 1] = 1.0  # off the chord

    def identity(x, sigma):
        return x

    pitched = harmony_guided(identity, _WithDrumRow(0.0), snd, scale=0.5)(x, torch.ones(1))
    drums = harmony_guided(identity, _WithDrumRow(1.0), snd, scale=0.5)(x, torch.ones(1))
    half = harmony_guided(identity, _WithDrumRow(0.5), snd, scale=0.5)(x, torch.ones(1))
    assert not torch.equal(pitched, x) and torch.equal(drums, x)
    torch.testing.assert_close(half - x, 0.5 * (pitched - x))


def test_onset_places_mark_strong_context_onsets_and_their_neighbours():
    on = torch.full((1, 4, 3), 0.45)  # ordinary quarter frames
    on[0, 1, 1] = 1.5  # a strong onset in the second quarter of frame 1: place 5
    p = onset_places(on)
    assert p.shape == (1, 1, 12)
    assert torch.equal(p[0, 0, 3:8], torch.ones(5)) and p[0, 0, :3].sum() == 0
    assert p[0, 0, 8:].sum() == 0
    assert abs(float(off_beat(torch.ones(1, 1, 12), p)) - 7 / 12) < 1e-3


class _OnsetReadout(torch.nn.Module):
    """A stand-in feature probe: rows 12-15 (the onsets) are the exponential of latent
    channels 12-15."""

    def forward(self, z):
        return torch.cat([z[:, :12], z[:, 12:16].exp()], dim=1)


def test_rhythm_guidance_moves_onsets_to_the_context_and_leaves_drums_alone():
    ctx = torch.full((1, 4, 8), 0.45)
    ctx[0, 0, ::2] = 2.0  # the context starts a note on every other frame
    places = onset_places(ctx)
    x = torch.full((1, 16, 8), -6.0)
    x[:, 12, 1::2] = 1.0  # the take's onsets fall on the frames between

    def identity(x, sigma):
        return x

    probe = _OnsetReadout()

    def off(z):
        return float(off_beat(quarter_frames(probe(z)[:, 12:16]), places))

    d = x
    with torch.inference_mode():
        for _ in range(10):
            d = rhythm_guided(identity, probe, _WithDrumRow(0.0), places, 0.5)(d, torch.ones(1))
    assert off(x) > 0.9 and off(d) < off(x) - 0.3
    drums = rhythm_guided(identity, probe, _WithDrumRow(1.0), places, 0.5)(x, torch.ones(1))
    assert torch.equal(drums, x)
