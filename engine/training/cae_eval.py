"""Reconstruction quality of an autoencoder: multi-resolution STFT and mel distances, PNGs.

`evaluate_cae(cae, files, out_dir)` encodes and decodes each file (mono, at the CAE's rate)
and reports the mean distances next to a lower-bound reference: the same distances between
each original and a *different* file of the set (what an autoencoder that ignored its input
would score). Lower is better for every figure; 0 is a perfect reconstruction.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from engine.audio import load_audio, to_mono, write_audio
from engine.models.cae.spectral import mel_filterbank
from engine.training.cae_data import list_sources

RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))


def _mag(x: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    w = torch.hann_window(n_fft, device=x.device)
    return torch.stft(x, n_fft, hop, window=w, return_complex=True).abs()


def mrstft_distance(ref: torch.Tensor, est: torch.Tensor) -> float:
    """Multi-resolution STFT distance: mean over resolutions (512, 1024, 2048) of spectral
    convergence + mean |log10 magnitude difference| (floor 1e-5)."""
    ref, est = ref.reshape(1, -1).float(), est.reshape(1, -1).float()
    total = 0.0
    for n_fft, hop in RESOLUTIONS:
        R, E = _mag(ref, n_fft, hop), _mag(est, n_fft, hop)
        # the floor keeps near-silent references from blowing up spectral convergence
        sc = torch.linalg.norm(R - E) / torch.linalg.norm(R).clamp_min(1e-2)
        lm = (torch.log10(R.clamp_min(1e-5)) - torch.log10(E.clamp_min(1e-5))).abs().mean()
        total += float(sc) + float(lm)
    return total / len(RESOLUTIONS)


def log_mel(x: torch.Tensor, sample_rate: int, n_fft=2048, hop=512, n_mels=80) -> torch.Tensor:
    fb = mel_filterbank(n_fft, n_mels, sample_rate).to(x.device)
    return torch.log10((fb @ _mag(x.reshape(1, -1).float(), n_fft, hop)[0] ** 2).clamp_min(1e-8))


def mel_distance(ref: torch.Tensor, est: torch.Tensor, sample_rate: int = 48000) -> float:
    """Mean |log10 mel power difference| (80 bands, window 2048, hop 512)."""
    return float((log_mel(ref, sample_rate) - log_mel(est, sample_rate)).abs().mean())


def save_spectrogram_png(path: Path, ref: np.ndarray, est: np.ndarray, sr: int, title: str):
    """Original (top) and reconstruction (bottom) log-magnitude spectrograms in one PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 6))  # no pyplot: leaves the process's backend alone
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 1, sharex=True)
    dbs = [
        20 * np.log10(np.maximum(_mag(torch.from_numpy(x).float()[None], 2048, 512)[0].numpy(), 1e-5))
        for x in (ref, est)
    ]
    top = float(dbs[0].max())  # one colour scale for both: level differences stay visible
    for ax, db, name in zip(axes, dbs, ("original", "reconstruction")):
        ax.imshow(db, origin="lower", aspect="auto", vmin=top - 90, vmax=top,
                  extent=(0, len(ref) / sr, 0, sr / 2000), cmap="magma")
        ax.set_ylabel("kHz")
        ax.set_title(f"{title}: {name}", fontsize=9)
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def evaluate_cae(
    cae,
    files,
    out_dir: str | Path,
    seconds: float | None = 10.0,
    steps: int | None = None,
    seed: int = 0,
    pngs: int = 4,
    write_audio_examples: bool = True,
) -> dict:
    """Encode/decode each file and measure the reconstruction; write PNGs and metrics.json.

    `files`: audio paths (any format `load_audio` reads); each is read mono at the CAE's
    rate, the first `seconds` of it (None: all). Returns a dict with `mrstft` and `mel` (mean
    distances, lower is better), `mrstft_other`/`mel_other` (the same distances between
    each original and another file: the lower bound), `encode_rtf`/`decode_rtf` (seconds of
    compute per second of audio), `per_file`, `pngs` (paths), `files`, `seconds`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = [Path(f) for f in files]
    if not files:
        raise ValueError("evaluate_cae needs at least one file")
    sr = cae.sample_rate
    originals = []
    for f in files:
        a, _ = load_audio(f, sr, duration=seconds)
        originals.append(torch.from_numpy(to_mono(a)))
    per_file, t_enc, t_dec, total_s, png_paths = [], 0.0, 0.0, 0.0, []
    gen = torch.Generator().manual_seed(seed)
    for i, (f, x) in enumerate(zip(files, originals)):
        t0 = time.perf_counter()
        z = cae.encode(x[None])
        t1 = time.perf_counter()
        y = cae.decode(z, length=x.numel(), generator=gen, **({"steps": steps} if steps else {}))[0]
        t2 = time.perf_counter()
        t_enc, t_dec, total_s = t_enc + t1 - t0, t_dec + t2 - t1, total_s + x.numel() / sr
        other = originals[(i + 1) % len(originals)] if len(originals) > 1 else torch.zeros_like(x)
        n = min(other.numel(), x.numel())
        row = {
            "file": str(f),
            "seconds": x.numel() / sr,
            "mrstft": mrstft_distance(x, y),
            "mel": mel_distance(x, y, sr),
            "mrstft_other": mrstft_distance(x[:n], other[:n]),
            "mel_other": mel_distance(x[:n], other[:n], sr),
            "rms_in": float(x.pow(2).mean().sqrt()),
            "rms_out": float(y.pow(2).mean().sqrt()),
        }
        per_file.append(row)
        if i < pngs:
            stem = f"{i:02d}_{f.stem}"
            p = out / f"{stem}.png"
            save_spectrogram_png(p, x.numpy(), y.numpy(), sr, f.name)
            png_paths.append(str(p))
            if write_audio_examples:
                write_audio(out / f"{stem}_orig.wav", x.numpy(), sr, "PCM_16")
                write_audio(out / f"{stem}_recon.wav", y.numpy(), sr, "PCM_16")

    def mean(k):
        return float(np.mean([r[k] for r in per_file]))

    result = {
        "cae": getattr(cae, "id", "unknown"),
        "files": len(files),
        "seconds": total_s,
        "mrstft": mean("mrstft"),
        "mel": mean("mel"),
        "mrstft_other": mean("mrstft_other"),
        "mel_other": mean("mel_other"),
        "encode_rtf": t_enc / max(total_s, 1e-9),
        "decode_rtf": t_dec / max(total_s, 1e-9),
        "threads": torch.get_num_threads(),
        "pngs": png_paths,
        "per_file": per_file,
    }
    if not all(math.isfinite(result[k]) for k in ("mrstft", "mel")):
        raise ValueError("evaluation produced non-finite distances")
    (out / "metrics.json").write_text(json.dumps(result, indent=1))
    return result


def evaluate_cae_on_data(
    cae,
    data_dir_or_manifest: str | Path,
    out_dir: str | Path,
    split: str = "valid",
    max_files: int = 8,
    seconds: float | None = 10.0,
    **kwargs,
) -> dict:
    """`evaluate_cae` on a data set: a dataset folder / manifest.json (stems of its `split`
    songs, one stem per song in turn, so instruments vary) or a folder of audio files.
    Up to `max_files` files; other keyword arguments go to `evaluate_cae`."""
    groups = list_sources(data_dir_or_manifest, split)
    if not groups and split != "train":
        groups = list_sources(data_dir_or_manifest, "train")
    files = [g[i % len(g)] for i, g in enumerate(groups)][:max_files]
    if not files:
        raise ValueError(f"no audio files found in {data_dir_or_manifest}")
    return evaluate_cae(cae, files, out_dir, seconds=seconds, **kwargs)
