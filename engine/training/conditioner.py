"""Training and evaluation of the built-in encoder on a stem dataset's (stem, caption) pairs.

`train_encoder` is resumable: every `checkpoint_every` steps it writes the model (float16,
loadable with `load_conditioner`) to `out_path` and the full training state (float32 weights,
AdamW moments, step, random states) to `<out_path>.state.safetensors`; run it again with the
same arguments and it goes on from there. Log-mels of the stems are computed once and kept in
`<out dir>/features/`. No pickles anywhere.

Loss: symmetric InfoNCE with a learned temperature, where batch items whose (augmented)
captions are identical count as positives of each other. Captions are comma-separated
attributes ("acoustic bass, bass, low register, jazz, 120 bpm"); each step keeps a random
subset of them in random order, so a single word ("bass") learns to point at its stems.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import BundleError, RiffwrightError
from engine.fsutil import atomic_write_bytes
from engine.models.conditioning import load_conditioner
from engine.models.conditioning.common import FAMILY_PROMPTS
from engine.models.conditioning.features import normalise_logmel
from engine.models.conditioning.text import build_vocab
from engine.training.dataset import load_manifest
from engine.training.loop import due, log_json, set_lr

FRAME_RATE = 50  # log-mel frames per second at hop 960, 48 kHz


@dataclass
class StemItem:
    path: Path
    caption: str
    family: str | None
    split: str
    song: str


def read_stems(dataset_dir: str | Path, splits: tuple[str, ...] | None = None) -> list[StemItem]:
    data = load_manifest(dataset_dir)  # checks the file, its JSON and its version
    root = Path(data["_root"])
    items = []
    for song in data.get("songs", []):
        split = song.get("split", "train")
        if splits is not None and split not in splits:
            continue
        for stem in song.get("stems", []):
            caption = stem.get("caption") or ", ".join(
                x for x in (stem.get("instrument"), stem.get("family")) if x
            )
            items.append(
                StemItem(root / stem["path"], caption, stem.get("family"), split, song["id"])
            )
    return items


# -- features -------------------------------------------------------------------------------
def _feature_path(cache_dir: Path, item: StemItem, cfg: dict) -> Path:
    st = item.path.stat()
    key = json.dumps(
        [str(item.path), st.st_size, st.st_mtime_ns,
         [cfg[k] for k in ("n_fft", "hop", "n_mels", "fmin", "fmax", "sample_rate")]]
    )
    return cache_dir / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.npy"


def stem_logmel(cond, item: StemItem, cache_dir: Path | None) -> np.ndarray:
    """Whole-stem log-mel (M, F) as float16, computed once and cached."""
    import io

    import soundfile as sf
    import torch

    from engine.models.conditioning.builtin import prepare_audio
    path = _feature_path(cache_dir, item, cond.config) if cache_dir else None
    if path is not None and path.is_file():
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            pass
    audio, sr = sf.read(str(item.path), dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    row = prepare_audio(mono, sr, cond.sample_rate)[0]
    with torch.inference_mode():
        mel = cond.logmel(row[None])[0].numpy().astype(np.float16)
    if path is not None:
        buf = io.BytesIO()
        np.save(buf, mel, allow_pickle=False)
        atomic_write_bytes(path, buf.getvalue())
    return mel


def _augment_caption(caption: str, rng: np.random.Generator, keep: float) -> str:
    parts = [p.strip() for p in caption.split(",") if p.strip()]
    if not parts:
        return caption
    kept = [p for p in parts if rng.random() < keep] or [parts[int(rng.integers(len(parts)))]]
    rng.shuffle(kept)
    return ", ".join(kept)


def _crop(mel: np.ndarray, frames: int, rng: np.random.Generator, tries: int = 6) -> np.ndarray:
    """A random crop of `frames` frames (tiled if the stem is shorter), preferring sound."""
    total = mel.shape[1]
    if total <= frames:
        reps = int(math.ceil(frames / max(total, 1)))
        return np.tile(mel, (1, reps))[:, :frames]
    best, best_energy = None, -np.inf
    for _ in range(tries):
        s = int(rng.integers(0, total - frames + 1))
        c = mel[:, s : s + frames]
        energy = float(np.max(c))
        if energy > best_energy:
            best, best_energy = c, energy
        if energy > -9.0:  # clearly audible somewhere in the crop
            break
    return best


def _shift_bands(batch, rng: np.random.Generator, max_shift: int):
    """Shift some items up/down by a few mel bands (a cheap pitch shift), edge-filled."""
    if not max_shift:
        return batch
    out = batch.clone()
    for i in range(batch.shape[0]):
        k = int(rng.integers(-max_shift, max_shift + 1))
        if k > 0:
            out[i, k:] = batch[i, :-k]
            out[i, :k] = batch[i, :1]
        elif k < 0:
            out[i, :k] = batch[i, -k:]
            out[i, k:] = batch[i, -1:]
    return out


def contrastive_loss(audio_emb, text_emb, logit_scale, captions: list[str]):
    """Symmetric InfoNCE; items with the same caption are positives of each other."""
    import torch

    logits = logit_scale.exp() * audio_emb @ text_emb.T
    same = torch.tensor([[a == b for b in captions] for a in captions], dtype=torch.float32)
    target = same / same.sum(1, keepdim=True)
    la = -(target * logits.log_softmax(1)).sum(1).mean()
    lt = -(target * logits.T.log_softmax(1)).sum(1).mean()
    return 0.5 * (la + lt)


# -- training state (safetensors, no pickles) ----------------------------------------------
def _save_state(path: Path, cond, opt, step: int, rng: np.random.Generator, extra: dict):
    import torch
    from safetensors.torch import save

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in cond.state_dict().items()}
    names = {id(p): n for n, p in cond.named_parameters()}
    for p, st in opt.state.items():
        n = names[id(p)]
        for k, v in st.items():
            tensors[f"opt.{n}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {
        "step": str(step),
        "config": json.dumps(cond.config, sort_keys=True),
        "np_rng": json.dumps(rng.bit_generator.state),
        "extra": json.dumps(extra),
    }
    atomic_write_bytes(path, save(tensors, metadata=meta))


def _stored_config(path: Path) -> dict:
    from safetensors.torch import safe_open

    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["config"])


def _load_state(path: Path, cond, opt, rng: np.random.Generator) -> tuple[int, dict]:
    import torch
    from safetensors.torch import load_file, safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    if json.loads(meta["config"]) != cond.config:
        raise BundleError(
            f"{path.name} was written for another encoder config; delete it to start over"
        )
    cond.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    params = dict(cond.named_parameters())
    for n, p in params.items():
        st = {}
        for k in ("step", "exp_avg", "exp_avg_sq"):
            t = tensors.get(f"opt.{n}.{k}")
            if t is not None:
                st[k] = t.clone()
        if st:
            opt.state[p] = st
    torch.set_rng_state(tensors["rng.torch"])
    rng.bit_generator.state = json.loads(meta["np_rng"])
    return int(meta["step"]), json.loads(meta.get("extra", "{}"))


def _lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return lr * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0))))


@dataclass
class _EncoderBatches:
    """Draws the encoder's training batches: stems weighted so that every family counts
    (1/sqrt of its size), a random length per batch, crops preferring sound, a band shift
    and captions with some of their parts left out."""

    items: list[StemItem]
    mels: list[np.ndarray]
    batch_size: int
    frames: tuple[int, int]  # the fewest and most log-mel frames of a batch
    caption_keep: float
    band_shift: int

    def __post_init__(self):
        fam = [it.family or "?" for it in self.items]
        counts = {f: fam.count(f) for f in set(fam)}
        weights = np.array([1.0 / math.sqrt(counts[f]) for f in fam])
        self.weights = weights / weights.sum()

    def draw(self, rng: np.random.Generator):
        """(normalised log-mel batch, captions); the draws in a fixed order, so a seed
        (and a resumed generator) gives the same batches."""
        import torch

        frames = int(rng.integers(self.frames[0], self.frames[1] + 1))
        idx = rng.choice(len(self.items), size=self.batch_size, replace=False, p=self.weights)
        batch = np.stack([_crop(self.mels[i], frames, rng) for i in idx]).astype(np.float32)
        x = normalise_logmel(_shift_bands(torch.from_numpy(batch), rng, self.band_shift))
        caps = [_augment_caption(self.items[i].caption, rng, self.caption_keep) for i in idx]
        return x, caps


def _encoder_config(items: list[StemItem], state_path: Path, resume: bool,
                    model_config: dict | None, seed: int) -> dict:
    """A resumed run's config (it keeps the vocabulary it started with: new words hash to
    OOV ids), else `model_config` with a vocabulary of the captions and family prompts."""
    if resume and state_path.is_file():
        return _stored_config(state_path)
    vocab = build_vocab([it.caption for it in items] + list(FAMILY_PROMPTS.values()))
    config = dict(model_config or {})
    config.setdefault("vocab", vocab)
    config.setdefault("seed", seed)
    return config


def _encoder_optimiser(cond, lr: float, weight_decay: float):
    """AdamW with weight decay on the matrices only (not on norms, biases, the scale)."""
    import torch

    decay, no_decay = [], []
    for n, p in cond.named_parameters():
        (no_decay if p.ndim < 2 or n == "logit_scale" else decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0}],
        lr=lr, betas=(0.9, 0.98),
    )


def _encoder_step(cond, opt, x, caps: list[str]) -> float:
    """One contrastive step (clipped gradients, the temperature kept in range); its loss."""
    import torch

    ids, grams = cond.tokenizer.encode(caps)
    a = cond.encode_logmel(x)
    t = cond.encode_tokens(ids, grams)
    loss = contrastive_loss(a, t, cond.logit_scale, caps)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(cond.parameters(), 1.0)
    opt.step()
    with torch.no_grad():
        cond.logit_scale.clamp_(0.0, math.log(100.0))
    return float(loss.detach())


def _progress_record(cond, opt, step: int, steps: int, loss: float, eta: float) -> dict:
    return {
        "step": step, "steps": steps, "loss": round(loss, 4),
        "lr": round(opt.param_groups[0]["lr"], 6),
        "temperature": round(float(1.0 / cond.logit_scale.detach().exp()), 4),
        "eta_s": round(eta, 1),
    }


def train_encoder(
    dataset_dir: str | Path,
    out_path: str | Path,
    steps: int = 3000,
    *,
    batch_size: int = 48,
    lr: float = 2e-3,
    weight_decay: float = 0.01,
    warmup: int = 100,
    min_seconds: float = 3.0,
    max_seconds: float = 8.0,
    caption_keep: float = 0.6,
    band_shift: int = 3,
    seed: int = 0,
    model_config: dict | None = None,
    checkpoint_every: int = 200,
    threads: int | None = 1,
    resume: bool = True,
    progress: Callable[[dict], None] | None = None,
    log_path: str | Path | None = None,
) -> dict:
    """Train the built-in encoder on the 'train' split of a dataset; resumable.

    Returns {"steps", "loss", "seconds", "out_path", "id"}. `progress` gets a dict per logged
    step ({"step", "steps", "loss", "lr", "temperature", "eta_s"}).
    """
    import torch

    from engine.models.conditioning.builtin import BuiltinConditioner, load_builtin, save_builtin

    if threads:
        torch.set_num_threads(int(threads))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    state_path = out_path.with_name(out_path.name + ".state.safetensors")
    log_path = Path(log_path) if log_path else out_path.with_name(out_path.stem + ".log.jsonl")

    items = [it for it in read_stems(dataset_dir, ("train",)) if it.path.is_file()]
    if len(items) < 2:
        raise RiffwrightError(f"{dataset_dir} has fewer than 2 training stems")
    cond = BuiltinConditioner(_encoder_config(items, state_path, resume, model_config, seed))
    cond.train()
    batches = _EncoderBatches(
        items, [stem_logmel(cond, it, out_path.parent / "features") for it in items],
        min(batch_size, len(items)),
        (int(min_seconds * FRAME_RATE), int(max_seconds * FRAME_RATE)), caption_keep,
        band_shift)
    opt = _encoder_optimiser(cond, lr, weight_decay)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    step, extra = 0, {}
    if resume and state_path.is_file():
        step, extra = _load_state(state_path, cond, opt, rng)
    t0, loss_val = time.time(), float("nan")
    start_step = step
    while step < steps:
        x, caps = batches.draw(rng)
        set_lr(opt, _lr_at(step, steps, lr, warmup))
        loss_val = _encoder_step(cond, opt, x, caps)
        step += 1
        if due(step, 10, steps):
            eta = (time.time() - t0) / (step - start_step) * (steps - step)
            rec = _progress_record(cond, opt, step, steps, loss_val, eta)
            log_json(log_path, rec)
            if progress is not None:
                progress(rec)
        if due(step, checkpoint_every, steps):
            save_builtin(copy.deepcopy(cond).eval(), out_path)  # rounds the copy, not cond
            _save_state(state_path, cond, opt, step, rng, extra)
    if not out_path.is_file():
        save_builtin(copy.deepcopy(cond).eval(), out_path)
    return {
        "steps": step, "loss": loss_val, "seconds": round(time.time() - t0, 1),
        "out_path": str(out_path), "id": load_builtin(out_path).id,
    }


# -- evaluation -----------------------------------------------------------------------------
def _ranks_metrics(sim: np.ndarray, q_labels: list[str], d_labels: list[str], ks=(1, 5, 10)):
    """Text->audio: for each query label, rank the documents; recall@k (any hit in top k),
    precision@k and average precision, averaged over queries."""
    d = np.array(d_labels)
    out = {f"recall@{k}": [] for k in ks}
    out.update({f"precision@{k}": [] for k in ks})
    aps = []
    for qi, lab in enumerate(q_labels):
        order = np.argsort(-sim[qi], kind="stable")
        rel = d[order] == lab
        for k in ks:
            out[f"recall@{k}"].append(float(rel[:k].any()))
            out[f"precision@{k}"].append(float(rel[:k].mean()))
        hits = np.cumsum(rel)
        aps.append(float((hits / np.arange(1, len(rel) + 1))[rel].mean()) if rel.any() else 0.0)
    res = {k: round(float(np.mean(v)), 4) for k, v in out.items()}
    res["mAP"] = round(float(np.mean(aps)), 4)
    return res


def _eval_items(dataset_dir, split: str, families: list[str] | None,
                max_stems: int | None) -> list[StemItem]:
    """The split's stems of a known family (of `families`), at most `max_stems` of them
    (the same pick every time)."""
    items = [it for it in read_stems(dataset_dir, (split,)) if it.path.is_file()]
    items = [it for it in items if it.family in FAMILY_PROMPTS]
    if families:
        items = [it for it in items if it.family in families]
    if max_stems and len(items) > max_stems:
        pick = np.random.default_rng(0).choice(len(items), size=max_stems, replace=False)
        items = [items[i] for i in sorted(pick)]
    if not items:
        raise RiffwrightError(f"no '{split}' stems with a known family in {dataset_dir}")
    return items


def _audio_embeddings(cond, items: list[StemItem], progress) -> np.ndarray:
    """(N, dim): each stem's audio embedding, through the real `embed_audio`."""
    import soundfile as sf

    embs = []
    for n, it in enumerate(items):
        audio, sr = sf.read(str(it.path), dtype="float32", always_2d=True)
        embs.append(cond.embed_audio(audio.mean(axis=1), sr)[0].numpy())
        if progress is not None:
            progress(n + 1, len(items))
    return np.stack(embs)


