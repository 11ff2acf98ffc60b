"""One plan per mode: how long the result is, which latents are held, where sampling
starts and what the result is spliced into. Each plan function reads the request and the
resolved parameters and returns a frozen `Plan`; the driver does the rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from engine.errors import RequestError
from engine.generation.procedures import region_frames
from engine.generation.request import MAX_SECONDS, Audio, GenerationRequest, ResolvedRequest

DEFAULT_SECONDS = 10.0


def mono(audio: Audio) -> np.ndarray:
    a = np.asarray(audio, dtype=np.float32)
    return a if a.ndim == 1 else a.mean(axis=0)


def channels(audio: Audio) -> np.ndarray:
    a = np.asarray(audio, dtype=np.float32)
    return a[None, :] if a.ndim == 1 else a


def fit(audio: np.ndarray, length: int) -> np.ndarray:
    """Cut or zero-pad the last axis to `length`."""
    n = audio.shape[-1]
    if n >= length:
        return audio[..., :length]
    pad = [(0, 0)] * (audio.ndim - 1) + [(0, length - n)]
    return np.pad(audio, pad)



@dataclass(frozen=True)
class Lengths:
    """One result's length at the three rates, and in latent frames."""

    seconds: float
    t_model: int
    t_out: int
    frames: int


@dataclass(frozen=True)
class Rates:
    """The request's, the model's and the output's sample rates, and the latent hop."""

    sr_in: int
    sr_model: int
    sr_out: int
    hop: int

    def lengths(self, samples_in: int) -> Lengths:
        seconds = samples_in / self.sr_in
        if seconds > MAX_SECONDS:
            raise RequestError(f"{seconds:.0f} s is longer than the {MAX_SECONDS:g} s limit")
        t_model = int(round(seconds * self.sr_model))
        return Lengths(seconds, t_model, int(round(seconds * self.sr_out)),
                       math.ceil(t_model / self.hop))

    def to_model(self, audio: Audio) -> np.ndarray:
        """Mono at the model's rate."""
        from engine.audio import resample

        m = mono(audio)
        return resample(m, self.sr_in, self.sr_model) if self.sr_in != self.sr_model else m

    def at_out(self, audio: Audio) -> np.ndarray:
        """(channels, T) at the output rate."""
        from engine.audio import resample

        a = channels(audio)
        return a if self.sr_in == self.sr_out else resample(a, self.sr_in, self.sr_out)


@dataclass(frozen=True, eq=False)
class Plan:
    """What a mode asks of the driver: the length, the latents to hold (`known_audio` where
    `keep` is True), where to start (`init_audio` noised to `strength`, or the known latents
    with `init_known`), and the user's audio the result is spliced into (`base`, `region`)."""

    lengths: Lengths
    known_audio: np.ndarray | None = None  # model-rate mono audio whose latents are kept
    keep: torch.Tensor | None = None  # (frames,) bool
    init_audio: np.ndarray | None = None  # model-rate mono audio to start from
    init_known: bool = False
    strength: float = 1.0
    base: np.ndarray | None = None  # output-rate audio the result is spliced into
    region: tuple[int, int] | None = None  # samples of `base` that are generated


def _plan_new(req: GenerationRequest, r: ResolvedRequest, io: Rates) -> Plan:
    """Plain generation, over a context or not: the duration, else the context's length."""
    if req.duration is not None:
        n = int(round(req.duration * io.sr_in))
    elif req.context is not None:
        n = np.asarray(req.context).shape[-1]
    else:
        n = int(round(DEFAULT_SECONDS * io.sr_in))
    return Plan(io.lengths(n))


def _plan_variation(req: GenerationRequest, r: ResolvedRequest, io: Rates) -> Plan:
    """Start from the clip's latents noised to `strength`."""
    ln = io.lengths(np.asarray(req.variation_of).shape[-1])
    return Plan(ln, init_audio=fit(io.to_model(req.variation_of), ln.t_model),
                strength=r.strength)


def _plan_inpaint(req: GenerationRequest, r: ResolvedRequest, io: Rates) -> Plan:
    """Redraw a region of the source, holding the rest; regenerate also starts from the
    source's own latents noised to `strength`."""
    ln = io.lengths(np.asarray(req.source).shape[-1])
    start, end = req.inpaint
    regenerate = r.mode == "regenerate"
    return Plan(ln, known_audio=fit(io.to_model(req.source), ln.t_model),
                keep=~region_frames(start, end, io.sr_model, io.hop, ln.frames),
                init_known=regenerate, strength=r.strength if regenerate else 1.0,
                base=fit(io.at_out(req.source), ln.t_out),
                region=(int(round(start * io.sr_out)), int(round(end * io.sr_out))))


def _plan_continue(req: GenerationRequest, r: ResolvedRequest, io: Rates) -> Plan:
    """Hold the clip, generate `duration` seconds after it."""
    extra = req.duration if req.duration is not None else DEFAULT_SECONDS
    clip_in = np.asarray(req.continue_from).shape[-1]
    ln = io.lengths(clip_in + int(round(extra * io.sr_in)))
    clip = io.at_out(req.continue_from)
    clip_s = clip.shape[-1] / io.sr_out
    return Plan(ln, known_audio=fit(io.to_model(req.continue_from), ln.t_model),
                keep=~region_frames(clip_s, ln.seconds, io.sr_model, io.hop, ln.frames,
                                    margin=1),
                base=fit(clip, ln.t_out), region=(clip.shape[-1], ln.t_out))


def _plan_transition(req: GenerationRequest, r: ResolvedRequest, io: Rates) -> Plan:
    """Hold both clips with `gap` seconds of silence between them and generate the gap."""
    a_in, z_in = (np.asarray(t) for t in req.transition)
    ln = io.lengths(a_in.shape[-1] + int(round(req.gap * io.sr_in)) + z_in.shape[-1])
    a_out, z_out = io.at_out(req.transition[0]), io.at_out(req.transition[1])
    gap_out = ln.t_out - a_out.shape[-1] - z_out.shape[-1]
    ch = max(a_out.shape[0], z_out.shape[0])
    base = np.concatenate([np.broadcast_to(a_out, (ch, a_out.shape[-1])),
                           np.zeros((ch, gap_out), np.float32),
                           np.broadcast_to(z_out, (ch, z_out.shape[-1]))], axis=-1)
    a_m, z_m = io.to_model(req.transition[0]), io.to_model(req.transition[1])
    gap_m = ln.t_model - len(a_m) - len(z_m)
    known = fit(np.concatenate([a_m, np.zeros(max(gap_m, 0), np.float32), z_m]), ln.t_model)
    a_s = a_out.shape[-1] / io.sr_out
    return Plan(ln, known_audio=known,
                keep=~region_frames(a_s, a_s + req.gap, io.sr_model, io.hop, ln.frames),
                base=base, region=(a_out.shape[-1], a_out.shape[-1] + gap_out))


PLANS = {"single": _plan_new, "accompaniment": _plan_new, "variation": _plan_variation,
         "inpaint": _plan_inpaint, "regenerate": _plan_inpaint, "continue": _plan_continue,
         "transition": _plan_transition}
