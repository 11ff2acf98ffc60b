"""What a generation is asked and what it gives back: the request, its resolved parameters,
progress events and stems. Plain data and their checks (numpy, no torch), so the engine
process and the CLI can build and check a request before a model is loaded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from engine.diffusion.context_features import BeatGrid
from engine.errors import RequestError
from engine.params import PARAMS

OUTPUT_RATE = 48000
MAX_TAKES = int(PARAMS["takes"].high)
MAX_STEPS = int(PARAMS["steps"].high)
MAX_SECONDS = float(PARAMS["duration"].high)

Audio = np.ndarray  # (channels, T) or (T,) float32


@dataclass(frozen=True, eq=False)
class GenerationRequest:
    """Everything that determines a take. All audio is float32 at `sample_rate`.

    Parameters left as None take the bundle's defaults. Modes are exclusive: plain
    generation (optionally over a context), `variation_of`, `inpaint` + `source`,
    `continue_from`, `transition`.
    """

    context: Audio | None = None
    sample_rate: int = OUTPUT_RATE
    prompt: str | None = None
    reference: Audio | None = None
    mix: float | None = None
    cfg_context: float | None = None
    cfg_clap: float | None = None
    harmony: float | None = None  # harmony guidance (None: the bundle's default)
    rhythm: float | None = None  # rhythm guidance (None: the bundle's default)
    steps: int | None = None
    seed: int = 0
    takes: int = 1
    duration: float | None = None
    stereo_width: float = 0.0
    variation_of: Audio | None = None
    strength: float | None = None
    inpaint: tuple[float, float] | None = None
    source: Audio | None = None
    regenerate: bool = False
    loop: tuple[int, float] | None = None
    continue_from: Audio | None = None
    transition: tuple[Audio, Audio] | None = None
    gap: float = 4.0
    sampler: str | None = None
    s_churn: float = 0.0
    # map the prompt's text embedding onto the training stems' audio embeddings with the
    # bundle's text prior (None: whenever the bundle has one)
    text_prior: bool | None = None
    # the session's tempo map, (BPM in quarter notes, quarter notes per bar, seconds from the
    # start of this request's audio to a bar line): models trained with a beat grid place
    # their notes on it; others ignore it (provenance says which)
    beat_grid: tuple[float, float, float] | None = None
    output_rate: int = OUTPUT_RATE
    labels: dict[str, str] = field(default_factory=dict)  # file names etc. for provenance

    @property
    def mode(self) -> str:
        if self.variation_of is not None:
            return "variation"
        if self.inpaint is not None:
            return "regenerate" if self.regenerate else "inpaint"
        if self.continue_from is not None:
            return "continue"
        if self.transition is not None:
            return "transition"
        return "accompaniment" if self.context is not None else "single"


@dataclass
class Progress:
    stage: str  # "prepare", "encode", "condition", "sample", "stereo", "decode", "done"
    step: int
    total: int
    eta_s: float | None = None
    message: str = ""
    preview: Any = None  # with run(previews=True): the current estimate D(x; σ) of the latents

    @property
    def fraction(self) -> float:
        return self.step / self.total if self.total else 0.0


@dataclass
class Stem:
    audio: np.ndarray  # (channels, T) float32
    sample_rate: int
    seed: int
    take: int
    provenance: dict

    @property
    def seconds(self) -> float:
        return self.audio.shape[-1] / self.sample_rate

    @property
    def channels(self) -> int:
        return self.audio.shape[0]

    def save(self, path: str | Path, subtype: str = "PCM_24") -> Path:
        """Write the WAV and its `.json` provenance sidecar, each atomically."""
        from engine.audio import write_audio
        from engine.weights import atomic_write_bytes

        path = Path(path)
        write_audio(path, self.audio, self.sample_rate, subtype=subtype)
        side = path.with_suffix(".json")
        atomic_write_bytes(side, (json.dumps(self.provenance, indent=2) + "\n").encode())
        return path


def audio_digest(audio: np.ndarray | None) -> str | None:
    if audio is None:
        return None
    a = np.ascontiguousarray(audio, dtype=np.float32)
    return hashlib.sha256(a.tobytes() + str(a.shape).encode()).hexdigest()[:16]


def _check_audio(name: str, audio: Audio | None, sr: int) -> None:
    if audio is None:
        return
    a = np.asarray(audio)
    if a.ndim not in (1, 2) or a.shape[-1] == 0:
        raise RequestError(f"{name}: the audio is empty")
    if not np.isfinite(a).all():
        raise RequestError(f"{name}: the audio contains NaN or infinite samples")
    if a.shape[-1] < sr * 0.05:
        raise RequestError(f"{name}: the audio is too short ({a.shape[-1] / sr:.3f} s)")


@dataclass(frozen=True)
class ResolvedRequest:
    """A request's parameters with the bundle's defaults filled in, validated; what the
    provenance records under "parameters" (all but seed and takes)."""

    mode: str
    steps: int
    cfg_context: float
    cfg_clap: float
    harmony: float
    rhythm: float
    sampler: str
    s_churn: float
    seed: int
    takes: int
    stereo_width: float
    strength: float
    mix: float | None
    prompt: str | None
    text_prior: bool
    duration: float | None
    inpaint: tuple[float, float] | None
    loop: tuple[int, float] | None
    gap: float | None

    @property
    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.takes)]

    def parameters(self) -> dict:
        """The provenance's "parameters": JSON-ready, without seed and takes."""
        out = {f.name: getattr(self, f.name) for f in fields(self)
               if f.name not in {"seed", "takes"}}
        for k in ("inpaint", "loop"):
            out[k] = list(out[k]) if out[k] is not None else None
        return out


def check_mode_inputs(req: GenerationRequest) -> None:
    """The audio inputs and the regions of a request's mode."""
    modes = [req.variation_of is not None, req.inpaint is not None,
             req.continue_from is not None, req.transition is not None]
    if sum(modes) > 1:
        raise RequestError("choose one of variation, inpaint, continue and transition")
    for name in ("context", "reference", "variation_of", "source", "continue_from"):
        _check_audio(name.replace("_", " "), getattr(req, name), req.sample_rate)
    if req.transition is not None:
        for i, clip in enumerate(req.transition):
            _check_audio(f"transition clip {i + 1}", clip, req.sample_rate)
    if req.inpaint is not None:
        if req.source is None:
            raise RequestError("inpainting needs the source audio to repair (--source)")
        start, end = req.inpaint
        length = np.asarray(req.source).shape[-1] / req.sample_rate
        if not (0 <= start < end <= length + 1e-6):
            raise RequestError(f"the region {start:g}-{end:g} s lies outside the source "
                               f"clip (0-{length:.2f} s)")
    if req.loop is not None:
        n, frac = req.loop
        if int(n) < 1 or not 0 <= float(frac) <= 1:
            raise RequestError("loop needs repetitions >= 1 and a fraction between 0 and 1")


def beat_grid_of(req: GenerationRequest) -> BeatGrid | None:
    """The request's beat grid, checked (RequestError for a malformed one)."""
    if req.beat_grid is None:
        return None
    try:
        bpm, bar, down = req.beat_grid
        return BeatGrid(float(bpm), float(bar), float(down))
    except (TypeError, ValueError) as e:
        raise RequestError(f"beat grid {req.beat_grid!r}: {e}") from None
