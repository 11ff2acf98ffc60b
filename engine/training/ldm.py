"""Training the latent diffusion model: `riffwright train ldm`.

1. The dataset's stems and context mixes are encoded once with the bundle's CAE
   (`engine.training.dataset.pairs.encode_dataset_latents`, resumable) and the per-channel latent
   statistics of the target stems are measured, so the network sees unit-scale data
   (σ_data = 1 after normalisation).
2. CLAP embeddings of overlapping 5 s crops of every stem are computed once with the bundle's
   conditioner; a training pair uses a crop that lies inside its target window (a random
   sub-segment of the target, as in Diff-A-Riff).
3. Pairs (`LatentPairs`): context = the CAE latent of a random subset of the other stems,
   summed as audio; target = one stem; context and CLAP dropped at random. With
   `context_features` the context also carries its chroma and onsets (precomputed per stem
   and mix in `OUT/features`; `docs/context.md`); with `feature_loss` a frozen probe
   (`OUT/probe.safetensors`, fitted first) compares those of the denoised latents with the
   target's; `p_text_clap` swaps some audio-crop conditions for the caption's text embedding.
4. EDM loss, AdamW with warm-up, gradient clipping, EMA; bfloat16 autocast on CUDA.
   Checkpoints (safetensors + JSON, atomic) every `checkpoint_every` steps and on interrupt;
   a run resumes from its last checkpoint. Progress with ETA on stdout and in `train.log`.
5. Every `checkpoint_every` steps the EMA weights are exported as a complete bundle in
   `OUT/bundle` (float16), and every `sample_every` steps a sample is rendered to
   `OUT/samples/`.

Distributed: launched with `torchrun --nproc_per_node N riffwright train ldm ...` each process
trains on its own pair stream and DDP averages gradients (NCCL on CUDA, gloo on the CPU);
rank 0 alone encodes, logs and writes.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from engine.audio import write_audio
from engine.bundles.bundle import (
    DEFAULT_PARAMETERS,
    FORMAT_VERSION,
    find_bundle,
    load_bundle,
    read_manifest,
    save_ldm,
)
from engine.bundles.bundle import write_manifest as write_bundle_manifest
from engine.diffusion.context_features import (
    BASS_DIM,
    FEATURE_DIM,
    GRID_DIM,
    BeatGrid,
    bass_from_spectra,
    bass_spectra,
    features_from_spectra,
    grid_features,
    spectra,
)
from engine.diffusion.edm import EDMLoss, EDMPrecond
from engine.errors import RiffwrightError
from engine.fsutil import atomic_path
from engine.generation.driver import Generator, pick_device, run_to_end
from engine.generation.request import GenerationRequest
from engine.models.cae import latent_stats
from engine.models.conditioning.prior import DEFAULT_K, make_prior
from engine.models.probe import FeatureProbe, load_probe, save_probe
from engine.models.unet import UNet1d, arch_config, param_count, warm_start
from engine.train_state import has_state, load_state, save_state, state_paths, stop_on_sigterm
from engine.training.dataset.build import load_manifest
from engine.training.dataset.pairs import LatentPairs, PairRules, encode_dataset_latents
from engine.training.loop import ema_update, log_json, set_lr, warmup_lr
from engine.weights import load_into, read_checkpoint, save_module

CLAP_CROP_S = 5.0
CLAP_HOP_S = 2.5
PRIOR_FILE = "prior.safetensors"
PROBE_FILE = "probe.safetensors"
HARMONY_PROBE_FILE = "harmony_probe.safetensors"
RHYTHM_PROBE_FILE = "rhythm_probe.safetensors"  # the feature probe, as a bundle ships it
BASS_FEATURES = "bass_features"  # the low-register chroma files, beside "features"


@dataclass
class LDMTrainConfig:
    arch: str = "tiny"
    steps: int = 20000
    batch_size: int = 16
    frames: int = 128
    window_frames: int | None = None  # inference window written to the bundle (default: frames)
    lr: float = 2e-4
    warmup: int = 500
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    p_mean: float = -1.2
    p_std: float = 1.2
    p_drop_context: float = 0.2
    p_drop_clap: float = 0.2
    p_empty_context: float = 0.1
    # share of pairs whose CLAP condition is the text embedding of the target's caption
    # instead of an audio crop's: generation is steered by text prompts, and text and audio
    # embeddings do not coincide (the modality gap)
    p_text_clap: float = 0.0
    # give the model the context's chroma and onsets too (engine.diffusion.context_features)
    context_features: bool = False
    # and the beat grid of the song's tempo and meter (engine.diffusion.context_features
    # .grid_features), dropped with probability `p_drop_grid` so that a context without a
    # tempo still works; needs `context_features`
    beat_grid: bool = False
    p_drop_grid: float = 0.3
    # and the pitch classes of the context's low register (context_features.bass_features:
    # usually the chord's root), after the grid; needs `beat_grid`
    bass_chroma: bool = False
    # start from this bundle's diffusion weights when the run has no checkpoint yet (a model
    # without features can be extended with them)
    init_from: str | None = None
    # weight of a loss on what the denoised latents *sound* like: a frozen probe reads chroma
    # and onsets off D(x; σ), compared with the target stem's own (0: off)
    feature_loss: float = 0.0
    probe_steps: int = 1500
    # fit the probe that harmony guidance reads (the low register's pitch classes of a stem,
    # off its latents; exported with the bundle, beside the feature probe that rhythm
    # guidance reads) for this many steps; needs `context_features` (0: none, and the
    # bundle cannot steer towards the harmony or the onsets)
    harmony_probe_steps: int = 1500
    # neighbours averaged by the bundle's text prior (engine.models.conditioning.prior; 0: no prior)
    text_prior_k: int = 8
    checkpoint_every: int = 500
    sample_every: int = 2000
    log_every: int = 25
    seed: int = 0
    threads: int | None = None

    @classmethod
    def from_file(cls, path: str | os.PathLike | None, **overrides) -> LDMTrainConfig:
        data = {}
        if path:
            try:
                data = json.loads(Path(path).read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise RiffwrightError(f"cannot read config {path}: {e}") from None
            unknown = set(data) - set(cls.__dataclass_fields__)
            if unknown:
                raise RiffwrightError(f"{path}: unknown settings {', '.join(sorted(unknown))}")
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**data)


# ----------------------------------------------------------------------------- distributed


def _dist_info() -> tuple[int, int, int]:
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def _init_dist(device: torch.device) -> tuple[int, int]:
    rank, world, _ = _dist_info()
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend)
    return rank, world


def _barrier(world: int) -> None:
    if world > 1:
        torch.distributed.barrier()


# ----------------------------------------------------------------------------- CLAP crops


def clap_crop_embeddings(index_path: Path, conditioner, out: Path, log=print) -> Path:
    """Embed overlapping 5 s crops of every stem in the latent index (resumable per song).

    Writes `out/<song>.npz` with `emb` (stems, crops, D) float16 and `starts` (crops,) in
    samples, plus a marker of the conditioner id so a different encoder recomputes.
    """
    import soundfile as sf

    index = json.loads(Path(index_path).read_text())
    root = Path(index["dataset"])
    sr = index["sample_rate"]
    out.mkdir(parents=True, exist_ok=True)
    marker = out / "conditioner.id"
    if marker.exists() and marker.read_text() != conditioner.id:
        shutil.rmtree(out)
        out.mkdir(parents=True)
    marker.write_text(conditioner.id)
    crop, hop = int(CLAP_CROP_S * sr), int(CLAP_HOP_S * sr)
    for k, song in enumerate(index["songs"]):
        path = out / f"{song['id']}.npz"
        if path.exists():
            continue
        embs = []
        starts = None
        for st in song["stems"]:
            x, _ = sf.read(str(root / st["audio"]), dtype="float32", always_2d=True)
            x = x.mean(axis=1)
            if len(x) < crop:
                x = np.pad(x, (0, crop - len(x)))
            s = np.arange(0, len(x) - crop + 1, hop)
            starts = s if starts is None or len(s) < len(starts) else starts
            crops = np.stack([x[i:i + crop] for i in s])
            with torch.inference_mode():
                e = torch.cat([conditioner.embed_audio(c, sr) for c in crops])
            embs.append(e.float().cpu().numpy())
        n = min(len(e) for e in embs)
        with atomic_path(path) as tmp:
            np.savez(tmp, emb=np.stack([e[:n] for e in embs]).astype(np.float16),
                     starts=starts[:n])
        if (k + 1) % 25 == 0:
            log(f"clap crops: {k + 1}/{len(index['songs'])} songs")
    return out


class ClapCrops:
    def __init__(self, folder: Path, sample_rate: int):
        self.folder = folder
        self.crop = int(CLAP_CROP_S * sample_rate)
        self._songs: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def pick(self, song: str, stem: int, start: int, stop: int, rng) -> np.ndarray:
        """A crop embedding of `stem` lying inside samples [start, stop) (nearest if none)."""
        if song not in self._songs:
            z = np.load(self.folder / f"{song}.npz")
            self._songs[song] = (z["emb"].astype(np.float32), z["starts"])
        emb, starts = self._songs[song]
        inside = np.nonzero((starts >= start) & (starts + self.crop <= stop))[0]
        if len(inside) == 0:
            inside = [int(np.argmin(np.abs(starts - start)))]
        return emb[stem, int(inside[int(rng.integers(len(inside)))])]


def build_text_prior(latent_dir: Path, clap_dir: Path, conditioner_id: str,
                     k: int | None = None, split: str = "train"):
    """The bundle's text prior (engine.models.conditioning.prior) from a run's crop embeddings.

    One embedding per `split` stem: the mean of its crops weighted by how much of each crop
    the stem plays (its latent activity), so silent stretches do not pull it towards the
    embedding of silence. Stems that never play are left out.
    """
    index = json.loads((latent_dir / "index.json").read_text())
    sr, hop = index["sample_rate"], index["hop"]
    crop = int(CLAP_CROP_S * sr)
    rows = []
    for song in index["songs"]:
        if song["split"] != split or not (clap_dir / f"{song['id']}.npz").exists():
            continue
        z = np.load(clap_dir / f"{song['id']}.npz")
        emb, starts = z["emb"].astype(np.float32), z["starts"]
        for j, st in enumerate(song["stems"][: len(emb)]):
            act = np.load(latent_dir / st["activity"]).astype(np.float32)
            w = np.array([act[s // hop : max(s // hop + 1, (s + crop) // hop)].mean()
                          if s // hop < len(act) else 0.0 for s in starts])
            w = np.nan_to_num(w)
            if w.sum() <= 0:
                continue
            e = emb[j] / np.linalg.norm(emb[j], axis=1, keepdims=True).clip(1e-8)
            rows.append((w[:, None] * e).sum(0) / w.sum())
    if not rows:
        raise RiffwrightError(f"no {split} stems with crop embeddings in {clap_dir}")
    return make_prior(np.stack(rows), conditioner_id, DEFAULT_K if k is None else k)


class CaptionEmbeddings:
    """Text embeddings of captions, computed once each."""

    def __init__(self, conditioner):
        self.conditioner = conditioner
        self._cache: dict[str, np.ndarray] = {}

    def get(self, caption: str) -> np.ndarray:
        e = self._cache.get(caption)
        if e is None:
            with torch.inference_mode():
                e = self.conditioner.embed_text([caption]).float().cpu().numpy()[0]
            self._cache[caption] = e
        return e


# ----------------------------------------------------------------------------- context features

def context_feature_files(index_path: Path, out: Path, log=print) -> Path:
    """Features (`engine.diffusion.context_features`) of every stem and context mix in the latent index.

    Writes `out/<song>.npz` holding one (FEATURE_DIM, frames) float16 array per latent file,
    keyed by its name (`00-bass`, `mix-03`). Each stem is transformed once; a mix's spectra
    are the sums of its members'. Resumable per song.
    """
    return _spectral_feature_files(index_path, out, spectra, features_from_spectra,
                                   "context features", log)


def bass_feature_files(index_path: Path, out: Path, log=print) -> Path:
    """The low-register chroma (`context_features.bass_features`, BASS_DIM rows) of every
    stem and context mix, laid out as `context_feature_files` lays out its features."""
    return _spectral_feature_files(
        index_path, out, lambda x, sr, hop, frames: (bass_spectra(x, sr, hop, frames),),
        bass_from_spectra, "low-register chroma", log)


def _spectral_feature_files(index_path: Path, out: Path, transform, finish, what: str,
                            log) -> Path:
    """`out/<song>.npz` of `finish(*spectra, sr)` per stem and mix, where each stem's spectra
    are `transform(mono, sr, hop, frames)` (a tuple of arrays) and a mix's are the sums of
    its members' (spectra add). Resumable per song."""
    import soundfile as sf

    index = json.loads(Path(index_path).read_text())
    root, sr, hop = Path(index["dataset"]), int(index["sample_rate"]), int(index["hop"])
    out.mkdir(parents=True, exist_ok=True)
    for k, song in enumerate(index["songs"]):
        dest = out / f"{song['id']}.npz"
        if dest.exists():
            continue
        frames = int(song["frames"])
        specs = []
        for st in song["stems"]:
            x = sf.read(str(root / st["audio"]), dtype="float32", always_2d=True)[0].mean(axis=1)
            specs.append(transform(x, sr, hop, frames))
        arrays = {}
        for st, spec in zip(song["stems"], specs):
            arrays[Path(st["latent"]).stem] = finish(*spec, sr)
        for mix in song["mixes"]:
            summed = [sum(specs[i][j] for i in mix["members"]) for j in range(len(specs[0]))]
            arrays[Path(mix["latent"]).stem] = finish(*summed, sr)
        with atomic_path(dest) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **{name: a.astype(np.float16) for name, a in arrays.items()})
        if (k + 1) % 25 == 0 or k + 1 == len(index["songs"]):
            log(f"{what}: {k + 1}/{len(index['songs'])} songs")
    return out


