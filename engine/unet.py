"""A 1-D DDPM++-style U-Net over latent frames.

The network sees `x` (B, C, F): noisy latents with the encoded context concatenated on the
channel axis. The noise level (EDM's c_noise) is embedded with Fourier features; the CLAP
embedding is projected and added to it, and the sum modulates every residual block (scale and
shift after GroupNorm). Self-attention runs at the coarse levels. Every residual and skip
path is scaled by 1/√2 as in DDPM++. Nothing depends on the window length: inputs of any
length run, padded internally to a multiple of the total downsampling factor.

Missing conditions are represented by learned "absent" values: a per-channel context latent
and a CLAP vector, substituted wherever a sample's condition is absent. So the three branches
of two-scale guidance run as one batch, each row with its own absent flags.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

SKIP_SCALE = 1 / math.sqrt(2)


@dataclass
class UNetConfig:
    latent_dim: int = 64
    clap_dim: int = 256
    channels: int = 64
    mults: list[int] = field(default_factory=lambda: [1, 2, 2])
    blocks: int = 1
    attn_levels: list[int] = field(default_factory=lambda: [2])
    heads: int = 4
    emb_dim: int = 256
    dropout: float = 0.0
    groups: int = 16

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> UNetConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


ARCHS: dict[str, dict] = {
    # ~2 M parameters: tests, and faster than real time on a 2-core CPU.
    "tiny": dict(channels=64, mults=[1, 2, 2], blocks=1, attn_levels=[2], emb_dim=256),
    # ~17 M parameters: the CPU default.
    "small": dict(channels=96, mults=[1, 2, 2, 4], blocks=2, attn_levels=[2, 3], emb_dim=512),
    # ~78 M parameters: for a GPU.
    "base": dict(channels=192, mults=[1, 2, 3, 4], blocks=2, attn_levels=[2, 3], emb_dim=768,
                 heads=8),
}


def arch_config(arch: str, latent_dim: int = 64, clap_dim: int = 256) -> UNetConfig:
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    return UNetConfig(latent_dim=latent_dim, clap_dim=clap_dim, **ARCHS[arch])


class FourierEmbedding(nn.Module):
    def __init__(self, dim: int, scale: float = 16.0):
        super().__init__()
        self.register_buffer("freqs", torch.randn(dim // 2) * scale)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        a = t.to(torch.float32)[:, None] * self.freqs[None, :] * (2 * math.pi)
        return torch.cat([a.cos(), a.sin()], dim=1)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(groups, cin), cin)
        self.conv1 = nn.Conv1d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = nn.GroupNorm(min(groups, cout), cout)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv1d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv1d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None].chunk(2, dim=1)
        h = F.silu(self.norm2(h) * (1 + scale) + shift)
        h = self.conv2(self.drop(h))
        return (self.skip(x) + h) * SKIP_SCALE


class Attention(nn.Module):
    def __init__(self, ch: int, heads: int, groups: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(min(groups, ch), ch)
        self.qkv = nn.Conv1d(ch, 3 * ch, 1)
        self.proj = nn.Conv1d(ch, ch, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, n = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, n).unbind(1)
        h = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2),
                                           v.transpose(-1, -2))
        h = h.transpose(-1, -2).reshape(b, c, n)
        return (x + self.proj(h)) * SKIP_SCALE


class Level(nn.Module):
    """The residual (and attention) blocks of one resolution."""

    def __init__(self, cin, cout, n, emb_dim, groups, dropout, attn, heads):
        super().__init__()
        self.blocks = nn.ModuleList()
        self.attns = nn.ModuleList()
        for j in range(n):
            self.blocks.append(ResBlock(cin if j == 0 else cout, cout, emb_dim, groups, dropout))
            self.attns.append(Attention(cout, heads, groups) if attn else nn.Identity())

    def forward(self, x, emb):
        for block, attn in zip(self.blocks, self.attns):
            x = attn(block(x, emb))
        return x


class UNet1d(nn.Module):
    """F(x_in, c_noise; context, clap) for `engine.edm.EDMPrecond`."""

    kind = "riffwright-ldm"

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        c = config
        chans = [c.channels * m for m in c.mults]
        self.factor = 2 ** (len(chans) - 1)
        self.absent_context = nn.Parameter(torch.zeros(c.latent_dim))
        self.absent_clap = nn.Parameter(torch.randn(c.clap_dim) / math.sqrt(c.clap_dim))
        self.noise_emb = FourierEmbedding(c.emb_dim)
        self.noise_mlp = nn.Sequential(nn.Linear(c.emb_dim, c.emb_dim), nn.SiLU(),
                                       nn.Linear(c.emb_dim, c.emb_dim))
        self.clap_proj = nn.Sequential(nn.Linear(c.clap_dim, c.emb_dim), nn.SiLU(),
                                       nn.Linear(c.emb_dim, c.emb_dim))
        self.inp = nn.Conv1d(2 * c.latent_dim, chans[0], 3, padding=1)
        self.down_levels = nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        cin = chans[0]
        for i, ch in enumerate(chans):
            self.down_levels.append(Level(cin, ch, c.blocks, c.emb_dim, c.groups, c.dropout,
                                          i in c.attn_levels, c.heads))
            cin = ch
            if i < len(chans) - 1:
                self.downsamplers.append(nn.Conv1d(ch, ch, 3, stride=2, padding=1))
        self.mid = Level(cin, cin, 2, c.emb_dim, c.groups, c.dropout, True, c.heads)
        self.up_levels = nn.ModuleList()
        self.upsamplers = nn.ModuleList()
        for i in reversed(range(len(chans))):
            ch = chans[i]
            self.up_levels.append(Level(cin + ch, ch, c.blocks, c.emb_dim, c.groups, c.dropout,
                                        i in c.attn_levels, c.heads))
            cin = ch
            if i > 0:
                self.upsamplers.append(nn.Conv1d(ch, chans[i - 1], 3, padding=1))
                cin = chans[i - 1]
        self.out_norm = nn.GroupNorm(min(c.groups, cin), cin)
        self.out = nn.Conv1d(cin, c.latent_dim, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    @staticmethod
    def _select(value: torch.Tensor | None, absent: torch.Tensor, mask, shape, batch):
        """Per-row choice between a given condition and the learned absent value."""
        fill = absent.reshape((1,) + absent.shape + (1,) * (len(shape) - 1 - absent.ndim))
        fill = fill.expand(shape).to(absent.dtype)
        if value is None:
            return fill
        if mask is None:
            return value.to(fill.dtype)
        m = mask.to(torch.bool).reshape((batch,) + (1,) * (len(shape) - 1))
        return torch.where(m, value.to(fill.dtype), fill)

    def forward(self, x, c_noise, context=None, clap=None, context_mask=None, clap_mask=None):
        b, _, n = x.shape
        cfg = self.config
        ctx = self._select(context, self.absent_context, context_mask,
                           (b, cfg.latent_dim, n), b)
        emb_clap = self._select(clap, self.absent_clap, clap_mask, (b, cfg.clap_dim), b)
        c_noise = c_noise.reshape(-1).expand(b) if c_noise.numel() == 1 else c_noise.reshape(b)
        emb = self.noise_mlp(self.noise_emb(c_noise)) + self.clap_proj(emb_clap)
        emb = F.silu(emb)

        pad = (-n) % self.factor
        h = torch.cat([x, ctx.to(x.dtype)], dim=1)
        if pad:
            h = F.pad(h, (0, pad), mode="replicate")
        h = self.inp(h)
        skips = []
        for i, level in enumerate(self.down_levels):
            h = level(h, emb)
            skips.append(h)
            if i < len(self.downsamplers):
                h = self.downsamplers[i](h)
        h = self.mid(h, emb)
        for j, level in enumerate(self.up_levels):
            h = level(torch.cat([h, skips.pop()], dim=1), emb)
            if j < len(self.upsamplers):
                h = F.interpolate(h, scale_factor=2.0, mode="nearest")
                h = self.upsamplers[j](h)
        h = self.out(F.silu(self.out_norm(h)))
        return h[:, :, :n]


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
