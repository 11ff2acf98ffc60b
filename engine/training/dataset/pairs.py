"""Training pairs, as Diff-A-Riff draws them.

A pair is one song window: the **target** is one stem; the **context** is the sum of a random
subset of the *other* stems of the same song (possibly empty); the **CLAP source** is a random
sub-segment of the target; two flags say whether the trainer should drop the context and the
CLAP embedding (each with its own probability), so that context+CLAP, context only, CLAP only
and unconditional generation are all learned.

Two forms:

- `iter_pairs(manifest, split, window_samples, seed)`: numpy audio pairs straight from the
  dataset's WAV files (no torch). Used to train on the fly and to evaluate.
- `encode_dataset_latents(dataset_dir, cae, out_dir)` + `LatentPairs(out_dir/index.json)`:
  pre-encoded latents for fast diffusion training. The context latent must be the CAE
  encoding of the *summed audio* (the encoder is not linear, so a sum of stem latents is not
  the latent of the mix). So, per song, we encode every stem and a set of context mixes: all
  "every stem but one" mixes plus random other subsets, up to `max_mixes`. A one-stem context
  is that stem's own latent; the empty context is the encoding of silence. `LatentPairs` then
  draws a target stem and a context among the stored subsets that do not contain it. Windows
  are cut from the song-long latents at random frame offsets (the encoder is local, so a crop
  of the song's latents matches the encoding of the cropped audio away from the edges).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

from engine.errors import RiffwrightError
from engine.fsutil import atomic_write_json

from .build import load_manifest
from .render import SAMPLE_RATE, active_fraction

HOP = 4096
DEFAULT_FRAMES = 128
DEFAULT_WINDOW = DEFAULT_FRAMES * HOP  # 524288 samples, ~10.9 s at 48 kHz


def _read_window(path: Path, start: int, n: int) -> np.ndarray:
    import soundfile as sf

    x, _ = sf.read(str(path), start=start, stop=start + n, dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    if len(x) < n:
        x = np.pad(x, (0, n - len(x)))
    return x


@dataclass(frozen=True)
class PairRules:
    """How a pair is drawn, the same for audio pairs (`iter_pairs`) and latent pairs
    (`LatentPairs`): how often the context is empty and each condition dropped, how long
    the CLAP source is, and how much of the window the target must play."""

    p_drop_context: float = 0.2
    p_drop_clap: float = 0.2
    p_empty_context: float = 0.1
    clap_samples: int = 5 * SAMPLE_RATE
    min_active: float = 0.3

    def offset(self, rng: np.random.Generator, span: int,
               activity: Callable[[int], float]) -> int:
        """A window offset in 0..span where the target plays (`activity(offset)` at least
        `min_active`), drawn up to six times; the last draw when none plays enough."""
        for _ in range(6):
            off = int(rng.integers(0, span + 1))
            if activity(off) >= self.min_active:
                break
        return off

    def drops(self, rng: np.random.Generator) -> dict:
        """The pair's two drop flags (context first, then CLAP: the order of the draws)."""
        return {"drop_context": bool(rng.random() < self.p_drop_context),
                "drop_clap": bool(rng.random() < self.p_drop_clap)}


def _draw_subset(rng: np.random.Generator, others: list[int], p_empty: float) -> list[int]:
    if not others or rng.random() < p_empty:
        return []
    k = int(rng.integers(1, len(others) + 1))
    return sorted(int(i) for i in rng.choice(others, size=k, replace=False))


def _songs_for(manifest: dict, split: str | None, min_stems: int) -> list[dict]:
    songs = [s for s in manifest["songs"] if split in (None, "all") or s["split"] == split]
    return [s for s in songs if len(s["stems"]) >= min_stems]