class ContextFeatureWindows:
    """Windows of the precomputed context features matching `LatentPairs` samples."""

    def __init__(self, folder: Path, dim: int):
        self.folder, self.dim = folder, dim
        self._songs: dict[str, dict[str, np.ndarray]] = {}

    def window(self, sample: dict, frames: int, of: str = "context") -> np.ndarray:
        """Features of the sample's context (zeros when empty) or, with `of="target"`, of its
        target stem, for the sample's frames."""
        out = np.zeros((self.dim, frames), np.float32)
        rel = sample.get(f"{of}_latent")
        if rel is None:  # the empty context: silence has no features
            return out
        song = sample["song"]
        if song not in self._songs:
            with np.load(self.folder / f"{song}.npz") as z:
                self._songs[song] = {k: z[k] for k in z.files}
        f = self._songs[song][Path(rel).stem]
        off = int(sample["frame_offset"])
        w = f[:, off:off + frames]
        out[:, :w.shape[1]] = w
        return out


class SongGrids:
    """Beat grids of the training songs, from the tempo and meter their dataset manifest
    records (songs start on a bar line); windows of `grid_features` for `LatentPairs`
    samples, zeros for a song without a tempo."""

    def __init__(self, dataset: str | os.PathLike, sample_rate: int, hop: int):
        self.sample_rate, self.hop = int(sample_rate), int(hop)
        self.grids: dict[str, BeatGrid] = {}
        for song in load_manifest(dataset)["songs"]:
            try:
                self.grids[song["id"]] = BeatGrid.from_meter(float(song["tempo"]),
                                                             str(song.get("meter", "4/4")))
            except (KeyError, TypeError, ValueError):
                continue  # no usable tempo: the song trains without a grid

    def window(self, sample: dict, frames: int) -> np.ndarray:
        return grid_features(self.grids.get(sample["song"]), frames, self.hop,
                             self.sample_rate, int(sample["frame_offset"]))


