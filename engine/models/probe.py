"""Feature probes: what a stem sounds like, read off its normalised latents.

A small conv net, fitted once per training run on clean target latents against the stem's
own features and then frozen. Two are fitted:

- the feature probe (`probe.safetensors` in the run folder): 12 chroma rows, then the onsets
  of the four quarters of each frame (`engine.diffusion.context_features`), for the
  training's `feature_loss`; shipped as `rhythm_probe.safetensors`, rhythm guidance
  (`rhythm_guided`) reads its onset rows;
- the harmony probe (`harmony_probe.safetensors`, shipped in the bundle): the pitch classes of
  the stem's low register (12 rows, `context_features.bass_features`) and, in a 13th row, how
  much the stem is a drum part. Harmony guidance (`engine.generation.procedures.
  harmony_guided`) steers sampling with it, because it is differentiable and costs next to
  nothing beside the U-Net; the drum row lets it leave drums alone.

Both files: `riffwright.kind` = "riffwright-feature-probe", config {latent_dim, feature_dim,
heldout_score}; the width is read off the weights.
"""

from __future__ import annotations

from pathlib import Path

import torch

from engine.errors import BundleError
from engine.weights import load_into, read_checkpoint

KIND = "riffwright-feature-probe"
CHROMA_ROWS = 12  # the first rows of its output are the chroma
DRUM_ROW = 12  # a harmony probe's row after them: how much the stem is a drum part
ONSET_ROWS_END = 16  # a feature probe's rows 12-15: the onsets of the four quarter frames


class FeatureProbe(torch.nn.Module):
    """(B, latent_dim, F) normalised latents -> (B, feature_dim, F) features, per frame."""

    kind = KIND

    def __init__(self, latent_dim: int, feature_dim: int, width: int = 128):
        super().__init__()
        self.latent_dim, self.feature_dim = int(latent_dim), int(feature_dim)
        self.net = torch.nn.Sequential(
            torch.nn.Conv1d(latent_dim, width, 3, padding=1), torch.nn.SiLU(),
            torch.nn.Conv1d(width, width, 3, padding=1), torch.nn.SiLU(),
            torch.nn.Conv1d(width, feature_dim, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def load_probe(path: str | Path, latent_dim: int, device="cpu",
               rows: int = CHROMA_ROWS) -> FeatureProbe:
    """Read a probe for latents of `latent_dim` channels that gives at least `rows` rows,
    frozen, in eval mode."""
    name = Path(path).name
    tensors, _, config = read_checkpoint(path, expected_kind=KIND)
    try:
        dims = int(config["latent_dim"]), int(config["feature_dim"])
        width = int(tensors["net.0.weight"].shape[0])
    except (KeyError, TypeError, ValueError, IndexError):
        raise BundleError(f"{name} is not a complete feature probe") from None
    if dims[0] != latent_dim:
        raise BundleError(f"{name} reads {dims[0]}-channel latents, the model makes "
                          f"{latent_dim}")
    if dims[1] < rows:
        raise BundleError(f"{name} gives {dims[1]} features, fewer than the {rows} rows "
                          "its guidance reads")
    probe = FeatureProbe(dims[0], dims[1], width)
    load_into(probe, tensors, name)
    return probe.float().to(device).requires_grad_(False).eval()


def save_probe(probe: FeatureProbe, path: str | Path, heldout_score: float | None = None,
               dtype=None) -> None:
    """Write `probe` as `probe.safetensors` (`dtype`, e.g. float16 for a bundle)."""
    from engine.weights import save_module

    config = {"latent_dim": probe.latent_dim, "feature_dim": probe.feature_dim}
    if heldout_score is not None:
        config["heldout_score"] = float(heldout_score)
    save_module(probe, path, KIND, config, dtype=dtype)
