"""Draw docs/img/beat_grid_drums.png: the onset strength of drum takes made for dev cases with
and without the beat grid, under the case's MIDI beats and half-beats.

    PYTHONPATH=. .venv/bin/python tools/grid_figure.py CASES GEN_WITH GEN_WITHOUT CASE...
        [--seconds 8] [--out docs/img/beat_grid_drums.png]

CASES is the judge's case folder (context.mid gives the tempo; cases start on a bar line),
GEN_WITH / GEN_WITHOUT hold the takes (`tools/dev_eval.sh generate` with GRID=midi and
GRID=none); the first take of each case is drawn.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from engine.audio import load_audio
from engine.document.tempo import ONSET_HOP, onset_envelope
from engine.fsutil import atomic_path
from engine.notes import midi_tempo

SR = 48000


def strength(path: Path, seconds: float) -> np.ndarray:
    audio, _ = load_audio(path, sample_rate=SR)
    x = audio.mean(axis=0)[: int(seconds * SR)]
    env = np.maximum(onset_envelope(x.astype(np.float32), SR), 0.0)
    return env / max(float(env.max()), 1e-9)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("cases", type=Path)
    ap.add_argument("with_grid", type=Path)
    ap.add_argument("without", type=Path)
    ap.add_argument("case", nargs="+")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--out", type=Path, default=Path("docs/img/beat_grid_drums.png"))
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(args.case), 1, figsize=(11, 2.4 * len(args.case)),
                             squeeze=False)
    for ax, case in zip(axes[:, 0], args.case):
        bpm, _ = midi_tempo((args.cases / case / "context.mid").read_bytes())
        for t in np.arange(0.0, args.seconds, 30.0 / bpm):  # beats and half-beats
            on_beat = abs((t * bpm / 60.0) - round(t * bpm / 60.0)) < 1e-6
            ax.axvline(t, color="0.3" if on_beat else "0.75", lw=1.0 if on_beat else 0.6,
                       zorder=0)
        for folder, label, colour in ((args.with_grid, "with the beat grid", "tab:orange"),
                                      (args.without, "without", "tab:blue")):
            take = sorted((folder / case).glob("*.wav"))[0]
            env = strength(take, args.seconds)
            t = (np.arange(env.size) + 3.75) * ONSET_HOP / SR  # flux frames lead the note
            sign = 1.0 if folder == args.with_grid else -1.0
            ax.fill_between(t, 0, sign * env, color=colour, alpha=0.8, label=label, lw=0)
        ax.set_xlim(0, args.seconds)
        ax.set_ylim(-1.05, 1.05)
        ax.set_yticks([])
        ax.set_title(f"{case}: {bpm:g} BPM (lines: the MIDI's beats and half-beats)",
                     fontsize=9, loc="left")
        ax.legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    with atomic_path(args.out) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
