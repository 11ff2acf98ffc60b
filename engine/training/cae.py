"""Consistency training of the CAE: loss, one optimisation step, a resumable trainer.

The loss is continuous-time consistency training in the style of Music2Latent and "Consistency
Models Made Easy" (ECT, Geng et al. 2024): a continuous index ``u ~ U(0, 1)`` picks a noise
level ``t`` on the Karras curve, the partner level is ``r = sigma(u - delta)`` (clamped at
``sigma_min``), and the network's output at ``x + t * eps`` is pulled towards its own
stop-gradient output at ``x + r * eps`` (same ``eps``) under a pseudo-Huber distance, weighted
by ``max(1 / (t - r), 1 / c_out(t))``. The curriculum starts at ``delta = 1`` (every
``r = sigma_min``: pure denoising, the target is the clean spectrum) and halves ``delta``
every ``stage_steps`` steps, which turns the decoder into a consistency model. The encoder is trained
through the same loss (its latents condition both branches; the target branch is detached).
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from engine.errors import RiffwrightError
from engine.models.cae import KIND, create_cae, load_cae, with_head
from engine.models.cae.spectral import mel_filterbank
from engine.train_state import has_state, load_state, save_state, stop_on_sigterm
from engine.training.cae_data import CropSampler, family_balanced_stems, list_sources
from engine.training.loop import due, ema_update, log_json, set_lr, warmup_lr
from engine.weights import save_module

# ----------------------------------------------------------------------------- loss


@dataclass
class CTSchedule:
    """Hyper-parameters of the consistency-training loss and its noise curriculum.

    Noise levels are drawn on the Karras et al. (rho = 7) curve from a uniform continuous
    index u in [0, 1] (as Music2Latent does), which puts half of the draws above sigma ~ 2.5:
    the high-noise regime is the one a one-step decoder uses. The partner level is
    ``r = sigma(u - delta)`` with ``delta = 1 / q**stage``: at stage 0 every r is sigma_min
    (pure denoising towards the clean spectrum); each stage halves the gap.
    """

    q: float = 2.0
    stage_steps: int = 1000
    max_stage: int = 8
    rho: float = 7.0
    huber_c: float = 0.00054
    latent_l2: float = 1e-4
    # weight of the multi-resolution STFT loss on the one-step decode (0: pure CT)
    spectral_weight: float = 0.0
    # weight of the log-mel distance of the one-step decode (0: none)
    mel_weight: float = 0.0
    # weight of the fine-resolution low-band distance of the one-step decode (0: none)
    low_weight: float = 0.0

    def stage(self, step: int) -> int:
        return min(step // max(self.stage_steps, 1), self.max_stage)


def karras_sigma(u: torch.Tensor, sigma_min: float, sigma_max: float, rho: float = 7.0):
    """Continuous Karras curve: u = 0 -> sigma_min, u = 1 -> sigma_max."""
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (lo + u.clamp(0, 1) * (hi - lo)) ** rho


def ct_sigmas(cae, batch: int, step: int, sched: CTSchedule, generator=None):
    """Draw (t, r) for one batch: t = sigma(u), r = sigma(u - 1 / q**stage) >= sigma_min."""
    u = torch.rand(batch, generator=generator) * (1 - 1e-3) + 1e-3
    delta = 1.0 / sched.q ** sched.stage(step)
    t = karras_sigma(u, cae.sigma_min, cae.sigma_max, sched.rho)
    r = karras_sigma(u - delta, cae.sigma_min, cae.sigma_max, sched.rho)
    r = torch.where(u - delta <= 0, torch.full_like(r, cae.sigma_min), r.clamp_min(cae.sigma_min))
    return t, r


def pseudo_huber(a: torch.Tensor, b: torch.Tensor, c: float) -> torch.Tensor:
    """Per-example sqrt(mean((a - b)^2) + c^2) - c."""
    d = (a - b).float().pow(2).flatten(1).mean(dim=1)
    return torch.sqrt(d + c * c) - c


SPECTRAL_RESOLUTIONS = ((2048, 512), (1024, 256), (512, 128), (256, 64))


def multires_stft_loss(ref: torch.Tensor, est: torch.Tensor) -> torch.Tensor:
    """Phase-blind distance of two waves (B, T): mean over four STFT resolutions of spectral
    convergence plus L1 of log magnitudes (floor 1e-4). A regression in the complex STFT
    domain averages out phases it cannot predict and loses the energy of partials and
    transients; magnitudes at several resolutions keep them."""
    total = est.new_zeros(())
    for n_fft, hop in SPECTRAL_RESOLUTIONS:
        w = torch.hann_window(n_fft, device=est.device)
        R = torch.stft(ref, n_fft, hop, window=w, return_complex=True).abs()
        E = torch.stft(est, n_fft, hop, window=w, return_complex=True).abs()
        sc = torch.linalg.norm((R - E).flatten(1), dim=1) / torch.linalg.norm(
            R.flatten(1), dim=1).clamp_min(1e-2)
        lm = (torch.log(R.clamp_min(1e-4)) - torch.log(E.clamp_min(1e-4))).abs().flatten(1).mean(1)
        total = total + (sc + lm).mean()
    return total / len(SPECTRAL_RESOLUTIONS)


MEL_N_FFT, MEL_HOP, MEL_BANDS, MEL_RANGE_DB = 2048, 512, 80, 80.0


@functools.lru_cache(maxsize=4)
def _mel_bank(sample_rate: int) -> torch.Tensor:
    return mel_filterbank(MEL_N_FFT, MEL_BANDS, sample_rate)


def floored_log_distance(R: torch.Tensor, E: torch.Tensor, range_db: float) -> torch.Tensor:
    """Per item of two power spectra (B, F, T): the mean |log10 difference| in bels, both
    sides floored `range_db` below the reference item's loudest cell (so a crop's noise floor
    and silences do not dominate)."""
    floor = R.flatten(1).amax(dim=1).clamp_min(1e-10)[:, None, None] * 10 ** (-range_db / 10)
    d = torch.log10(torch.maximum(R, floor)) - torch.log10(torch.maximum(E, floor))
    return d.abs().flatten(1).mean(1)


def log_mel_loss(ref: torch.Tensor, est: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Mean |log10 mel power difference| of two waves (B, T), in bels: 80 bands, window 2048,
    hop 512 (the model card's mel distance). Both sides are floored 80 dB below the loudest
    cell of the reference, so a crop's noise floor and silences do not dominate. Bins are
    pooled into bands before the log, so the term follows the spectral envelope (the timbre)
    rather than the fine structure between partials, which the STFT term already weighs."""
    fb = _mel_bank(sample_rate).to(est.device)
    w = torch.hann_window(MEL_N_FFT, device=est.device)

    def mel(x):
        X = torch.stft(x, MEL_N_FFT, MEL_HOP, window=w, return_complex=True)
        return fb @ (X.real.square() + X.imag.square())

    return floored_log_distance(mel(ref), mel(est), MEL_RANGE_DB).mean()