def iter_pairs(
    manifest_path: str | os.PathLike,
    split: str = "train",
    window_samples: int = DEFAULT_WINDOW,
    seed: int = 0,
    *,
    rules: PairRules = PairRules(),
    count: int | None = None,
    family_balanced: bool = False,
) -> Iterator[dict]:
    """Yield training pairs as dicts of numpy arrays, deterministically for `seed`.

    Keys: `target`, `context` (float32, `window_samples` each; the context is zeros when the
    subset is empty), `clap_source` (float32, `clap_samples`, a random stretch of the target
    window), `drop_context`, `drop_clap` (bools), `song`, `offset`, `target_stem` (index),
    `context_stems` (indices, never containing the target), `family`, `caption`.
    Runs forever unless `count` is given. `family_balanced` draws the target's family uniformly
    first (useful when the dataset is skewed).
    """
    manifest = load_manifest(manifest_path)
    root = Path(manifest["_root"])
    songs = _songs_for(manifest, split, 1)
    if not songs:
        raise RiffwrightError(f"the dataset has no songs in split {split!r}")
    rng = np.random.default_rng(seed)
    clap_samples = int(min(rules.clap_samples, window_samples))
    by_family: dict[str, list[tuple[int, int]]] = {}
    for si, s in enumerate(songs):
        for ti, st in enumerate(s["stems"]):
            by_family.setdefault(st.get("family") or "unknown", []).append((si, ti))
    fams = sorted(by_family)
    n = 0
    while count is None or n < count:
        if family_balanced:
            pool = by_family[fams[int(rng.integers(len(fams)))]]
            si, ti = pool[int(rng.integers(len(pool)))]
            song = songs[si]
        else:
            song = songs[int(rng.integers(len(songs)))]
            ti = int(rng.integers(len(song["stems"])))
        total = int(round(float(song["seconds"]) * manifest["sample_rate"]))
        span = max(0, total - window_samples)
        tpath = root / song["stems"][ti]["path"]
        off = rules.offset(rng, span, lambda o, t=tpath: active_fraction(
            _read_window(t, o, window_samples)))
        target = _read_window(tpath, off, window_samples)
        others = [i for i in range(len(song["stems"])) if i != ti]
        subset = _draw_subset(rng, others, rules.p_empty_context)
        context = np.zeros(window_samples, dtype=np.float32)
        for i in subset:
            context += _read_window(root / song["stems"][i]["path"], off, window_samples)
        c_off = int(rng.integers(0, window_samples - clap_samples + 1))
        stem = song["stems"][ti]
        yield {
            "target": target,
            "context": context,
            "clap_source": target[c_off:c_off + clap_samples].copy(),
            **rules.drops(rng),
            "song": song["id"],
            "offset": off,
            "target_stem": ti,
            "context_stems": subset,
            "family": stem.get("family"),
            "caption": stem.get("caption", ""),
        }
        n += 1


# ------------------------------------------------------------------------ latents

def _frame_activity(x: np.ndarray, hop: int, threshold_db: float = -50.0) -> np.ndarray:
    n = int(np.ceil(len(x) / hop))
    pad = np.pad(x, (0, n * hop - len(x)))
    rms = np.sqrt(np.square(pad.astype(np.float64)).reshape(n, hop).mean(axis=1))
    return (rms > 10 ** (threshold_db / 20)).astype(np.uint8)


def context_subsets(n: int, rng: np.random.Generator, max_mixes: int = 16) -> list[tuple]:
    """Subsets of stems (size >= 2, never all of them) to pre-encode as context mixes: every
    'all but one' subset first, then random others, `max_mixes` in all."""
    if n < 3:
        return []
    all_but_one = [tuple(i for i in range(n) if i != j) for j in range(n)]
    rest = [c for k in range(2, n - 1) for c in combinations(range(n), k)]
    chosen = list(all_but_one[:max_mixes])
    room = max_mixes - len(chosen)
    if room > 0 and rest:
        pick = rng.permutation(len(rest))[:room]
        chosen += [rest[int(i)] for i in sorted(pick)]
    return chosen


def _song_audio(root: Path, song: dict) -> np.ndarray:
    """(stems, T) float32: the song's stems, mono, padded to the longest."""
    import soundfile as sf

    audio = [sf.read(str(root / st["path"]), dtype="float32", always_2d=True)[0].mean(axis=1)
             for st in song["stems"]]
    n = max(len(a) for a in audio)
    return np.stack([np.pad(a, (0, n - len(a))) for a in audio]).astype(np.float32)


def _save_stem_latents(tmp: Path, song: dict, z: np.ndarray, audio: np.ndarray,
                       hop: int) -> list[dict]:
    """Each stem's latent and frame activity into `tmp`; their index entries."""
    stems = []
    for i, st in enumerate(song["stems"]):
        name = Path(st["path"]).stem
        np.save(tmp / f"{name}.npy", z[i].astype(np.float16))
        np.save(tmp / f"{name}.act.npy", _frame_activity(audio[i], hop))
        stems.append({"latent": f"songs/{song['id']}/{name}.npy",
                      "activity": f"songs/{song['id']}/{name}.act.npy",
                      "audio": st["path"], "family": st.get("family"),
                      "caption": st.get("caption", "")})
    return stems


