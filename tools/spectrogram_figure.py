"""Draw stacked low-band spectrograms of a few audio files, one panel each (how
docs/img/cae_bass_ceiling.png was made: a dev case's real bass, its CAE round trips and a
generated take).

    PYTHONPATH=. .venv/bin/python tools/spectrogram_figure.py "TITLE=FILE" ... \\
        [--seconds 8] [--fmax 2000] [--title TEXT] --out docs/img/NAME.png

Each file is read at 48 kHz and mixed to mono; 8192-point Hann STFT (hop 1024), dB relative
to each panel's own peak (-70 to 0), a log frequency axis from 30 Hz.
"""

from __future__ import annotations

import argparse

import numpy as np

from engine.audio import load_audio
from engine.fsutil import atomic_path

SR, N_FFT, HOP = 48000, 8192, 1024


def spectrogram(path: str, seconds: float, fmax: float) -> np.ndarray:
    """(bins up to fmax, frames) dB relative to the peak."""
    audio, _ = load_audio(path, sample_rate=SR)
    x = audio.mean(axis=0)[: int(seconds * SR)].astype(np.float32)
    frames = max(1, 1 + (len(x) - N_FFT) // HOP)
    x = np.pad(x, (0, max(0, N_FFT + (frames - 1) * HOP - len(x))))
    win = np.hanning(N_FFT).astype(np.float32)
    idx = np.arange(frames)[:, None] * HOP + np.arange(N_FFT)
    mag = np.abs(np.fft.rfft(x[idx] * win, axis=1)).T
    mag = mag[np.fft.rfftfreq(N_FFT, 1.0 / SR) <= fmax]
    return 20 * np.log10(mag / max(float(mag.max()), 1e-12) + 1e-6)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("panels", nargs="+", help="TITLE=FILE, top to bottom")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--fmax", type=float, default=2000.0)
    ap.add_argument("--title", default="")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p.split("=", 1) for p in args.panels]
    if any(len(p) != 2 for p in panels):
        ap.error("each panel is TITLE=FILE")
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.25 * len(panels)), sharex=True,
                             squeeze=False)
    for ax, (title, path) in zip(axes[:, 0], panels, strict=True):
        db = spectrogram(path, args.seconds, args.fmax)
        ax.imshow(db, origin="lower", aspect="auto", cmap="magma", vmin=-70, vmax=0,
                  extent=[0, db.shape[1] * HOP / SR, 0, args.fmax])
        ax.set_yscale("symlog", linthresh=200)
        ax.set_ylim(30, args.fmax)
        ax.set_ylabel("Hz")
        ax.set_title(title, fontsize=10)
    axes[-1, 0].set_xlabel("s")
    if args.title:
        fig.suptitle(args.title, fontsize=10)
    fig.tight_layout()
    with atomic_path(args.out) as tmp:
        fig.savefig(tmp, dpi=56, format="png")
    print(args.out)


if __name__ == "__main__":
    main()