def _fit_probe(path: Path, probe: FeatureProbe, out: Path, frames: int, draw, loss_fn,
               score, steps: int, batch: int, seed: int, config: dict) -> tuple:
    """Fit `probe` on training pairs (or load it from `path`); (frozen probe, held-out score).

    A saved probe whose config differs from `config` (another conditioner, other sizes) is
    refitted; with `steps` 0 (the other ranks of a distributed run) that is an error."""

    if path.exists():
        tensors, _, saved = read_checkpoint(path)
        if all(saved.get(k) == v for k, v in config.items()):
            load_into(probe, tensors, str(path))
            return probe.requires_grad_(False).eval(), saved.get("heldout_score",
                                                                 saved.get("heldout_r2"))
        if not steps:
            raise RiffwrightError(f"{path} was fitted for another setting; delete it to refit")
    index = out / "latents" / "index.json"
    torch.manual_seed(seed)
    train = LatentPairs(index, "train", frames, seed=seed, load_clap_audio=False)
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(probe.parameters(), lr=1e-3)
    for _ in range(steps):
        z, f = draw(train, batch, rng)
        loss = loss_fn(probe(z), f)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    try:
        held = LatentPairs(index, "test", frames, seed=seed + 1, load_clap_audio=False)
    except RiffwrightError:
        held = LatentPairs(index, "train", frames, seed=seed + 1, load_clap_audio=False)
    with torch.no_grad():
        z, f = draw(held, 256, rng)
        value = float(score(probe(z), f))
    save_module(probe, path, probe.kind, {**config, "heldout_score": value})
    return probe.requires_grad_(False).eval(), value


