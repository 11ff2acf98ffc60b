"""The generation API: a typed request in, progress events out, stems back.

`Generator.run(request)` is a plain Python generator (no Qt): it yields `Progress` events
and returns a list of `Stem`s. The app drives it from a worker thread, the CLI from a loop.
Cancel with a `threading.Event` (checked before every network step) or by closing the
generator; either stops within one step and writes nothing.

Every procedure of the feature table goes through one latent routine, `_sample_latents`,
which composes the sampler with wrappers: guidance around the denoiser, inpainting and loop
sampling around the step, windows for any length, a start from a noised latent for
variations. See `engine.procedures`.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections.abc import Generator as PyGenerator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine import __version__
from engine.diffusion.edm import SAMPLERS, karras_sigmas, sigmas_from_strength
from engine.errors import Cancelled, RequestError
from engine.gain import apply_ceiling, ceiling_gain
from engine.procedures import (
    chain_hooks,
    guided,
    inpaint_hook,
    loop_hook,
    match_bridge_level,
    plan_windows,
    randn_per_take,
    region_frames,
    splice,
    tile_period,
)

OUTPUT_RATE = 48000
DEFAULT_SECONDS = 10.0
SPLICE_FADE_S = 0.03
TRANSITION_FADE_S = 0.08  # a bridge's fades: long, and inside the parts around it
MAX_TAKES = 8
MAX_STEPS = 500
MAX_SECONDS = 600.0

Audio = np.ndarray  # (channels, T) or (T,) float32


@dataclass
class GenerationRequest:
    """Everything that determines a take. All audio is float32 at `sample_rate`.

    Parameters left as None take the bundle's defaults. Modes are exclusive: plain
    generation (optionally over a context), `variation_of`, `inpaint` + `source`,
    `continue_from`, `transition`.
    """

    context: Audio | None = None
    sample_rate: int = OUTPUT_RATE
    prompt: str | None = None
    reference: Audio | None = None
    mix: float | None = None
    cfg_context: float | None = None
    cfg_clap: float | None = None
    steps: int | None = None
    seed: int = 0
    takes: int = 1
    duration: float | None = None
    stereo_width: float = 0.0
    variation_of: Audio | None = None
    strength: float | None = None
    inpaint: tuple[float, float] | None = None
    source: Audio | None = None
    regenerate: bool = False
    loop: tuple[int, float] | None = None
    continue_from: Audio | None = None
    transition: tuple[Audio, Audio] | None = None
    gap: float = 4.0
    sampler: str | None = None
    s_churn: float = 0.0
    # map the prompt's text embedding onto the training stems' audio embeddings with the
    # bundle's text prior (None: whenever the bundle has one)
    text_prior: bool | None = None
    output_rate: int = OUTPUT_RATE
    labels: dict[str, str] = field(default_factory=dict)  # file names etc. for provenance

    @property
    def mode(self) -> str:
        if self.variation_of is not None:
            return "variation"
        if self.inpaint is not None:
            return "regenerate" if self.regenerate else "inpaint"
        if self.continue_from is not None:
            return "continue"
        if self.transition is not None:
            return "transition"
        return "accompaniment" if self.context is not None else "single"


@dataclass
class Progress:
    stage: str  # "prepare", "encode", "condition", "sample", "stereo", "decode", "done"
    step: int
    total: int
    eta_s: float | None = None
    message: str = ""
    preview: Any = None  # with run(previews=True): the current estimate D(x; σ) of the latents

    @property
    def fraction(self) -> float:
        return self.step / self.total if self.total else 0.0


@dataclass
class Stem:
    audio: np.ndarray  # (channels, T) float32
    sample_rate: int
    seed: int
    take: int
    provenance: dict

    @property
    def seconds(self) -> float:
        return self.audio.shape[-1] / self.sample_rate

    @property
    def channels(self) -> int:
        return self.audio.shape[0]

    def save(self, path: str | Path, subtype: str = "PCM_24") -> Path:
        """Write the WAV and its `.json` provenance sidecar, each atomically."""
        from engine.audio import write_audio
        from engine.weights import atomic_write_bytes

        path = Path(path)
        write_audio(path, self.audio, self.sample_rate, subtype=subtype)
        side = path.with_suffix(".json")
        atomic_write_bytes(side, (json.dumps(self.provenance, indent=2) + "\n").encode())
        return path


def audio_digest(audio: np.ndarray | None) -> str | None:
    if audio is None:
        return None
    a = np.ascontiguousarray(audio, dtype=np.float32)
    return hashlib.sha256(a.tobytes() + str(a.shape).encode()).hexdigest()[:16]


def pick_device(name: str = "auto") -> torch.device:
    """`auto` prefers CUDA, then MPS, then the CPU; an explicit name must be available."""
    name = (name or "auto").lower()
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if has_mps else torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RequestError("--device cuda: no CUDA GPU is available on this machine")
    if name == "mps" and not has_mps:
        raise RequestError("--device mps: Apple MPS is not available on this machine")
    if name not in {"cpu", "cuda", "mps"} and not name.startswith("cuda:"):
        raise RequestError(f"unknown device {name!r}: use auto, cpu, cuda or mps")
    return torch.device(name)


def _mono(audio: Audio) -> np.ndarray:
    a = np.asarray(audio, dtype=np.float32)
    return a if a.ndim == 1 else a.mean(axis=0)


def _channels(audio: Audio) -> np.ndarray:
    a = np.asarray(audio, dtype=np.float32)
    return a[None, :] if a.ndim == 1 else a


def _fit(audio: np.ndarray, length: int) -> np.ndarray:
    """Cut or zero-pad the last axis to `length`."""
    n = audio.shape[-1]
    if n >= length:
        return audio[..., :length]
    pad = [(0, 0)] * (audio.ndim - 1) + [(0, length - n)]
    return np.pad(audio, pad)


def _check_audio(name: str, audio: Audio | None, sr: int) -> None:
    if audio is None:
        return
    a = np.asarray(audio)
    if a.ndim not in (1, 2) or a.shape[-1] == 0:
        raise RequestError(f"{name}: the audio is empty")
    if not np.isfinite(a).all():
        raise RequestError(f"{name}: the audio contains NaN or infinite samples")
    if a.shape[-1] < sr * 0.05:
        raise RequestError(f"{name}: the audio is too short ({a.shape[-1] / sr:.3f} s)")


class Generator:
    """Runs requests against one loaded bundle on one device."""

    def __init__(self, bundle, device: str | torch.device | None = None):
        self.bundle = bundle
        self.device = bundle.device if device is None else torch.device(device)

    # ------------------------------------------------------------------ validation
    def resolve(self, req: GenerationRequest) -> dict:
        """The request's parameters with bundle defaults filled in, validated."""
        d = self.bundle.defaults
        p = {
            "mode": req.mode,
            "steps": int(req.steps if req.steps is not None else d["steps"]),
            "cfg_context": float(req.cfg_context if req.cfg_context is not None
                                 else d["cfg_context"]),
            "cfg_clap": float(req.cfg_clap if req.cfg_clap is not None else d["cfg_clap"]),
            "sampler": req.sampler or d.get("sampler", "heun"),
            "s_churn": float(req.s_churn),
            "seed": int(req.seed),
            "takes": int(req.takes),
            "stereo_width": float(req.stereo_width),
            "strength": float(req.strength if req.strength is not None
                              else d.get("variation_strength", 0.5)),
            "mix": req.mix,
            "prompt": req.prompt,
            # only where a text embedding reaches the model (mix r = 0 is the reference alone)
            "text_prior": (self.bundle.prior is not None and req.text_prior is not False
                           and req.prompt is not None
                           and not (req.reference is not None and req.mix == 0)),
            "duration": req.duration,
            "inpaint": list(req.inpaint) if req.inpaint else None,
            "loop": list(req.loop) if req.loop else None,
            "gap": float(req.gap) if req.transition is not None else None,
        }
        if not 1 <= p["steps"] <= MAX_STEPS:
            raise RequestError(f"steps must be between 1 and {MAX_STEPS}")
        if not 1 <= p["takes"] <= MAX_TAKES:
            raise RequestError(f"takes must be between 1 and {MAX_TAKES}")
        if p["sampler"] not in SAMPLERS:
            raise RequestError(f"unknown sampler {p['sampler']!r}")
        for k in ("cfg_context", "cfg_clap"):
            if not (math.isfinite(p[k]) and -1 <= p[k] <= 20):
                raise RequestError(f"{k} must be a number between -1 and 20")
        if not 0 <= p["stereo_width"] <= 1:
            raise RequestError("stereo width must be between 0 and 1")
        if not 0 <= p["strength"] <= 1:
            raise RequestError("strength must be between 0 and 1")
        if req.mix is not None and not 0 <= req.mix <= 1:
            raise RequestError("mix (interpolation ratio r) must be between 0 and 1")
        if req.duration is not None and not 0 < req.duration <= MAX_SECONDS:
            raise RequestError(f"duration must be between 0 and {MAX_SECONDS:g} seconds")
        if req.prompt is not None and not req.prompt.strip():
            raise RequestError("the prompt is empty")
        if req.text_prior and self.bundle.prior is None:
            raise RequestError(f"the model {self.bundle.name} has no text prior")
        if req.sample_rate < 8000 or req.sample_rate > 384000:
            raise RequestError(f"unsupported sample rate {req.sample_rate} Hz")
        modes = [req.variation_of is not None, req.inpaint is not None,
                 req.continue_from is not None, req.transition is not None]
        if sum(modes) > 1:
            raise RequestError("choose one of variation, inpaint, continue and transition")
        for name in ("context", "reference", "variation_of", "source", "continue_from"):
            _check_audio(name.replace("_", " "), getattr(req, name), req.sample_rate)
        if req.transition is not None:
            for i, clip in enumerate(req.transition):
                _check_audio(f"transition clip {i + 1}", clip, req.sample_rate)
            if not 0 < req.gap <= 60:
                raise RequestError("the transition gap must be between 0 and 60 seconds")
        if req.inpaint is not None:
            if req.source is None:
                raise RequestError("inpainting needs the source audio to repair (--source)")
            start, end = req.inpaint
            length = np.asarray(req.source).shape[-1] / req.sample_rate
            if not (0 <= start < end <= length + 1e-6):
                raise RequestError(f"the region {start:g}-{end:g} s lies outside the source "
                                   f"clip (0-{length:.2f} s)")
        if req.loop is not None:
            n, frac = req.loop
            if int(n) < 1 or not 0 <= float(frac) <= 1:
                raise RequestError("loop needs repetitions >= 1 and a fraction between 0 and 1")
        return p

    # ------------------------------------------------------------------ helpers
    def _to_model(self, audio: Audio, sr: int) -> np.ndarray:
        from engine.audio import resample

        mono = _mono(audio)
        return resample(mono, sr, self.bundle.sample_rate) if sr != self.bundle.sample_rate \
            else mono

    def _encode(self, mono: np.ndarray) -> torch.Tensor:
        """Mono model-rate audio -> normalised latents (1, C, F)."""
        wave = torch.from_numpy(np.ascontiguousarray(mono)).to(self.device)[None]
        with torch.inference_mode():
            return self.bundle.normalize(self.bundle.cae.encode(wave).to(torch.float32))

    def _generators(self, seeds: list[int], salt: int = 0) -> list[torch.Generator]:
        return [torch.Generator().manual_seed((s * 1_000_003 + salt) % (2**63)) for s in seeds]

    # ------------------------------------------------------------------ the latent routine
    def _sample_latents(self, *, frames: int, context: torch.Tensor | None,
                        clap: torch.Tensor | None, p: dict, seeds: list[int], salt: int,
                        known: torch.Tensor | None = None, keep: torch.Tensor | None = None,
                        init: torch.Tensor | None = None, strength: float = 1.0,
                        loop: tuple[int, float] | None = None, cancel=None, stage="sample",
                        clock: list | None = None, previews: bool = False):
        """Sample (takes, C, frames) normalised latents, window by window.

        `known`/`keep`: frames held fixed by inpainting. `init` with `strength` < 1: start
        from that latent noised to the matching level (variations). Yields Progress.
        """
        b = self.bundle
        dev = self.device
        c = b.manifest["latent"]["dim"]
        k = len(seeds)
        gens = self._generators(seeds, salt)
        sigmas = karras_sigmas(p["steps"])
        if init is not None:
            sigmas = sigmas_from_strength(sigmas, strength)
        n_steps = len(sigmas) - 1
        windows = plan_windows(frames, int(b.manifest["window_frames"]),
                               int(b.manifest["overlap_frames"]))
        if loop is not None and len(windows) > 1:
            span = b.manifest["window_frames"] * b.hop / b.sample_rate
            raise RequestError(f"loop sampling works on up to {span:.1f} s at a time")
        out = torch.zeros(k, c, frames, device=dev)
        if init is not None:
            out = init.expand(k, -1, -1).clone().to(dev)
        if n_steps == 0:
            return out
        total = n_steps * len(windows)
        done = 0
        t0 = time.perf_counter() if clock is None else clock[0]
        sampler = SAMPLERS[p["sampler"]]
        for w in windows:
            sl = slice(w.start, w.end)
            n = w.end - w.start
            w_keep = torch.zeros(n, dtype=torch.bool)
            w_known = torch.zeros(k, c, n, device=dev)
            if keep is not None and known is not None:
                w_keep |= keep[sl]
                w_known = torch.where(keep[sl].to(dev)[None, None], known[..., sl].to(dev),
                                      w_known)
            if w.held:
                w_keep[: w.held] = True
                w_known[..., : w.held] = out[..., w.start: w.start + w.held]
            noise = randn_per_take(gens, (c, n), dev)
            if init is not None:
                x = out[..., sl] + sigmas[0].item() * noise
            else:
                x = noise * sigmas[0].item()
            ctx = None if context is None else context[..., sl]
            denoiser = guided(b.precond, ctx, clap, p["cfg_context"], p["cfg_clap"])
            hook = chain_hooks(
                inpaint_hook(w_known, w_keep, gens) if bool(w_keep.any()) else None,
                loop_hook(loop[0], loop[1], n_steps) if loop else None,
            )
            with torch.inference_mode():
                for step in sampler(denoiser, x, sigmas.to(dev), step_hook=hook,
                                    s_churn=p["s_churn"], generator=gens[0]):
                    x = step.x
                    done += 1
                    if cancel is not None and cancel.is_set():
                        raise Cancelled("generation cancelled")
                    elapsed = time.perf_counter() - t0
                    eta = elapsed / done * (total - done)
                    yield Progress(stage, done, total, eta,
                                   f"step {done}/{total}" if stage == "sample"
                                   else f"stereo {done}/{total}",
                                   step.denoised if previews else None)
            if bool(w_keep.any()):
                x = torch.where(w_keep.to(dev)[None, None], w_known, x)
            if loop and loop[1] >= 1.0:
                x = tile_period(x, loop[0])
            out[..., sl] = x
        return out

    # ------------------------------------------------------------------ run
    def run(self, req: GenerationRequest, cancel: threading.Event | None = None,
            previews: bool = False) -> PyGenerator[Progress, None, list[Stem]]:
        """Yield Progress events; return the stems. See the module docstring."""
        p = self.resolve(req)
        b = self.bundle
        sr_in, sr_model, sr_out = req.sample_rate, b.sample_rate, req.output_rate
        hop = b.hop
        clock = [time.perf_counter()]
        yield Progress("prepare", 0, 1, None, "preparing")

        # ---- lengths and the audio the result is built around (at the output rate)
        from engine.audio import resample

        def at_out(a: Audio) -> np.ndarray:
            a = _channels(a)
            return a if sr_in == sr_out else resample(a, sr_in, sr_out)

        base: np.ndarray | None = None  # user audio the result is spliced into (output rate)
        region: tuple[int, int] | None = None  # samples of `base` that are generated
        known_audio: np.ndarray | None = None  # model-rate mono audio whose latents are kept
        mode = p["mode"]
        if mode == "variation":
            length_in = np.asarray(req.variation_of).shape[-1]
        elif mode in ("inpaint", "regenerate"):
            length_in = np.asarray(req.source).shape[-1]
        elif mode == "continue":
            extra = req.duration if req.duration is not None else DEFAULT_SECONDS
            clip = np.asarray(req.continue_from).shape[-1]
            length_in = clip + int(round(extra * sr_in))
        elif mode == "transition":
            a, z = (np.asarray(t) for t in req.transition)
            length_in = a.shape[-1] + int(round(req.gap * sr_in)) + z.shape[-1]
        elif req.duration is not None:
            length_in = int(round(req.duration * sr_in))
        elif req.context is not None:
            length_in = np.asarray(req.context).shape[-1]
        else:
            length_in = int(round(DEFAULT_SECONDS * sr_in))
        seconds = length_in / sr_in
        if seconds > MAX_SECONDS:
            raise RequestError(f"{seconds:.0f} s is longer than the {MAX_SECONDS:g} s limit")
        t_model = int(round(seconds * sr_model))
        t_out = int(round(seconds * sr_out))
        frames = math.ceil(t_model / hop)

        # ---- encode the context and whatever latents are held fixed
        context = None
        yield Progress("encode", 0, 1, None, "encoding audio")
        if req.context is not None:
            ctx = _fit(self._to_model(req.context, sr_in), t_model)
            context = b.context_condition(self._encode(ctx), ctx)
        keep = known = init = None
        strength = 1.0
        if mode == "variation":
            init = self._encode(_fit(self._to_model(req.variation_of, sr_in), t_model))
            strength = p["strength"]
        elif mode in ("inpaint", "regenerate"):
            base = _fit(at_out(req.source), t_out)
            known_audio = _fit(self._to_model(req.source, sr_in), t_model)
            known = self._encode(known_audio)
            start, end = req.inpaint
            keep = ~region_frames(start, end, sr_model, hop, frames)
            region = (int(round(start * sr_out)), int(round(end * sr_out)))
            if mode == "regenerate":
                init, strength = known, p["strength"]
        elif mode == "continue":
            clip = at_out(req.continue_from)
            base = _fit(clip, t_out)
            known_audio = _fit(self._to_model(req.continue_from, sr_in), t_model)
            known = self._encode(known_audio)
            clip_s = clip.shape[-1] / sr_out
            keep = ~region_frames(clip_s, seconds, sr_model, hop, frames, margin=1)
            region = (clip.shape[-1], t_out)
        elif mode == "transition":
            a_out, z_out = at_out(req.transition[0]), at_out(req.transition[1])
            gap_out = t_out - a_out.shape[-1] - z_out.shape[-1]
            ch = max(a_out.shape[0], z_out.shape[0])
            base = np.concatenate([np.broadcast_to(a_out, (ch, a_out.shape[-1])),
                                   np.zeros((ch, gap_out), np.float32),
                                   np.broadcast_to(z_out, (ch, z_out.shape[-1]))], axis=-1)
            a_m = self._to_model(req.transition[0], sr_in)
            z_m = self._to_model(req.transition[1], sr_in)
            gap_m = t_model - len(a_m) - len(z_m)
            known_audio = np.concatenate([a_m, np.zeros(max(gap_m, 0), np.float32), z_m])
            known_audio = _fit(known_audio, t_model)
            known = self._encode(known_audio)
            a_s = a_out.shape[-1] / sr_out
            keep = ~region_frames(a_s, a_s + req.gap, sr_model, hop, frames)
            region = (a_out.shape[-1], a_out.shape[-1] + gap_out)
        yield Progress("encode", 1, 1, None, "encoded")

        # ---- the CLAP embedding
        clap = None
        emb_a = emb_t = None
        cond = b.conditioner
        if req.prompt is not None or req.reference is not None:
            yield Progress("condition", 0, 1, None, "embedding the prompt")
            with torch.inference_mode():
                if req.prompt is not None:
                    emb_t = b.embed_prompt(req.prompt, p["text_prior"])
                if req.reference is not None:
                    ref = _mono(req.reference)
                    emb_a = cond.embed_audio(ref, sr_in).to(torch.float32)
            if emb_a is not None and emb_t is not None:
                from engine.models.conditioning import interpolate

                r = 0.5 if req.mix is None else float(req.mix)
                p["mix"] = r
                clap = interpolate(emb_a, emb_t, r)
            else:
                clap = emb_a if emb_a is not None else emb_t
            clap = clap.to(self.device)

        # ---- sample
        seeds = [p["seed"] + i for i in range(p["takes"])]
        loop = (int(req.loop[0]), float(req.loop[1])) if req.loop else None
        z = yield from self._sample_latents(
            frames=frames, context=context, clap=clap, p=p, seeds=seeds, salt=0,
            known=known, keep=keep, init=init, strength=strength, loop=loop, cancel=cancel,
            clock=clock, previews=previews)
        channels = [z]
        if p["stereo_width"] > 0:
            right = yield from self._sample_latents(
                frames=frames, context=context, clap=clap, p=p, seeds=seeds, salt=1,
                known=known, keep=keep, init=z, strength=p["stereo_width"], cancel=cancel,
                stage="stereo", clock=clock)
            channels.append(right)

        # ---- decode, splice, provenance
        stems: list[Stem] = []
        n_dec = len(seeds) * len(channels)
        done = 0
        for i, seed in enumerate(seeds):
            chans = []
            for j, lat in enumerate(channels):
                if cancel is not None and cancel.is_set():
                    raise Cancelled("generation cancelled")
                yield Progress("decode", done, n_dec, None, f"decoding take {i + 1}")
                g = torch.Generator().manual_seed((seed * 1_000_003 + 17 + j) % (2**63))
                with torch.inference_mode():
                    wave = b.cae.decode(b.denormalize(lat[i: i + 1]), length=t_model,
                                        generator=g)
                chans.append(wave[0].detach().to("cpu", torch.float32).numpy())
                done += 1
            audio = np.stack(chans)
            if sr_model != sr_out:
                audio = resample(audio, sr_model, sr_out)
            audio = _fit(audio, t_out).astype(np.float32)
            if base is not None and region is not None:
                audio, level = self._splice_into(base, audio, region, mode, sr_out)
            else:
                audio, level = apply_ceiling(audio, sr_out)
            prov = self._provenance(req, p, seed, i, audio)
            prov["level"] = level
            stems.append(Stem(audio, sr_out, seed, i, prov))
        yield Progress("done", 1, 1, 0.0, f"{len(stems)} take(s) in "
                                         f"{time.perf_counter() - clock[0]:.1f} s")
        return stems

    @staticmethod
    def _splice_into(base: np.ndarray, audio: np.ndarray, region: tuple[int, int], mode: str,
                     sr: int) -> tuple[np.ndarray, dict]:
        """The generated part spliced into the user's audio, which stays untouched outside the
        fades. Only the generated part is gain-staged. A transition's bridge is brought to the
        level of the parts around it, and its fades lie inside the parts (the gap holds no
        audio of the user's to fade against)."""
        t_out = base.shape[-1]
        ch = max(base.shape[0], audio.shape[0])
        full_base = np.broadcast_to(base, (ch, t_out)).astype(np.float32)
        gen = np.array(np.broadcast_to(audio, (ch, t_out)), dtype=np.float32)
        start, end = region
        fade = int(round(SPLICE_FADE_S * sr))
        level: dict = {}
        if mode == "transition":
            fade = int(round(TRANSITION_FADE_S * sr))
            gen, level["bridge_gain_db"] = match_bridge_level(full_base, gen, start, end, sr)
            start, end = max(0, start - fade // 2), min(t_out, end + fade // 2)
        lo, hi = max(0, start - fade), min(t_out, end + fade)
        g = ceiling_gain(gen[..., lo:hi], sr)
        level.update(apply_ceiling(gen[..., lo:hi] * np.float32(g), sr)[1])
        level["gain_db"] = round(20 * math.log10(g), 3)
        return splice(full_base, gen * np.float32(g), start, end, fade), level

    def _provenance(self, req: GenerationRequest, p: dict, seed: int, take: int,
                    audio: np.ndarray) -> dict:
        b = self.bundle
        params = {k: v for k, v in p.items() if k not in {"seed", "takes"}}
        return {
            "riffwright": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model": {"name": b.name, "hash": b.hash, "path": str(b.path)},
            "device": str(self.device),
            "seed": seed,
            "take": take,
            "takes_in_batch": p["takes"],
            "base_seed": p["seed"],
            "parameters": params,
            "inputs": {
                name: {"label": req.labels.get(name), "digest": audio_digest(getattr(req, name))}
                for name in ("context", "reference", "variation_of", "source", "continue_from")
                if getattr(req, name) is not None
            } | ({"transition": {"label": req.labels.get("transition"),
                                 "digest": [audio_digest(c) for c in req.transition]}}
                 if req.transition is not None else {}),
            "regions": {"inpaint": list(req.inpaint)} if req.inpaint else {},
            "sample_rate": req.output_rate,
            "channels": int(audio.shape[0]),
            "seconds": round(audio.shape[-1] / req.output_rate, 6),
        }


def run_to_end(gen) -> list[Stem]:
    """Exhaust a `Generator.run` generator and return its stems."""
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def decode_preview(generator: Generator, preview, seconds: float | None = None) -> np.ndarray:
    """Decode a Progress.preview latent (take 0) to mono audio at the model's rate."""
    b = generator.bundle
    with torch.inference_mode():
        wave = b.cae.decode(b.denormalize(preview[:1].to(generator.device)),
                            generator=torch.Generator().manual_seed(0))
    audio = wave[0].to("cpu", torch.float32).numpy()
    if seconds is not None:
        audio = audio[: int(seconds * b.sample_rate)]
    return audio
