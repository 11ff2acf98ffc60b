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

Models with `feature_dim` > 0 take the context as latents *and* explicit features
(`engine.diffusion.context_features`: chroma and sub-frame onsets) stacked on the channel axis. Besides
the input concatenation, that stack goes through a small convolutional encoder whose output
is pooled to each resolution and added (through zero-initialised projections) at the input of
every down level and of the middle: a short path from the context to every scale.
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
    # explicit context features per frame (engine.diffusion.context_features), appended to the context
    # latents; 0 for models without them
    feature_dim: int = 0

    @property
    def context_dim(self) -> int:
        return self.latent_dim + self.feature_dim

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


def arch_config(arch: str, latent_dim: int = 64, clap_dim: int = 256,
                feature_dim: int = 0) -> UNetConfig:
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    return UNetConfig(latent_dim=latent_dim, clap_dim=clap_dim, feature_dim=feature_dim,
                      **ARCHS[arch])


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
    """F(x_in, c_noise; context, clap) for `engine.diffusion.edm.EDMPrecond`."""

    kind = "riffwright-ldm"

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        c = config
        chans = [c.channels * m for m in c.mults]
        self.factor = 2 ** (len(chans) - 1)
        self.absent_context = nn.Parameter(torch.zeros(c.context_dim))
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
        if c.feature_dim:
            # the context stream: latents + features through a small encoder, added to the
            # input of every down level and the middle (zero projections: a model warm-started
            # from one without features starts out computing exactly what it did)
            self.cond_enc = nn.Sequential(nn.Conv1d(c.context_dim, chans[0], 3, padding=1),
                                          nn.SiLU(), nn.Conv1d(chans[0], chans[0], 3, padding=1),
                                          nn.SiLU())
            widths = [chans[0]] + chans[:-1] + [chans[-1]]
            self.cond_proj = nn.ModuleList(nn.Conv1d(chans[0], w, 1) for w in widths)
            for proj in self.cond_proj:
                nn.init.zeros_(proj.weight)
                nn.init.zeros_(proj.bias)
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
                           (b, cfg.context_dim, n), b)
        emb_clap = self._select(clap, self.absent_clap, clap_mask, (b, cfg.clap_dim), b)
        c_noise = c_noise.reshape(-1).expand(b) if c_noise.numel() == 1 else c_noise.reshape(b)
        emb = self.noise_mlp(self.noise_emb(c_noise)) + self.clap_proj(emb_clap)
        emb = F.silu(emb)

        pad = (-n) % self.factor
        h = torch.cat([x, ctx[:, :cfg.latent_dim].to(x.dtype)], dim=1)
        if pad:
            h = F.pad(h, (0, pad), mode="replicate")
        h = self.inp(h)
        cond = None
        if cfg.feature_dim:
            c_in = ctx.to(x.dtype)
            cond = self.cond_enc(F.pad(c_in, (0, pad), mode="replicate") if pad else c_in)
        skips = []
        for i, level in enumerate(self.down_levels):
            if cond is not None:
                h = h + self.cond_proj[i](F.avg_pool1d(cond, 2**i) if i else cond)
            h = level(h, emb)
            skips.append(h)
            if i < len(self.downsamplers):
                h = self.downsamplers[i](h)
        if cond is not None:
            h = h + self.cond_proj[-1](F.avg_pool1d(cond, self.factor) if self.factor > 1
                                       else cond)
        h = self.mid(h, emb)
        for j, level in enumerate(self.up_levels):
            h = level(torch.cat([h, skips.pop()], dim=1), emb)
            if j < len(self.upsamplers):
                h = F.interpolate(h, scale_factor=2.0, mode="nearest")
                h = self.upsamplers[j](h)
        h = self.out(F.silu(self.out_norm(h)))
        return h[:, :, :n]


def warm_start(net: UNet1d, tensors: dict) -> list[str]:
    """Load a trained model's tensors into `net`, which may add context features to it.

    Tensors `net` lacks are refused; those only `net` has keep their initialisation (the zero
    projections of the context stream); a shorter `absent_context`, and the context encoder's
    first convolution when `net` takes more feature channels (a beat grid added to chroma
    and onsets), are extended with zeros, so the model starts out computing what it did.
    Returns the names left at their initialisation.
    """
    own = net.state_dict()
    extra = sorted(set(tensors) - set(own))
    if extra:
        raise ValueError(f"the checkpoint has tensors this model lacks: {', '.join(extra[:3])}")
    fresh = []
    for name, t in own.items():
        src = tensors.get(name)
        if src is None:
            fresh.append(name)
            continue
        if name == "absent_context" and src.shape[0] < t.shape[0]:
            src = torch.cat([src.to(t.dtype), torch.zeros(t.shape[0] - src.shape[0])])
        if name == "cond_enc.0.weight" and src.dim() == 3 and src.shape[1] < t.shape[1] \
                and src.shape[0] == t.shape[0] and src.shape[2] == t.shape[2]:
            # more context features than the checkpoint had: their inputs start at zero
            pad = torch.zeros(t.shape[0], t.shape[1] - src.shape[1], t.shape[2])
            src = torch.cat([src.to(t.dtype), pad], dim=1)
        if tuple(src.shape) != tuple(t.shape):
            raise ValueError(f"tensor {name} has shape {tuple(src.shape)}, the model expects "
                             f"{tuple(t.shape)}")
        own[name] = src.to(t.dtype)
    net.load_state_dict(own)
    return fresh


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
