"""The generation driver: a typed request in, progress events out, stems back.

`Generator.run(request)` is a plain Python generator (no Qt): it yields `Progress` events
and returns a list of `Stem`s. The app drives it from a worker thread, the CLI from a loop.
Cancel with a `threading.Event` (checked before every network step) or by closing the
generator; either stops within one step and writes nothing.

A run reads as plan (`plans.py`, one function per mode) -> encode -> condition -> sample ->
decode and splice. Every procedure goes through one latent routine, `_sample_latents`,
which composes the sampler with wrappers: guidance (and harmony and rhythm guidance, with a
bundle that ships their probes) around the denoiser, inpainting and loop sampling around the
step, windows for any length, a start from a noised latent for variations. See
`engine.generation.procedures`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator as PyGenerator
from dataclasses import dataclass, replace
from datetime import datetime, timezone

import numpy as np
import torch

from engine import __version__
from engine.diffusion.context_features import CHROMA, FEATURE_DIM
from engine.diffusion.edm import SAMPLERS, karras_sigmas, sigmas_from_strength
from engine.errors import Cancelled, RequestError
from engine.gain import apply_ceiling, ceiling_gain
from engine.generation.plans import PLANS, Plan, Rates, fit, mono
from engine.generation.procedures import (
    chain_hooks,
    guided,
    harmony_guided,
    inpaint_hook,
    loop_hook,
    match_bridge_level,
    onset_places,
    plan_windows,
    randn_per_take,
    rhythm_guided,
    sounding_classes,
    splice,
)
from engine.generation.request import (
    GenerationRequest,
    Progress,
    ResolvedRequest,
    Stem,
    audio_digest,
    beat_grid_of,
    check_mode_inputs,
)
from engine.params import pick

SPLICE_FADE_S = 0.03
TRANSITION_FADE_S = 0.08  # a bridge's fades: long, and inside the parts around it

# the random streams of a take: every draw comes from take_generator(seed, stream)
STREAM_NOISE = 0  # the sampler's start noise, inpainting's noise and churn
STREAM_STEREO = 1  # the second channel's variation
STREAM_DECODE = 17  # the decoder; channel j uses STREAM_DECODE + j


def take_generator(seed: int, stream: int) -> torch.Generator:
    """The CPU generator of one take's random stream: a take depends on its own seed only,
    and a seed gives the same take on every device."""
    return torch.Generator().manual_seed((seed * 1_000_003 + stream) % (2**63))


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


@dataclass(frozen=True, eq=False)
class Sampling:
    """Everything the latent routine needs besides the seeds: the resolved parameters, the
    encoded conditions and the latents held fixed."""

    r: ResolvedRequest
    frames: int
    context: torch.Tensor | None
    clap: torch.Tensor | None
    known: torch.Tensor | None
    keep: torch.Tensor | None
    loop: tuple[int, float] | None  # repetitions and fraction of the steps forced periodic


@dataclass
class Ticker:
    """Counts one sampling pass's steps into Progress events and checks for a cancel."""

    stage: str  # "sample" or "stereo"
    t0: float
    cancel: threading.Event | None = None
    previews: bool = False
    total: int = 0
    done: int = 0

    def tick(self, denoised: torch.Tensor) -> Progress:
        self.done += 1
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("generation cancelled")
        eta = (time.perf_counter() - self.t0) / self.done * (self.total - self.done)
        word = "step" if self.stage == "sample" else "stereo"
        return Progress(self.stage, self.done, self.total, eta,
                        f"{word} {self.done}/{self.total}",
                        denoised if self.previews else None)


def _optional(name: str, value):
    """None stays None (the parameter does not apply); anything else is checked."""
    return None if value is None else pick(name, value)


# what a bundle lacks when it cannot run a kind of guidance (Bundle.steers)
_MISSING_PROBES = {"harmony": "has no harmony probe, which harmony guidance needs",
                   "rhythm": "lacks the probes rhythm guidance needs"}


