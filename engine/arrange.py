"""Iterative arrangement: one stem per part, each generated over the mix of the context and
the parts before it (Diff-A-Riff's iterative use), written once for the CLI and the app.

`arrange(generator, base, parts)` is a plain Python generator like `Generator.run`: it yields
`Progress` events (their message names the part) and returns the stems, one per part. Part i
uses seed `base.seed + i`, so an arrangement is reproducible part by part.
"""

from __future__ import annotations

import threading
from collections.abc import Generator as PyGenerator
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from engine.document.inputs import mix_down
from engine.errors import RequestError
from engine.gain import apply_ceiling
from engine.generation.driver import Generator
from engine.generation.request import GenerationRequest, Progress, Stem


@dataclass(frozen=True, eq=False)
class Part:
    """One part of an arrangement: a prompt or a reference clip (at the request's rate)."""

    kind: str  # "prompt" or "reference"
    value: str  # the prompt, or the reference's label (a file name)
    reference: np.ndarray | None = None

    def __post_init__(self):
        if self.kind not in ("prompt", "reference"):
            raise RequestError(f"an arrangement part is a prompt or a reference, not "
                               f"{self.kind!r}")
        if self.kind == "reference" and self.reference is None:
            raise RequestError(f"the reference part {self.value!r} has no audio")


def part_request(base: GenerationRequest, part: Part, index: int,
                 context: np.ndarray | None) -> GenerationRequest:
    """The request of part `index`: one take, seed + index, over `context`."""
    labels = {**base.labels, "reference": Path(part.value).name} \
        if part.kind == "reference" else base.labels
    return replace(base, takes=1, seed=base.seed + index, context=context,
                   prompt=part.value if part.kind == "prompt" else None,
                   reference=part.reference if part.kind == "reference" else None,
                   labels=labels)


def arrange(generator: Generator, base: GenerationRequest, parts: Sequence[Part],
            cancel: threading.Event | None = None
            ) -> PyGenerator[Progress, None, list[Stem]]:
    """Yield Progress; return one stem per part. Every part is validated before the first
    one is generated, so a bad part costs no time."""
    if not parts:
        raise RequestError("an arrangement needs at least one prompt or reference")
    for i, part in enumerate(parts):
        generator.resolve(part_request(base, part, i, base.context))
    context = base.context
    stems: list[Stem] = []
    for i, part in enumerate(parts):
        run = generator.run(part_request(base, part, i, context), cancel)
        while True:
            try:
                ev = next(run)
            except StopIteration as stop:
                stem = stop.value[0]
                break
            yield replace(ev, message=f"part {i + 1}/{len(parts)}: {ev.message}")
        stem.provenance["arrangement"] = {"part": i + 1, "of": len(parts), "kind": part.kind,
                                          "value": part.value}
        stems.append(stem)
        mono = stem.audio.mean(axis=0, keepdims=True)
        context = mono if context is None else mix_down([context, mono])
    return stems


def arrangement_mix(stems: Sequence[Stem], context: np.ndarray | None, sample_rate: int
                    ) -> np.ndarray:
    """The parts (and the context) summed, held under the -1 dBTP ceiling."""
    clips = [s.audio for s in stems] + ([context] if context is not None else [])
    return apply_ceiling(mix_down(clips), sample_rate)[0]
