"""Sampling procedures as wrappers around the denoiser or around the step.

None of these is a sampler of its own: each returns a denoiser, a step hook or a plain
function that `engine.diffusion.edm`'s samplers and `engine.generation.driver` compose.

- `guided`: two-scale classifier-free guidance, all branches in one batched forward pass.
- `harmony_guided`, `rhythm_guided`: move the denoised estimate towards the context's pitch
  classes / onsets, down the gradient of what a small probe reads off it (`steered`).
- `inpaint_hook`: replace the kept frames by the known latents noised to the current σ.
- `loop_hook`: make the window periodic (the first 1/n of the frames tiled over it) for the
  first fraction of the steps.
- `plan_windows`: any-length generation as overlapping windows held together by inpainting.
- `splice`: put generated audio back into the user's audio with equal-power crossfades, so
  that outside the region every sample is the user's own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from engine.diffusion.edm import Denoiser, EDMPrecond
from engine.models.probe import CHROMA_ROWS, DRUM_ROW, ONSET_ROWS_END

# ----------------------------------------------------------------------------- guidance


@dataclass(frozen=True)
class Branch:
    """One forward pass of the guided batch: which conditions it sees and its coefficient."""

    context: bool
    clap: bool
    coef: float


def guidance_branches(has_context: bool, has_clap: bool, w_ctx: float, w_clap: float
                      ) -> list[Branch]:
    """The branches of D = D(0,0) + w_ctx·(D(c,0) − D(0,0)) + w_clap·(D(c,e) − D(c,0)).

    Written as a weighted sum, D = (1 − w_ctx)·D(0,0) + (w_ctx − w_clap)·D(c,0) + w_clap·D(c,e).
    A missing condition removes its term, so the formula becomes ordinary CFG on the other:
    no CLAP gives (1 − w_ctx)·D(0,0) + w_ctx·D(c,0); no context gives
    (1 − w_clap)·D(0,0) + w_clap·D(0,e). Branches with a zero coefficient are not run, so
    weights of 1 run exactly the conditional branch alone.
    """
    if has_context and has_clap:
        raw = [Branch(False, False, 1 - w_ctx), Branch(True, False, w_ctx - w_clap),
               Branch(True, True, w_clap)]
    elif has_context:
        raw = [Branch(False, False, 1 - w_ctx), Branch(True, False, w_ctx)]
    elif has_clap:
        raw = [Branch(False, False, 1 - w_clap), Branch(False, True, w_clap)]
    else:
        raw = [Branch(False, False, 1.0)]
    return [b for b in raw if b.coef != 0.0]


def guided(precond: EDMPrecond, context: torch.Tensor | None, clap: torch.Tensor | None,
           w_ctx: float, w_clap: float) -> Denoiser:
    """A denoiser that applies two-scale guidance over one batched forward pass.

    `context` (1 or B, C, F) and `clap` (1 or B, D) are the conditions (None = absent); rows of
    x are takes. Each branch is a copy of the batch with its own absent flags.
    """
    branches = guidance_branches(context is not None, clap is not None, w_ctx, w_clap)

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        nb = len(branches)
        xs = x.repeat(nb, 1, 1)
        sig = sigma.reshape(-1).expand(b).repeat(nb)
        ctx = None if context is None else context.expand(b, -1, -1).repeat(nb, 1, 1)
        emb = None if clap is None else clap.expand(b, -1).repeat(nb, 1)
        cmask = torch.tensor([br.context for br in branches], device=x.device).repeat_interleave(b)
        emask = torch.tensor([br.clap for br in branches], device=x.device).repeat_interleave(b)
        d = precond(xs, sig, context=ctx, clap=emb, context_mask=cmask, clap_mask=emask)
        if nb == 1 and branches[0].coef == 1.0:
            return d
        parts = d.split(b)
        out = parts[0] * branches[0].coef
        for br, part in zip(branches[1:], parts[1:]):
            out = out + part * br.coef
        return out

    denoise.branches = branches  # type: ignore[attr-defined]
    return denoise


# ----------------------------------------------------------------------------- harmony guidance

HARMONY_SPREAD = 2  # frames either side whose context pitch classes a frame may use (~±170 ms)


def sounding_classes(context_chroma: torch.Tensor, spread: int = HARMONY_SPREAD) -> torch.Tensor:
    """(B, 12, F) how fully each pitch class sounds in the context near each frame, in [0, 1].

    `context_chroma` is the context's peak-relative chroma (`context_features`: the strongest
    class of a frame is 1, a silent frame 0). A class at half the frame's strongest or more
    counts fully, one under a quarter not at all, with a ramp between; the result is the most
    a class reaches within `spread` frames, so a note may start a little before the chord does.
    """
    weight = ((context_chroma - 0.25) / 0.25).clamp(0.0, 1.0)
    return torch.nn.functional.max_pool1d(weight, 2 * spread + 1, stride=1, padding=spread)


def off_harmony(chroma: torch.Tensor, sounding: torch.Tensor) -> torch.Tensor:
    """(B,) the share of a stem's chroma (B, 12, F; non-negative) that lies on classes the
    context does not sound, over the frames where the context sounds any."""
    chroma = chroma.clamp_min(0.0)
    off = (chroma * (1.0 - sounding)).sum(1) / (chroma.sum(1) + 1e-3)
    heard = (sounding.amax(1) > 0).to(chroma.dtype).expand_as(off)
    return (off * heard).sum(-1) / heard.sum(-1).clamp_min(1.0)


def harmony_guided(denoiser: Denoiser, probe: torch.nn.Module, sounding: torch.Tensor,
                   scale: float) -> Denoiser:
    """A denoiser whose estimate is moved, at every call, down the gradient of `off_harmony`
    of the chroma a probe reads off it: sampling-time guidance by a differentiable read-out,
    in the manner of guidance-gradient music production (seed 001).

    `probe` maps normalised latents (B, C, F) to features whose first 12 rows are the stem's
    chroma and, if it has a 13th, how much the stem is a drum part (0-1); `sounding` is
    (1 or B, 12, F) from `sounding_classes`. See `steered` for the size of the step.
    """
    def objective(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        read = probe(z)
        return off_harmony(read[:, :CHROMA_ROWS], sounding), _not_drums(read)

    return steered(denoiser, objective, scale)


# ----------------------------------------------------------------------------- rhythm guidance

RHYTHM_SPREAD = 2  # quarter frames either side of a context onset that count (~±43 ms)
ONSET_ROWS = slice(CHROMA_ROWS, ONSET_ROWS_END)  # a feature probe's quarter-frame onsets


def quarter_frames(onsets: torch.Tensor) -> torch.Tensor:
    """(B, 4, F) onset strengths per quarter of each frame -> (B, 1, 4F) in time order."""
    return onsets.transpose(1, 2).reshape(onsets.shape[0], 1, -1)


def onset_places(context_onsets: torch.Tensor, spread: int = RHYTHM_SPREAD) -> torch.Tensor:
    """(B, 1, 4F) how clearly the context has an onset near each quarter frame, in [0, 1].

    `context_onsets` are the context's quarter-frame onset features (B, 4, F): log1p of the
    spectral flux over its mean where the clip sounds, so about 0.45 is an ordinary quarter
    frame. Under 0.6 (a flux 0.8 times the mean) counts as no onset, 1.2 (2.3 times the mean)
    or more fully; the result is the most a place reaches within `spread` quarter frames."""
    weight = ((quarter_frames(context_onsets) - 0.6) / 0.6).clamp(0.0, 1.0)
    return torch.nn.functional.max_pool1d(weight, 2 * spread + 1, stride=1, padding=spread)


def off_beat(onsets: torch.Tensor, places: torch.Tensor) -> torch.Tensor:
    """(B,) the share of a stem's onset strength (B, 1, 4F; clamped at 0) that falls where the
    context has no onset."""
    onsets = onsets.clamp_min(0.0)
    return (onsets * (1.0 - places)).sum((1, 2)) / (onsets.sum((1, 2)) + 1e-3)


def rhythm_guided(denoiser: Denoiser, probe: torch.nn.Module, drum_probe: torch.nn.Module,
                  places: torch.Tensor, scale: float) -> Denoiser:
    """A denoiser whose estimate is moved down the gradient of `off_beat` of the onsets
    `probe` reads off it (its rows `ONSET_ROWS`: the training's feature probe), so the part
    starts its notes where the context starts its own. `drum_probe` (the harmony probe) says
    how much the take is a drum part: drums, which follow the context's onsets already, are
    left alone. `places` is (1 or B, 1, 4F) from `onset_places`."""
    def objective(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return off_beat(quarter_frames(probe(z)[:, ONSET_ROWS]), places), \
            _not_drums(drum_probe(z))

    return steered(denoiser, objective, scale)


def _not_drums(read: torch.Tensor) -> torch.Tensor:
    """(B,) 1 - how much a probe with a drum row hears a drum part (1 without the row)."""
    if read.shape[1] <= DRUM_ROW:
        return read.new_ones(read.shape[0])
    return 1.0 - read[:, DRUM_ROW].detach().mean(-1).clamp(0.0, 1.0)


def steered(denoiser: Denoiser, objective, scale: float) -> Denoiser:
    """A denoiser whose estimate D is moved, at every call, down the gradient of a read-out.

    `objective(z)` gives (B,) the share of the take that is off (differentiable in z) and (B,)
    how much the guidance may act on it. The step is the gradient scaled to an RMS of `scale`
    per take (in units of the data's standard deviation), times how far off the take is (one
    that already fits is barely moved) and how much it may act. Only the read-out is
    differentiated, never the diffusion network.
    """
    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        d = denoiser(x, sigma)
        with torch.inference_mode(False), torch.enable_grad():
            z = d.detach().clone().requires_grad_(True)
            off, may = objective(z)
            (grad,) = torch.autograd.grad(off.sum(), z)
        weight = off.detach() * may.detach()
        rms = grad.pow(2).mean(dim=(1, 2), keepdim=True).sqrt().clamp_min(1e-12)
        step = (scale * weight[:, None, None]) * grad / rms
        # a take whose read-out overflowed is left as the network made it
        return d - torch.where(torch.isfinite(step), step, torch.zeros_like(step))

    return denoise


# ----------------------------------------------------------------------------- noise


def randn_per_take(generators: Sequence[torch.Generator], shape: tuple[int, ...],
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """Gaussian noise (len(generators), *shape), each row from its own CPU generator.

    Drawing on the CPU and moving makes a seed give the same take on CPU, CUDA and MPS; one
    generator per take makes take k depend only on its own seed.
    """
    rows = [torch.randn(shape, generator=g, dtype=torch.float32) for g in generators]
    return torch.stack(rows).to(device)


# ----------------------------------------------------------------------------- step hooks


class StepHook:
    """Rewrites the state before each step (`hook(i, x, sigma)`), and the final state once
    sampling ends (`hook.finish(x)`): each wrapper carries its own clean-up."""

    def __call__(self, i: int, x: torch.Tensor, sigma: float) -> torch.Tensor:
        return x

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        return x


class InpaintHook(StepHook):
    """Before each step, set the kept frames to the known latents noised to the current σ;
    at the end, to the clean known latents.

    `known` (B or 1, C, F) clean latents; `keep` (F,) bool, True where frames are kept.
    """

    def __init__(self, known: torch.Tensor, keep: torch.Tensor,
                 generators: Sequence[torch.Generator]):
        self.known = known
        self.keep = keep.to(known.device)[None, None, :]
        self.generators = generators

    def __call__(self, i: int, x: torch.Tensor, sigma: float) -> torch.Tensor:
        noise = randn_per_take(self.generators, tuple(x.shape[1:]), x.device)
        noisy = self.known + sigma * noise
        return torch.where(self.keep, noisy.to(x.dtype), x)

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(self.keep, self.known, x)


def inpaint_hook(known: torch.Tensor, keep: torch.Tensor,
                 generators: Sequence[torch.Generator]) -> InpaintHook:
    return InpaintHook(known, keep, generators)


def tile_period(x: torch.Tensor, n: int) -> torch.Tensor:
    """The first ceil(F / n) frames of x tiled over its F frames."""
    frames = x.shape[-1]
    period = math.ceil(frames / n)
    reps = math.ceil(frames / period)
    return x[..., :period].repeat(*([1] * (x.ndim - 1)), reps)[..., :frames]


class LoopHook(StepHook):
    """For the first `fraction` of the steps, make the window periodic with n repetitions;
    with the whole of the steps, the result is made exactly periodic at the end too."""

    def __init__(self, n: int, fraction: float, total_steps: int):
        self.n = n
        self.fraction = fraction
        self.loop_steps = int(round(max(0.0, min(1.0, fraction)) * total_steps))

    def __call__(self, i: int, x: torch.Tensor, sigma: float) -> torch.Tensor:
        return tile_period(x, self.n) if i < self.loop_steps else x

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        return tile_period(x, self.n) if self.fraction >= 1.0 else x


def loop_hook(n: int, fraction: float, total_steps: int) -> LoopHook:
    return LoopHook(n, fraction, total_steps)


class ChainedHooks(StepHook):
    """Several hooks in order, before each step and at the end."""

    def __init__(self, hooks: Sequence[StepHook]):
        self.hooks = tuple(hooks)

    def __call__(self, i: int, x: torch.Tensor, sigma: float) -> torch.Tensor:
        for h in self.hooks:
            x = h(i, x, sigma)
        return x

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        for h in self.hooks:
            x = h.finish(x)
        return x


def chain_hooks(*hooks: StepHook | None) -> StepHook | None:
    live = [h for h in hooks if h is not None]
    if not live:
        return None
    return live[0] if len(live) == 1 else ChainedHooks(live)


# ----------------------------------------------------------------------------- windows


@dataclass(frozen=True)
class Window:
    start: int  # first latent frame
    end: int  # one past the last frame
    held: int  # frames at the start fixed by the previous window's result


def plan_windows(frames: int, window: int, overlap: int) -> list[Window]:
    """Cover `frames` with windows of at most `window` frames overlapping by `overlap`.

    The first `held` frames of every window but the first are earlier windows' output, held
    fixed by inpainting, so consecutive windows agree exactly where they meet; a window
    replaces whatever earlier windows made after its held frames. Every window is full
    length and holds exactly `overlap` frames, the case the model was trained for: the last
    one ends at `frames` and so starts earlier, re-making some of its predecessor's free
    frames. Both ways out of that were measured to make the end of every take longer than one
    window louder than the rest: stretching the last window back over all the frames before
    it (holding up to `window - 1`: 10-15 dB), or leaving it short (13 free frames of a
    45-frame window: latents 1.7x the take's median norm, ~5 dB).
    """
    if frames <= window:
        return [Window(0, frames, 0)]
    if not 0 < overlap < window:
        raise ValueError("overlap must be between 0 and the window length")
    out = [Window(0, window, 0)]
    while out[-1].end < frames:
        start = min(out[-1].end - overlap, frames - window)
        out.append(Window(start, start + window, overlap))
    return out


# ----------------------------------------------------------------------------- audio splice


def region_frames(start_s: float, end_s: float, sample_rate: int, hop: int, frames: int,
                  margin: int = 1) -> torch.Tensor:
    """A (frames,) bool mask, True for latent frames that must be regenerated for a region.

    Frames touching the region are regenerated, plus `margin` frames either side so the
    decoder has room to blend; the crossfade at the splice hides the rest.
    """
    first = max(0, int(math.floor(start_s * sample_rate / hop)) - margin)
    last = min(frames, int(math.ceil(end_s * sample_rate / hop)) + margin)
    mask = torch.zeros(frames, dtype=torch.bool)
    mask[first:last] = True
    return mask


def equal_power_fade(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(fade_in, fade_out) of n samples with fade_in² + fade_out² = 1."""
    t = (np.arange(n, dtype=np.float64) + 0.5) / max(n, 1)
    return np.sin(0.5 * np.pi * t).astype(np.float32), np.cos(0.5 * np.pi * t).astype(np.float32)


def splice(original: np.ndarray, generated: np.ndarray, start: int, end: int,
           fade: int) -> np.ndarray:
    """Generated audio inside [start, end), the original outside, equal-power crossfades.

    Both are (channels, T) at the same rate and length. The fades straddle the region edges
    (fade // 2 samples either side), so outside [start - fade//2, end + fade//2) the result is
    the original sample for sample.
    """
    if original.shape != generated.shape:
        raise ValueError(f"shapes differ: {original.shape} vs {generated.shape}")
    length = original.shape[-1]
    start, end = max(0, start), min(length, end)
    out = original.copy()
    half = fade // 2
    a0, a1 = max(0, start - half), min(length, start + (fade - half))
    b0, b1 = max(0, end - half), min(length, end + (fade - half))
    if a1 > b0:  # region shorter than a fade: shrink the fades to meet in the middle
        mid = (start + end) // 2
        a1 = b0 = max(a0, min(mid, b1))
    out[..., a1:b0] = generated[..., a1:b0]
    if a1 > a0:
        fin, fout = equal_power_fade(a1 - a0)
        out[..., a0:a1] = original[..., a0:a1] * fout + generated[..., a0:a1] * fin
    if b1 > b0:
        fin, fout = equal_power_fade(b1 - b0)
        out[..., b0:b1] = generated[..., b0:b1] * fout + original[..., b0:b1] * fin
    return out


def match_bridge_level(base: np.ndarray, gen: np.ndarray, start: int, end: int, sr: int,
                       context_s: float = 1.0, max_boost_db: float = 12.0) -> tuple[np.ndarray, float]:
    """A transition's bridge (gen[..., start:end]) brought to the loudness of the parts
    around it: one gain so its RMS equals the mean RMS (in dB) of the `context_s` seconds of
    `base` before `start` and after `end`. Boosts are capped at `max_boost_db` (a near-silent
    bridge stays a quiet one rather than amplified noise). Returns (gen scaled, gain in dB)."""
    n = int(round(context_s * sr))
    parts = [base[..., max(0, start - n):start], base[..., end:end + n]]
    levels = [float(np.sqrt(np.mean(np.square(p, dtype=np.float64)))) for p in parts if p.size]
    levels = [v for v in levels if v > 1e-5]
    bridge = gen[..., start:end]
    level = float(np.sqrt(np.mean(np.square(bridge, dtype=np.float64)))) if bridge.size else 0.0
    if not levels or level <= 1e-6:
        return gen, 0.0
    target_db = float(np.mean([20 * np.log10(v) for v in levels]))
    gain_db = float(np.clip(target_db - 20 * np.log10(level), -24.0, max_boost_db))
    return (gen * np.float32(10 ** (gain_db / 20))).astype(np.float32), round(gain_db, 3)
