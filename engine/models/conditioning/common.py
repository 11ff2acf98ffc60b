"""Backend-independent pieces: interpolation, the bundle check, zero-shot family labels."""

from __future__ import annotations

from engine.errors import BundleError, RequestError

# One text prompt per instrument family (engine.training.dataset.FAMILIES), worded as our captions are
# ("acoustic bass, bass, low register, ..."): the family name is one of the caption's words.
FAMILY_PROMPTS: dict[str, str] = {
    "drums": "drums",
    "bass": "bass",
    "piano": "piano",
    "organ": "organ",
    "guitar": "guitar",
    "strings": "strings",
    "brass": "brass",
    "woodwind": "woodwind",
    "synth": "synth",
    "voice": "voice",
}


def interpolate(audio_emb, text_emb, r: float, mode: str = "linear"):
    """Mix an audio and a text embedding with ratio r in [0, 1] (r=0: audio, r=1: text).

    "linear": (1 - r)·a + r·t, renormalised to unit length. "slerp": along the great circle
    between the two (unit) vectors. The end points return the inputs exactly (a copy), so a
    pure audio or text prompt is bit-identical to the unmixed embedding. Shapes (D,) or (N, D)
    broadcast against each other.
    """
    import torch

    r = float(r)
    if not 0.0 <= r <= 1.0:
        raise RequestError(f"interpolation ratio must be between 0 and 1, got {r}")
    if mode not in ("linear", "slerp"):
        raise RequestError(f"unknown interpolation mode {mode!r} (use 'linear' or 'slerp')")
    a = torch.as_tensor(audio_emb, dtype=torch.float32)
    t = torch.as_tensor(text_emb, dtype=torch.float32)
    if a.shape[-1] != t.shape[-1]:
        raise RequestError(
            f"audio and text embeddings differ in size ({a.shape[-1]} vs {t.shape[-1]})"
        )
    a, t = torch.broadcast_tensors(a, t)
    if r == 0.0:
        return a.clone()
    if r == 1.0:
        return t.clone()
    if mode == "linear":
        mixed = (1.0 - r) * a + r * t
    else:
        an = torch.nn.functional.normalize(a, dim=-1)
        tn = torch.nn.functional.normalize(t, dim=-1)
        cos = (an * tn).sum(-1, keepdim=True).clamp(-1.0, 1.0)
        omega = torch.arccos(cos)
        so = torch.sin(omega)
        # nearly parallel vectors: slerp degenerates to lerp
        safe = so.abs() > 1e-6
        wa = torch.where(safe, torch.sin((1.0 - r) * omega) / so.where(safe, 1.0), 1.0 - r)
        wt = torch.where(safe, torch.sin(r * omega) / so.where(safe, 1.0), torch.full_like(so, r))
        mixed = wa * an + wt * tn
    norm = mixed.norm(dim=-1, keepdim=True)
    if bool((norm < 1e-8).any()):
        raise RequestError("the audio and text embeddings cancel out at this ratio; pick another")
    return mixed / norm


def check_conditioner_matches(conditioner, expected_id: str) -> None:
    """Raise BundleError unless `conditioner.id` is the one a diffusion model was trained with."""
    actual = getattr(conditioner, "id", None)
    if actual != expected_id:
        raise BundleError(
            f"this model was trained with conditioner {expected_id} but {actual} is loaded; "
            "use the conditioner from the same bundle (embeddings of different encoders are "
            "not interchangeable)"
        )


def family_text_embeddings(conditioner, families: list[str] | None = None):
    families = list(families or FAMILY_PROMPTS)
    unknown = [f for f in families if f not in FAMILY_PROMPTS]
    if unknown:
        raise RequestError(f"unknown instrument family: {', '.join(unknown)}")
    return families, conditioner.embed_text([FAMILY_PROMPTS[f] for f in families])


def family_scores(conditioner, wave, sample_rate: int, families: list[str] | None = None):
    """-> (families, cosine similarities (N, len(families))) for audio (T,) or (N, T)."""
    families, text = family_text_embeddings(conditioner, families)
    audio = conditioner.embed_audio(wave, sample_rate)
    return families, audio @ text.T


def classify_family(
    conditioner, wave, sample_rate: int, families: list[str] | None = None
) -> str | list[str]:
    """Zero-shot instrument family of mono audio: the family whose text prompt is nearest.

    (T,) audio gives one name; (N, T) gives a list of N names. `families` restricts the choice.
    """
    families, scores = family_scores(conditioner, wave, sample_rate, families)
    names = [families[int(i)] for i in scores.argmax(dim=1)]
    ndim = getattr(wave, "ndim", None)
    return names[0] if ndim == 1 else names

