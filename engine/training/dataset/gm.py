"""General MIDI programs: friendly names, the family each belongs to, and playable ranges.

Only programs with a family are ever drawn by the score renderer; the others are listed so
that imported Slakh metadata (which gives GM programs) can still be named.
"""

from __future__ import annotations

GM_NAMES = (
    "acoustic grand piano", "bright acoustic piano", "electric grand piano", "honky-tonk piano",
    "rhodes electric piano", "fm electric piano", "harpsichord", "clavinet",
    "celesta", "glockenspiel", "music box", "vibraphone",
    "marimba", "xylophone", "tubular bells", "dulcimer",
    "drawbar organ", "percussive organ", "rock organ", "church organ",
    "reed organ", "accordion", "harmonica", "tango accordion",
    "nylon-string guitar", "steel-string acoustic guitar", "jazz guitar", "clean electric guitar",
    "muted electric guitar", "overdriven guitar", "distortion guitar", "guitar harmonics",
    "acoustic upright bass", "fingered electric bass", "picked electric bass", "fretless bass",
    "slap bass", "slap bass 2", "synth bass", "synth bass 2",
    "violin", "viola", "cello", "contrabass",
    "tremolo strings", "pizzicato strings", "orchestral harp", "timpani",
    "string ensemble", "slow string ensemble", "synth strings", "synth strings 2",
    "choir aahs", "voice oohs", "synth voice", "orchestra hit",
    "trumpet", "trombone", "tuba", "muted trumpet",
    "french horn", "brass section", "synth brass", "synth brass 2",
    "soprano sax", "alto sax", "tenor sax", "baritone sax",
    "oboe", "english horn", "bassoon", "clarinet",
    "piccolo", "flute", "recorder", "pan flute",
    "blown bottle", "shakuhachi", "whistle", "ocarina",
    "square lead synth", "sawtooth lead synth", "calliope lead synth", "chiff lead synth",
    "charang lead synth", "voice lead synth", "fifths lead synth", "bass and lead synth",
    "new age pad", "warm pad", "polysynth pad", "choir pad",
    "bowed pad", "metallic pad", "halo pad", "sweep pad",
    "rain fx", "soundtrack fx", "crystal fx", "atmosphere fx",
    "brightness fx", "goblins fx", "echoes fx", "sci-fi fx",
    "sitar", "banjo", "shamisen", "koto",
    "kalimba", "bagpipe", "fiddle", "shanai",
    "tinkle bell", "agogo", "steel drums", "woodblock",
    "taiko drum", "melodic tom", "synth drum", "reverse cymbal",
    "guitar fret noise", "breath noise", "seashore", "bird tweet",
    "telephone ring", "helicopter", "applause", "gunshot",
)
assert len(GM_NAMES) == 128


# each run of programs of one family: (its first program, the family; None: not one of ours)
_FAMILY_SPANS = (
    (0, "piano"), (8, None),  # chromatic percussion is not one of our families
    (16, "organ"), (22, "woodwind"), (23, "organ"),  # 22 is the harmonica
    (24, "guitar"), (32, "bass"), (40, "strings"), (47, "drums"),  # 47: timpani
    (48, "strings"), (50, "synth"), (52, "voice"), (54, "synth"), (55, None),
    (56, "brass"), (62, "synth"), (64, "woodwind"), (80, "synth"), (104, "guitar"),
    (108, None), (109, "woodwind"), (110, "strings"), (111, "woodwind"), (112, "drums"),
    (120, None),
)


def _family_of(program: int) -> str | None:
    """The family of the span `program` falls in."""
    return [family for first, family in _FAMILY_SPANS if first <= program][-1]


GM_FAMILY = tuple(_family_of(p) for p in range(128))

# Drum kits (bank 128 programs of FluidR3_GM).
DRUM_KITS = {
    0: "standard drum kit",
    8: "room drum kit",
    16: "power drum kit",
    24: "electronic drum kit",
    25: "808 drum kit",
    32: "jazz drum kit",
    40: "brush drum kit",
}

# Comfortable sounding ranges (MIDI notes) used to place a voice in its instrument.
_FAMILY_RANGE = {
    "piano": (33, 96), "organ": (36, 91), "guitar": (40, 84), "bass": (28, 60),
    "strings": (36, 96), "brass": (40, 82), "woodwind": (50, 91), "synth": (40, 96),
    "voice": (48, 79),
}
_RANGE = {
    38: (24, 60), 39: (24, 60), 32: (28, 60),
    40: (55, 100), 41: (48, 88), 42: (36, 76), 43: (28, 60), 45: (36, 84), 46: (28, 100),
    48: (36, 93), 49: (36, 93), 50: (36, 93), 51: (36, 93), 110: (55, 96),
    56: (55, 84), 59: (55, 82), 57: (40, 72), 58: (28, 58), 60: (41, 77), 61: (40, 84),
    64: (56, 87), 65: (49, 80), 66: (44, 75), 67: (36, 68), 68: (58, 91), 69: (52, 81),
    70: (34, 72), 71: (50, 89), 72: (74, 102), 73: (60, 96), 74: (60, 91), 75: (60, 91),
    52: (48, 79), 53: (48, 79), 19: (36, 91), 105: (48, 84),
    88: (36, 84), 89: (36, 84), 90: (36, 84), 91: (36, 84), 92: (36, 84), 94: (36, 84),
    95: (36, 84),
}


def program_range(program: int) -> tuple[int, int]:
    if program in _RANGE:
        return _RANGE[program]
    return _FAMILY_RANGE.get(GM_FAMILY[program] or "", (36, 96))


def instrument_name(program: int, is_drum: bool = False) -> str:
    if is_drum:
        return DRUM_KITS.get(program, "drum kit")
    return GM_NAMES[program]


def family_of(program: int, is_drum: bool = False) -> str | None:
    return "drums" if is_drum else GM_FAMILY[program]


def register_of(pitches) -> str:
    """'low', 'mid' or 'high' from the median sounding pitch of a part."""
    ps = sorted(pitches)
    if not ps:
        return "mid"
    med = ps[len(ps) // 2]
    if med < 50:
        return "low"
    if med <= 67:
        return "mid"
    return "high"