def _save_mix_latents(tmp: Path, song: dict, audio: np.ndarray, encode,
                      subsets: list[tuple]) -> list[dict]:
    """The latents of the summed audio of each subset (encoded four at a time) into
    `tmp`; their index entries."""
    mixes = []
    for b0 in range(0, len(subsets), 4):
        chunk = subsets[b0:b0 + 4]
        zm = encode(np.stack([audio[list(s)].sum(axis=0) for s in chunk]))
        for j, s in enumerate(chunk):
            m = b0 + j
            np.save(tmp / f"mix-{m:02d}.npy", zm[j].astype(np.float16))
            mixes.append({"latent": f"songs/{song['id']}/mix-{m:02d}.npy",
                          "members": list(s)})
    return mixes


def _encode_song(song: dict, k: int, root: Path, out: Path, encode, hop: int, seed: int,
                 max_mixes: int) -> dict:
    """Encode one song's stems and context mixes into a staging folder, then move it into
    place as `out/songs/<id>` (replacing a half-written one); its index entry."""
    sdir = out / "songs" / song["id"]
    audio = _song_audio(root, song)
    tmp = out / "songs" / f".tmp-{song['id']}-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    z = encode(audio)
    stems = _save_stem_latents(tmp, song, z, audio, hop)
    subsets = context_subsets(len(song["stems"]), np.random.default_rng([seed, k]), max_mixes)
    entry = {"id": song["id"], "split": song["split"], "frames": int(z.shape[-1]),
             "stems": stems, "mixes": _save_mix_latents(tmp, song, audio, encode, subsets)}
    atomic_write_json(tmp / "latents.json", entry)
    if sdir.exists():
        shutil.rmtree(sdir)
    os.replace(tmp, sdir)
    return entry


def _model_device(cae) -> str:
    try:
        return str(next(cae.parameters()).device)
    except (AttributeError, StopIteration):
        return "cpu"


