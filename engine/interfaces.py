"""The two interfaces the diffusion engine is built against.

The engine needs an autoencoder (audio <-> latent frames) and a conditioner (text/audio ->
unit-length embedding). Each has real implementations behind it (`engine.models.cae`,
`engine.models.conditioning`); model bundles record which one a diffusion model was trained with.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    import torch


@runtime_checkable
class Autoencoder(Protocol):
    """Mono audio at `sample_rate` <-> latents of shape (B, latent_dim, frames).

    One latent frame covers `hop` samples; `encode` of T samples gives ceil(T / hop) frames.
    Latents are the raw CAE latents: the diffusion side normalises them with the bundle's
    per-channel statistics.
    """

    id: str
    sample_rate: int
    hop: int
    latent_dim: int

    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, T) float32 mono audio -> (B, latent_dim, ceil(T / hop))."""
        ...

    def decode(
        self,
        latents: torch.Tensor,
        length: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """(B, latent_dim, F) -> (B, length or F * hop) float32 audio.

        The decoder is a consistency model and draws noise: pass a CPU `generator` and the
        same latents give the same audio bit for bit.
        """
        ...


@runtime_checkable
class Conditioner(Protocol):
    """Text and audio -> unit vectors (N, dim) in one shared embedding space."""

    id: str
    dim: int

    def embed_text(self, texts: list[str]) -> torch.Tensor:
        """N strings -> (N, dim) float32, unit length, deterministic."""
        ...

    def embed_audio(self, wave: np.ndarray | torch.Tensor, sample_rate: int) -> torch.Tensor:
        """(T,) or (N, T) mono audio -> (N, dim): fixed 10 s windows, averaged, unit length."""
        ...
