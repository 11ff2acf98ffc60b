"""Text/audio conditioning: CLAP-style encoders behind one `Conditioner` interface.

Backends: the built-in compact encoder (`kind="builtin"`, trained on our captions, shipped in
the default bundle) and LAION-CLAP (`riffwright[laion]`, a local checkpoint, offline). Both
give unit vectors; audio is embedded over fixed 10 s windows and averaged. A diffusion model
records its conditioner's `id` (which includes a checksum of its weights), and
`check_conditioner_matches` refuses any other.

torch is imported lazily, in the functions that need it.
"""

from __future__ import annotations

from pathlib import Path

from engine.errors import BundleError
from engine.models.conditioning.cache import EmbeddingCache, default_cache_dir
from engine.models.conditioning.common import (
    FAMILY_PROMPTS,
    check_conditioner_matches,
    classify_family,
    family_scores,
    interpolate,
)

__all__ = [
    "FAMILY_PROMPTS",
    "EmbeddingCache",
    "check_conditioner_matches",
    "classify_family",
    "create_conditioner",
    "default_cache_dir",
    "family_scores",
    "interpolate",
    "load_conditioner",
    "load_laion_clap",
    "save_conditioner",
]


def create_conditioner(kind: str = "builtin", **config):
    """A new conditioner. "builtin": untrained (seeded, so deterministic) unless loaded;
    options override `engine.models.conditioning.builtin.DEFAULT_CONFIG` (e.g. dim, vocab, seed).
    "laion": the same as `load_laion_clap(**config)` (needs checkpoint=...)."""
    if kind == "builtin":
        from engine.models.conditioning.builtin import create_builtin

        return create_builtin(**config)
    if kind in ("laion", "laion-clap"):
        return load_laion_clap(**config)

    raise BundleError(f"unknown conditioner kind {kind!r} (use 'builtin' or 'laion')")


def load_conditioner(path, device: str = "cpu", expected_sha256: str | None = None):
    """Load a conditioner from a file.

    A .safetensors file written by `save_conditioner` is the built-in encoder; a LAION-CLAP
    checkpoint (.pt) is loaded with `load_laion_clap` (its SHA-256 must be known). With
    `expected_sha256` the file is checked before it is read. A dict spec
    {"kind": "laion", "checkpoint": ..., "sha256": ..., "amodel": ...} is accepted too.
    """
    if isinstance(path, dict):
        spec = dict(path)
        kind = spec.pop("kind", "laion")
        if kind in ("laion", "laion-clap"):
            return load_laion_clap(
                spec.pop("checkpoint"),
                device,
                expected_sha256=spec.pop("sha256", None),
                amodel=spec.pop("amodel", None),
                enable_fusion=spec.pop("enable_fusion", None),
            )
        path = spec["path"]
    p = Path(path)
    if p.suffix.lower() in (".pt", ".ckpt", ".pth"):
        return load_laion_clap(p, device, expected_sha256=expected_sha256)
    from engine.models.conditioning.builtin import load_builtin

    return load_builtin(p, device, expected_sha256)


def save_conditioner(conditioner, path) -> None:
    """Write a built-in conditioner as float16 safetensors (config and vocabulary in the
    metadata, kind "riffwright-conditioner"), atomically."""
    from engine.models.conditioning.builtin import save_builtin

    save_builtin(conditioner, path)


def load_laion_clap(checkpoint, device: str = "cpu", expected_sha256=None, amodel=None, **kw):
    """LAION-CLAP from a local, SHA-256-verified checkpoint, offline. See `laion.py`."""
    from engine.models.conditioning.laion import load_laion_clap as _load

    return _load(checkpoint, device, expected_sha256=expected_sha256, amodel=amodel, **kw)