class Generator:
    """Runs requests against one loaded bundle on one device."""

    def __init__(self, bundle, device: str | torch.device | None = None):
        self.bundle = bundle
        self.device = bundle.device if device is None else torch.device(device)

    # ------------------------------------------------------------------ validation
    def resolve(self, req: GenerationRequest) -> ResolvedRequest:
        """The request's parameters with bundle defaults filled in, validated."""
        self._check(req)
        d = self.bundle.defaults
        both = req.prompt is not None and req.reference is not None
        return ResolvedRequest(
            mode=req.mode,
            steps=pick("steps", req.steps, d),
            cfg_context=pick("cfg_context", req.cfg_context, d),
            cfg_clap=pick("cfg_clap", req.cfg_clap, d),
            harmony=self._guidance(req, "harmony"),
            rhythm=self._guidance(req, "rhythm"),
            sampler=pick("sampler", req.sampler or None, d),
            s_churn=pick("s_churn", req.s_churn),
            seed=int(req.seed),
            takes=pick("takes", req.takes),
            stereo_width=pick("stereo_width", req.stereo_width),
            strength=pick("strength", req.strength, d),
            mix=_optional("mix", 0.5 if both and req.mix is None else req.mix),
            prompt=req.prompt,
            text_prior=self._uses_text_prior(req),
            duration=_optional("duration", req.duration),
            inpaint=tuple(req.inpaint) if req.inpaint else None,
            loop=(int(req.loop[0]), float(req.loop[1])) if req.loop else None,
            gap=_optional("gap", req.gap if req.transition is not None else None),
        )

    def _check(self, req: GenerationRequest) -> None:
        """What the table cannot say: the prompt, the prior, the rate and the mode's inputs."""
        if req.prompt is not None and not req.prompt.strip():
            raise RequestError("the prompt is empty")
        if req.text_prior and self.bundle.prior is None:
            raise RequestError(f"the model {self.bundle.name} has no text prior")
        if req.sample_rate < 8000 or req.sample_rate > 384000:
            raise RequestError(f"unsupported sample rate {req.sample_rate} Hz")
        check_mode_inputs(req)
        beat_grid_of(req)

    def _guidance(self, req: GenerationRequest, name: str) -> float:
        """The harmony or rhythm guidance (`name`) this request runs with: the request's,
        else the bundle's default; 0 without a context (there is nothing to follow)."""
        value = pick(name, getattr(req, name), self.bundle.defaults)
        if value > 0 and not self.bundle.steers[name]:
            raise RequestError(f"the model {self.bundle.name} {_MISSING_PROBES[name]}: "
                               f"set {name} to 0")
        return value if req.context is not None else 0.0

    def _uses_text_prior(self, req: GenerationRequest) -> bool:
        """Whether the prompt goes through the bundle's text prior: only where a text
        embedding reaches the model (mix r = 0 is the reference alone)."""
        return (self.bundle.prior is not None and req.text_prior is not False
                and req.prompt is not None
                and not (req.reference is not None and req.mix == 0))

    # ------------------------------------------------------------------ helpers
    def _encode(self, mono: np.ndarray) -> torch.Tensor:
        """Mono model-rate audio -> normalised latents (1, C, F)."""
        wave = torch.from_numpy(np.ascontiguousarray(mono)).to(self.device)[None]
        with torch.inference_mode():
            return self.bundle.normalize(self.bundle.cae.encode(wave).to(torch.float32))

    def _condition(self, req: GenerationRequest, r: ResolvedRequest) -> torch.Tensor | None:
        """The CLAP embedding: the prompt's, the reference's, or both interpolated by mix."""
        emb_t = emb_a = None
        with torch.inference_mode():
            if req.prompt is not None:
                emb_t = self.bundle.embed_prompt(req.prompt, r.text_prior)
            if req.reference is not None:
                emb_a = self.bundle.conditioner.embed_audio(
                    mono(req.reference), req.sample_rate).to(torch.float32)
        if emb_a is not None and emb_t is not None:
            from engine.models.conditioning import interpolate

            return interpolate(emb_a, emb_t, r.mix).to(self.device)
        clap = emb_a if emb_a is not None else emb_t
        return None if clap is None else clap.to(self.device)

    # ------------------------------------------------------------------ the latent routine
    def _sample_latents(self, job: Sampling, seeds: list[int], stream: int,
                        init: torch.Tensor | None = None, strength: float = 1.0,
                        ticker: Ticker | None = None):
        """Sample (takes, C, frames) normalised latents, window by window; yields Progress.

        `job.known`/`job.keep`: frames held fixed by inpainting. `init` with `strength` < 1:
        start from that latent noised to the matching level (variations, stereo).
        """
        b, dev = self.bundle, self.device
        c, k = b.manifest["latent"]["dim"], len(seeds)
        gens = [take_generator(s, stream) for s in seeds]
        sigmas = karras_sigmas(job.r.steps)
        if init is not None:
            sigmas = sigmas_from_strength(sigmas, strength)
        windows = plan_windows(job.frames, int(b.manifest["window_frames"]),
                               int(b.manifest["overlap_frames"]))
        if job.loop is not None and len(windows) > 1:
            span = b.manifest["window_frames"] * b.hop / b.sample_rate
            raise RequestError(f"loop sampling works on up to {span:.1f} s at a time")
        out = torch.zeros(k, c, job.frames, device=dev) if init is None \
            else init.expand(k, -1, -1).clone().to(dev)
        n_steps = len(sigmas) - 1
        if n_steps == 0:
            return out
        ticker = ticker or Ticker("sample", time.perf_counter())
        ticker.total = n_steps * len(windows)
        for w in windows:
            yield from self._sample_window(job, out, w, gens, sigmas, init is not None, ticker)
        return out

    def _sample_window(self, job: Sampling, out: torch.Tensor, w, gens, sigmas: torch.Tensor,
                       from_init: bool, ticker: Ticker):
        """Sample one window into `out` (in place); yields Progress. It starts from noise,
        or with `from_init` from `out`'s latents noised to the first level; the frames the
        job holds and those the previous window made are inpainted."""
        dev, sl = self.device, slice(w.start, w.end)
        k, c = out.shape[0], out.shape[1]
        n_steps = len(sigmas) - 1
        noise = randn_per_take(gens, (c, w.end - w.start), dev)
        x = out[..., sl] + sigmas[0].item() * noise if from_init else noise * sigmas[0].item()
        w_known, w_keep = self._window_known(job, out, w, k, c)
        hook = chain_hooks(
            inpaint_hook(w_known, w_keep, gens) if bool(w_keep.any()) else None,
            loop_hook(job.loop[0], job.loop[1], n_steps) if job.loop else None)
        ctx = None if job.context is None else job.context[..., sl]
        denoiser = guided(self.bundle.precond, ctx, job.clap, job.r.cfg_context,
                          job.r.cfg_clap)
        denoiser = self._steer(denoiser, ctx, job.r)
        with torch.inference_mode():
            for step in SAMPLERS[job.r.sampler](denoiser, x, sigmas.to(dev), step_hook=hook,
                                                s_churn=job.r.s_churn, generator=gens):
                x = step.x
                yield ticker.tick(step.denoised)
        out[..., sl] = x if hook is None else hook.finish(x)

    def _steer(self, denoiser, ctx: torch.Tensor | None, r: ResolvedRequest):
        """`denoiser` with harmony guidance, then rhythm guidance, where the request asks
        for them (`procedures.harmony_guided`, `rhythm_guided`); both read the context's
        features, which follow its latents."""
        if ctx is None:
            return denoiser
        feats = ctx[:, self.bundle.manifest["latent"]["dim"]:]
        if r.harmony > 0:
            denoiser = harmony_guided(denoiser, self.bundle.harmony_probe,
                                      sounding_classes(feats[:, :CHROMA]), r.harmony)
        if r.rhythm > 0:
            denoiser = rhythm_guided(denoiser, self.bundle.rhythm_probe,
                                     self.bundle.harmony_probe,
                                     onset_places(feats[:, CHROMA:FEATURE_DIM]), r.rhythm)
        return denoiser

    def _window_known(self, job: Sampling, out: torch.Tensor, w, k: int, c: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """A window's held latents and mask: the job's known frames, and the frames the
        previous window already made."""
        dev, sl, n = self.device, slice(w.start, w.end), w.end - w.start
        w_keep = torch.zeros(n, dtype=torch.bool)
        w_known = torch.zeros(k, c, n, device=dev)
        if job.keep is not None and job.known is not None:
            w_keep |= job.keep[sl]
            w_known = torch.where(job.keep[sl].to(dev)[None, None],
                                  job.known[..., sl].to(dev), w_known)
        if w.held:
            w_keep[: w.held] = True
            w_known[..., : w.held] = out[..., w.start: w.start + w.held]
        return w_known, w_keep

    # ------------------------------------------------------------------ run
    def run(self, req: GenerationRequest, cancel: threading.Event | None = None,
            previews: bool = False) -> PyGenerator[Progress, None, list[Stem]]:
        """Yield Progress events; return the stems. Plan, encode, condition, sample, decode
        and splice; see the module docstring."""
        r = self.resolve(req)
        b = self.bundle
        t0 = time.perf_counter()
        yield Progress("prepare", 0, 1, None, "preparing")
        io = Rates(req.sample_rate, b.sample_rate, req.output_rate, b.hop)
        plan = PLANS[r.mode](req, r, io)

        yield Progress("encode", 0, 1, None, "encoding audio")
        context = None
        if req.context is not None:
            ctx = fit(io.to_model(req.context), plan.lengths.t_model)
            context = b.context_condition(self._encode(ctx), ctx, beat_grid_of(req))
        known = None if plan.known_audio is None else self._encode(plan.known_audio)
        init = known if plan.init_known else (
            None if plan.init_audio is None else self._encode(plan.init_audio))
        yield Progress("encode", 1, 1, None, "encoded")

        clap = None
        if req.prompt is not None or req.reference is not None:
            yield Progress("condition", 0, 1, None, "embedding the prompt")
            clap = self._condition(req, r)

        job = Sampling(r, plan.lengths.frames, context, clap, known, plan.keep, r.loop)
        z = yield from self._sample_latents(job, r.seeds, STREAM_NOISE, init, plan.strength,
                                            Ticker("sample", t0, cancel, previews))
        channels = [z]
        if r.stereo_width > 0:
            # the second channel: a variation of the first, not a loop of its own
            right = yield from self._sample_latents(replace(job, loop=None), r.seeds,
                                                    STREAM_STEREO, z, r.stereo_width,
                                                    Ticker("stereo", t0, cancel))
            channels.append(right)
        stems = yield from self._decode(req, r, plan, channels, cancel)
        yield Progress("done", 1, 1, 0.0, f"{len(stems)} take(s) in "
                                         f"{time.perf_counter() - t0:.1f} s")
        return stems

    def _decode(self, req: GenerationRequest, r: ResolvedRequest, plan: Plan,
                channels: list[torch.Tensor], cancel):
        """Decode every take's channels, splice them into the user's audio (or gain-stage
        them alone) and attach the provenance; yields Progress, returns the stems."""
        from engine.audio import resample

        b, sr_out, t_model = self.bundle, req.output_rate, plan.lengths.t_model
        stems: list[Stem] = []
        n_dec = r.takes * len(channels)
        for i, seed in enumerate(r.seeds):
            chans = []
            for j, lat in enumerate(channels):
                if cancel is not None and cancel.is_set():
                    raise Cancelled("generation cancelled")
                yield Progress("decode", i * len(channels) + j, n_dec, None,
                               f"decoding take {i + 1}")
                with torch.inference_mode():
                    wave = b.cae.decode(b.denormalize(lat[i: i + 1]), length=t_model,
                                        generator=take_generator(seed, STREAM_DECODE + j))
                chans.append(wave[0].detach().to("cpu", torch.float32).numpy())
            audio = np.stack(chans)
            if b.sample_rate != sr_out:
                audio = resample(audio, b.sample_rate, sr_out)
            audio = fit(audio, plan.lengths.t_out).astype(np.float32)
            if plan.base is not None and plan.region is not None:
                audio, level = self._splice_into(plan.base, audio, plan.region, r.mode, sr_out)
            else:
                audio, level = apply_ceiling(audio, sr_out)
            prov = self._provenance(req, r, seed, i, audio)
            prov["level"] = level
            stems.append(Stem(audio, sr_out, seed, i, prov))
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
        g, info = ceiling_gain(gen[..., lo:hi], sr)  # the generated part alone sets the gain
        level.update(info)
        return splice(full_base, gen * np.float32(g), start, end, fade), level

    def _provenance(self, req: GenerationRequest, r: ResolvedRequest, seed: int, take: int,
                    audio: np.ndarray) -> dict:
        b = self.bundle
        return {
            "riffwright": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model": {"name": b.name, "hash": b.hash, "path": str(b.path)},
            "device": str(self.device),
            "seed": seed,
            "take": take,
            "takes_in_batch": r.takes,
            "base_seed": r.seed,
            "parameters": r.parameters(),
            "inputs": {
                name: {"label": req.labels.get(name), "digest": audio_digest(getattr(req, name))}
                for name in ("context", "reference", "variation_of", "source", "continue_from")
                if getattr(req, name) is not None
            } | ({"transition": {"label": req.labels.get("transition"),
                                 "digest": [audio_digest(c) for c in req.transition]}}
                 if req.transition is not None else {}),
            "regions": {"inpaint": list(req.inpaint)} if req.inpaint else {},
            **self._grid_provenance(req),
            "sample_rate": req.output_rate,
            "channels": int(audio.shape[0]),
            "seconds": round(audio.shape[-1] / req.output_rate, 6),
        }


    def _grid_provenance(self, req: GenerationRequest) -> dict:
        """The beat grid the take was asked to follow, and whether the model took it (only
        models trained with one do, and only over a context)."""
        grid = beat_grid_of(req)
        if grid is None:
            return {}
        used = self.bundle.takes_beat_grid and req.context is not None
        return {"beat_grid": {"bpm": grid.bpm, "bar_beats": grid.bar_beats,
                              "downbeat": grid.downbeat, "used": used}}


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
