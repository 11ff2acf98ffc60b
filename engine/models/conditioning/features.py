"""Log-mel features for the built-in encoder, computed with torch alone (no librosa).

The filterbank is the usual triangular HTK-style bank on a mel scale, built in float64 with
numpy and stored as a float32 buffer, so it is the same on every machine.
"""

from __future__ import annotations

import math

import numpy as np

SAMPLE_RATE = 48_000
WINDOW_SECONDS = 10.0
WINDOW_SAMPLES = int(SAMPLE_RATE * WINDOW_SECONDS)


def hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float
) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters, each normalised to unit area (Slaney)."""
    if not 0 <= fmin < fmax <= sample_rate / 2:
        raise ValueError(f"need 0 <= fmin < fmax <= {sample_rate / 2}, got {fmin}, {fmax}")
    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    lower, center, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None, :] - lower) / (center - lower)
    falling = (upper - freqs[None, :]) / (upper - center)
    bank = np.maximum(0.0, np.minimum(rising, falling))
    bank *= (2.0 / (upper - lower))  # equal area, so wide high bands do not dominate
    return bank.astype(np.float32)


def split_windows(wave, window: int = WINDOW_SAMPLES):
    """(T,) tensor -> (W, window): fixed, deterministic windows, never a random crop.

    Shorter than one window: tiled, then zero-padded to one window (as LAION-CLAP's
    "repeatpad"). Longer: windows start at 0, window, 2*window, ...; a trailing part is covered
    by one more window aligned to the end, so every window is full and the whole clip counts.
    """
    import torch

    t = wave.shape[-1]
    if t == 0:
        return wave.new_zeros(1, window)
    if t <= window:
        reps = window // t
        tiled = wave.repeat(reps) if reps > 1 else wave
        return torch.nn.functional.pad(tiled, (0, window - tiled.shape[-1]))[None]
    starts = list(range(0, t - window + 1, window))
    if starts[-1] + window < t:
        starts.append(t - window)
    return torch.stack([wave[s : s + window] for s in starts])


class LogMel:
    """Mono 48 kHz audio (B, T) -> log-mel power (B, n_mels, frames), natural log."""

    def __init__(
        self,
        sample_rate: int = SAMPLE_RATE,
        n_fft: int = 2048,
        hop: int = 960,
        n_mels: int = 64,
        fmin: float = 30.0,
        fmax: float = 16_000.0,
    ) -> None:
        import torch

        self.sample_rate, self.n_fft, self.hop, self.n_mels = sample_rate, n_fft, hop, n_mels
        self.bank = torch.from_numpy(mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax))
        self.window = torch.hann_window(n_fft, periodic=True, dtype=torch.float32)

    def __call__(self, wave):
        import torch

        stft = torch.stft(
            wave.float(),
            self.n_fft,
            self.hop,
            window=self.window.to(wave.device),
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        power = stft.real.square() + stft.imag.square()
        mel = torch.matmul(self.bank.to(wave.device), power)
        return torch.log(mel + 1e-10)


def normalise_logmel(logmel, floor_db: float = -60.0, eps: float = 1e-5):
    """Loudness-normalise log-mel power (B, M, F): divide by the clip's mean mel power.

    A gain on the input shifts every log value by the same amount, so this makes the encoder
    blind to level. The divisor is floored (`floor_db` below full scale) so near-silence is not
    amplified into noise; the training code applies the same function to cached log-mels.
    """
    import torch

    mean_power = torch.logsumexp(logmel.flatten(1), dim=1) - math.log(logmel[0].numel())
    offset = torch.clamp(mean_power, min=floor_db / 10.0 * math.log(10.0))
    return torch.log(torch.exp(logmel - offset[:, None, None]) + eps)