LOW_RESOLUTIONS = ((8192, 1024), (4096, 512))  # 5.9 and 11.7 Hz per bin at 48 kHz
LOW_MAX_HZ, LOW_RANGE_DB = 1000.0, 60.0


def _low_power(x: torch.Tensor, n_fft: int, hop: int, bins: int) -> torch.Tensor:
    w = torch.hann_window(n_fft, device=x.device)
    X = torch.stft(x, n_fft, hop, window=w, center=False, return_complex=True)[:, :bins]
    return X.real.square() + X.imag.square()


def low_band_loss(ref: torch.Tensor, est: torch.Tensor, sample_rate: int,
                  max_hz: float = LOW_MAX_HZ) -> torch.Tensor:
    """Distance of two waves (B, T) below `max_hz`, at resolutions that separate a bass's
    partials (a semitone at 55 Hz is 3.3 Hz; the CAE's own STFT has 47 Hz bins): spectral
    convergence plus the mean |log10 power difference|, both sides floored 60 dB below the
    reference's loudest low cell. A wave whose partials are right but smeared over a noise
    floor, or whose frames' phases do not continue a partial from one frame to the next (a
    long window then sees the frames cancel), is far from the reference here while the
    coarse resolutions of `multires_stft_loss` barely tell them apart. Frames are not
    centred (a padded edge frame would weigh the padding); a resolution longer than the
    waves is skipped."""
    total, used = est.new_zeros(()), 0
    for n_fft, hop in LOW_RESOLUTIONS:
        if n_fft > est.shape[-1]:
            continue
        used += 1
        bins = int(max_hz * n_fft / sample_rate) + 1
        R, E = (_low_power(x, n_fft, hop, bins) for x in (ref, est))
        sc = torch.linalg.norm((R.sqrt() - (E + 1e-12).sqrt()).flatten(1), dim=1) / (
            torch.linalg.norm(R.sqrt().flatten(1), dim=1).clamp_min(1e-3))
        total = total + (sc + floored_log_distance(R, E, LOW_RANGE_DB)).mean()
    return total / max(used, 1)


