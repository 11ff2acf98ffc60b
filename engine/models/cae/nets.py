"""The CAE's two plain networks: 1-D convolutions over STFT frames, bins as channels.

Neither network knows about noise levels beyond an embedding vector it is handed; the
consistency preconditioning lives in `engine.models.cae.model`. Normalisation is per frame (over
channels only), never over time, so a network's output for a frame depends only on its
receptive field: chunked processing matches whole-file processing away from chunk edges.
Because a per-frame norm is blind to the frame's level, it sits only inside residual
branches: the skip path, and the output heads, keep each frame's energy (an output head
behind a per-frame norm cannot tell a loud frame from a quiet one, so the decoder would
produce a stationary texture; `out_norm=True` restores that old layout for comparison).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class FrameNorm(nn.Module):
    """LayerNorm over channels, independently for each time frame: (B, C, T)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(dim=1, keepdim=True)
        var = (x - mu).pow(2).mean(dim=1, keepdim=True)
        x = (x - mu) * torch.rsqrt(var + 1e-5)
        return x * self.weight[:, None] + self.bias[:, None]


class ResBlock(nn.Module):
    """norm -> SiLU -> conv3 -> norm (+FiLM from `emb`) -> SiLU -> conv3, plus a skip."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int = 0):
        super().__init__()
        self.norm1 = FrameNorm(c_in)
        self.conv1 = nn.Conv1d(c_in, c_out, 3, padding=1)
        self.norm2 = FrameNorm(c_out)
        self.film = nn.Linear(emb_dim, 2 * c_out) if emb_dim else None
        self.conv2 = nn.Conv1d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.norm2(h)
        if self.film is not None and emb is not None:
            scale, shift = self.film(emb)[:, :, None].chunk(2, dim=1)
            h = h * (1 + scale) + shift
        h = self.conv2(F.silu(h))
        return self.skip(x) + h


class Encoder(nn.Module):
    """Compressed STFT (B, 2*bins, 16 F) -> latents (B, latent_dim, F)."""

    def __init__(self, in_ch: int, channels: list[int], blocks: int, latent_dim: int,
                 io_kernel: int = 3, out_norm: bool = False):
        super().__init__()
        self.conv_in = nn.Conv1d(in_ch, channels[0], io_kernel, padding=io_kernel // 2)
        self.levels = nn.ModuleList()
        self.downs = nn.ModuleList()
        for i, c in enumerate(channels):
            c_prev = channels[max(i - 1, 0)]
            self.levels.append(
                nn.ModuleList([ResBlock(c_prev if j == 0 else c, c) for j in range(blocks)])
            )
            if i < len(channels) - 1:
                self.downs.append(nn.Conv1d(c, c, 2, stride=2))
        self.norm_out = FrameNorm(channels[-1]) if out_norm else nn.Identity()
        self.conv_out = nn.Conv1d(channels[-1], latent_dim, 3, padding=1)

    @property
    def factor(self) -> int:
        return 2 ** len(self.downs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for i, blocks in enumerate(self.levels):
            for b in blocks:
                h = b(h)
            if i < len(self.downs):
                h = self.downs[i](h)
        return self.conv_out(F.silu(self.norm_out(h)))


def noise_features(c_noise: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of the scalar noise input (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=c_noise.device) / half)
    arg = c_noise.float()[:, None] * 100.0 * freqs[None]
    return torch.cat([arg.cos(), arg.sin()], dim=1)


class Decoder(nn.Module):
    """A 1-D U-Net: (noisy STFT (B, 2*bins, 16 F), c_noise (B,), latents (B, D, F)) -> STFT.

    The latents enter at every resolution (1x1 projection, nearest upsampling, added after
    each level's first block); the noise level enters every block through FiLM.

    The output layer maps `channels[0]` features to the 2 * bins spectrum of a frame, so on
    its own it can only produce spectra in a `channels[0]`-dimensional subspace: enough for
    the low partials, too few for the many high partials of an organ or a choir, which come
    out as a smooth wash. `head_channels` > 0 adds a wider per-frame head (1x1 convolutions
    through `head_channels` units and a SiLU) whose output is added to that layer's; it
    starts at zero, so a decoder trained without it behaves the same until it is trained.
    """

    def __init__(self, in_ch: int, channels: list[int], blocks: int, mid_blocks: int,
                 latent_dim: int, emb_dim: int, io_kernel: int = 3, out_norm: bool = False,
                 head_channels: int = 0):
        super().__init__()
        self.emb_dim = emb_dim
        self.emb = nn.Sequential(
            nn.Linear(emb_dim, emb_dim * 2), nn.SiLU(), nn.Linear(emb_dim * 2, emb_dim)
        )
        top = channels[-1]
        self.lat_in = nn.Conv1d(latent_dim, top, 3, padding=1)
        self.lat_block = ResBlock(top, top, 0)
        self.lat_proj = nn.ModuleList([nn.Conv1d(top, c, 1) for c in channels])
        self.conv_in = nn.Conv1d(in_ch, channels[0], io_kernel, padding=io_kernel // 2)
        self.down_blocks = nn.ModuleList()
        self.downs = nn.ModuleList()
        for i, c in enumerate(channels):
            c_prev = channels[max(i - 1, 0)]
            self.down_blocks.append(nn.ModuleList(
                [ResBlock(c_prev if j == 0 else c, c, emb_dim) for j in range(blocks)]
            ))
            if i < len(channels) - 1:
                self.downs.append(nn.Conv1d(c, c, 2, stride=2))
        self.mid = nn.ModuleList([ResBlock(top, top, emb_dim) for _ in range(mid_blocks)])
        self.ups = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for i in reversed(range(len(channels) - 1)):
            c, c_next = channels[i], channels[i + 1]
            self.ups.append(nn.ConvTranspose1d(c_next, c, 2, stride=2))
            self.up_blocks.append(nn.ModuleList(
                [ResBlock(2 * c if j == 0 else c, c, emb_dim) for j in range(blocks)]
            ))
        self.norm_out = FrameNorm(channels[0]) if out_norm else nn.Identity()
        self.conv_out = nn.Conv1d(channels[0], in_ch, io_kernel, padding=io_kernel // 2)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        self.head = None
        if head_channels:
            self.head = nn.Sequential(
                nn.Conv1d(channels[0], head_channels, 1), nn.SiLU(),
                nn.Conv1d(head_channels, in_ch, 1),
            )
            nn.init.zeros_(self.head[2].weight)
            nn.init.zeros_(self.head[2].bias)

    @property
    def factor(self) -> int:
        return 2 ** len(self.downs)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        emb = self.emb(noise_features(c_noise, self.emb_dim))
        zl = self.lat_block(self.lat_in(z))
        n_levels = len(self.down_blocks)

        def lat(level: int) -> torch.Tensor:
            f = 2 ** (n_levels - 1 - level)
            p = self.lat_proj[level](zl)
            return p.repeat_interleave(f, dim=2) if f > 1 else p

        h = self.conv_in(x)
        skips = []
        for i, blocks in enumerate(self.down_blocks):
            for j, b in enumerate(blocks):
                h = b(h, emb)
                if j == 0:
                    h = h + lat(i)
            if i < n_levels - 1:
                skips.append(h)
                h = self.downs[i](h)
        for b in self.mid:
            h = b(h, emb)
        for k, (up, blocks) in enumerate(zip(self.ups, self.up_blocks)):
            level = n_levels - 2 - k
            h = torch.cat([up(h), skips.pop()], dim=1)
            for j, b in enumerate(blocks):
                h = b(h, emb)
                if j == 0:
                    h = h + lat(level)
        h = F.silu(self.norm_out(h))
        out = self.conv_out(h)
        return out if self.head is None else out + self.head(h)