def _per_family(sim: np.ndarray, order: np.ndarray, truth: np.ndarray, present: list[str],
                labels: list[str]) -> dict:
    """{family: {"n", "accuracy", "ap"}}: how often its stems are classified right, and the
    average precision of its prompt's ranking."""
    per = {}
    for fi, f in enumerate(present):
        mask = truth == fi
        sub = _ranks_metrics(sim[fi : fi + 1], [f], labels, ks=(5,))
        per[f] = {
            "n": int(mask.sum()),
            "accuracy": round(float(np.mean(order[mask, 0] == fi)), 4),
            "ap": sub["mAP"],
        }
    return per


def evaluate_encoder(
    conditioner_or_path,
    dataset_dir: str | Path,
    split: str = "test",
    *,
    families: list[str] | None = None,
    max_stems: int | None = None,
    device: str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Zero-shot retrieval on held-out stems, through the real `embed_audio`/`embed_text`.

    Returns a dict with:
    - "recall@1", "recall@5" (and @10, precision@k, mAP): each family prompt
      (`FAMILY_PROMPTS`) queries all stems of the split; a hit when a stem of that family is
      among the top k; averaged over the families present;
    - "family_accuracy", "family_top3": audio -> the nearest family prompt (classify_family);
    - "caption_recall@1", "caption_recall@5": each stem's own caption retrieves that exact stem;
    - "per_family": {family: {"n", "accuracy", "ap"}}; "n_stems", "n_families", "conditioner".
    """
    cond = conditioner_or_path
    if isinstance(cond, (str, Path)):
        cond = load_conditioner(cond, device)
    items = _eval_items(dataset_dir, split, families, max_stems)
    audio_emb = _audio_embeddings(cond, items, progress)
    labels = [it.family for it in items]
    present = [f for f in FAMILY_PROMPTS if f in set(labels)]
    fam_text = cond.embed_text([FAMILY_PROMPTS[f] for f in present]).numpy()
    sim = fam_text @ audio_emb.T  # (F, N)
    res = _ranks_metrics(sim, present, labels)
    order = np.argsort(-sim.T, axis=1, kind="stable")  # (N, F)
    truth = np.array([present.index(lab) for lab in labels])
    res["family_accuracy"] = round(float(np.mean(order[:, 0] == truth)), 4)
    res["family_top3"] = round(float(np.mean((order[:, :3] == truth[:, None]).any(1))), 4)
    cap_text = cond.embed_text([it.caption for it in items]).numpy()
    csim = cap_text @ audio_emb.T  # (N, N)
    crank = (csim > np.diag(csim)[:, None]).sum(1)  # stems scoring strictly better
    res["caption_recall@1"] = round(float(np.mean(crank < 1)), 4)
    res["caption_recall@5"] = round(float(np.mean(crank < 5)), 4)
    res["per_family"] = _per_family(sim, order, truth, present, labels)
    res["n_stems"] = len(items)
    res["n_families"] = len(present)
    res["conditioner"] = cond.id
    res["split"] = split
    return res
