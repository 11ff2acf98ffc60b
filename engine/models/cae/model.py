"""The Riffwright consistency autoencoder: encoder, consistency decoder, chunked I/O.

The decoder is a consistency model in the sense of Song et al. (2023) and Music2Latent:
``f(x, sigma | z) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma), z)`` with
``c_skip = sd^2 / ((sigma - smin)^2 + sd^2)`` and ``c_out = sd (sigma - smin) / sqrt(sigma^2 +
sd^2)``, so ``f(x, sigma_min) = x`` exactly (the boundary condition). Decoding draws noise at
``sigma_max`` and applies ``f`` once (or twice, re-noising to ``sigma_mid``).

Any length: both directions work on windows of at most ``max_chunk_frames`` latent frames
(summed over the batch), so memory is set by that setting, not by the file. Encoding gives
each window ``encode_context`` frames of context on both sides and keeps its centre; decoding
overlaps windows by ``decode_overlap`` frames and crossfades linearly across the middle of
each overlap. The decoder's noise is a fixed field over STFT frames, drawn in blocks from
seeds taken from the caller's CPU generator, so overlapping windows see the same noise and
agree where they overlap: there is no seam, and the result does not depend on the chunking.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch
from torch import nn

from engine.models.cae.archs import KIND
from engine.models.cae.nets import Decoder, Encoder
from engine.models.cae.phase import (
    PhaseBuilder,
    decohere,
    low_band_weight,
    match_level,
    smooth_texture,
)
from engine.models.cae.spectral import Spectral

_NOISE_BLOCK = 512  # STFT frames per independently seeded noise block
_SEED_MOD = 2**62
_PHASE_BLOCK = 4096  # STFT frames per block of phase rebuilding and overlap-add
# How decoded spectra become audio (config "decode_phase"; docs/cae.md):
#   "hybrid" (default): the network's own phases below ~1 kHz with their frame-locked part
#       removed, rebuilt phases above;  "rebuilt": rebuilt phases everywhere (round 6);
#   "network": the network's phases as they are (they buzz at k x 93.75 Hz).
DECODE_PHASES = ("hybrid", "rebuilt", "network")


def encode_plan(batch: int, frames: int, limit: int, ctx: int):
    """Windows for chunked encoding: (W, [(item, window start, keep start, keep stop)]).

    Windows hold W = max(limit, 4 ctx) latent frames (fewer if the file is shorter); each
    keeps the frames at least `ctx` from its edges (except at the ends of the file), so
    every kept frame saw `ctx` frames of context on both sides.
    """
    W = min(frames, max(limit, 4 * ctx))
    stride = max(1, W - 2 * ctx) if W < frames else frames
    jobs = []
    for b in range(batch):
        a = 0
        while a < frames:
            e = min(a + stride, frames)
            s = min(max(a - ctx, 0), frames - W)
            jobs.append((b, s, a, e))
            a = e
    return W, jobs


def decode_plan(frames: int, limit: int, overlap: int, hop: int):
    """Windows for chunked decoding: (W, starts, per-window crossfade weights over W * hop).

    Windows hold W = max(limit, 3 overlap) latent frames (fewer if the file is shorter).
    Neighbouring windows overlap by at least `overlap` latent frames; the crossfade is a
    linear ramp across the middle half of each overlap, so the weights of the two windows
    sum to one there and each window's outermost quarter (its least reliable part) is unused.
    """
    W = min(frames, max(limit, 3 * overlap))
    starts = [0]
    if W < frames:
        while starts[-1] + W < frames:
            starts.append(min(starts[-1] + W - overlap, frames - W))
    weights = []
    t = torch.arange(W * hop, dtype=torch.float32)
    for k, s in enumerate(starts):
        w = torch.ones(W * hop)
        tt = t + s * hop
        if k > 0:
            o0, o1 = s * hop, (starts[k - 1] + W) * hop
            m = (o1 - o0) / 4
            w = w * ((tt - (o0 + m)) / max(o1 - o0 - 2 * m, 1)).clamp(0, 1)
        if k < len(starts) - 1:
            o0, o1 = starts[k + 1] * hop, (s + W) * hop
            m = (o1 - o0) / 4
            w = w * (1 - (tt - (o0 + m)) / max(o1 - o0 - 2 * m, 1)).clamp(0, 1)
        weights.append(w)
    return W, starts, weights


class ConsistencyAutoencoder(nn.Module):
    """Mono 48 kHz audio <-> (B, 64, ceil(T / 4096)) latents. Implements `Autoencoder`."""

    kind = KIND

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        c = self.config
        self.sample_rate = int(c["sample_rate"])
        self.hop = int(c["hop"])
        self.latent_dim = int(c["latent_dim"])
        self.spectral = Spectral(c["n_fft"], c["stft_hop"], c["alpha"], c["beta"])
        self.frames_per_latent = self.hop // c["stft_hop"]
        ch = self.spectral.channels
        self.encoder = Encoder(
            ch, c["enc_channels"], c["enc_blocks"], self.latent_dim, c.get("io_kernel", 3),
            bool(c.get("out_norm", False)),
        )
        self.decoder = Decoder(
            ch, c["dec_channels"], c["dec_blocks"], c["mid_blocks"], self.latent_dim, c["emb_dim"],
            c.get("io_kernel", 3), bool(c.get("out_norm", False)), int(c.get("head_channels", 0)),
        )
        if self.encoder.factor != self.frames_per_latent or self.decoder.factor != self.frames_per_latent:
            raise ValueError("network down-sampling must equal hop / stft_hop")
        self.sigma_data = float(c["sigma_data"])
        self.sigma_min = float(c["sigma_min"])
        self.sigma_max = float(c["sigma_max"])
        self.max_chunk_frames = int(c["max_chunk_frames"])
        self._id: str | None = None

    # ------------------------------------------------------------------ identity

    @property
    def id(self) -> str:
        """``cae-<arch>-<12 hex of sha256 over config and weights>``, cached until reset."""
        if self._id is None:
            h = hashlib.sha256()
            h.update(repr(sorted((k, str(v)) for k, v in self.config.items())).encode())
            for name, t in sorted(self.state_dict().items()):
                h.update(name.encode())
                h.update(t.detach().cpu().float().contiguous().numpy().tobytes())
            self._id = f"cae-{self.config.get('arch', 'custom')}-{h.hexdigest()[:12]}"
        return self._id

    def reset_id(self) -> None:
        """Forget the cached id (call after changing the weights)."""
        self._id = None

    def num_parameters(self) -> dict:
        enc = sum(p.numel() for p in self.encoder.parameters())
        dec = sum(p.numel() for p in self.decoder.parameters())
        return {"encoder": enc, "decoder": dec, "total": enc + dec}

    # ------------------------------------------------------------------ preconditioning

    def c_skip(self, sigma: torch.Tensor) -> torch.Tensor:
        sd = self.sigma_data
        return sd**2 / ((sigma - self.sigma_min) ** 2 + sd**2)

    def c_out(self, sigma: torch.Tensor) -> torch.Tensor:
        sd = self.sigma_data
        return sd * (sigma - self.sigma_min) / torch.sqrt(sigma**2 + sd**2)

    def c_in(self, sigma: torch.Tensor) -> torch.Tensor:
        return 1.0 / torch.sqrt(sigma**2 + self.sigma_data**2)

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The consistency function f(x, sigma | z); `sigma` is (B,) or a scalar tensor."""
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1)
        sigma = sigma.expand(x.shape[0]) if sigma.numel() == 1 else sigma
        s = sigma[:, None, None]
        c_noise = torch.log(sigma) / 4
        return self.c_skip(s) * x + self.c_out(s) * self.decoder(self.c_in(s) * x, c_noise, z)

    # ------------------------------------------------------------------ spectra

    def _padded_frames(self, wave: torch.Tensor) -> int:
        return math.ceil(wave.shape[-1] / self.hop) if wave.shape[-1] else 0

    def encode_spec(self, spec: torch.Tensor) -> torch.Tensor:
        """(B, 2*bins, 16 F) -> (B, D, F), no chunking (training path)."""
        return self.encoder(spec)

    def sample_spec(
        self, z: torch.Tensor, noise: torch.Tensor, steps: int | None = None,
        noise2: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Consistency sampling in STFT space: noise (B, 2*bins, 16 F) unit normal."""
        steps = int(steps or self.config.get("decode_steps", 1))
        x = self.denoise(noise * self.sigma_max, torch.tensor(self.sigma_max), z)
        if steps >= 2:
            s = float(self.config.get("sigma_mid", 0.4))
            n2 = noise2 if noise2 is not None else torch.randn_like(x)
            x = self.denoise(x + math.sqrt(s**2 - self.sigma_min**2) * n2, torch.tensor(s), z)
        return x

    # ------------------------------------------------------------------ encode

    def encode(self, wave: torch.Tensor, max_chunk_frames: int | None = None) -> torch.Tensor:
        """(B, T) float mono at 48 kHz -> (B, 64, ceil(T / 4096)) latents, chunked.

        Runs under `torch.inference_mode`; the result is an ordinary tensor (usable as data
        in a training graph)."""
        with torch.inference_mode():
            out = self._encode(wave, max_chunk_frames)
        return out.clone()

    def _encode(self, wave: torch.Tensor, max_chunk_frames: int | None) -> torch.Tensor:
        wave = torch.as_tensor(wave)
        if wave.ndim == 1:
            wave = wave[None]
        dev = next(self.parameters()).device
        B, T = wave.shape
        F_ = self._padded_frames(wave)
        out = torch.zeros(B, self.latent_dim, F_, device=dev)
        if F_ == 0:
            return out
        wave = wave.to(dev, torch.float32)
        wave = torch.nn.functional.pad(wave, (0, F_ * self.hop - T))
        padded = self.spectral.pad_wave(wave)
        limit = max(1, int(max_chunk_frames or self.max_chunk_frames))
        W, jobs = encode_plan(B, F_, limit, int(self.config["encode_context"]))
        per_batch = max(1, limit // W)
        for i in range(0, len(jobs), per_batch):
            group = jobs[i : i + per_batch]
            segs = torch.stack([
                padded[b, s * self.hop : (s + W) * self.hop + 2 * self.spectral.pad]
                for b, s, _, _ in group
            ])
            z = self.encoder(self.spectral.frames(segs))
            for k, (b, s, a, e) in enumerate(group):
                out[b, :, a:e] = z[k, :, a - s : e - s]
        return out

    # ------------------------------------------------------------------ decode

    def _noise(self, seeds: list[int], start: int, stop: int, stream: int) -> torch.Tensor:
        """The fixed noise field for STFT frames [start, stop): (len(seeds), C, stop - start)."""
        C = self.spectral.channels
        out = torch.empty(len(seeds), C, stop - start)
        b0, b1 = start // _NOISE_BLOCK, (stop - 1) // _NOISE_BLOCK
        for i, seed in enumerate(seeds):
            blocks = []
            for blk in range(b0, b1 + 1):
                g = torch.Generator().manual_seed(
                    (seed * 1_000_003 + blk * 7_919 + stream * 104_729) % _SEED_MOD
                )
                blocks.append(torch.randn(C, _NOISE_BLOCK, generator=g))
            field = torch.cat(blocks, dim=1)
            off = start - b0 * _NOISE_BLOCK
            out[i] = field[:, off : off + stop - start]
        return out

    def _synthesize(self, mags: torch.Tensor, seeds: list[int],
                    low: torch.Tensor | None = None) -> torch.Tensor:
        """(B, bins, n) decoded magnitudes -> (B, n * stft_hop) audio: the frame texture
        smoothed, phases rebuilt (`engine.models.cae.phase`), overlap-added block by block so the
        complex frames never exist for the whole file at once. `low` (B, L, n), if given, is the
        network's own complex spectrum of the lowest L bins, crossfaded in by `low_band_weight`."""
        sp = self.spectral
        B, bins, n = mags.shape
        env = sp.envelope(n).clamp_min(1e-3)
        span = torch.zeros(B, env.shape[0])
        block = _PHASE_BLOCK
        w = torch.from_numpy(low_band_weight(bins)).float()[: low.shape[1], None] if low is not None else None
        for b in range(B):
            smooth = smooth_texture(mags[b].numpy())
            build = PhaseBuilder(sp.n_fft, sp.hop, seed=seeds[b] % (2**32))
            for f0 in range(0, n, block):
                f1 = min(f0 + block, n)
                X = torch.from_numpy(build(smooth[:, f0:f1]))
                if low is not None:
                    L = low.shape[1]
                    X[:L] = w * low[b, :, f0:f1] + (1.0 - w) * X[:L]
                y = sp.overlap_add(X[None])[0]
                span[b, f0 * sp.hop : f0 * sp.hop + y.shape[0]] += y
        span /= env
        return span[:, sp.pad : sp.pad + n * sp.hop]

    def _low_band(self, waves: torch.Tensor, mags: torch.Tensor) -> torch.Tensor:
        """(B, n * stft_hop) network-phase audio -> (B, L, n) its lowest bins' STFT (the bins
        `low_band_weight` uses), frame-locked phases removed (`decohere`), brought to the level
        of the decoded magnitudes `mags` (B, bins, n) (`match_level`); the STFT in blocks of
        frames, so the full spectrum never exists for the whole file."""
        sp = self.spectral
        L = int(np.count_nonzero(low_band_weight(sp.bins)))
        padded = sp.pad_wave(waves)
        B, n = waves.shape[0], waves.shape[1] // sp.hop
        out = torch.zeros(B, L, n, dtype=torch.complex64)
        for f0 in range(0, n, _PHASE_BLOCK):
            f1 = min(f0 + _PHASE_BLOCK, n)
            seg = padded[:, f0 * sp.hop : (f1 - 1) * sp.hop + sp.n_fft]
            X = torch.stft(seg, sp.n_fft, sp.hop, window=sp.window, center=False, return_complex=True)
            out[:, :, f0:f1] = X[:, :L]
        w = low_band_weight(sp.bins)[:L]
        return torch.stack([match_level(decohere(out[b]), mags[b, :L], w) for b in range(B)])

    def decode(
        self,
        latents: torch.Tensor,
        length: int | None = None,
        generator: torch.Generator | None = None,
        steps: int | None = None,
        max_chunk_frames: int | None = None,
    ) -> torch.Tensor:
        """(B, 64, F) latents -> (B, length or F * 4096) float32 audio at 48 kHz (CPU).

        Deterministic given a CPU `generator` (noise is drawn on the CPU, then moved).
        `steps`: 1 (default) or 2 consistency steps. Runs under `torch.inference_mode`.
        """
        with torch.inference_mode():
            out = self._decode(latents, length, generator, steps, max_chunk_frames)
        return out.clone()

    def _decode(self, latents, length, generator, steps, max_chunk_frames) -> torch.Tensor:
        latents = torch.as_tensor(latents)
        if latents.ndim == 2:
            latents = latents[None]
        B, D, F_ = latents.shape
        if D != self.latent_dim:
            raise ValueError(f"expected {self.latent_dim} latent channels, got {D}")
        total = F_ * self.hop
        length = total if length is None else int(length)
        if F_ == 0 or length == 0:
            return torch.zeros(B, max(length, 0))
        latents = latents.to(next(self.parameters()).device, torch.float32)
        seeds = torch.randint(0, _SEED_MOD, (B,), generator=generator, dtype=torch.int64).tolist()
        limit = max(1, int(max_chunk_frames or self.max_chunk_frames))
        plan = decode_plan(F_, limit, int(self.config["decode_overlap"]), self.hop)
        windows = self._decoded_windows(latents, seeds, plan, limit, steps)
        mode = self.config.get("decode_phase", "hybrid")
        if mode not in DECODE_PHASES:
            raise ValueError(f"decode_phase must be one of {', '.join(DECODE_PHASES)}, not {mode!r}")
        waves, mags = self._crossfade(windows, plan, B, F_, mode != "rebuilt", mode != "network")
        if mode == "network":
            out = waves
        else:
            out = self._synthesize(mags, seeds, self._low_band(waves, mags) if mode == "hybrid" else None)
        if length <= total:
            return out[:, :length].contiguous()
        return torch.nn.functional.pad(out, (0, length - total))

    def _decoded_windows(self, latents, seeds, plan, limit, steps):
        """Yield (the (item, window) pairs, their decoded spectra), a batch of windows at a
        time; each window's noise comes from the fixed field, so overlaps agree."""
        W, starts, _ = plan
        fpl, dev = self.frames_per_latent, latents.device
        two_steps = (steps or self.config.get("decode_steps", 1)) >= 2
        jobs = [(b, k) for k in range(len(starts)) for b in range(latents.shape[0])]
        per_batch = max(1, limit // W)
        for i in range(0, len(jobs), per_batch):
            group = jobs[i : i + per_batch]
            z = torch.stack([latents[b, :, starts[k] : starts[k] + W] for b, k in group])

            def noise(stream: int, group=group) -> torch.Tensor:
                return torch.cat([self._noise([seeds[b]], starts[k] * fpl, (starts[k] + W) * fpl,
                                              stream) for b, k in group]).to(dev)

            yield group, self.sample_spec(z, noise(0), steps, noise(1) if two_steps else None)

    def _crossfade(self, windows, plan, B: int, F_: int, waves: bool, mags: bool):
        """Crossfade the decoded windows into whole-file (waves (B, F_ * hop) or None,
        magnitudes (B, bins, frames) or None): the network's own output (its phases too) on
        samples, and its magnitudes frame by frame with the sample crossfade's weights at each
        frame's centre."""
        W, starts, weights = plan
        H, P = self.hop, self.spectral.pad
        fpl, step = self.frames_per_latent, self.spectral.hop
        fw = [w[step // 2 :: step] for w in weights]
        out = torch.zeros(B, F_ * H) if waves else None
        mag_out = torch.zeros(B, self.spectral.bins, F_ * fpl) if mags else None
        wsum, fsum = torch.zeros(F_ * H), torch.zeros(F_ * fpl)
        for s, w, f in zip(starts, weights, fw):
            wsum[s * H : (s + W) * H] += w
            fsum[s * fpl : (s + W) * fpl] += f
        for group, spec in windows:
            y = self.spectral.inverse_span(spec)[:, P : P + W * H].float().cpu() if waves else None
            mag = self.spectral.decompress(spec).abs().float().cpu() if mags else None
            for j, (b, k) in enumerate(group):
                if waves:
                    out[b, starts[k] * H : (starts[k] + W) * H] += y[j] * weights[k]
                if mags:
                    mag_out[b, :, starts[k] * fpl : (starts[k] + W) * fpl] += mag[j] * fw[k]
        return (out / wsum.clamp_min(1e-8) if waves else None,
                mag_out / fsum.clamp_min(1e-8) if mags else None)
