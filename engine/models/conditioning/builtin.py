"""The built-in conditioner: a compact CLAP-like text/audio encoder trained on our captions.

Audio: 48 kHz mono -> fixed 10 s windows -> loudness-normalised log-mel (64 bands, 50 frames/s)
-> a small 2-D CNN -> mean+max pooling over time -> projection -> unit vector, one per window;
the windows of a clip are averaged and renormalised. Text: word + hashed-trigram embeddings ->
one transformer layer -> masked mean -> projection -> unit vector. Both land in one `dim`-d
space, trained with a symmetric InfoNCE loss and a learned temperature (`engine.models.conditioning.
train`). Everything runs under `torch.inference_mode` in eval mode, so the same input gives
the same embedding, bit for bit.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import AudioError, BundleError
from engine.models.conditioning.features import (
    SAMPLE_RATE,
    WINDOW_SAMPLES,
    LogMel,
    normalise_logmel,
    split_windows,
)
from engine.models.conditioning.text import Tokenizer
from engine.weights import load_into, read_checkpoint, save_module, sha256_file

KIND = "riffwright-conditioner"

# Words an untrained conditioner knows; training replaces them with the captions' vocabulary.
DEFAULT_VOCAB = [
    "drums", "bass", "piano", "organ", "guitar", "strings", "brass", "woodwind", "synth",
    "voice", "low", "mid", "high", "register", "acoustic", "electric", "kit", "violin", "viola",
    "cello", "trumpet", "trombone", "horn", "flute", "clarinet", "oboe", "bassoon", "saxophone",
    "choir", "lead", "pad", "bpm", "jazz", "rock", "funk", "pop", "classical", "chorale",
]

DEFAULT_CONFIG = {
    "dim": 256,
    "sample_rate": SAMPLE_RATE,
    "n_fft": 2048,
    "hop": 960,
    "n_mels": 64,
    "fmin": 30.0,
    "fmax": 16000.0,
    "channels": [16, 32, 64, 128],
    "text_width": 192,
    "text_heads": 4,
    "text_layers": 1,
    "vocab": DEFAULT_VOCAB,
    "oov_buckets": 64,
    "ngram_buckets": 2048,
    "max_words": 32,
    "seed": 0,
}


class _ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.norm = nn.GroupNorm(min(8, cout // 4), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(min(8, cout // 4), cout)

    def forward(self, x):
        x = F.gelu(self.norm(self.conv(x)))
        x = x + F.gelu(self.norm2(self.conv2(x)))
        return F.avg_pool2d(x, 2)


class AudioTower(nn.Module):
    """Normalised log-mel (B, M, F) -> (B, dim), not yet unit length."""

    def __init__(self, n_mels: int, channels: list[int], dim: int) -> None:
        super().__init__()
        self.band_scale = nn.Parameter(torch.full((n_mels,), 0.25))
        self.band_bias = nn.Parameter(torch.zeros(n_mels))
        blocks, cin = [], 1
        for c in channels:
            blocks.append(_ConvBlock(cin, c))
            cin = c
        self.blocks = nn.Sequential(*blocks)
        width = cin * (n_mels >> len(channels))
        self.proj = nn.Sequential(nn.Linear(2 * width, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, logmel):
        x = logmel * self.band_scale[:, None] + self.band_bias[:, None]
        x = self.blocks(x[:, None])  # (B, C, M', F')
        x = x.flatten(1, 2)  # (B, C*M', F')
        pooled = torch.cat([x.mean(-1), x.amax(-1)], dim=1)
        return self.proj(pooled)


class TextTower(nn.Module):
    """(ids (N, L), trigram ids (N, L, G)) -> (N, dim), not yet unit length."""

    def __init__(self, num_words, ngram_buckets, width, heads, layers, max_words, dim) -> None:
        super().__init__()
        self.words = nn.Embedding(num_words, width, padding_idx=0)
        self.ngrams = nn.EmbeddingBag(ngram_buckets, width, mode="sum", padding_idx=0)
        self.pos = nn.Parameter(torch.zeros(max_words, width))
        layer = nn.TransformerEncoderLayer(
            width, heads, 2 * width, dropout=0.0, activation="gelu", batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, dim)

    def forward(self, ids, grams):
        n, length = ids.shape
        counts = (grams > 0).sum(-1, keepdim=True).clamp(min=1)
        g = self.ngrams(grams.flatten(0, 1)).view(n, length, -1) / counts
        x = self.words(ids) + g + self.pos[:length]
        pad = ids == 0
        x = self.encoder(x, src_key_padding_mask=pad)
        keep = (~pad).unsqueeze(-1).float()
        x = (self.norm(x) * keep).sum(1) / keep.sum(1).clamp(min=1.0)
        return self.proj(x)


class BuiltinConditioner(nn.Module):
    """Text and 48 kHz mono audio -> unit vectors (N, dim). See the module docstring."""

    kind = KIND

    def __init__(self, config: dict | None = None) -> None:
        super().__init__()
        cfg = dict(DEFAULT_CONFIG)
        cfg.update(config or {})
        unknown = set(cfg) - set(DEFAULT_CONFIG)
        if unknown:
            raise BundleError(f"unknown conditioner option(s): {', '.join(sorted(unknown))}")
        cfg["vocab"] = list(cfg["vocab"])
        self.config = cfg
        self.dim = int(cfg["dim"])
        self.sample_rate = int(cfg["sample_rate"])
        self.tokenizer = Tokenizer(
            cfg["vocab"], cfg["oov_buckets"], cfg["ngram_buckets"], cfg["max_words"]
        )
        self.logmel = LogMel(
            self.sample_rate, cfg["n_fft"], cfg["hop"], cfg["n_mels"], cfg["fmin"], cfg["fmax"]
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(cfg["seed"]))
            self.audio = AudioTower(cfg["n_mels"], cfg["channels"], self.dim)
            self.text = TextTower(
                self.tokenizer.num_word_ids, cfg["ngram_buckets"], cfg["text_width"],
                cfg["text_heads"], cfg["text_layers"], cfg["max_words"], self.dim,
            )
            # log(1 / 0.07), as in CLIP; clamped during training
            self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))
        round_to_float16_(self)  # what is saved is what is used: same id, same embeddings
        self.eval()

    # -- identity ---------------------------------------------------------------------------
    @property
    def checksum(self) -> str:
        """SHA-256 over the config and the float16 weights (so a saved copy has the same).

        Recomputed only when a tensor has changed (torch bumps `_version` on every in-place
        update, which is how optimisers and `load_state_dict` write).
        """
        state = self.state_dict(keep_vars=True)
        stamp = tuple((name, t.data_ptr(), t._version) for name, t in state.items())
        cached = getattr(self, "_checksum_cache", None)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        h = hashlib.sha256(json.dumps(self.config, sort_keys=True).encode())
        for name, t in sorted(state.items()):
            h.update(name.encode())
            h.update(t.detach().to("cpu", torch.float16).contiguous().numpy().tobytes())
        digest = h.hexdigest()
        object.__setattr__(self, "_checksum_cache", (stamp, digest))
        return digest

    @property
    def id(self) -> str:
        return f"builtin-{self.checksum[:16]}"

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    # -- towers (differentiable; used by training) ------------------------------------------
    def audio_features(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, T) windows -> normalised log-mel (B, M, F)."""
        return normalise_logmel(self.logmel(wave))

    def encode_logmel(self, logmel: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.audio(logmel), dim=-1)

    def encode_tokens(self, ids: torch.Tensor, grams: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text(ids, grams), dim=-1)

    # -- the Conditioner interface ----------------------------------------------------------
    def embed_text(self, texts: list[str]) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            return torch.zeros(0, self.dim)
        out = []
        with torch.inference_mode():
            # one text at a time: an embedding never depends on what else is in the batch
            for text in texts:
                ids, grams = self.tokenizer.encode([text])
                emb = self.encode_tokens(ids.to(self.device), grams.to(self.device))
                out.append(emb.float().cpu())
        return torch.cat(out)

    def embed_audio(self, wave, sample_rate: int, batch_windows: int = 8) -> torch.Tensor:
        rows = prepare_audio(wave, sample_rate, self.sample_rate)
        out = []
        with torch.inference_mode():
            for row in rows:
                windows = split_windows(row, WINDOW_SAMPLES * self.sample_rate // SAMPLE_RATE)
                embs = []
                for i in range(0, windows.shape[0], batch_windows):
                    chunk = windows[i : i + batch_windows].to(self.device)
                    embs.append(self.encode_logmel(self.audio_features(chunk)).float().cpu())
                out.append(F.normalize(torch.cat(embs).mean(0), dim=-1))
        return torch.stack(out) if out else torch.zeros(0, self.dim)

    def forward(self, texts: list[str]) -> torch.Tensor:  # nn.Module convention
        return self.embed_text(texts)


def prepare_audio(wave, sample_rate: int, target_rate: int) -> list[torch.Tensor]:
    """(T,) or (N, T) array/tensor at `sample_rate` -> list of N float32 CPU tensors at target."""
    if isinstance(wave, torch.Tensor):
        arr = wave.detach().to("cpu", torch.float32).numpy()
    else:
        arr = np.asarray(wave, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2:
        raise AudioError(f"expected mono audio shaped (T,) or (N, T), got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise AudioError("the audio is empty (0 samples)")
    if not np.all(np.isfinite(arr)):
        raise AudioError("audio contains NaN or infinite samples")
    if int(sample_rate) != target_rate:
        if sample_rate <= 0:
            raise AudioError(f"invalid sample rate {sample_rate}")
        import soxr

        arr = np.stack(
            [soxr.resample(r, int(sample_rate), target_rate, quality="HQ") for r in arr]
        ).astype(np.float32)
    return [torch.from_numpy(np.ascontiguousarray(r)) for r in arr]


def create_builtin(**config) -> BuiltinConditioner:
    return BuiltinConditioner(config)


def round_to_float16_(module: nn.Module) -> None:
    """Round floating-point weights in place to values float16 can hold exactly."""
    with torch.no_grad():
        for t in module.state_dict().values():
            if t.is_floating_point():
                t.copy_(t.to(torch.float16).to(t.dtype))


def save_builtin(cond: BuiltinConditioner, path: str | Path) -> None:
    """Write float16 safetensors. The weights are first rounded to float16 in place, so the
    object and the file have the same id and give the same embeddings."""
    round_to_float16_(cond)
    save_module(cond, path, KIND, cond.config, torch.float16)


def load_builtin(
    path: str | Path, device: str = "cpu", expected_sha256: str | None = None
) -> BuiltinConditioner:
    """Load a file written by `save_builtin`; with `expected_sha256`, check the file first."""
    if expected_sha256 is not None and Path(path).is_file():
        digest = sha256_file(path)
        if digest != expected_sha256.lower():
            raise BundleError(
                f"{Path(path).name} has SHA-256 {digest[:16]}..., expected "
                f"{expected_sha256[:16]}...: the file is damaged or not the one recorded"
            )
    tensors, _, config = read_checkpoint(path, KIND)
    try:
        cond = BuiltinConditioner(config)
    except (TypeError, ValueError, KeyError) as e:
        raise BundleError(f"{Path(path).name}: conditioner config does not fit ({e})") from None
    load_into(cond, tensors, Path(path).name)
    return cond.to(device).eval()
