"""What every song folder of a stem dataset shares, whether rendered or imported: the
instrument families, the fixed split, the caption, the folder name and the staged write
(a song is written into a private folder and renamed into `songs/<id>/` when complete)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

FAMILIES = ("drums", "bass", "piano", "organ", "guitar", "strings", "brass", "woodwind",
            "synth", "voice")
TEST_FRACTION = 0.10
VALID_FRACTION = 0.05


def split_for(piece: str, test: float = TEST_FRACTION, valid: float = VALID_FRACTION) -> str:
    """The fixed split of a piece: a hash of its id, so it never changes between builds."""
    h = hashlib.sha256(piece.encode("utf-8")).digest()
    u = int.from_bytes(h[:8], "big") / 2.0**64
    if u < test:
        return "test"
    if u < test + valid:
        return "valid"
    return "train"


def slug(text: str, max_len: int = 48) -> str:
    """`text` as a lower-case folder-name fragment of at most `max_len` characters."""
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s[:max_len] or "x"


def make_caption(instrument: str, family: str | None, register: str | None, style: str,
                 tempo: float | None) -> str:
    """The caption of a stem: instrument, family, register, style and tempo, as known."""
    words = [instrument]
    if family and family != instrument:
        words.append(family)
    if register and family != "drums":
        words.append(f"{register} register")
    if style:
        words.append(style)
    if tempo:
        words.append(f"{tempo:g} bpm")
    return ", ".join(words)


def commit_song_dir(staging: Path, final: Path) -> None:
    """Rename a complete staging folder into place; a song another run finished wins."""
    if final.exists():  # another run finished it first
        shutil.rmtree(staging, ignore_errors=True)
        return
    os.replace(staging, final)


def staging_dir(out_dir: Path, song_id: str) -> Path:
    """A fresh folder, private to this process, to write one song into."""
    d = out_dir / "songs" / f".tmp-{song_id}-{os.getpid()}"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    return d