def one_step_decode(cae, spec: torch.Tensor, z: torch.Tensor, generator=None):
    """(the input, the default one-step decode f(sigma_max * eps, sigma_max | z)) as waves,
    for the decode terms of the loss (`CTSchedule.spectral_weight`, `mel_weight`). The
    consistency loss alone pulls the one-step output towards the conditional mean of the
    complex spectrum (blurred partials) until training is very long; these terms ask that
    the one-step decode have the input's magnitudes."""
    eps = torch.randn(spec.shape, generator=generator).to(spec.device)
    sigma = torch.full((spec.shape[0],), cae.sigma_max, device=spec.device)
    est = cae.spectral.inverse(cae.denoise(eps * cae.sigma_max, sigma, z))
    with torch.no_grad():
        ref = cae.spectral.inverse(spec)
    return ref, est


def consistency_loss(cae, spec: torch.Tensor, step: int, sched: CTSchedule, generator=None):
    """The CT loss for a batch of compressed spectra (B, C, 16 F). Returns (loss, stats)."""
    B = spec.shape[0]
    z = cae.encode_spec(spec)
    t, r = ct_sigmas(cae, B, step, sched, generator)
    t, r = t.to(spec.device), r.to(spec.device)
    eps = torch.randn(spec.shape, generator=generator).to(spec.device)
    x_t = spec + t[:, None, None] * eps
    x_r = spec + r[:, None, None] * eps
    pred = cae.denoise(x_t, t, z)
    with torch.no_grad():
        boundary = r <= cae.sigma_min * (1 + 1e-6)
        target = x_r.clone()  # f(x, sigma_min) = x: the boundary condition
        if not bool(boundary.all()):
            idx = (~boundary).nonzero().flatten()
            target[idx] = cae.denoise(x_r[idx], r[idx], z[idx].detach())
    dist = pseudo_huber(pred, target, sched.huber_c)
    # 1 / (t - r) (iCT, Music2Latent) normalises the consistency gap; it would weight the
    # sigma_max regime that one-step decoding uses ~160x below the low-noise one, so the
    # weight never drops below 1 / c_out(t), the EDM-uniform weight of the network output.
    c_out = cae.c_out(t).clamp_min(1e-4)
    weight = torch.maximum(1.0 / (t - r).clamp_min(1e-4), 1.0 / c_out)
    ct = (weight * dist).mean()
    reg = sched.latent_l2 * z.pow(2).mean()
    stats = {
        "loss": float(ct.detach()),
        "dist": float(dist.detach().mean()),
        "latent_rms": float(z.detach().pow(2).mean().sqrt()),
        "stage": sched.stage(step),
    }
    total = ct + reg
    if sched.spectral_weight > 0 or sched.mel_weight > 0 or sched.low_weight > 0:
        ref, est = one_step_decode(cae, spec, z, generator)
        if sched.spectral_weight > 0:
            mr = multires_stft_loss(ref, est)
            stats["spectral"] = float(mr.detach())
            total = total + sched.spectral_weight * mr
        if sched.mel_weight > 0:
            ml = log_mel_loss(ref, est, cae.sample_rate)
            stats["mel"] = float(ml.detach())
            total = total + sched.mel_weight * ml
        if sched.low_weight > 0:
            lo = low_band_loss(ref, est, cae.sample_rate)
            stats["low"] = float(lo.detach())
            total = total + sched.low_weight * lo
    return total, stats


