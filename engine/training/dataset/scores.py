"""Polyphonic pieces from the music21 corpus, each voice arranged for an instrument.

A piece is cut to a window of whole bars at a tempo drawn for its repertoire, every part
becomes one stem, and the ensemble (string quartet, choir, brass, winds, organ, mixed...) is
drawn per song, so the same chorale can come back as strings in one song and brass in another.
The held-out split is keyed on the corpus path, so every arrangement of a test piece stays in
the test split.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .gm import program_range
from .midi import Note
from .parts import Part, Song, key_name

# group -> (style words, tempo range in quarter-note bpm, ensembles with weights)
GROUPS = {
    "chorale": ("bach chorale", (58, 96)),
    "palestrina": ("renaissance polyphony", (96, 160)),
    "madrigal": ("renaissance madrigal", (72, 116)),
    "quartet": ("classical quartet", (72, 138)),
}
GROUP_WEIGHTS = {"chorale": 3.0, "palestrina": 2.0, "madrigal": 1.2, "quartet": 2.0}

# ensemble -> program pools for the top voice, inner voices and the bottom voice
ENSEMBLES = {
    "strings": ([40, 40, 48], [40, 41, 48], [42, 43, 42]),
    "choir": ([52, 53], [52, 53], [52, 53]),
    "brass": ([56, 59, 60], [60, 57, 61], [57, 58]),
    "woodwinds": ([73, 68, 72, 71, 64], [71, 69, 65, 66], [70, 67, 71]),
    "organ": ([19, 20, 16], [19, 20, 16], [19, 20, 16]),
    "keyboard": ([0, 6, 4], [0, 6, 4], [0, 6, 4]),
    "guitars": ([24, 25, 26], [24, 25, 27], [32, 33, 35]),
    "synths": ([80, 81, 85, 87], [88, 89, 90, 50, 62, 91], [38, 39]),
    "mixed": ([73, 68, 40, 56, 71, 53, 81, 65], [41, 60, 71, 66, 26, 4, 48, 89, 19],
              [42, 43, 70, 57, 58, 32, 35, 33, 38]),
}
ENSEMBLE_WEIGHTS = {
    "chorale": {"strings": 2, "choir": 2, "brass": 1.5, "woodwinds": 1.5, "organ": 1,
                "keyboard": 0.7, "guitars": 0.8, "synths": 1, "mixed": 2.5},
    "palestrina": {"choir": 3, "strings": 1.5, "brass": 1.5, "woodwinds": 1, "organ": 1,
                   "synths": 0.6, "mixed": 2},
    "madrigal": {"choir": 3, "strings": 1.5, "woodwinds": 1, "brass": 1, "mixed": 2,
                 "guitars": 0.5},
    "quartet": {"strings": 5, "woodwinds": 1, "mixed": 1.5, "synths": 0.5, "brass": 0.5,
                "guitars": 0.5, "keyboard": 0.5},
}

_KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def estimate_key(notes: list[Note]) -> str:
    """Krumhansl-Kessler key estimate from durations per pitch class."""
    hist = np.zeros(12)
    for n in notes:
        hist[n.pitch % 12] += max(0.0, n.end - n.start)
    if hist.sum() == 0:
        return "C major"
    best = (-2.0, 0, "major")
    for tonic in range(12):
        for mode, prof in (("major", _KK_MAJOR), ("minor", _KK_MINOR)):
            r = np.corrcoef(hist, np.roll(prof, tonic))[0, 1]
            if r > best[0]:
                best = (r, tonic, mode)
    return key_name(best[1], best[2])


def _group_of(rel: str) -> str | None:
    if rel.startswith("bach/bwv") and rel.endswith((".mxl", ".xml")):
        return "chorale"
    if rel.startswith("palestrina/") and rel.endswith(".krn"):
        return "palestrina"
    if rel.startswith("monteverdi/") and rel.endswith(".mxl"):
        return "madrigal"
    if rel.startswith(("haydn/", "mozart/", "beethoven/opus18", "schumann_robert/opus41")) \
            and rel.endswith(".mxl"):
        return "quartet"
    return None


@functools.lru_cache(maxsize=1)
def corpus_pieces() -> dict[str, list[str]]:
    """Corpus paths (relative, sorted) per group."""
    import os

    from music21 import corpus

    out: dict[str, list[str]] = {g: [] for g in GROUPS}
    for p in corpus.getPaths():
        s = str(p).replace(os.sep, "/")
        if "/corpus/" not in s:
            continue
        rel = s.split("/corpus/", 1)[1]
        g = _group_of(rel)
        if g and os.path.getsize(p) < 150_000:
            out[g].append(rel)
    return {g: sorted(v) for g, v in out.items()}


def _read_parts(rel: str):
    """[(name, [(offset_ql, dur_ql, midi)]), ...], total length in quarters, meter."""
    from music21 import corpus

    score = corpus.parse(rel)
    parts = []
    total = 0.0
    meter = "4/4"
    for k, part in enumerate(score.parts):
        flat = part.stripTies().flatten()
        if k == 0:
            ts = flat.getElementsByClass("TimeSignature")
            if len(ts):
                meter = ts[0].ratioString
        events = []
        for n in flat.notes:
            d = float(n.duration.quarterLength)
            if d <= 0:
                continue
            off = float(n.offset)
            for p in n.pitches:
                events.append((off, d, int(p.midi)))
            total = max(total, off + d)
        if events:
            parts.append((part.partName or f"voice {k + 1}", events))
    return parts, total, meter


def _bar_length(meter: str) -> float:
    try:
        num, den = meter.split("/")
        return int(num) * 4.0 / int(den)
    except ValueError:
        return 4.0


@dataclass(frozen=True)
class _Excerpt:
    """The stretch of a piece a song plays, in quarter notes, and the tempo it plays at."""

    seconds: float
    tempo: float
    total: float  # the piece's length
    bar: float
    window: float  # the excerpt's length
    start: float
    reps: int  # how often the piece repeats to fill the window

    @property
    def sec_per_q(self) -> float:
        return 60.0 / self.tempo


def _excerpt(rng: np.random.Generator, seconds: float, group: str, total: float,
             meter: str) -> _Excerpt:
    """A tempo of the group's range and a window of `seconds` starting on a bar line."""
    _, (t_lo, t_hi) = GROUPS[group]
    tempo = float(int(rng.integers(t_lo, t_hi + 1)))
    window = seconds * tempo / 60.0
    bar = _bar_length(meter)
    starts = [b * bar for b in range(int(total // bar) + 1) if b * bar + window <= total]
    start = float(starts[int(rng.integers(len(starts)))]) if starts else 0.0
    reps = int(np.ceil((start + window) / total)) if total > 0 else 1
    return _Excerpt(seconds, tempo, total, bar, window, start, reps)


def _ensemble(rng: np.random.Generator, group: str) -> tuple:
    """The (top, inner, bottom) program pools of an ensemble drawn for the group."""
    ens_w = ENSEMBLE_WEIGHTS[group]
    names = list(ens_w)
    w = np.array([ens_w[n] for n in names], dtype=float)
    return ENSEMBLES[names[int(rng.choice(len(names), p=w / w.sum()))]]


def _octave_shift(median: float, lo: int, hi: int) -> int:
    """Whole octaves (at most three) that bring a voice's median pitch into the
    instrument's comfortable range."""
    shift = 0
    while median + shift < lo + 2 and shift < 36:
        shift += 12
    while median + shift > hi - 2 and shift > -36:
        shift -= 12
    return shift


def _voice_notes(rng: np.random.Generator, events, ex: _Excerpt, shift: int) -> list[Note]:
    """A voice's notes in the excerpt, played: a little timing noise, legato, slow phrase
    swells and accents on the beats."""
    base_vel = int(rng.integers(66, 96))
    legato = float(rng.uniform(0.88, 0.98))
    phase = float(rng.uniform(0, 2 * np.pi))
    notes = []
    for r in range(ex.reps):
        for off, dur, pitch in events:
            o = off + r * ex.total - ex.start
            if o < 0 or o >= ex.window:
                continue
            t = o * ex.sec_per_q + float(np.clip(rng.normal(0, 0.008), -0.02, 0.02))
            t = max(0.0, t)
            end = min(ex.seconds, (o + dur * legato) * ex.sec_per_q)
            if end - t < 0.03:
                continue
            swell = 8 * np.sin(2 * np.pi * t / 9.0 + phase)  # slow phrase dynamics
            accent = 6 if (o % ex.bar) == 0 else (3 if o % 1 == 0 else 0)
            vel = int(base_vel + swell + accent + rng.integers(-6, 7))
            notes.append(Note(t, end, pitch + shift, vel))
    return notes


def arrange_piece(rng: np.random.Generator, seconds: float, rel: str, group: str) -> Song:
    """A song of `seconds` from a corpus piece: at most six of its parts, each given an
    instrument of an ensemble (top, inner and bottom voices apart), transposed a little."""
    style = GROUPS[group][0]
    parts, total, meter = _read_parts(rel)
    if len(parts) < 2 or total <= 0:
        raise ValueError(f"{rel}: fewer than two parts")
    if len(parts) > 6:
        keep = sorted(rng.choice(len(parts), 6, replace=False).tolist())
        parts = [parts[k] for k in keep]
    ex = _excerpt(rng, seconds, group, total, meter)
    top, inner, bottom = _ensemble(rng, group)
    transpose = int(rng.integers(-3, 4))

    # order voices by median pitch, top first
    medians = [float(np.median([e[2] for e in ev])) for _, ev in parts]
    order = np.argsort(medians)[::-1]
    out_parts: list[Part] = []
    for rank, idx in enumerate(order):
        lowest = rank == len(order) - 1
        pool = top if rank == 0 else (bottom if lowest else inner)
        program = int(pool[int(rng.integers(len(pool)))])
        shift = _octave_shift(medians[idx] + transpose, *program_range(program))
        notes = _voice_notes(rng, parts[idx][1], ex, transpose + shift)
        if not notes:
            continue
        level = -20.0 + (1.0 if lowest else 0.0) + float(rng.uniform(-1.5, 1.5))
        out_parts.append(Part(f"voice {rank + 1}", program, notes, level_db=level,
                              reverb=int(rng.integers(40, 90))))
    all_notes = [n for part in out_parts for n in part.notes]
    return Song(piece=f"music21:{rel}", style=style, tempo=ex.tempo,
                key=estimate_key(all_notes), meter=meter, parts=out_parts, source=rel)


def compose_from_corpus(rng: np.random.Generator, seconds: float, attempts: int = 6) -> Song:
    """Draw a repertoire group and a piece and arrange it; retry another piece on failure."""
    pieces = corpus_pieces()
    groups = [g for g in GROUP_WEIGHTS if pieces.get(g)]
    if not groups:
        raise ValueError("the music21 corpus has no usable pieces")
    w = np.array([GROUP_WEIGHTS[g] for g in groups])
    last = None
    for _ in range(attempts):
        g = groups[int(rng.choice(len(groups), p=w / w.sum()))]
        rel = pieces[g][int(rng.integers(len(pieces[g])))]
        try:
            return arrange_piece(rng, seconds, rel, g)
        except Exception as e:  # a piece music21 cannot read or that has one voice
            last = e
    raise ValueError(f"no usable corpus piece after {attempts} attempts ({last})")
