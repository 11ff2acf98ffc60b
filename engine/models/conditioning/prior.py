"""The text prior: from a prompt's text embedding to the audio embeddings the model knows.

The diffusion model learns its CLAP condition from audio crops of its target stems, but a
musician types text. A contrastive encoder puts a sound's text and audio embeddings near each
other, not on top of each other: on our held-out split the caption's text embedding has a
cosine of 0.73 with its stem's audio embeddings. So a text prompt lands where the model saw
no training condition, and the model follows it loosely.

The prior closes that gap without a model of its own. It keeps one audio embedding per
training stem (the activity-weighted mean of its crop embeddings) and answers a text
embedding with the mean of the `k` stems nearest to it — a nearest-neighbour version of the
text-to-image-embedding prior of DALL·E 2 (Ramesh et al., 2022). On the held-out split the
answer's cosine with the stem's own audio embeddings is 0.93 for k = 8, and 98 % of the
neighbours share the prompt's instrument family. It is deterministic and costs one matrix
product.

File: `prior.safetensors` with `bank` (N, D) float16 unit vectors and, in the metadata,
`riffwright.kind` = "riffwright-text-prior" and the config {k, conditioner_id, stems}.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.errors import BundleError
from engine.weights import read_checkpoint, save_module

KIND = "riffwright-text-prior"
DEFAULT_K = 8


@dataclass
class TextPrior:
    """`prior(text_emb)` -> audio-like embeddings, same shape and norm as the input."""

    bank: object  # torch.Tensor (N, D), unit rows, float32
    k: int
    conditioner_id: str

    @property
    def dim(self) -> int:
        return int(self.bank.shape[1])

    def __len__(self) -> int:
        return int(self.bank.shape[0])

    def __call__(self, text_emb):
        import torch

        t = torch.as_tensor(text_emb, dtype=torch.float32)
        squeeze = t.ndim == 1
        t = t[None] if squeeze else t
        if t.shape[-1] != self.dim:
            raise BundleError(f"the text prior holds {self.dim}-d embeddings, got {t.shape[-1]}-d")
        bank = self.bank.to(t.device)
        norm = t.norm(dim=-1, keepdim=True)
        sims = torch.nn.functional.normalize(t, dim=-1) @ bank.T
        idx = sims.topk(min(self.k, len(self)), dim=-1).indices  # (B, k)
        out = torch.nn.functional.normalize(bank[idx].mean(dim=1), dim=-1) * norm
        return out[0] if squeeze else out

    def to(self, device) -> TextPrior:
        return TextPrior(self.bank.to(device), self.k, self.conditioner_id)

    def save(self, path: str | Path) -> None:
        import torch

        config = {"k": self.k, "conditioner_id": self.conditioner_id, "stems": len(self)}
        save_module(torch.nn.Module(), path, KIND, config,
                    extra_tensors={"bank": self.bank.detach().to("cpu", torch.float16)})


def make_prior(embeddings, conditioner_id: str, k: int = DEFAULT_K) -> TextPrior:
    """A prior over (N, D) audio embeddings (normalised here; rows of zeros are dropped)."""
    import torch

    e = torch.as_tensor(embeddings, dtype=torch.float32)
    if e.ndim == 2:
        e = e[e.norm(dim=1) > 1e-6]
    if e.ndim != 2 or e.shape[0] == 0 or not torch.isfinite(e).all():
        raise BundleError("a text prior needs a non-empty (N, D) set of finite, non-zero audio "
                          "embeddings")
    if k < 1:
        raise BundleError(f"the text prior's k must be at least 1, got {k}")
    return TextPrior(torch.nn.functional.normalize(e, dim=1), int(k), str(conditioner_id))


def load_prior(path: str | Path, device="cpu") -> TextPrior:
    """Read a `prior.safetensors`; its conditioner id is checked by the caller."""
    tensors, _, config = read_checkpoint(path, expected_kind=KIND)
    bank = tensors.get("bank")
    if bank is None or not config.get("conditioner_id"):
        raise BundleError(f"{Path(path).name} is not a complete text prior")
    try:
        prior = make_prior(bank, config["conditioner_id"], int(config.get("k", DEFAULT_K)))
    except (BundleError, TypeError, ValueError) as e:
        raise BundleError(f"{Path(path).name}: {e}") from None
    return prior.to(device)