def train_step(cae, opt, spec: torch.Tensor, step: int, sched: CTSchedule, ema=None,
               ema_decay: float = 0.999, grad_clip: float = 1.0, generator=None) -> dict:
    """One optimisation step on a batch of spectra; updates `ema` in place if given."""
    cae.train()
    opt.zero_grad(set_to_none=True)
    loss, stats = consistency_loss(cae, spec, step, sched, generator)
    loss.backward()
    gnorm = torch.nn.utils.clip_grad_norm_(cae.parameters(), grad_clip)
    opt.step()
    if ema is not None:
        ema_update(ema, cae, ema_decay, step)
    stats["grad_norm"] = float(gnorm)
    return stats


# ----------------------------------------------------------------------------- trainer


@dataclass
class TrainConfig:
    arch: str = "small"
    head_channels: int = 0
    steps: int = 10000
    batch_size: int = 8
    crop_frames: int = 16
    lr: float = 2e-4
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 200
    log_every: int = 10
    schedule: CTSchedule = field(default_factory=CTSchedule)
    init: str | None = None  # start from this CAE file instead of a fresh `arch`
    freeze_encoder: bool = False  # train the decoder alone; the latents stay as they are
    mix_prob: float = 0.5
    balance_families: bool = False
    # with balance_families: how much more often a family is drawn, e.g. {"bass": 3.0}
    family_weights: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_options(cls, **options) -> TrainConfig:
        """A config from options by name: this class's fields and the loss schedule's
        (`stage_steps`, `spectral_weight`, `mel_weight`...), as `train_cae` and a --config
        file give them; a name that is neither is one RiffwrightError line."""
        sched_names = {f.name for f in fields(CTSchedule)}
        own = {f.name for f in fields(cls)} - {"schedule"}
        unknown = sorted(set(options) - sched_names - own)
        if unknown:
            raise RiffwrightError(f"unknown CAE training option(s): {', '.join(unknown)}")
        kw = {k: v for k, v in options.items() if k in own}
        kw["init"] = str(kw["init"]) if kw.get("init") else None
        sched = CTSchedule(**{k: v for k, v in options.items() if k in sched_names})
        return cls(schedule=sched, **kw)


WARMUP_STEPS = 200  # a fresh CAE's learning-rate warm-up (none from trained weights)


def _save_state(out: Path, cae, ema, opt, step: int, cfg: TrainConfig) -> None:
    save_state(out, {"model": cae, "ema": ema}, opt,
               {"step": step, "train": asdict(cfg), "config": cae.config, "kind": KIND})
    if cfg.freeze_encoder:  # exactly the encoder the latents came from, not an average of it
        ema.encoder.load_state_dict(cae.encoder.state_dict())
    ema.reset_id()
    save_module(ema, out / "cae.safetensors", KIND, ema.config, torch.float16)
    save_module(cae, out / "cae_raw.safetensors", KIND, cae.config, torch.float16)


def _start_model(cfg: TrainConfig, device: str):
    """A fresh CAE of `cfg.arch`, or the one in `cfg.init`; given `cfg.head_channels`."""
    if cfg.init:
        return with_head(load_cae(cfg.init), cfg.head_channels).to(device)
    extra = {"head_channels": cfg.head_channels} if cfg.head_channels else {}
    return create_cae(cfg.arch, **extra).to(device)


