"""What a composed or arranged song is before rendering: parts of timed notes."""

from __future__ import annotations

from dataclasses import dataclass, field

from .midi import Note

PITCH_NAMES_FLAT = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")
PITCH_NAMES_MINOR = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")


def key_name(tonic: int, mode: str) -> str:
    names = PITCH_NAMES_MINOR if mode == "minor" else PITCH_NAMES_FLAT
    return f"{names[tonic % 12]} {mode}"


@dataclass
class Part:
    role: str  # "drums", "bass", "keys", "guitar", "pad", "lead", "arp", "stabs", "voice 2"...
    program: int
    notes: list[Note]
    drum: bool = False
    level_db: float = -20.0  # target active RMS of the rendered stem, dBFS
    reverb: int = 40


@dataclass
class Song:
    piece: str  # what the held-out split is keyed on
    style: str
    tempo: float
    key: str
    meter: str
    parts: list[Part] = field(default_factory=list)
    source: str = ""  # e.g. the corpus path, or "groove"
