"""What the CAE trainers read: groups of stems from a dataset manifest or a folder of audio,
family-balanced stem lists, and random mono crops of them (single stems or mixes)."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from engine.audio import SUPPORTED_EXTENSIONS, audio_info, load_audio, to_mono
from engine.errors import RiffwrightError


def _manifest_songs(data: str | Path, split: str) -> tuple[Path, list[dict]] | None:
    """(root, songs of `split`) of a dataset manifest; None when `data` has none."""
    data = Path(data)
    manifest = data / "manifest.json" if data.is_dir() else data
    if not (manifest.is_file() and manifest.suffix == ".json"):
        return None
    try:
        meta = json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RiffwrightError(f"cannot read {manifest}: {e}") from None
    return manifest.parent, [s for s in meta.get("songs", []) if s.get("split", "train") == split]


def family_balanced_stems(data: str | Path, split: str,
                          family_weights: dict[str, float] | None = None,
                          ) -> tuple[list[list[Path]], list[float]]:
    """Every stem of a manifest's `split` as its own group, weighted so that each instrument
    family is drawn equally often (for training a decoder on the timbres that are rare), or
    `family_weights[family]` times as often (1 for a family not named)."""
    family_weights = family_weights or {}
    bad = {k: v for k, v in family_weights.items()
           if not (isinstance(v, (int, float)) and v >= 0)}
    if bad:
        raise RiffwrightError(f"family weights must be non-negative numbers: {bad}")
    found = _manifest_songs(data, split)
    if found is None:
        raise RiffwrightError(f"family balancing needs a dataset manifest; {data} has none")
    root, songs = found
    stems = [(root / st["path"], st.get("family") or "?") for s in songs
             for st in s.get("stems", [])]
    counts = Counter(fam for _, fam in stems)
    unknown = sorted(set(family_weights) - set(counts))
    if unknown:
        raise RiffwrightError(f"no {split} stems of the weighted famil(ies) {', '.join(unknown)}"
                              f"; the data has {', '.join(sorted(counts))}")
    return [[p] for p, _ in stems], [float(family_weights.get(fam, 1.0)) / counts[fam]
                                     for _, fam in stems]


def list_sources(data: str | Path, split: str) -> list[list[Path]]:
    """Groups of stems that may be mixed: from a manifest (songs) or a folder (one per file)."""
    data = Path(data)
    found = _manifest_songs(data, split)
    if found is not None:
        root, songs = found
        groups = [[root / st["path"] for st in s.get("stems", [])] for s in songs]
        return [g for g in groups if g]
    if data.is_dir():
        files = sorted(
            p for p in data.rglob("*") if p.suffix.lower() in SUPPORTED_EXTENSIONS and p.is_file()
        )
        return [[p] for p in files]
    raise RiffwrightError(f"no training data at {data}: give a folder of audio or a manifest.json")


class CropSampler:
    """Random mono crops at 48 kHz: single stems or mixes of stems from one song, each group
    of stems drawn uniformly or by `weights`.

    Crops are read with `load_audio(offset, duration)`, so only the window is decoded. A
    random gain puts each crop between -30 and -10 dBFS RMS; a few crops stay silent on
    purpose so that the CAE learns that silence decodes to silence.
    """

    def __init__(self, groups: list[list[Path]], samples: int, sample_rate: int = 48000,
                 mix_prob: float = 0.5, silence_prob: float = 0.03, seed: int = 0,
                 weights: list[float] | None = None):
        if not groups:
            raise RiffwrightError("the training set is empty")
        if weights is not None and (len(weights) != len(groups) or min(weights) < 0
                                    or sum(weights) <= 0):
            raise RiffwrightError("crop weights must be one non-negative number per group")
        self.groups, self.samples, self.sr = groups, samples, sample_rate
        self.weights = weights  # how often each group is drawn (None: uniformly)
        self.mix_prob, self.silence_prob = mix_prob, silence_prob
        self.rng = random.Random(seed)
        self._info: dict[Path, tuple[int, int]] = {}

    def _info_of(self, p: Path) -> tuple[int, int]:
        if p not in self._info:
            i = audio_info(p)
            self._info[p] = (i.sample_rate, i.frames)
        return self._info[p]

    def _read(self, p: Path, start_s: float, dur_s: float) -> np.ndarray:
        sr, frames = self._info_of(p)
        if start_s * sr >= frames:
            return np.zeros(self.samples, np.float32)
        a, _ = load_audio(p, self.sr, offset=start_s, duration=dur_s)
        a = to_mono(a)
        out = np.zeros(self.samples, np.float32)
        out[: min(len(a), self.samples)] = a[: self.samples]
        return out

    def crop(self) -> np.ndarray:
        rng = self.rng
        if rng.random() < self.silence_prob:
            return np.zeros(self.samples, np.float32)
        for _ in range(8):
            g = (rng.choices(self.groups, weights=self.weights)[0] if self.weights
                 else rng.choice(self.groups))
            if len(g) > 1 and rng.random() < self.mix_prob:
                stems = rng.sample(g, rng.randint(2, min(len(g), 4)))
            else:
                stems = [rng.choice(g)]
            sr, frames = self._info_of(stems[0])
            dur = self.samples / self.sr
            length = frames / sr
            start = rng.uniform(0, max(length - dur, 0))
            x = sum(self._read(p, start, dur + 0.01) for p in stems)
            rms = float(np.sqrt(np.mean(x * x)))
            if rms < 1e-4:
                continue
            gain = 10 ** (rng.uniform(-30, -10) / 20) / rms
            peak = float(np.abs(x).max()) * gain
            if peak > 0.99:
                gain *= 0.99 / peak
            return (x * gain).astype(np.float32)
        return np.zeros(self.samples, np.float32)

    def batch(self, n: int) -> torch.Tensor:
        return torch.from_numpy(np.stack([self.crop() for _ in range(n)]))
