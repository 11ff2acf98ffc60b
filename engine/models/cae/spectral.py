"""Compressed complex STFT: the representation the CAE encodes and its decoder generates.

Frames are taken with ``center=False`` from a signal padded by ``(n_fft - hop) / 2`` on each
side, so a signal of ``n * hop`` samples gives exactly ``n`` frames and frame ``i`` is centred
on sample ``i * hop + hop / 2``. The inverse is a plain windowed overlap-add; it returns the
samples of the frames' full span, so chunked decodes can be crossfaded on real samples.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


class Spectral(torch.nn.Module):
    """wave (B, T) <-> compressed real/imag STFT (B, 2 * bins, T // hop)."""

    def __init__(self, n_fft: int = 1024, hop: int = 256, alpha: float = 0.65, beta: float = 0.34):
        super().__init__()
        self.n_fft, self.hop, self.alpha, self.beta = n_fft, hop, alpha, beta
        self.bins = n_fft // 2
        self.pad = (n_fft - hop) // 2
        window = torch.hann_window(n_fft, periodic=True)
        self.register_buffer("window", window, persistent=False)
        self.norm = float(window.pow(2).sum().sqrt())

    @property
    def channels(self) -> int:
        return 2 * self.bins

    def pad_wave(self, wave: torch.Tensor) -> torch.Tensor:
        """Pad (B, T) by `pad` on both sides (reflect where possible, else zeros)."""
        mode = "reflect" if wave.shape[-1] > self.pad else "constant"
        return F.pad(wave[:, None], (self.pad, self.pad), mode=mode)[:, 0]

    def frames(self, padded: torch.Tensor) -> torch.Tensor:
        """(B, n * hop + 2 * pad) already padded samples -> (B, 2 * bins, n)."""
        X = torch.stft(
            padded, self.n_fft, self.hop, window=self.window, center=False, return_complex=True
        )[:, : self.bins]
        X = X / self.norm
        mag = X.abs()
        scale = self.beta * mag.clamp_min(1e-12).pow(self.alpha - 1.0)
        return torch.cat([X.real * scale, X.imag * scale], dim=1).float()

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, n * hop) -> (B, 2 * bins, n)."""
        return self.frames(self.pad_wave(wave))

    def decompress(self, spec: torch.Tensor) -> torch.Tensor:
        """(B, 2 * bins, n) compressed real/imag -> (B, bins, n) complex STFT (undoes `frames`)."""
        re, im = spec.float().chunk(2, dim=1)
        mag = torch.sqrt(re * re + im * im).clamp_min(1e-12)
        gain = (mag / self.beta).pow(1.0 / self.alpha) / mag * self.norm
        return torch.complex(re * gain, im * gain)

    def overlap_add(self, X: torch.Tensor) -> torch.Tensor:
        """(B, bins, n) complex STFT -> (B, (n - 1) * hop + n_fft): windowed overlap-add, not
        yet divided by the window's squared envelope (`envelope`), so blocks of frames can be
        added into one buffer."""
        X = F.pad(X, (0, 0, 0, 1))  # Nyquist bin back as zero
        frames = torch.fft.irfft(X, n=self.n_fft, dim=1) * self.window[:, None]
        n = X.shape[-1]
        length = (n - 1) * self.hop + self.n_fft
        return F.fold(frames, (1, length), (1, self.n_fft), stride=(1, self.hop))[:, 0, 0]

    def envelope(self, n: int) -> torch.Tensor:
        """The squared window's overlap-add over n frames: ((n - 1) * hop + n_fft,)."""
        length = (n - 1) * self.hop + self.n_fft
        return F.fold(
            self.window.pow(2)[None, :, None].expand(1, -1, n),
            (1, length),
            (1, self.n_fft),
            stride=(1, self.hop),
        )[0, 0, 0]

    def inverse_span(self, spec: torch.Tensor) -> torch.Tensor:
        """(B, 2 * bins, n) -> (B, n * hop + 2 * pad): overlap-add over the frames' full span.

        The first and last `pad` samples (and the edges generally) lack overlap partners;
        `inverse` crops them. Chunked decoding crossfades inside the reliable part.
        """
        out = self.overlap_add(self.decompress(spec))
        return out / self.envelope(spec.shape[-1]).clamp_min(1e-3)

    def inverse(self, spec: torch.Tensor) -> torch.Tensor:
        """(B, 2 * bins, n) -> (B, n * hop)."""
        y = self.inverse_span(spec)
        return y[:, self.pad : y.shape[-1] - self.pad]


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, fmin=30.0, fmax=None):
    """(n_mels, n_fft // 2 + 1) triangular HTK-mel filters."""
    fmax = fmax or sample_rate / 2

    def hz2mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def mel2hz(m):
        return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)

    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    pts = mel2hz(np.linspace(hz2mel(fmin), hz2mel(fmax), n_mels + 2))
    fb = np.zeros((n_mels, freqs.size), np.float32)
    for i in range(n_mels):
        lo, c, hi = pts[i], pts[i + 1], pts[i + 2]
        up = (freqs - lo) / max(c - lo, 1e-9)
        down = (hi - freqs) / max(hi - c, 1e-9)
        fb[i] = np.maximum(0, np.minimum(up, down))
    return torch.from_numpy(fb)
