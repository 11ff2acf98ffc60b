"""Safetensors checkpoints that say what they are.

Every weights file we write carries its module's config as JSON in the safetensors metadata
(`riffwright.kind`, `riffwright.config`), so one file is enough to rebuild its module. Loading
never unpickles: `.pt`/`.ckpt` files are refused, and every tensor's name and shape is checked
against the module before anything is copied in.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from engine.errors import BundleError
from engine.fsutil import atomic_write_bytes

PICKLE_SUFFIXES = {".pt", ".pth", ".ckpt", ".pkl", ".bin"}


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def save_module(
    module: Any,
    path: str | Path,
    kind: str,
    config: dict,
    dtype: Any = None,
    extra_tensors: dict | None = None,
) -> None:
    """Save `module.state_dict()` (optionally cast to `dtype`) with its config, atomically."""
    import torch
    from safetensors.torch import save

    tensors = {}
    for name, t in module.state_dict().items():
        t = t.detach().cpu()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        tensors[name] = t.contiguous()
    for name, t in (extra_tensors or {}).items():
        tensors[name] = torch.as_tensor(t).detach().cpu().contiguous()
    meta = {"riffwright.kind": kind, "riffwright.config": json.dumps(config, sort_keys=True)}
    atomic_write_bytes(path, save(tensors, metadata=meta))


def read_checkpoint(path: str | Path, expected_kind: str | None = None):
    """Return (tensors, kind, config) from a safetensors file we wrote. Never unpickles."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(path)
    if not path.exists():
        raise BundleError(f"weights file not found: {path}")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise BundleError(
            f"{path.name} is a pickle checkpoint; Riffwright only loads .safetensors files"
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise BundleError(f"{path.name} is not a readable safetensors file ({e})") from None
    kind = meta.get("riffwright.kind")
    if expected_kind is not None and kind != expected_kind:
        raise BundleError(
            f"{path.name} holds {kind or 'unknown'} weights, expected {expected_kind}"
        )
    try:
        config = json.loads(meta.get("riffwright.config", "{}"))
    except json.JSONDecodeError:
        raise BundleError(f"{path.name} has a corrupt config in its metadata") from None
    return tensors, kind, config


def load_into(module: Any, tensors: dict, source: str) -> None:
    """Copy `tensors` into `module`, checking every name and shape; name what is wrong."""
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    if missing:
        raise BundleError(
            f"{source}: {len(missing)} tensor(s) missing, e.g. {', '.join(missing[:3])}"
        )
    if unexpected:
        raise BundleError(
            f"{source}: {len(unexpected)} unexpected tensor(s), e.g. {', '.join(unexpected[:3])}"
        )
    for name, t in own.items():
        if tuple(tensors[name].shape) != tuple(t.shape):
            raise BundleError(
                f"{source}: tensor {name} has shape {tuple(tensors[name].shape)}, "
                f"the model expects {tuple(t.shape)}"
            )
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in tensors.items()}, strict=True)
