"""Multitrack stem datasets: building them (rendered scores or imported multitracks) and
drawing training pairs from them.

- `build_dataset(source, out_dir, ...)` writes `OUT/manifest.json` + `OUT/songs/<id>/*.wav`
  (48 kHz mono stems; format in docs/CONTRACTS.md and docs/dataset.md).
- `engine.training.dataset.pairs`: `iter_pairs` (numpy audio pairs), `encode_dataset_latents`,
  `LatentPairs` (pre-encoded latent pairs).

Nothing here imports torch at module level.
"""

from __future__ import annotations

DESCRIPTION = (
    "Build a stem dataset. --source scores renders pieces from the music21 corpus (Bach "
    "chorales, Palestrina, Monteverdi, string quartets) and procedurally composed grooves "
    "(drums, bass, keys, guitar, pads, leads in 20 styles) with FluidSynth and a General "
    "MIDI SoundFont (or several: --soundfont, plus Hydrogen drumkits: --drumkit, --timbres; "
    "--mix-fx adds a random channel strip per stem), one stem per voice, captioned by "
    "instrument, family, register, style and tempo. --source DIR imports a folder of multitrack songs (MUSDB18-HQ, MoisesDB, "
    "Slakh2100, or one folder per song with one audio file per stem). Stems are 48 kHz mono; "
    "songs get a fixed train/valid/test split from a hash of the piece; an interrupted build "
    "resumes where it stopped."
)

from .build import build_dataset, load_manifest, summarize  # noqa: E402
from .songs import FAMILIES, split_for  # noqa: E402

__all__ = ["FAMILIES", "DESCRIPTION", "build_dataset", "load_manifest", "split_for",
           "summarize"]