def _target_latents(pairs, n, mean, std):
    ps = [pairs.sample() for _ in range(n)]
    return ps, (torch.from_numpy(np.stack([p["target"] for p in ps])) - mean.cpu()) / std.cpu()


def train_feature_probe(out: Path, mean: torch.Tensor, std: torch.Tensor, dim: int,
                        steps: int, frames: int = 64, batch: int = 32, seed: int = 0,
                        log=print) -> FeatureProbe:
    """Fit (or load) `out/probe.safetensors`: features of a stem from its clean latents.

    Reports the share of held-out feature variance it explains (R²)."""
    return _train_probe(out, "features", PROBE_FILE, "feature probe", mean, std, dim, steps,
                        frames, batch, seed, log)


def train_harmony_probe(out: Path, mean: torch.Tensor, std: torch.Tensor, steps: int,
                        frames: int = 64, batch: int = 32, seed: int = 0,
                        log=print) -> FeatureProbe:
    """Fit (or load) `out/harmony_probe.safetensors`: from a stem's clean latents, the pitch
    classes of its low register (`context_features.bass_features`) and, in one more row,
    whether it is a drum part (1) or not (0). The exported bundle ships it for harmony
    guidance (`engine.generation.procedures.harmony_guided`), which leaves drums alone."""
    def drums(sample: dict, n: int) -> np.ndarray:
        return np.full((1, n), float(sample.get("family") == "drums"), np.float32)

    return _train_probe(out, BASS_FEATURES, HARMONY_PROBE_FILE, "harmony probe", mean, std,
                        BASS_DIM, steps, frames, batch, seed, log, extra=(1, drums))


def _train_probe(out: Path, folder: str, file: str, what: str, mean: torch.Tensor,
                 std: torch.Tensor, dim: int, steps: int, frames: int, batch: int, seed: int,
                 log, extra: tuple | None = None) -> FeatureProbe:
    """Fit (or load) `out/file`, a probe from clean target latents to their features in
    `out/folder` (and `extra` = (rows, fn(sample, frames) -> rows x frames) more rows after
    them); log the share of held-out feature variance it explains (R²)."""
    windows = ContextFeatureWindows(out / folder, dim)

    def target(p: dict) -> np.ndarray:
        f = windows.window(p, frames, "target")
        return f if extra is None else np.concatenate([f, extra[1](p, frames)])

    def draw(pairs, n, rng):
        ps, z = _target_latents(pairs, n, mean, std)
        return z, torch.from_numpy(np.stack([target(p) for p in ps]))

    def r2(pred, f):
        return 1 - ((pred - f) ** 2).sum() / ((f - f.mean((0, 2), keepdim=True)) ** 2).sum()

    dim += extra[0] if extra else 0
    probe, value = _fit_probe(out / file, FeatureProbe(int(mean.shape[1]), dim),
                              out, frames, draw, torch.nn.functional.mse_loss, r2, steps, batch,
                              seed, {"latent_dim": int(mean.shape[1]), "feature_dim": dim})
    if steps and value is not None:
        log(f"{what}: {steps} steps, explains {value:.0%} of held-out feature variance")
    return probe


# ----------------------------------------------------------------------------- trainer


def _log_line(out: Path | None, record: dict, text: str, rank: int) -> None:
    if rank != 0:
        return
    print(text, flush=True)
    if out is not None:
        log_json(out / "train.log", record)


