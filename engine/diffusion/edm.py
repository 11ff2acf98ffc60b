"""EDM (Karras et al. 2022): preconditioning, training loss, noise schedule, samplers.

The pieces live apart, as in NVlabs/edm: the network is a plain module that knows nothing of
noise levels; `EDMPrecond` owns sigma_data and the c_* scalings; `EDMLoss` is a small object;
samplers are plain functions with one signature, `sample(denoiser, x, sigmas, callback=...)`.

A *denoiser* here is any callable `denoiser(x, sigma) -> D(x; sigma)` with x of shape
(B, C, F) and sigma of shape (B,). Guidance, inpainting and loop sampling are wrappers around
a denoiser or around a step (see `engine.generation.procedures`), never copies of these loops.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

SIGMA_MIN = 0.002
SIGMA_MAX = 80.0
RHO = 7.0


def append_dims(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """Append trailing singleton dims so a (B,) tensor broadcasts against rank-`ndim` data."""
    missing = ndim - t.ndim
    if missing < 0:
        raise ValueError(f"tensor has {t.ndim} dims, more than the target {ndim}")
    return t.reshape(t.shape + (1,) * missing)


class EDMPrecond(nn.Module):
    """D(x; σ) = c_skip·x + c_out·F(c_in·x; c_noise, cond) around a raw network F.

    The network is called as `net(x_in, c_noise, context=..., clap=...)`; `context` (B, Cc, F)
    and `clap` (B, D) may be None, meaning "absent": the network substitutes its learned
    absent values.
    """

    def __init__(self, net: nn.Module, sigma_data: float = 1.0):
        super().__init__()
        self.net = net
        self.sigma_data = float(sigma_data)

    def scalings(self, sigma: torch.Tensor):
        sd = self.sigma_data
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = sigma * sd / (sigma**2 + sd**2).sqrt()
        c_in = 1 / (sigma**2 + sd**2).sqrt()
        c_noise = sigma.log() / 4
        return c_skip, c_out, c_in, c_noise

    def forward(self, x, sigma, context=None, clap=None, context_mask=None, clap_mask=None):
        sigma = sigma.to(torch.float32).reshape(-1)
        if sigma.numel() == 1 and x.shape[0] != 1:
            sigma = sigma.expand(x.shape[0])
        c_skip, c_out, c_in, c_noise = (append_dims(c, x.ndim) if i < 3 else c
                                        for i, c in enumerate(self.scalings(sigma)))
        f = self.net(
            (c_in * x).to(x.dtype), c_noise,
            context=context, clap=clap, context_mask=context_mask, clap_mask=clap_mask,
        )
        return c_skip * x + c_out * f.to(torch.float32)


@dataclass
class EDMLoss:
    """ln σ ~ N(P_mean, P_std²); loss weight (σ² + σd²) / (σ·σd)²."""

    p_mean: float = -1.2
    p_std: float = 1.2
    sigma_data: float = 1.0

    def sample_sigma(self, n: int, generator: torch.Generator | None = None, device="cpu"):
        rnd = torch.randn(n, generator=generator)
        return (rnd * self.p_std + self.p_mean).exp().to(device)

    def weight(self, sigma: torch.Tensor) -> torch.Tensor:
        sd = self.sigma_data
        return (sigma**2 + sd**2) / (sigma * sd) ** 2

    def __call__(self, precond: EDMPrecond, y, *, sigma=None, noise=None, frame_mask=None,
                 generator=None, return_denoised: bool = False, **cond):
        """Mean weighted squared error of D(y + n; σ) against y. `frame_mask` (B, F) marks
        valid frames (for windows padded past the end of a stem). With `return_denoised`,
        returns (loss, D) for losses on the denoised estimate itself."""
        if sigma is None:
            sigma = self.sample_sigma(y.shape[0], generator, y.device)
        if noise is None:
            noise = torch.randn(y.shape, generator=generator).to(y.device)
        s = append_dims(sigma, y.ndim)
        d = precond(y + noise * s, sigma, **cond)
        err = self.weight(s) * (d - y) ** 2
        if frame_mask is not None:
            m = frame_mask[:, None, :].to(err.dtype)
            loss = (err * m).sum() / (m.sum() * y.shape[1]).clamp_min(1)
        else:
            loss = err.mean()
        return (loss, d) if return_denoised else loss


def karras_sigmas(steps: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX,
                  rho: float = RHO) -> torch.Tensor:
    """`steps` noise levels from σ_max down to σ_min, then a final 0 (length steps + 1)."""
    if steps < 1:
        raise ValueError("steps must be at least 1")
    if steps == 1:
        s = torch.tensor([sigma_max], dtype=torch.float64)
    else:
        ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
        lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
        s = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([s, s.new_zeros(1)]).to(torch.float32)


def sigmas_from_strength(sigmas: torch.Tensor, strength: float) -> torch.Tensor:
    """The tail of a schedule that a variation of strength s ∈ [0, 1] runs.

    s = 1 runs the whole schedule (pure noise); s = 0 runs nothing (the input comes back).
    The number of steps kept is round(s · N), so the start level sits on the schedule.
    """
    n = len(sigmas) - 1
    k = int(round(max(0.0, min(1.0, strength)) * n))
    return sigmas[n - k:]


@dataclass
class Step:
    """What a sampler reports after each step (k-diffusion's callback dict, typed)."""

    i: int            # 0-based step index
    total: int        # number of steps
    x: torch.Tensor   # the state after this step
    denoised: torch.Tensor  # D(x_i; σ_i), a preview of the result
    sigma: float
    sigma_next: float


StepHook = Callable[[int, torch.Tensor, float], torch.Tensor]


def _churn_noise(x: torch.Tensor,
                 generator: torch.Generator | Sequence[torch.Generator] | None) -> torch.Tensor:
    """Gaussian noise shaped like x, drawn on the CPU; row k from generator[k] if a sequence."""
    if isinstance(generator, Sequence):
        rows = [torch.randn(x.shape[1:], generator=g) for g in generator]
        return torch.stack(rows).to(x.device, x.dtype)
    return torch.randn(x.shape, generator=generator).to(x.device, x.dtype)


def iter_heun(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
              s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"),
              s_noise: float = 1.0,
              generator: torch.Generator | Sequence[torch.Generator] | None = None,
              step_hook: StepHook | None = None, second_order: bool = True
              ) -> Iterator[Step]:
    """EDM's stochastic sampler (Algorithm 2), one `Step` per noise level.

    Heun's second-order correction is applied at every step but the last (σ_next = 0), where
    it would divide by zero and Euler is exact. `second_order=False` gives plain Euler.
    `step_hook(i, x, sigma)` may rewrite the state before each step: that is where inpainting
    and loop sampling hook in. The final state is the last `Step.x`. `generator` draws the
    churn noise: one for the batch, or one per row (a take then depends on its own seed only).
    """
    total = len(sigmas) - 1
    ones = x.new_ones(x.shape[0])
    sig = sigmas.tolist()
    for i in range(total):
        s_cur, s_next = sig[i], sig[i + 1]
        if step_hook is not None:
            x = step_hook(i, x, s_cur)
        gamma = 0.0
        if s_churn > 0 and s_tmin <= s_cur <= s_tmax:
            gamma = min(s_churn / total, math.sqrt(2) - 1)
        s_hat = s_cur * (1 + gamma)
        if gamma > 0:
            eps = _churn_noise(x, generator)
            x = x + math.sqrt(s_hat**2 - s_cur**2) * s_noise * eps
        denoised = denoiser(x, ones * s_hat)
        d = (x - denoised) / s_hat
        x_next = x + (s_next - s_hat) * d
        if second_order and s_next > 0:
            denoised_next = denoiser(x_next, ones * s_next)
            d_next = (x_next - denoised_next) / s_next
            x_next = x + (s_next - s_hat) * (0.5 * d + 0.5 * d_next)
        x = x_next
        yield Step(i, total, x, denoised, s_cur, s_next)


def iter_euler(denoiser: Denoiser, x, sigmas, **kw) -> Iterator[Step]:
    """First-order sampling over the same schedule (one network call per step)."""
    return iter_heun(denoiser, x, sigmas, second_order=False, **kw)


SAMPLERS = {"heun": iter_heun, "euler": iter_euler}


def sample(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, sampler: str = "heun",
           callback: Callable[[Step], None] | None = None, **kw) -> torch.Tensor:
    """Run a sampler to the end, calling `callback(step)` after every step; return x."""
    for step in SAMPLERS[sampler](denoiser, x, sigmas, **kw):
        x = step.x
        if callback is not None:
            callback(step)
    return x
