"""Draw docs/img/dataset_timbres.png: one composed bass line through three SoundFonts and
one drum groove through a SoundFont and a Hydrogen kit, as log-frequency spectrograms.

    PYTHONPATH=. .venv/bin/python tools/timbre_spectrograms.py [--out docs/img/dataset_timbres.png]

Needs fluidsynth, FluidR3 GM, MuseScore General (Debian musescore-general-soundfont-small),
OPL-3 (opl3-soundfont) and the Hydrogen kits (hydrogen-drumkits); all are optional for the
project itself.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from engine.fsutil import atomic_path
from engine.training.dataset.grooves import GrooveComposer
from engine.training.dataset.render import SAMPLE_RATE
from engine.training.dataset.sources import open_sources

SOUNDFONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2",
              "/usr/share/sounds/sf3/MuseScore_General_Lite.sf3",
              "/usr/share/sounds/sf2/OPL-3_FM_128M.sf2")
KIT = "/usr/share/hydrogen/data/drumkits/ForzeeStereo"
SECONDS = 6.0


def spectrogram(x: np.ndarray, n_fft: int = 4096, hop: int = 512) -> np.ndarray:
    win = np.hanning(n_fft).astype(np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop] * win
    mag = np.abs(np.fft.rfft(frames, axis=1)).T
    return 20 * np.log10(mag / (mag.max() + 1e-12) + 1e-6)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="docs/img/dataset_timbres.png")
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    song = GrooveComposer(np.random.default_rng(7), SECONDS).compose("figure", style="funk")
    bass = next(p for p in song.parts if p.role == "bass")
    drums = next(p for p in song.parts if p.drum)
    n = int(SECONDS * SAMPLE_RATE)
    fonts = open_sources([("soundfont", p) for p in SOUNDFONTS])
    kit = open_sources([("drumkit", KIT)])[0]
    panels = [(f"bass (program {bass.program}) - {s.name}",
               s.render(bass.notes, bass.program, n, drum=False, reverb=20, seed=0))
              for s in fonts]
    panels.append((f"drums - {fonts[0].name}",
                   fonts[0].render(drums.notes, drums.program, n, drum=True, reverb=20, seed=0)))
    panels.append((f"drums - Hydrogen kit {kit.name}",
                   kit.render(drums.notes, drums.program, n, drum=True, reverb=20, seed=0)))

    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 1.55 * len(panels)), sharex=True)
    freqs = np.fft.rfftfreq(4096, 1 / SAMPLE_RATE)
    grid = np.geomspace(30, 16000, 160)  # log-frequency rows keep the PNG small
    for ax, (title, x) in zip(axes, panels, strict=True):
        s = spectrogram(x)
        rows = np.stack([np.interp(grid, freqs, col) for col in s.T], axis=1)
        ax.imshow(rows, origin="lower", aspect="auto", cmap="magma", vmin=-80, vmax=0,
                  extent=(0, SECONDS, 0, len(grid)), interpolation="nearest")
        ticks = [100, 1000, 10000]
        ax.set_yticks([np.searchsorted(grid, f) for f in ticks], ["100", "1k", "10k"])
        ax.set_ylabel("Hz", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.set_title(title, fontsize=8, loc="left")
    axes[-1].set_xlabel(f"seconds ({song.style}, {song.tempo:g} bpm, {song.key})", fontsize=7)
    fig.tight_layout()
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, dpi=80, format="png")
    buf.seek(0)
    small = Image.open(buf).convert("RGB").quantize(colors=48)  # a palette PNG: ~5x smaller
    with atomic_path(Path(args.out)) as tmp:
        small.save(tmp, format="PNG", optimize=True)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