def _export_bundle(src_bundle: Path, out: Path, ema: torch.nn.Module, stats: dict, cfg,
                   step: int, info: dict) -> Path:
    """Write OUT/bundle: the source bundle's CAE and conditioner with the trained LDM."""

    src = read_manifest(src_bundle)
    dest = out / "bundle"
    staging = out / ".bundle-staging"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for section in ("cae", "conditioner"):
        f = src[section].get("file")
        if f:
            shutil.copy2(src_bundle / f, staging / f)
    save_ldm(ema, staging / "ldm.safetensors", dtype=torch.float16)
    prior = out / PRIOR_FILE if cfg.text_prior_k and (out / PRIOR_FILE).exists() else None
    if prior is not None:
        shutil.copy2(prior, staging / PRIOR_FILE)
    probes = {}  # for harmony and rhythm guidance; float16 like the other weights
    for section, (run_file, name) in {"harmony_probe": (HARMONY_PROBE_FILE, HARMONY_PROBE_FILE),
                                      "rhythm_probe": (PROBE_FILE, RHYTHM_PROBE_FILE)}.items():
        if _fits_harmony_probe(cfg) and (out / run_file).exists():
            _, _, saved = read_checkpoint(out / run_file, expected_kind=FeatureProbe.kind)
            save_probe(load_probe(out / run_file, int(src["latent"]["dim"])), staging / name,
                       saved.get("heldout_score"), dtype=torch.float16)
            probes[section] = {"file": name}
    defaults = {**DEFAULT_PARAMETERS, **src.get("defaults", {})}
    if "harmony_probe" not in probes:
        defaults["harmony"] = 0.0
    if len(probes) < 2:
        defaults["rhythm"] = 0.0
    card = src_bundle / "MODEL_CARD.md"
    if card.exists():
        shutil.copy2(card, staging / "MODEL_CARD.md")
    manifest = {
        "format": FORMAT_VERSION,
        "name": info.get("name") or f"riffwright-{cfg.arch}",
        "description": info.get("description", "Trained with `riffwright train ldm`."),
        "trained": True,
        "sample_rate": src["sample_rate"],
        "latent": {"dim": src["latent"]["dim"], "hop": src["latent"]["hop"],
                   "mean": stats["mean"], "std": stats["std"]},
        "sigma_data": 1.0,
        "window_frames": cfg.window_frames or cfg.frames,
        "overlap_frames": max(8, (cfg.window_frames or cfg.frames) // 4),
        "cae": src["cae"],
        "conditioner": src["conditioner"],
        "ldm": {"file": "ldm.safetensors", "arch": cfg.arch},
        **({"prior": {"file": PRIOR_FILE}} if prior is not None else {}),
        **probes,
        "defaults": defaults,
        "training": {"steps": step, "config": asdict(cfg), **info.get("training", {})},
    }
    write_bundle_manifest(staging, manifest)
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(staging, dest)
    return dest


def _render_sample(bundle_dir: Path, out: Path, step: int, index: dict) -> None:
    """Render one accompaniment for a held-out song's context (a listening check)."""

    songs = [s for s in index["songs"] if s["split"] != "train"] or index["songs"]
    song = songs[0]
    import soundfile as sf

    root = Path(index["dataset"])
    stems = [sf.read(str(root / st["audio"]), dtype="float32", frames=48000 * 8)[0]
             for st in song["stems"][1:]]
    if not stems:
        return
    n = min(len(s) for s in stems)
    ctx = np.sum([s[:n] if s.ndim == 1 else s[:n].mean(axis=1) for s in stems], axis=0)
    gen = Generator(load_bundle(bundle_dir, device="cpu"))
    stem = run_to_end(gen.run(GenerationRequest(context=ctx[None].astype(np.float32),
                                                prompt=song["stems"][0]["caption"],
                                                steps=20, seed=0)))[0]
    (out / "samples").mkdir(exist_ok=True)
    write_audio(out / "samples" / f"step{step:07d}.wav", stem.audio, stem.sample_rate)


def _init_from(net: torch.nn.Module, bundle: str | os.PathLike, rank: int) -> None:

    root = find_bundle(bundle)
    tensors, _, _ = read_checkpoint(root / read_manifest(root)["ldm"]["file"],
                                    expected_kind=UNet1d.kind)
    try:
        fresh = warm_start(net, {k: v.float() for k, v in tensors.items()})
    except ValueError as e:
        raise RiffwrightError(f"cannot start from {root}: {e}") from None
    if rank == 0:
        print(f"starting from {root}'s diffusion model"
              + (f" ({len(fresh)} new tensors)" if fresh else ""), flush=True)


def _setup_device(device: str, cfg: LDMTrainConfig) -> tuple[torch.device, int, int]:
    """The training device, this process's rank and the world size (joining the process
    group when launched with torchrun; each process takes its own GPU)."""

    dev = pick_device(device)
    rank, world = _init_dist(dev)
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", _dist_info()[2])
        torch.cuda.set_device(dev)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    return dev, rank, world


def _write_latent_stats(out: Path) -> None:
    """Measure the per-channel statistics of the training stems' latents once per run, so the
    network sees unit-scale data; a resumed run keeps the first measurement."""

    stats_path = out / "latent_stats.json"
    if stats_path.exists():
        return
    index = json.loads((out / "latents" / "index.json").read_text())
    lat = [np.load(out / "latents" / st["latent"]).astype(np.float32)
           for s in index["songs"] if s["split"] == "train" for st in s["stems"]]
    mean, std = latent_stats(lat)
    stats = {"mean": [round(float(v), 6) for v in mean],
             "std": [round(max(float(v), 1e-3), 6) for v in std]}
    stats_path.write_text(json.dumps(stats))


def _prepare_data(data, out: Path, b, cfg: LDMTrainConfig) -> None:
    """Rank 0's one-off work before training: latents, crop embeddings, the text prior,
    context features and latent statistics (each resumable)."""

    out.mkdir(parents=True, exist_ok=True)
    encode_dataset_latents(
        data, b.cae, out / "latents",
        progress=lambda k, n, s: print(f"encoding latents {k}/{n}", flush=True)
        if k % 25 == 0 or k == n else None)
    clap_crop_embeddings(out / "latents" / "index.json", b.conditioner, out / "clap")
    if cfg.text_prior_k:
        build_text_prior(out / "latents", out / "clap", b.conditioner.id,
                         cfg.text_prior_k).save(out / PRIOR_FILE)
    if cfg.context_features or cfg.feature_loss:
        context_feature_files(out / "latents" / "index.json", out / "features")
    if cfg.bass_chroma or _fits_harmony_probe(cfg):
        bass_feature_files(out / "latents" / "index.json", out / BASS_FEATURES)
    _write_latent_stats(out)


def _fits_harmony_probe(cfg: LDMTrainConfig) -> bool:
    """Whether the run fits a harmony probe: guidance needs the context's chroma, which
    only models with context features take."""
    return cfg.context_features and cfg.harmony_probe_steps > 0


@dataclass
class _Model:
    """The trained network, its EMA copy and optimiser, and the (possibly DDP-wrapped)
    preconditioned network the loss is computed through."""

    net: UNet1d
    ema: UNet1d
    opt: torch.optim.Optimizer
    precond: EDMPrecond | None = None


def _feature_channels(cfg: LDMTrainConfig) -> int:
    """Feature channels appended to the context latents: chroma and onsets, then the beat
    grid, then the low register (`context_features.feature_layout`)."""
    if cfg.beat_grid and not cfg.context_features:
        raise RiffwrightError("beat_grid needs context_features")
    if cfg.bass_chroma and not cfg.beat_grid:
        raise RiffwrightError("bass_chroma needs beat_grid (it comes after the grid)")
    if not cfg.context_features:
        return 0
    return FEATURE_DIM + (GRID_DIM if cfg.beat_grid else 0) + (BASS_DIM if cfg.bass_chroma else 0)


def _build_model(cfg: LDMTrainConfig, b, out: Path, rank: int, dev: torch.device) -> _Model:
    """A fresh network (or one warm-started from `cfg.init_from` when the run has no
    checkpoint), its EMA copy and AdamW."""

    torch.manual_seed(cfg.seed)
    n_feat = _feature_channels(cfg)
    net = UNet1d(arch_config(cfg.arch, latent_dim=b.cae.latent_dim, clap_dim=b.conditioner.dim,
                             feature_dim=n_feat))
    if cfg.init_from and not has_state(out):
        _init_from(net, cfg.init_from, rank)
    net.to(dev)
    ema = UNet1d(net.config).to(dev)
    ema.load_state_dict(net.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, betas=(0.9, 0.99),
                            weight_decay=cfg.weight_decay)
    return _Model(net, ema, opt)


def _resume(out: Path, cfg: LDMTrainConfig, model: _Model) -> int:
    """Load the run's checkpoint into `model` and return its step (0 without one); a run of
    another architecture or feature setting is refused rather than mixed."""

    if not has_state(out):
        return 0
    saved = json.loads(state_paths(out)[1].read_text())
    if saved.get("arch") != cfg.arch:
        raise RiffwrightError(f"{out} holds a {saved.get('arch')} run; use a new --out for "
                              f"{cfg.arch}")
    for key in ("context_features", "beat_grid", "bass_chroma"):
        had = bool(saved.get("config", {}).get(key, False))
        if had != getattr(cfg, key):
            raise RiffwrightError(f"{out} holds a run {'with' if had else 'without'} "
                                  f"{key.replace('_', ' ')}; use a new --out to change that")
    return int(load_state(out, {"model": model.net, "ema": model.ema}, model.opt)["step"])


def _wrap_for_training(model: _Model, world: int, dev: torch.device) -> None:
    """Precondition the network for EDM, through DDP when several processes train."""

    train_net = model.net
    if world > 1:
        train_net = torch.nn.parallel.DistributedDataParallel(
            model.net, device_ids=[dev.index] if dev.type == "cuda" else None)
    model.precond = EDMPrecond(train_net, sigma_data=1.0)


@dataclass
class _Batches:
    """Where training batches come from: the pair stream, the conditions drawn for them and
    the latent normalisation; `rng` and `gen` are seeded per rank and step so a resumed or
    distributed run draws its own reproducible stream."""

    cfg: LDMTrainConfig
    dev: torch.device
    mean: torch.Tensor
    std: torch.Tensor
    pairs: LatentPairs
    crops: ClapCrops
    texts: CaptionEmbeddings
    feats: ContextFeatureWindows | None
    grids: SongGrids | None
    bass: ContextFeatureWindows | None
    probe: FeatureProbe | None
    rng: np.random.Generator
    gen: torch.Generator


def _feature_probe(cfg: LDMTrainConfig, out: Path, mean: torch.Tensor, std: torch.Tensor,
                   dev: torch.device, rank: int, world: int) -> FeatureProbe | None:
    """The frozen probe `feature_loss` reads features with: rank 0 fits it, every rank then
    loads the saved one (None without a feature loss)."""

    if not cfg.feature_loss:
        return None
    if rank == 0:
        train_feature_probe(out, mean, std, FEATURE_DIM, cfg.probe_steps, cfg.frames,
                            seed=cfg.seed)
    _barrier(world)
    return train_feature_probe(out, mean, std, FEATURE_DIM, 0).to(dev)


def _batches(cfg: LDMTrainConfig, out: Path, b, index: dict, mean: torch.Tensor,
             std: torch.Tensor, dev: torch.device, probe: FeatureProbe | None, step: int,
             rank: int, world: int) -> _Batches:
    """The pair stream and condition sources of this rank, seeded for `step` on."""

    pairs = LatentPairs(out / "latents" / "index.json", "train", cfg.frames,
                        seed=cfg.seed * 1000 + step * world + rank,
                        rules=PairRules(p_drop_context=cfg.p_drop_context,
                                        p_drop_clap=cfg.p_drop_clap,
                                        p_empty_context=cfg.p_empty_context),
                        load_clap_audio=False)
    feats = (ContextFeatureWindows(out / "features", FEATURE_DIM)
             if cfg.context_features or cfg.feature_loss else None)
    grids = (SongGrids(index["dataset"], index["sample_rate"], index["hop"])
             if cfg.beat_grid else None)
    bass = ContextFeatureWindows(out / BASS_FEATURES, BASS_DIM) if cfg.bass_chroma else None
    return _Batches(cfg, dev, mean, std, pairs, ClapCrops(out / "clap", index["sample_rate"]),
                    CaptionEmbeddings(b.conditioner), feats, grids, bass, probe,
                    np.random.default_rng([cfg.seed, step, rank]),
                    torch.Generator().manual_seed(cfg.seed * 7919 + step * world + rank))


def _clap_condition(src: _Batches, sample: dict, heard: np.ndarray) -> np.ndarray:
    """The CLAP condition of one pair: its audio crop's embedding, or with probability
    `p_text_clap` its caption's text embedding."""

    p = src.cfg.p_text_clap
    if p > 0 and sample["caption"] and src.rng.random() < p:
        return src.texts.get(sample["caption"])
    return heard


def _draw_batch(src: _Batches) -> dict:
    """One training batch as tensors on the device: normalised target and context latents
    (with the context's features when the model takes them), CLAP conditions, their keep
    masks, and the target's features for the feature loss."""

    cfg, dev = src.cfg, src.dev
    batch = [src.pairs.sample() for _ in range(cfg.batch_size)]
    y = torch.from_numpy(np.stack([p["target"] for p in batch])).to(dev)
    c = torch.from_numpy(np.stack([p["context"] for p in batch])).to(dev)
    heard = [src.crops.pick(p["song"], p["target_stem"], *p["clap_range"], src.rng)
             for p in batch]
    e = torch.from_numpy(np.stack([_clap_condition(src, p, a)
                                   for p, a in zip(batch, heard)])).to(dev)
    cmask = torch.tensor([not p["drop_context"] for p in batch], device=dev)
    emask = torch.tensor([not p["drop_clap"] for p in batch], device=dev)
    y, c = (y - src.mean) / src.std, (c - src.mean) / src.std
    if cfg.context_features:
        f = np.stack([src.feats.window(p, cfg.frames) for p in batch])
        if src.grids is not None:
            g = np.stack([src.grids.window(p, cfg.frames) for p in batch])
            g[src.rng.random(len(batch)) < cfg.p_drop_grid] = 0.0
            f = np.concatenate([f, g], axis=1)
        if src.bass is not None:
            f = np.concatenate([f, np.stack([src.bass.window(p, cfg.frames) for p in batch])],
                               axis=1)
        c = torch.cat([c, torch.from_numpy(f).to(dev)], dim=1)
    want = None
    if src.probe is not None:
        want = torch.from_numpy(np.stack([src.feats.window(p, cfg.frames, "target")
                                          for p in batch])).to(dev)
    return {"y": y, "c": c, "e": e, "cmask": cmask, "emask": emask, "want": want}


def _loss(src: _Batches, model: _Model, loss_fn: EDMLoss, t: dict) -> torch.Tensor:
    """The EDM loss of a batch, plus the weighted feature loss on the denoised latents."""

    loss, d = loss_fn(model.precond, t["y"], context=t["c"], clap=t["e"],
                      context_mask=t["cmask"], clap_mask=t["emask"], generator=src.gen,
                      return_denoised=True)
    if src.probe is not None:
        loss = loss + src.cfg.feature_loss * torch.nn.functional.mse_loss(
            src.probe(d.float()), t["want"])
    return loss


def _train_step(src: _Batches, model: _Model, loss_fn: EDMLoss, step: int, autocast) -> float:
    """One optimiser step (warm-up learning rate, clipped gradients, EMA update); its loss."""

    cfg = src.cfg
    t = _draw_batch(src)
    set_lr(model.opt, warmup_lr(cfg.lr, step, cfg.warmup))
    with autocast if autocast is not None else contextlib.nullcontext():
        loss = _loss(src, model, loss_fn, t)
    model.opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.net.parameters(), cfg.grad_clip)
    model.opt.step()
    ema_update(model.ema, model.net, cfg.ema_decay, step)
    return float(loss.detach())


