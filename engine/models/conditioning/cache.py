"""An on-disk cache of embeddings, keyed by content hash and conditioner id.

A reference clip dropped twice, or a prompt typed twice, is embedded once. The key is a
SHA-256 over the conditioner's id (which includes its weights' checksum), the kind of input,
and the input itself: the audio samples bit for bit with their sample rate and shape, or the
text. Entries are small .npy files written atomically (temp file + rename), so two processes
sharing a cache never see half a file; an unreadable entry is treated as a miss.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np

from engine.weights import atomic_write_bytes


def default_cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("riffwright")) / "embeddings"


class EmbeddingCache:
    """`embed_text` / `embed_audio` through a conditioner, remembering results on disk."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self.hits = 0
        self.misses = 0

    # keys -------------------------------------------------------------------------------
    @staticmethod
    def audio_key(conditioner_id: str, wave, sample_rate: int) -> str:
        arr = _as_float32(wave)
        h = hashlib.sha256(b"riffwright-embedding-v1\0audio\0")
        h.update(conditioner_id.encode() + b"\0")
        h.update(f"{int(sample_rate)}:{arr.shape}\0".encode())
        h.update(arr.tobytes())
        return h.hexdigest()

    @staticmethod
    def text_key(conditioner_id: str, text: str) -> str:
        h = hashlib.sha256(b"riffwright-embedding-v1\0text\0")
        h.update(conditioner_id.encode() + b"\0")
        h.update(text.encode("utf-8"))
        return h.hexdigest()

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        path = self._path(key)
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None

    def put(self, key: str, emb) -> None:
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(_as_float32(emb)), allow_pickle=False)
        atomic_write_bytes(self._path(key), buf.getvalue())

    # the Conditioner interface, cached ----------------------------------------------------
    def embed_text(self, conditioner, texts: list[str]):
        """(N, dim) float32 torch tensor, as `conditioner.embed_text(texts)`, cached per text."""
        import torch

        cid = conditioner.id
        keys = [self.text_key(cid, t) for t in texts]
        found = [self.get(k) for k in keys]
        todo = [i for i, f in enumerate(found) if f is None]
        self.hits += len(texts) - len(todo)
        self.misses += len(todo)
        if todo:
            fresh = conditioner.embed_text([texts[i] for i in todo]).float().cpu().numpy()
            for j, i in enumerate(todo):
                self.put(keys[i], fresh[j])
                found[i] = fresh[j]
        if not texts:
            return torch.zeros(0, conditioner.dim)
        return torch.from_numpy(np.stack(found).astype(np.float32))

    def embed_audio(self, conditioner, wave, sample_rate: int):
        """(N, dim) as `conditioner.embed_audio(wave, sample_rate)`, cached per clip."""
        import torch

        key = self.audio_key(conditioner.id, wave, sample_rate)
        cached = self.get(key)
        if cached is not None and cached.ndim == 2 and cached.shape[1] == conditioner.dim:
            self.hits += 1
            return torch.from_numpy(cached.astype(np.float32))
        self.misses += 1
        emb = conditioner.embed_audio(wave, sample_rate).float().cpu()
        self.put(key, emb.numpy())
        return emb

    def clear(self) -> int:
        """Delete every entry; return how many were removed."""
        n = 0
        if self.directory.is_dir():
            for p in self.directory.glob("*/*.npy"):
                p.unlink(missing_ok=True)
                n += 1
        return n


def _as_float32(x) -> np.ndarray:
    try:
        import torch

        if isinstance(x, torch.Tensor):
            return x.detach().to("cpu", torch.float32).contiguous().numpy()
    except ImportError:  # pragma: no cover - torch is a core dependency
        pass
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32))