def _sources(data, cfg: TrainConfig) -> tuple[list[list[Path]], list[float] | None]:
    """The groups of stems to crop from, and how often each is drawn (None: uniformly)."""
    if cfg.family_weights and not cfg.balance_families:
        raise RiffwrightError("family weights need balance_families (single stems by family)")
    if cfg.balance_families:
        return family_balanced_stems(data, "train", cfg.family_weights)
    return list_sources(data, "train"), None



@dataclass
class _CaeRun:
    """One training call: the model and its average, the optimiser, the crops and where
    it all goes."""

    cfg: TrainConfig
    data: str | Path
    out: Path
    device: str
    cae: torch.nn.Module
    ema: torch.nn.Module
    opt: torch.optim.Optimizer
    step: int
    sampler: CropSampler
    gen: torch.Generator

    @classmethod
    def start(cls, cfg: TrainConfig, data, out: Path, device: str, resume: bool) -> _CaeRun:
        """A fresh run, or the checkpoint in `out` resumed (`resume`); logs its start."""
        torch.manual_seed(cfg.seed)
        cae = _start_model(cfg, device)
        ema = _start_model(cfg, device)
        ema.load_state_dict(cae.state_dict())
        ema.requires_grad_(False)
        ema.eval()
        trained = cae
        if cfg.freeze_encoder:
            cae.encoder.requires_grad_(False)
            trained = cae.decoder
        opt = torch.optim.AdamW(trained.parameters(), lr=cfg.lr, betas=(0.9, 0.99),
                                weight_decay=0.0)
        step = 0
        if resume and has_state(out):
            step = int(load_state(out, {"model": cae, "ema": ema}, opt)["step"])
            set_lr(opt, cfg.lr)
        groups, weights = _sources(data, cfg)
        sampler = CropSampler(groups, cfg.crop_frames * cae.hop, cae.sample_rate,
                              mix_prob=cfg.mix_prob, seed=cfg.seed + step, weights=weights)
        gen = torch.Generator().manual_seed(cfg.seed * 7919 + step)
        log_json(out / "train.log", {
            "event": "start", "step": step, "arch": cae.config.get("arch"),
            "groups": len(groups), "params": cae.num_parameters(),
            "frozen_encoder": cfg.freeze_encoder, "time": time.time()})
        return cls(cfg, data, out, device, cae, ema, opt, step, sampler, gen)

    def train_step(self) -> dict:
        """One step on a fresh batch of crops (the learning rate warmed up first, unless
        the run started from trained weights); the step's stats."""
        cfg = self.cfg
        wave = self.sampler.batch(cfg.batch_size).to(self.device)
        with torch.no_grad():
            spec = self.cae.spectral(wave)
        if not cfg.init:
            set_lr(self.opt, warmup_lr(cfg.lr, self.step, WARMUP_STEPS))
        stats = train_step(self.cae, self.opt, spec, self.step, cfg.schedule, self.ema,
                           cfg.ema_decay, cfg.grad_clip, self.gen)
        if cfg.freeze_encoder:
            self.cae.encoder.eval()
        self.step += 1
        return stats

    def save(self) -> None:
        _save_state(self.out, self.cae, self.ema, self.opt, self.step, self.cfg)

    def relist(self) -> None:
        """List the data again: a data set that is still being built grows."""
        fresh, fresh_weights = _sources(self.data, self.cfg)
        if len(fresh) != len(self.sampler.groups):
            self.sampler.groups, self.sampler.weights = fresh, fresh_weights
            log_json(self.out / "train.log",
                     {"event": "data", "step": self.step, "groups": len(fresh)})


def _log_mean(out: Path, stats: list[dict], step: int, seconds: float) -> None:
    """One log line: the mean of each stat over the steps since the last line, and speed."""
    mean = {k: float(np.mean([a[k] for a in stats])) for k in stats[0]}
    mean.update(step=step, sec_per_step=seconds / len(stats))
    log_json(out / "train.log", mean)