@dataclass
class _Run:
    """What a training call writes to and reports about, fixed for the call."""

    data: str | os.PathLike
    out: Path
    src_bundle: Path
    cfg: LDMTrainConfig
    name: str | None
    stats: dict
    index: dict
    rank: int
    world: int
    dev: torch.device


def _log_start(run: _Run, model: _Model, src: _Batches, step: int) -> None:
    cfg = run.cfg
    n = param_count(model.net)
    _log_line(run.out, {"event": "start", "step": step, "params": n,
                        "songs": len(src.pairs.songs), "world": run.world,
                        "device": str(run.dev), "config": asdict(cfg), "time": time.time()},
              f"training {cfg.arch} LDM ({n / 1e6:.1f} M params) on "
              f"{len(src.pairs.songs)} songs, {run.world} process(es) on {run.dev}, "
              f"from step {step}", run.rank)


def _log_progress(run: _Run, model: _Model, step: int, first: int, t0: float,
                  losses: list[float]) -> None:
    """Rank 0's progress line every `log_every` steps: mean loss since the last, speed, ETA."""

    cfg = run.cfg
    rate = (step - first) / (time.time() - t0)
    eta = (cfg.steps - step) / max(rate, 1e-9)
    avg = float(np.mean(losses))
    losses.clear()
    _log_line(run.out, {"step": step, "loss": avg, "lr": model.opt.param_groups[0]["lr"],
                        "steps_per_s": rate, "eta_s": eta, "time": time.time()},
              f"step {step}/{cfg.steps}  loss {avg:.4f}  {rate:.2f} it/s  "
              f"ETA {_hms(eta)}", run.rank)


