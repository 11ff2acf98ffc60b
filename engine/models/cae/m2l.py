"""Music2Latent behind Riffwright's `Autoencoder` interface.

Music2Latent (Pasini, Lattner, Fazekas, ISMIR 2024; PyPI ``music2latent``) is the consistency
autoencoder Diff-A-Riff's authors built on: 44.1 kHz, 64 latent channels, one latent frame
per 4096 samples, ~58 M parameters. Its weights are licensed **CC BY-NC 4.0** (research and
other non-commercial use only) and are *not* bundled or downloaded by Riffwright: download
``music2latent.pt`` yourself from the authors' release (Hugging Face repository
``SonyCSLParis/music2latent``) and pass its path. The package's own loader would download
into site-packages; we build its network (``music2latent.models.UNet``) directly and load
the file only through ``torch.load(weights_only=True)`` with a NumPy-only allow-list
(`engine.safeload`), which refuses pickled code; there is no fallback.

The backend runs at 44.1 kHz (`sample_rate` = 44100): callers resample to
``cae.sample_rate`` with `engine.audio.resample`, as they do for any autoencoder. Latents are
scaled exactly as the package scales them (divided by its ``sigma_rescale``). Decoding draws
its noise from the caller's CPU generator, so it is deterministic.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from engine.errors import BundleError
from engine.models.cae.model import decode_plan, encode_plan
from engine.safeload import load_weights_only
from engine.weights import sha256_file

KIND = "music2latent"
LICENSE = "CC BY-NC 4.0 (non-commercial use only)"
_HELP = (
    "download music2latent.pt yourself (licence " + LICENSE + ") from the Hugging Face "
    "repository SonyCSLParis/music2latent and pass its path; Riffwright never downloads it"
)


def _import_m2l():
    try:
        from music2latent import audio as m2l_audio
        from music2latent import hparams as m2l_hp
        from music2latent import hparams_inference as m2l_hpi
        from music2latent import models as m2l_models
        from music2latent import utils as m2l_utils
    except ImportError as e:
        raise BundleError(
            f"the music2latent package is not installed ({e}); "
            "install it with: pip install 'riffwright[music2latent]'"
        ) from None
    return m2l_audio, m2l_hp, m2l_hpi, m2l_models, m2l_utils


def _read_state_dict(path: Path) -> dict:
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))

    ckpt = load_weights_only(path, "Music2Latent")  # restricted unpickler, no fallback
    if isinstance(ckpt, dict) and "gen_state_dict" in ckpt:
        ckpt = ckpt["gen_state_dict"]
    if not isinstance(ckpt, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in ckpt.items()):
        raise BundleError(f"{path.name} does not hold a Music2Latent state dict")
    return ckpt


class Music2LatentCAE(nn.Module):
    """The `Autoencoder` interface over the `music2latent` package's network."""

    kind = KIND
    license = LICENSE

    def __init__(self, weights: str | Path, device: str = "cpu", steps: int = 1,
                 max_chunk_frames: int = 128):
        super().__init__()
        path = Path(weights)
        if not path.is_file():
            raise BundleError(f"Music2Latent weights not found at {path}: {_HELP}")
        self._audio, hp, hpi, models, self._utils = _import_m2l()
        self.sample_rate = int(hp.sample_rate)
        self.stft_hop = int(hp.hop)
        self.down = 2 ** list(hp.freq_downsample_list).count(0)
        self.hop = self.stft_hop * self.down
        self.latent_dim = int(hp.bottleneck_channels)
        self.sigma_rescale = float(hpi.sigma_rescale)
        self.sigma_min, self.sigma_max = float(hp.sigma_min), float(hp.sigma_max)
        self.steps = int(steps)
        self.max_chunk_frames = int(max_chunk_frames)
        self.overlap = 4
        self.pad = (4 * self.stft_hop - self.stft_hop) // 2  # window 2048, hop 512 -> 768

        self.sha256 = sha256_file(path)
        self.id = f"m2l-{self.sha256[:12]}"
        self.config = {"backend": KIND, "weights": str(path), "sha256": self.sha256,
                       "decode_steps": self.steps, "license": LICENSE}
        net = models.UNet()
        state = _read_state_dict(path)
        missing, unexpected = net.load_state_dict(state, strict=False)
        if missing:
            raise BundleError(
                f"{path.name}: {len(missing)} Music2Latent tensor(s) missing, e.g. {missing[0]}"
            )
        self.net = net.eval().to(device)

    # -------------------------------------------------------------- helpers

    def _device(self) -> torch.device:
        return next(self.net.parameters()).device

    def encode(self, wave: torch.Tensor, max_chunk_frames: int | None = None) -> torch.Tensor:
        """(B, T) mono at 44.1 kHz -> (B, 64, ceil(T / 4096)) latents (package scaling)."""
        with torch.inference_mode():
            out = self._encode(wave, max_chunk_frames)
        return out.clone()

    def decode(self, latents: torch.Tensor, length: int | None = None,
               generator: torch.Generator | None = None, steps: int | None = None,
               max_chunk_frames: int | None = None) -> torch.Tensor:
        """(B, 64, F) -> (B, length or F * 4096) audio at 44.1 kHz; deterministic given a
        CPU `generator`. Windows overlap and are crossfaded as in Riffwright's CAE."""
        with torch.inference_mode():
            out = self._decode(latents, length, generator, steps, max_chunk_frames)
        return out.clone()

    def _encode(self, wave, max_chunk_frames) -> torch.Tensor:
        wave = torch.as_tensor(wave, dtype=torch.float32)
        if wave.ndim == 1:
            wave = wave[None]
        B, T = wave.shape
        F_ = math.ceil(T / self.hop) if T else 0
        out = torch.zeros(B, self.latent_dim, F_)
        if F_ == 0:
            return out
        dev = self._device()
        x = torch.nn.functional.pad(wave, (0, F_ * self.hop - T))
        mode = "reflect" if x.shape[-1] > self.pad else "constant"
        x = torch.nn.functional.pad(x[:, None], (self.pad, self.pad), mode=mode)[:, 0]
        limit = int(max_chunk_frames or self.max_chunk_frames)
        W, jobs = encode_plan(B, F_, limit, 2)
        for b, s, a, e in jobs:
            seg = x[b : b + 1, s * self.hop : (s + W) * self.hop + 2 * self.pad].to(dev)
            rep = self._audio.to_representation_encoder(seg)
            z = self.net.encoder(rep).float().cpu() / self.sigma_rescale
            out[b, :, a:e] = z[0, :, a - s : e - s]
        return out

    def _decode(self, latents, length, generator, steps, max_chunk_frames) -> torch.Tensor:
        latents = torch.as_tensor(latents, dtype=torch.float32)
        if latents.ndim == 2:
            latents = latents[None]
        B, _, F_ = latents.shape
        total = F_ * self.hop
        length = total if length is None else int(length)
        if F_ == 0:
            return torch.zeros(B, length)
        steps = int(steps or self.steps)
        dev = self._device()
        limit = int(max_chunk_frames or self.max_chunk_frames)
        W, starts, weights = decode_plan(F_, limit, self.overlap, self.hop)
        out = torch.zeros(B, total)
        wsum = torch.zeros(total)
        get_sigma = self._utils.get_sigma
        for k, s in enumerate(starts):
            wsum[s * self.hop : (s + W) * self.hop] += weights[k]
            z = (latents[:, :, s : s + W] * self.sigma_rescale).to(dev)
            shape = (B, 2, 2 * self.stft_hop, W * self.down)
            x = (torch.randn(shape, generator=generator) * self.sigma_max).to(dev)
            for i in range(steps):
                sigma = get_sigma(steps + 1 - i, steps + 1)
                nxt = get_sigma(steps - i, steps + 1)
                pred = self.net(z, x, sigma).float()
                if i < steps - 1:
                    eps = torch.randn(shape, generator=generator).to(dev)
                    x = pred + math.sqrt(max(nxt**2 - self.sigma_min**2, 0.0)) * eps
            y = self._audio.to_waveform(pred).float().cpu()
            y = y[:, self.pad : self.pad + W * self.hop]
            out[:, s * self.hop : (s + W) * self.hop] += y * weights[k]
        out = out / wsum.clamp_min(1e-8)
        if length <= total:
            return out[:, :length].contiguous()
        return torch.nn.functional.pad(out, (0, length - total))