def _train_loop(run: _CaeRun, callback, relist_every: int) -> None:
    """Step to `cfg.steps`, logging, checkpointing and relisting the data on the way; a
    stop (Ctrl-C, `kill PID`, a raising callback) checkpoints the step reached."""
    cfg = run.cfg
    t0, acc, saved, last = time.time(), [], run.step, None
    restore = stop_on_sigterm()
    try:
        while run.step < cfg.steps:
            stats = last = run.train_step()
            acc.append(stats)
            if callback is not None:
                callback(run.step, stats)
            if due(run.step, cfg.log_every, cfg.steps):
                _log_mean(run.out, acc, run.step, time.time() - t0)
                t0, acc = time.time(), []
            if due(run.step, cfg.checkpoint_every, cfg.steps):
                run.save()
                saved = run.step
            if run.step % relist_every == 0:
                run.relist()
            if not math.isfinite(stats["loss"]):
                raise RiffwrightError(f"training diverged at step {run.step} (loss is not "
                                      "finite)")
    finally:
        if run.step > saved and last is not None and math.isfinite(last["loss"]):
            run.save()
        restore()


def train_cae(
    data_dir_or_manifest: str | Path,
    out_dir: str | Path,
    *,
    device: str = "cpu",
    threads: int | None = None,
    resume: bool = True,
    callback=None,
    relist_every: int = 500,
    **options,
) -> Path:
    """Train (or resume training) a CAE; returns the path of the EMA weights file.

    `data_dir_or_manifest`: a dataset folder with manifest.json (its "train" songs; stems of
    a song are also mixed, a share `mix_prob` of the crops), a manifest.json path, or a
    folder of audio files. Writes into `out_dir`: ``cae.safetensors`` (EMA weights, float16,
    loadable with `load_cae`), ``cae_raw.safetensors`` (the raw weights: early in a run they
    beat the EMA), ``train_state.safetensors``/``.json`` (model, EMA, optimiser, step:
    resumes from here) and ``train.log`` (one JSON line per logged step). Training continues
    up to `steps` total steps; calling again with a larger `steps` continues the same run.
    `callback(step, stats)` is called after each step; raising from it stops training after
    a checkpoint, and so does SIGTERM (``kill PID``) or Ctrl-C.
    The data source is listed again every `relist_every` steps (it may still be growing).
    `spectral_weight` > 0 adds a multi-resolution STFT loss on the one-step decode
    (`one_step_decode`): sharper partials and onsets on a short budget;
    `mel_weight` > 0 adds the log-mel distance of the same decode (`log_mel_loss`): the
    spectral envelope, which is what tells an organ from strings. `low_weight` > 0 adds the
    same decode's distance below 1 kHz at 4096- and 8192-point resolutions
    (`low_band_loss`): a bass's partials, and the noise between them. `head_channels` > 0 gives
    the decoder a wider output head (`engine.models.cae.nets.Decoder`, starting at zero);
    a resumed run needs the same value.
    `init` starts from a trained CAE file instead of a fresh `arch` (no learning-rate
    warm-up then); `freeze_encoder` trains its decoder alone, so a diffusion model trained on
    its latents stays compatible while the decoder improves. `balance_families` draws single
    stems, every instrument family equally often (it needs a dataset manifest);
    `family_weights` ({"bass": 3.0}) then draws the named families that much more often.
    `options` are `TrainConfig`'s fields and `CTSchedule`'s by name (`arch`, `steps`,
    `batch_size`, `crop_frames`, `lr`, `stage_steps`, `seed`, `ema_decay`...); an unknown
    one is refused before anything is written.
    """
    cfg = TrainConfig.from_options(**options)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if threads:
        torch.set_num_threads(int(threads))
    run = _CaeRun.start(cfg, data_dir_or_manifest, out, device, resume)
    _train_loop(run, callback, relist_every)
    return out / "cae.safetensors"