def _checkpoint(run: _Run, model: _Model, step: int) -> None:
    """Rank 0 saves the resumable state and exports the EMA weights as a bundle."""

    if run.rank != 0:
        return
    save_state(run.out, {"model": model.net, "ema": model.ema}, model.opt,
               {"step": step, "arch": run.cfg.arch, "config": asdict(run.cfg)})
    _export_bundle(run.src_bundle, run.out, model.ema, run.stats, run.cfg, step,
                   {"name": run.name, "training": {"data": str(run.data)}})


def _after_step(run: _Run, model: _Model, step: int, first: int, t0: float,
                losses: list[float]) -> None:
    """The periodic work after a step: progress line, checkpoint and export, sample."""

    cfg = run.cfg
    if step % cfg.log_every == 0 and run.rank == 0:
        _log_progress(run, model, step, first, t0, losses)
    if step % cfg.checkpoint_every == 0:
        _checkpoint(run, model, step)
    if run.rank == 0 and cfg.sample_every and step % cfg.sample_every == 0:
        _render_sample(run.out / "bundle", run.out, step, run.index)


def _train_loop(run: _Run, model: _Model, src: _Batches, step: int,
                stop_after: int | None) -> None:
    """Step until `cfg.steps` (or `stop_after` more); an interruption (Ctrl-C, `kill PID`)
    checkpoints the step reached, and so does the end."""

    cfg = run.cfg
    loss_fn = EDMLoss(cfg.p_mean, cfg.p_std, 1.0)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if run.dev.type == "cuda" else None
    t0, first, losses = time.time(), step, []
    local_stop = None if stop_after is None else step + stop_after
    restore = stop_on_sigterm()  # `kill PID` checkpoints like Ctrl-C
    try:
        while step < cfg.steps and (local_stop is None or step < local_stop):
            losses.append(_train_step(src, model, loss_fn, step, autocast))
            step += 1
            _after_step(run, model, step, first, t0, losses)
    except KeyboardInterrupt:
        print("\ninterrupted: saving a checkpoint", file=sys.stderr)
        _checkpoint(run, model, step)
        raise
    finally:
        restore()
    _checkpoint(run, model, step)