def encode_dataset_latents(
    dataset_dir: str | os.PathLike,
    cae,
    out_dir: str | os.PathLike,
    *,
    splits: tuple[str, ...] = ("train", "valid", "test"),
    max_mixes: int = 16,
    seed: int = 0,
    device: str | None = None,
    progress=None,
) -> Path:
    """Encode every stem of every song, plus context mixes, with `cae` (an `Autoencoder`).

    Writes `out_dir/songs/<id>/<stem>.npy` and `mix-<k>.npy` (float16, (latent_dim, frames)),
    `<stem>.act.npy` (uint8 per-frame activity of the stem), `out_dir/silence.npy` (the latent
    of silence, for empty contexts) and `out_dir/index.json`. Resumable: songs whose folder
    exists are kept. Returns the index path.
    """
    import torch

    manifest = load_manifest(dataset_dir)
    root = Path(manifest["_root"])
    out = Path(out_dir)
    (out / "songs").mkdir(parents=True, exist_ok=True)
    hop = int(getattr(cae, "hop", HOP))
    if device is None:
        device = _model_device(cae)

    def encode(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            z = cae.encode(torch.from_numpy(np.ascontiguousarray(batch)).to(device))
        return z.float().cpu().numpy()

    silence = encode(np.zeros((1, hop * 8), dtype=np.float32))[0]
    np.save(out / "silence.npy", silence.mean(axis=1, keepdims=True).astype(np.float16))
    songs = [s for s in manifest["songs"] if s["split"] in splits]
    index_songs = []
    for k, song in enumerate(songs):
        meta_path = out / "songs" / song["id"] / "latents.json"
        if meta_path.is_file():
            index_songs.append(json.loads(meta_path.read_text()))
            continue
        index_songs.append(_encode_song(song, k, root, out, encode, hop, seed, max_mixes))
        if progress:
            progress(k + 1, len(songs), song["id"])
    index = {"version": 1, "cae": getattr(cae, "id", type(cae).__name__), "hop": hop,
             "latent_dim": int(silence.shape[0]), "sample_rate": manifest["sample_rate"],
             "dataset": str(root.resolve()), "songs": index_songs}
    atomic_write_json(out / "index.json", index)
    return out / "index.json"


class LatentPairs:
    """Pairs of pre-encoded latent windows (see the module docstring).

    `sample()` returns a dict: `target`, `context` (float32 (latent_dim, frames)),
    `context_empty` (the subset was empty: `context` is the latent of silence),
    `drop_context`, `drop_clap`, `clap_audio` (float32 audio, a random stretch of the target
    window, read from the dataset's WAV; None with `load_clap_audio=False`), `clap_range`
    (start, stop in samples of the target stem), `song`, `target_stem`, `context_stems`,
    `target_latent`, `context_latent` (latent files relative to the index; the context's is
    None when empty),
    `frame_offset`, `family`, `caption`. Iterating yields samples forever.
    """

    def __init__(
        self,
        index_path: str | os.PathLike,
        split: str = "train",
        frames: int = DEFAULT_FRAMES,
        seed: int = 0,
        *,
        rules: PairRules = PairRules(),
        load_clap_audio: bool = True,
        dataset_dir: str | os.PathLike | None = None,
    ):
        p = Path(index_path)
        if p.is_dir():
            p = p / "index.json"
        if not p.is_file():
            raise RiffwrightError(f"no latent index at {p}: run encode_dataset_latents first")
        self.root = p.parent
        self.index = json.loads(p.read_text())
        self.dataset = Path(dataset_dir or self.index["dataset"])
        self.songs = [s for s in self.index["songs"]
                      if split in (None, "all") or s["split"] == split]
        if not self.songs:
            raise RiffwrightError(f"the latent index has no songs in split {split!r}")
        self.frames = int(frames)
        self.hop = int(self.index["hop"])
        self.rng = np.random.default_rng(seed)
        self.rules = rules
        self.clap_samples = int(min(rules.clap_samples, self.frames * self.hop))
        self.load_clap_audio = load_clap_audio
        self.silence = np.load(self.root / "silence.npy").astype(np.float32)
        self._cache: dict[str, np.ndarray] = {}

    def _load(self, rel: str) -> np.ndarray:
        arr = self._cache.get(rel)
        if arr is None:
            arr = np.load(self.root / rel, mmap_mode="r")
            self._cache[rel] = arr
        return arr

    def _window(self, rel: str, off: int) -> np.ndarray:
        z = self._load(rel)
        w = np.asarray(z[:, off:off + self.frames], dtype=np.float32)
        if w.shape[1] < self.frames:
            fill = np.repeat(self.silence, self.frames - w.shape[1], axis=1)
            w = np.concatenate([w, fill], axis=1)
        return w

    def _contexts_for(self, song: dict, target: int) -> list[tuple[list[int], str]]:
        out = [([i], st["latent"]) for i, st in enumerate(song["stems"]) if i != target]
        out += [(m["members"], m["latent"]) for m in song["mixes"] if target not in m["members"]]
        return out

    def sample(self) -> dict:
        rng = self.rng
        song = self.songs[int(rng.integers(len(self.songs)))]
        ti = int(rng.integers(len(song["stems"])))
        stem = song["stems"][ti]
        span = max(0, int(song["frames"]) - self.frames)
        act = self._load(stem["activity"])
        off = self.rules.offset(rng, span,
                                lambda o: float(np.mean(act[o:o + self.frames])))
        target = self._window(stem["latent"], off)
        choices = self._contexts_for(song, ti)
        rel = None
        if not choices or rng.random() < self.rules.p_empty_context:
            members, context = [], np.repeat(self.silence, self.frames, axis=1)
        else:
            members, rel = choices[int(rng.integers(len(choices)))]
            context = self._window(rel, off)
        n_win = self.frames * self.hop
        c_off = int(rng.integers(0, n_win - self.clap_samples + 1))
        start = off * self.hop + c_off
        clap = None
        if self.load_clap_audio:
            clap = _read_window(self.dataset / stem["audio"], start, self.clap_samples)
        return {
            "target": target, "context": context, "context_empty": not members,
            **self.rules.drops(rng),
            "clap_audio": clap, "clap_range": (start, start + self.clap_samples),
            "song": song["id"], "target_stem": ti, "target_latent": stem["latent"],
            "context_stems": list(members), "context_latent": rel, "frame_offset": off,
            "family": stem.get("family"), "caption": stem.get("caption", ""),
        }

    def __iter__(self):
        while True:
            yield self.sample()

    def __len__(self) -> int:
        return sum(len(s["stems"]) for s in self.songs)
