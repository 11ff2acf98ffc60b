"""Consistency autoencoders: audio <-> 64-channel latents at one frame per 4096 samples.

`create_cae(arch)` builds Riffwright's own CAE (`engine.models.cae.model`), `load_cae(path)` loads
a trained one (a safetensors file with its config in the metadata) or, given a Music2Latent
checkpoint, the Music2Latent backend (`engine.models.cae.m2l`) behind the same interface. Torch is
imported only when one of these functions is called.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from engine.errors import BundleError
from engine.models.cae.archs import ARCHS, KIND, arch_config
from engine.weights import load_into, read_checkpoint

__all__ = [
    "ARCHS",
    "KIND",
    "arch_config",
    "cae_from_config",
    "create_cae",
    "latent_stats",
    "load_cae",
    "with_head",
]


def create_cae(arch: str = "small", **overrides) -> Any:
    """A freshly initialised `ConsistencyAutoencoder` of preset `arch` ("tiny", "small"),
    with any config keys in `overrides` (e.g. ``head_channels=1024``) replaced."""
    from engine.models.cae.model import ConsistencyAutoencoder

    return ConsistencyAutoencoder({**arch_config(arch), **overrides}).eval()


def cae_from_config(config: dict) -> Any:
    """Rebuild a CAE from its `.config` (as stored in a weights file's metadata)."""
    from engine.models.cae.model import ConsistencyAutoencoder

    if config.get("backend") == "music2latent":
        from engine.models.cae.m2l import Music2LatentCAE

        return Music2LatentCAE(config["weights"], steps=config.get("decode_steps", 1))
    base = dict(arch_config(config["arch"])) if config.get("arch") in ARCHS else {}
    base.update(config)
    return ConsistencyAutoencoder(base).eval()


def with_head(cae, head_channels: int) -> Any:
    """`cae` with a decoder output head of `head_channels` units (see `nets.Decoder`; the
    new head starts at zero, so the decoder first sounds as before), its other weights
    unchanged; `cae` itself when it has that head already or none is asked for."""
    have = int(cae.config.get("head_channels", 0))
    if not head_channels or have == head_channels:
        return cae
    if have:
        raise BundleError(f"{cae.id} already has a head of {have} units, not {head_channels}")
    wider = cae_from_config({**cae.config, "head_channels": head_channels})
    missing, unexpected = wider.load_state_dict(cae.state_dict(), strict=False)
    if unexpected or any(not k.startswith("decoder.head.") for k in missing):
        raise BundleError(f"cannot add a head to {cae.id}: {missing} {unexpected}")
    return wider


def load_cae(path: str | Path, device: str = "cpu") -> Any:
    """Load a CAE from `path`: a Riffwright ``.safetensors`` file, or a Music2Latent
    checkpoint (``music2latent.pt``; see `engine.models.cae.m2l` for its licence). Raises
    `BundleError` with a one-line reason when the file is missing or does not fit."""
    import torch

    path = Path(path)
    if path.suffix.lower() != ".safetensors" or "music2latent" in path.name.lower():
        from engine.models.cae.m2l import Music2LatentCAE

        return Music2LatentCAE(path, device=device)
    tensors, _, config = read_checkpoint(path, KIND)
    cae = cae_from_config(config)
    load_into(cae, tensors, path.name)
    cae.reset_id()
    cae.id  # noqa: B018 - hash the weights as loaded (float16 on disk), before moving
    return cae.to(torch.device(device)).eval()


def latent_stats(latents: Iterable) -> tuple[Any, Any]:
    """Per-channel mean and std (each (64,) float32 tensors) over an iterable of latents.

    Items may be (B, D, F) or (D, F) tensors or arrays (e.g. the output of `cae.encode` for
    each file of a data set); statistics pool every frame of every item, accumulated in
    float64, so the order and the batching do not matter.
    """
    import torch

    n = 0
    s = s2 = None
    for z in latents:
        z = torch.as_tensor(z).detach().to("cpu", torch.float64)
        if z.ndim == 2:
            z = z[None]
        if z.ndim != 3:
            raise ValueError(f"latents must be (B, D, F) or (D, F), got shape {tuple(z.shape)}")
        flat = z.transpose(0, 1).reshape(z.shape[1], -1)
        if s is None:
            s = torch.zeros(flat.shape[0], dtype=torch.float64)
            s2 = torch.zeros_like(s)
        s += flat.sum(1)
        s2 += flat.pow(2).sum(1)
        n += flat.shape[1]
    if n == 0 or s is None:
        raise ValueError("latent_stats needs at least one latent frame")
    mean = s / n
    var = (s2 / n - mean.pow(2)).clamp_min(0.0)
    return mean.float(), var.sqrt().float()
