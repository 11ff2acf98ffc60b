"""Architecture presets of the Riffwright consistency autoencoder (no torch import here).

Every preset shares the signal layout that the rest of the engine depends on: 48 kHz mono,
complex STFT with window 1024 / hop 256 (512 bins, Nyquist dropped), amplitudes compressed
as ``beta * |X| ** alpha`` with the phase kept, 16 STFT frames per latent frame (hop 4096),
64 latent channels. The presets differ only in width and depth.
"""

from __future__ import annotations

import copy

KIND = "riffwright-cae"  # the `kind` written into (and required of) a CAE weights file

BASE = {
    "sample_rate": 48000,
    "n_fft": 1024,
    "stft_hop": 256,
    "hop": 4096,
    "latent_dim": 64,
    "alpha": 0.5,
    "beta": 5.0,
    "sigma_data": 0.5,
    "sigma_min": 0.002,
    "sigma_max": 80.0,
    "decode_steps": 1,
    "sigma_mid": 0.4,
    "emb_dim": 128,
    "encode_context": 8,
    "decode_overlap": 8,
    "max_chunk_frames": 512,
}

ARCHS: dict[str, dict] = {
    # For tests: ~0.3 M parameters, runs in milliseconds.
    "tiny": {
        **BASE,
        "arch": "tiny",
        "enc_channels": [32, 32, 48, 48, 64],
        "enc_blocks": 1,
        "dec_channels": [32, 32, 48, 48, 64],
        "dec_blocks": 1,
        "mid_blocks": 1,
        "emb_dim": 32,
        "io_kernel": 1,
    },
    # The CPU default: fast enough for ~0.1x real time on two cores.
    "small": {
        **BASE,
        "arch": "small",
        "enc_channels": [128, 128, 160, 192, 224],
        "enc_blocks": 1,
        "dec_channels": [256, 192, 192, 224, 256],
        "dec_blocks": 1,
        "mid_blocks": 1,
        "io_kernel": 1,
    },
}


def arch_config(arch: str) -> dict:
    """A fresh copy of the preset `arch`; raises KeyError naming the presets."""
    if arch not in ARCHS:
        raise KeyError(f"unknown CAE arch {arch!r}; choose one of {sorted(ARCHS)}")
    return copy.deepcopy(ARCHS[arch])