def train_ldm(data: str | os.PathLike, out: str | os.PathLike, bundle: str | os.PathLike,
              cfg: LDMTrainConfig, device: str = "auto", name: str | None = None,
              stop_after: int | None = None) -> Path:
    """Train (or resume) the diffusion model on `data` with `bundle`'s CAE and conditioner.

    Returns the exported bundle folder. `stop_after` ends this call after that many steps
    (with a checkpoint), as an interruption would; a later call resumes.
    """

    out = Path(out)
    _feature_channels(cfg)  # a contradictory feature setting, before any data is prepared
    dev, rank, world = _setup_device(device, cfg)
    src_bundle = find_bundle(bundle)
    b = load_bundle(src_bundle, device=dev)
    if rank == 0:
        _prepare_data(data, out, b, cfg)
    _barrier(world)
    stats = json.loads((out / "latent_stats.json").read_text())
    index = json.loads((out / "latents" / "index.json").read_text())
    mean = torch.tensor(stats["mean"]).reshape(1, -1, 1).to(dev)
    std = torch.tensor(stats["std"]).reshape(1, -1, 1).to(dev)

    model = _build_model(cfg, b, out, rank, dev)
    step = _resume(out, cfg, model)
    _wrap_for_training(model, world, dev)
    probe = _feature_probe(cfg, out, mean, std, dev, rank, world)
    if rank == 0 and _fits_harmony_probe(cfg):
        train_harmony_probe(out, mean, std, cfg.harmony_probe_steps, cfg.frames,
                            seed=cfg.seed)
        # rhythm guidance reads the feature probe's onsets (fitted here, as long as the
        # harmony probe, if the run has no feature loss to have fitted it)
        train_feature_probe(out, mean, std, FEATURE_DIM, cfg.harmony_probe_steps, cfg.frames,
                            seed=cfg.seed)
    src = _batches(cfg, out, b, index, mean, std, dev, probe, step, rank, world)
    run = _Run(data, out, src_bundle, cfg, name, stats, index, rank, world, dev)
    if rank == 0:
        _log_start(run, model, src, step)
    _train_loop(run, model, src, step, stop_after)
    _barrier(world)
    return out / "bundle"


def _hms(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
