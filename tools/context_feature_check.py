"""Do the LDM's context chroma features see an unseen song's harmony as well as a training one's?

For each bass case of the dev set (`tools/dev_eval.sh cases`), the context's MIDI gives the
pitch classes sounding in each latent frame (85 ms). The script computes the model's context
chroma (`engine.diffusion.context_features`) twice — on the case's own render (the dev set's
SoundFont, never used in training) and on a FluidSynth render of the same MIDI with a training
SoundFont — and reports the share of chroma energy that falls on the sounding pitch classes,
beside chance (the sounding classes' share of the twelve). If the two renders score alike, the
features are not what keeps the model from following an unseen song's harmony.

Run it with the judge's venv (it needs pretty_midi) from the repository root:
    ../.judge/bin/python tools/context_feature_check.py --cases devcases [--stride 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from engine.diffusion.context_features import CHROMA, context_features  # noqa: E402

SR, HOP = 48000, 4096


def sounding_classes(midi_path: Path, frames: int) -> np.ndarray:
    """(12, frames) 1 where a pitched (non-drum) note of that class sounds in the frame."""
    import pretty_midi

    active = np.zeros((12, frames))
    for inst in pretty_midi.PrettyMIDI(str(midi_path)).instruments:
        if inst.is_drum:
            continue
        for n in inst.notes:
            a, b = int(n.start * SR / HOP), int(np.ceil(n.end * SR / HOP))
            active[n.pitch % 12, a:min(b, frames)] = 1
    return active


def on_classes(chroma: np.ndarray, active: np.ndarray) -> tuple[float, float]:
    """(mean share of chroma energy on the sounding classes, its chance level), over the
    frames where something sounds."""
    ok = active.sum(0) > 0
    c, a = chroma[:, ok], active[:, ok]
    share = (c * a).sum(0) / np.maximum(c.sum(0), 1e-9)
    return float(share.mean()), float((a.sum(0) / 12).mean())


def mono(path: Path) -> np.ndarray:
    x, sr = sf.read(path, dtype="float32")
    if sr != SR:
        raise SystemExit(f"{path}: expected {SR} Hz, got {sr}")
    return x.mean(1) if x.ndim > 1 else x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=Path, required=True, help="the dev cases folder")
    ap.add_argument("--soundfont", default="/usr/share/sounds/sf2/FluidR3_GM.sf2",
                    help="a training SoundFont to render the same MIDI with")
    ap.add_argument("--stride", type=int, default=1, help="every k-th bass case")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in sorted(args.cases.glob("*_bass_*"))[:: args.stride]:
            wav = Path(tmp) / f"{case.name}.wav"
            subprocess.run(["fluidsynth", "-ni", "-g", "0.5", "-r", str(SR), "-F", str(wav),
                            args.soundfont, str(case / "context.mid")],
                           check=True, capture_output=True)
            own, train = mono(case / "context.flac"), mono(wav)
            n = min(len(own), len(train)) // HOP
            active = sounding_classes(case / "context.mid", n)
            a, chance = on_classes(context_features(own[: n * HOP], SR, HOP, n)[:CHROMA], active)
            b, _ = on_classes(context_features(train[: n * HOP], SR, HOP, n)[:CHROMA], active)
            rows.append((a, b, chance))
            print(f"{case.name:40s} own render {a:.3f}  training SoundFont {b:.3f}  "
                  f"chance {chance:.3f}", flush=True)
    if rows:
        m = np.mean(rows, axis=0)
        print(f"mean ({len(rows)} cases): own render {m[0]:.3f}, training SoundFont {m[1]:.3f}, "
              f"chance {m[2]:.3f}")


if __name__ == "__main__":
    main()
