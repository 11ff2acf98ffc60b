"""Procedurally composed grooves: drums, bass, keys, guitar, pads, arpeggios and leads over
chord progressions, in varied styles, tempi, keys and meters.

Everything is drawn from one `numpy.random.Generator`, so a seed gives the same song. Bars
are written as step strings (one character per sixteenth): `x`/`X`/`o` drum hits (normal,
accent, ghost); for pitched parts `R` root, `F` fifth, `O` octave, `3` third, `7` seventh,
`A` chromatic approach to the next chord, `C` chord, `D`/`U` strummed chord down/up, `a`
next arpeggio note, `-` hold the previous note, `.` rest.
"""

from __future__ import annotations

import re

import numpy as np

from .gm import program_range
from .midi import Note
from .parts import Part, Song, key_name

# ----------------------------------------------------------------------------- harmony

_NUMERAL = re.compile(r"^(b|#)?(VII|VI|IV|V|III|II|I|vii|vi|iv|v|iii|ii|i)(maj7|7|ø7|o7|o)?$")
_DEGREE = {"i": 0, "ii": 2, "iii": 4, "iv": 5, "v": 7, "vi": 9, "vii": 11}
_QUALITY = {
    "maj": (0, 4, 7), "min": (0, 3, 7), "dim": (0, 3, 6), "7": (0, 4, 7, 10),
    "m7": (0, 3, 7, 10), "maj7": (0, 4, 7, 11), "m7b5": (0, 3, 6, 10), "dim7": (0, 3, 6, 9),
}
SCALES = {
    "major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10), "mixolydian": (0, 2, 4, 5, 7, 9, 10),
}


def parse_numeral(sym: str, tonic: int) -> tuple[int, tuple[int, ...]]:
    """'bVII' -> (root pitch class, intervals)."""
    m = _NUMERAL.match(sym)
    if not m:
        raise ValueError(f"bad numeral {sym}")
    acc, deg, suffix = m.groups()
    root = (tonic + _DEGREE[deg.lower()] + {"b": -1, "#": 1, None: 0}[acc]) % 12
    upper = deg.isupper()
    if suffix == "maj7":
        q = "maj7"
    elif suffix == "7":
        q = "7" if upper else "m7"
    elif suffix == "ø7":
        q = "m7b5"
    elif suffix == "o7":
        q = "dim7"
    elif suffix == "o":
        q = "dim"
    else:
        q = "maj" if upper else "min"
    return root, _QUALITY[q]


PROGRESSIONS = {
    "pop_major": ["I V vi IV", "I vi IV V", "vi IV I V", "I IV vi V", "I V IV V", "I iii IV V",
                  "IV I V vi", "I IV I V", "I ii IV V"],
    "pop_minor": ["i bVI bIII bVII", "i bVII bVI bVII", "i iv bVII bIII", "i bVI iv V",
                  "i iv v i", "i bIII bVII iv", "i bVI bVII i"],
    "jazz_major": ["ii7 V7 Imaj7 vi7", "Imaj7 vi7 ii7 V7", "iii7 vi7 ii7 V7",
                   "Imaj7 IV7 iii7 VI7", "Imaj7 II7 ii7 V7"],
    "jazz_minor": ["iiø7 V7 i7 i7", "i7 iv7 iiø7 V7", "i7 bVI7 iiø7 V7"],
    "blues": ["I7 IV7 I7 I7 IV7 IV7 I7 I7 V7 IV7 I7 V7", "I7 I7 IV7 I7 V7 IV7 I7 V7"],
    "funk": ["i7 i7 iv7 i7", "i7 IV7 i7 IV7", "I7 I7 IV7 I7", "i7 bVII7 i7 bVII7"],
    "modal_minor": ["i bVII i bVII", "i iv i iv", "i bVI bVII i", "i7 iv7 i7 v7"],
    "reggae": ["I IV I IV", "I V IV V", "i iv i iv", "I ii I ii", "vi IV I V"],
    "waltz": ["I IV V I", "I vi ii V", "i iv V i", "I V V I", "I IV I V"],
    "orchestral": ["I IV V I", "i bVI bIII bVII", "I vi IV V", "i iv V i", "I iii vi IV"],
}

# ----------------------------------------------------------------------------- drums

KICK, SNARE, STICK, CLAP, CHAT, PHAT, OHAT, CRASH, RIDE, TAMB, SHAKER, COWBELL = (
    36, 38, 37, 39, 42, 44, 46, 49, 51, 54, 82, 56)
TOMS = (50, 48, 47, 45, 43, 41)

DRUM_PATTERNS: dict[str, list[dict[int, str]]] = {
    "rock": [
        {KICK: "x.......x.x.....", SNARE: "....X.......X...", CHAT: "x.x.x.x.x.x.x.x."},
        {KICK: "x.....x.x.......", SNARE: "....X.......X...", CHAT: "X.x.X.x.X.x.X.x."},
        {KICK: "x.......x.....x.", SNARE: "....X.......X...", RIDE: "x.x.x.x.x.x.x.x."},
    ],
    "pop": [
        {KICK: "x.....x...x.....", SNARE: "....X.......X...", CHAT: "x.o.x.o.x.o.x.o."},
        {KICK: "x.......xx......", SNARE: "....X.......X...", CHAT: "xoxoxoxoxoxoxoxo"},
        {KICK: "x.....x.x.......", CLAP: "....X.......X...", CHAT: "x.x.x.x.x.x.x.x.",
         TAMB: "....x.......x..."},
    ],
    "funk": [
        {KICK: "x.....x...x..x..", SNARE: "....X..o.o..X..o", CHAT: "XoxoXoxoXoxoXoxo"},
        {KICK: "x..x......x.....", SNARE: "....X.o..o..X.o.", CHAT: "xxxxxxxxxxxxxx.x",
         OHAT: "..............x."},
        {KICK: "x.x.......xx....", SNARE: "....X..o....X...", CHAT: "X.x.X.x.X.x.X.x."},
    ],
    "disco": [
        {KICK: "x...x...x...x...", SNARE: "....X.......X...", OHAT: "..x...x...x...x.",
         CHAT: "x...x...x...x..."},
    ],
    "house": [
        {KICK: "X...X...X...X...", CLAP: "....x.......x...", OHAT: "..x...x...x...x.",
         CHAT: "oooooooooooooooo"},
        {KICK: "X...X...X...X...", CLAP: "....x.......x...", CHAT: "..x...x...x...x.",
         SHAKER: "xoxoxoxoxoxoxoxo"},
    ],
    "hiphop": [
        {KICK: "x......x..x.....", SNARE: "....X.......X...", CHAT: "x.x.x.x.x.x.x.x."},
        {KICK: "x.x.......x..x..", SNARE: "....X.......X...", CHAT: "xxx.x.xxx.x.x.xx"},
    ],
    "reggae": [
        {KICK: "........x.......", STICK: "........x.......", CHAT: "x.x.x.x.x.x.x.x."},
        {KICK: "x.......x.......", STICK: "....x.......x...", CHAT: "..x...x...x...x."},
    ],
    "swing": [
        {RIDE: "x...x.x.x...x.x.", PHAT: "....x.......x...", KICK: "o...o...o...o..."},
        {RIDE: "x...x.x.x...x.x.", PHAT: "....x.......x...", SNARE: "......o.......o."},
    ],
    "bossa": [
        {KICK: "x..xx..xx..xx..x", STICK: "x..x..x...x..x..", CHAT: "x.x.x.x.x.x.x.x."},
    ],
    "metal": [
        {KICK: "xxxxxxxxxxxxxxxx", SNARE: "....X.......X...", RIDE: "x.x.x.x.x.x.x.x."},
        {KICK: "x.x.x.x.x.x.x.x.", SNARE: "....X.......X...", CRASH: "x.......x......."},
    ],
    "country": [
        {KICK: "x.......x.......", SNARE: "..o.X.o...o.X.o.", CHAT: "x.x.x.x.x.x.x.x."},
    ],
    "ballad": [
        {KICK: "x.........x.....", STICK: "....x.......x...", CHAT: "x.x.x.x.x.x.x.x."},
        {KICK: "x.......x.......", SNARE: "....x.......x...", RIDE: "x...x...x...x..."},
    ],
    "shuffle": [
        {KICK: "x.....x.x.......", SNARE: "....X.......X...", CHAT: "x.x.x.x.x.x.x.x."},
        {KICK: "x.......x.......", SNARE: "....X.......X...", RIDE: "x.x.x.x.x.x.x.x."},
    ],
    "waltz": [  # 3/4, 12 steps
        {KICK: "x...........", SNARE: "....x...x...", CHAT: "x...x...x..."},
        {KICK: "x...........", STICK: "....x...x...", RIDE: "x...x.x.x.x."},
    ],
    "six8": [  # 6/8, 12 steps (eighths are 2 steps)
        {KICK: "x...........", SNARE: "......X.....", CHAT: "x.x.x.x.x.x."},
        {KICK: "x.....x.....", STICK: "......x.....", RIDE: "x.x.x.x.x.x."},
    ],
    "five4": [  # 5/4 as 3 + 2 beats, 20 steps
        {KICK: "x.....x.....x.......", SNARE: "........X.......X...", CHAT: "x.x.x.x.x.x.x.x.x.x."},
        {RIDE: "x...x.x.x...x.x.x...", PHAT: "....x.......x.......", KICK: "x.......o...x......."},
        {KICK: "x...........x.....o.", SNARE: "....o...X.......X...", RIDE: "x...x.x.x.x.x...x.x."},
    ],
    "seven8": [  # 7/8 as 2 + 2 + 3 eighths, 14 steps
        {KICK: "x.......x.....", SNARE: "....X.....X...", CHAT: "x.x.x.x.x.x.x."},
        {KICK: "x.x.....x.x...", SNARE: "....X.......X.", CHAT: "x.x.x.x.x.x.x."},
        {KICK: "x.....x.x.....", SNARE: "....X.....X...", RIDE: "x.x.x.x.x.x.x."},
    ],
}

# ----------------------------------------------------------------------------- pitched
# Pattern strings for 4/4 (16 steps); 3/4 and 6/8 ones have 12, 5/4 ones 20, 7/8 ones 14.
# A part uses the patterns of its name whose length is the bar's. "walking" is not a pattern:
# `GrooveComposer._walking` composes the line beat by beat.

BASS_PATTERNS = {
    "whole": ["R---------------", "R-------F-------", "R-------R-----A-"],
    "rock": ["R.R.R.R.R.R.R.R.", "R-R-R-R-R-R-R-A-", "R---R---R-R-R---"],
    "pop": ["R-----R---R---A-", "R-------R---F---", "R-----R-----R-A-"],
    "funk": ["R..R.O..R.R..O.R", "R.....RO..R.O..A", "R.O.R..R.F.O.R.A", "R..O..R...R.ROFA"],
    "disco": ["R.O.R.O.R.O.R.O.", "RORORORORORORORA"],
    "house": [".R.R.R.R.R.R.R.R", "..R...R...R...R.", "R..R..R.R..R..O."],
    "hiphop": ["R-----R---R-----", "R------R--R---A-"],
    "reggae": ["..R.R.F...R.O...", "....R-F-R...O-F-", "..R---R-F---R---"],
    "arp": ["R.3.F.O.F.3.R.3.", "R-3-F-O-R-3-F-O-", "R..3..F.O..F..3.", "R-F-3-F-R-F-3-F-"],
    "bossa": ["R-----F-R-----F-", "R-----F-R-----A-"],
    "country": ["R-------F-------", "R---R---F---A---"],
    "metal": ["RRRRRRRRRRRRRRRR", "R.R.R.R.RRRRR.R."],
    "waltz": ["R-----------", "R---F---F---", "R-------F---"],
    "six8": ["R-----F-----", "R---F-R---F-", "R-----R---A-"],
    "five4": ["R.....R.....F...O...", "R-------R---F---A---", "R-----F-----R---F---"],
    "seven8": ["R.R.R.R.R.R.R.", "R---R---F-F-A-", "R.R.R.R.F.F.R.", "R-----R-F-F-R-"],
}

COMP_PATTERNS = {
    "whole": ["C---------------", "C-------C-------"],
    "quarters": ["C---C---C---C---", "C-.-C-.-C-.-C-.-"],
    "pop": ["C-----C-----C---", "C---C-C---C-C---", "C-------C---C---"],
    "stabs": ["..C...C...C..C..", "C.C..C.CC..C.C..", "....C..C....C.C."],
    "skank": ["....C.......C...", "..C...C...C...C."],
    "charleston": ["C-----C.........", "..C.......C-----", "C-.-.-C-..C-...."],
    "offbeat": ["..C-..C-..C-..C-", ".C.C.C.C.C.C.C.C"],
    "bossa": ["C..C..C...C..C..", "C-.C-.C-..C-.C-."],
    "strum": ["D---D-U---U-D-U-", "D-D-D-U-D-D-D-U-", "D---D---D-U-D-U-"],
    "power8": ["D.D.D.D.D.D.D.D.", "D-D-D-D-D-D-D-D-", "D---D---D-D-D---",
               "D.D.D.D.D.D.D.", "D---D---D-D-D-"],
    "scratch": ["DUDUDUDUDUDUDUDU", "D.DUD.DUD.DUD.DU"],
    "arp8": ["a.a.a.a.a.a.a.a.", "a-a-a-a-a-a-a-a-", "a.a.a.a.a.a.a.", "a.a.a.a.a.a.a.a.a.a."],
    "arp16": ["aaaaaaaaaaaaaaaa", "a.aaa.aaa.aaa.aa"],
    "waltz": ["....C---C---", "C---C---C---", "C-----------"],
    "six8": ["C-----C-----", "a.a.a.a.a.a.", "D---D-D---D-"],
    "waltzarp": ["a-a-a-a-a-a-"],
    "five4": ["C-----C-----C---C---", "..C...C...C.....C...", "C---C---C---C---C---"],
    "seven8": ["C---C---C-----", "C-.-C-.-C-.C-.", "C.C.C.C.C.C.C."],
}

# role -> (level dB, reverb)
ROLE_MIX = {
    "drums": (-17.0, 25), "bass": (-19.0, 15), "keys": (-21.0, 40), "guitar": (-21.0, 35),
    "pad": (-24.0, 70), "lead": (-19.0, 50), "arp": (-23.0, 50), "stabs": (-22.0, 35),
    "strings": (-23.0, 70),
}

# A style: tempo range, meters, swing, progression sets, bars per chord, drum patterns and
# kits (None: no drums), bass programs + patterns, and optional roles with programs,
# patterns (or "melody") and how often they appear.
STYLES: dict[str, dict] = {
    "rock": dict(tempo=(96, 148), meter="4/4", prog=["pop_major", "pop_minor"], drums="rock",
                 kits=[0, 8, 16], bass=([34, 33], ["rock", "pop"]), roles=[
                     ("guitar", [29, 30, 27, 25], ["power8", "strum"], 0.9),
                     ("keys", [0, 18, 16, 4], ["quarters", "whole", "pop"], 0.5),
                     ("lead", [29, 30, 81, 80], "melody", 0.5),
                     ("pad", [48, 89], ["whole"], 0.3)]),
    "pop": dict(tempo=(88, 126), meter="4/4", prog=["pop_major", "pop_minor"], drums="pop",
                kits=[0, 8, 24], bass=([33, 34, 38], ["pop", "whole", "rock", "arp"]), roles=[
                    ("keys", [0, 1, 4, 5], ["pop", "quarters", "arp8"], 0.8),
                    ("guitar", [25, 24, 27], ["strum", "arp8"], 0.6),
                    ("pad", [89, 88, 48, 50, 91], ["whole"], 0.5),
                    ("lead", [53, 73, 80, 65, 56, 40], "melody", 0.6),
                    ("arp", [81, 80, 5], ["arp16", "arp8"], 0.3)]),
    "funk": dict(tempo=(92, 116), meter="4/4", prog=["funk"], drums="funk", kits=[0, 8],
                 swing=(0.5, 0.56), bass=([36, 33, 37], ["funk"]), roles=[
                     ("guitar", [28, 27], ["scratch", "stabs"], 0.8),
                     ("keys", [7, 4, 16], ["stabs", "quarters"], 0.7),
                     ("stabs", [61, 56, 62], ["stabs"], 0.5),
                     ("lead", [65, 66, 56, 81], "melody", 0.4)]),
    "disco": dict(tempo=(112, 128), meter="4/4", prog=["pop_minor", "funk", "pop_major"],
                  drums="disco", kits=[0, 24], bass=([33, 38], ["disco"]), roles=[
                      ("strings", [48, 49, 50], ["whole", "offbeat"], 0.8),
                      ("guitar", [28, 27], ["scratch"], 0.6),
                      ("keys", [4, 0], ["offbeat", "pop"], 0.5),
                      ("stabs", [61, 62], ["stabs"], 0.4),
                      ("lead", [81, 80, 73], "melody", 0.3)]),
    "house": dict(tempo=(118, 128), meter="4/4", prog=["modal_minor", "pop_minor"],
                  drums="house", kits=[24, 25], bass=([38, 39], ["house"]), roles=[
                      ("pad", [89, 90, 94, 95, 50], ["whole"], 0.8),
                      ("keys", [4, 5, 0], ["offbeat", "stabs"], 0.6),
                      ("arp", [81, 80, 87, 84], ["arp16", "arp8"], 0.6),
                      ("lead", [81, 80, 85], "melody", 0.3)]),
    "hip-hop": dict(tempo=(78, 98), meter="4/4", prog=["modal_minor", "jazz_minor", "pop_minor"],
                    drums="hiphop", kits=[25, 0, 24], swing=(0.5, 0.6),
                    bass=([38, 33, 39], ["hiphop", "whole"]), roles=[
                        ("keys", [4, 0, 5], ["whole", "pop", "charleston"], 0.8),
                        ("strings", [48, 49, 50], ["whole"], 0.4),
                        ("pad", [89, 92, 88], ["whole"], 0.4),
                        ("lead", [73, 81, 65, 27], "melody", 0.4)]),
    "reggae": dict(tempo=(68, 86), meter="4/4", prog=["reggae"], drums="reggae", kits=[0, 8],
                   bass=([33, 35], ["reggae"]), roles=[
                       ("guitar", [27, 28], ["skank"], 0.9),
                       ("keys", [16, 17, 0], ["skank", "whole"], 0.7),
                       ("lead", [56, 65, 66], "melody", 0.3)]),
    "jazz swing": dict(tempo=(108, 176), meter="4/4", prog=["jazz_major", "jazz_minor"],
                       drums="swing", kits=[32, 40], swing=(0.62, 0.68),
                       bass=([32], ["walking"]), roles=[
                           ("keys", [0, 4], ["charleston"], 0.8),
                           ("guitar", [26], ["quarters", "charleston"], 0.4),
                           ("lead", [65, 66, 56, 59, 57, 71], "melody", 0.8),
                           ("stabs", [61, 57], ["charleston"], 0.2)]),
    "bossa nova": dict(tempo=(112, 140), meter="4/4", prog=["jazz_major", "jazz_minor"],
                       drums="bossa", kits=[40, 0], bass=([32, 35], ["bossa"]), roles=[
                           ("guitar", [24], ["bossa"], 0.9),
                           ("keys", [4, 0], ["bossa", "whole"], 0.5),
                           ("lead", [73, 65, 53, 66], "melody", 0.7),
                           ("strings", [48, 49], ["whole"], 0.3)]),
    "metal": dict(tempo=(120, 180), meter="4/4", prog=["pop_minor", "modal_minor"],
                  drums="metal", kits=[16, 0], bass=([34], ["metal", "rock"]), roles=[
                      ("guitar", [30, 29], ["power8"], 1.0),
                      ("lead", [30, 29, 81], "melody", 0.5),
                      ("keys", [18, 48], ["whole"], 0.3)]),
    "country": dict(tempo=(96, 140), meter="4/4", prog=["pop_major"], drums="country",
                    kits=[0, 40, 8], bass=([33, 32], ["country", "arp"]), roles=[
                        ("guitar", [25, 105, 24], ["strum", "arp8"], 0.9),
                        ("lead", [110, 40, 22, 27], "melody", 0.6),
                        ("keys", [0, 3, 16], ["quarters", "pop"], 0.5)]),
    "ballad": dict(tempo=(60, 82), meter="4/4", prog=["pop_major", "pop_minor"], bars=2,
                   drums="ballad", kits=[40, 0, 8], drum_p=0.6,
                   bass=([35, 33, 32], ["whole", "pop", "arp"]), roles=[
                       ("keys", [0, 4, 1], ["arp8", "whole", "pop"], 0.9),
                       ("strings", [48, 49, 50], ["whole"], 0.6),
                       ("lead", [53, 73, 40, 71, 60, 52], "melody", 0.7),
                       ("guitar", [24, 25], ["arp8", "strum"], 0.4),
                       ("pad", [89, 88, 91, 52], ["whole"], 0.4)]),
    "blues shuffle": dict(tempo=(72, 112), meter="4/4", prog=["blues"], drums="shuffle",
                          kits=[0, 8, 32], swing=(0.64, 0.68),
                          bass=([33, 32], ["walking", "rock"]), roles=[
                              ("keys", [16, 18, 0, 3], ["charleston", "quarters"], 0.8),
                              ("guitar", [29, 27, 26], ["power8", "quarters"], 0.7),
                              ("lead", [22, 66, 65, 29, 56], "melody", 0.6)]),
    "waltz": dict(tempo=(96, 168), meter="3/4", prog=["waltz"], drums="waltz", kits=[40, 0],
                  drum_p=0.6, bass=([32, 33, 43], ["waltz"]), roles=[
                      ("keys", [0, 21, 23, 4], ["waltz", "waltzarp"], 0.9),
                      ("strings", [48, 49], ["whole"], 0.5),
                      ("lead", [40, 73, 71, 21, 56], "melody", 0.7),
                      ("guitar", [24, 25], ["waltzarp", "waltz"], 0.4)]),
    "6/8 ballad": dict(tempo=(50, 72), meter="6/8", prog=["pop_major", "pop_minor"],
                       drums="six8", kits=[0, 40, 8], drum_p=0.7,
                       bass=([33, 35, 32], ["six8"]), roles=[
                           ("keys", [0, 4, 19], ["six8"], 0.8),
                           ("guitar", [24, 25, 27], ["six8"], 0.6),
                           ("strings", [48, 49, 50], ["whole"], 0.5),
                           ("lead", [73, 53, 68, 40, 81], "melody", 0.6)]),
    "soul": dict(tempo=(70, 108), meter="4/4", prog=["pop_major", "jazz_major", "funk"],
                 drums="pop", kits=[0, 8], swing=(0.5, 0.6), bass=([33, 32], ["pop", "funk"]),
                 roles=[
                     ("keys", [16, 17, 18, 0, 4], ["quarters", "charleston", "whole"], 0.9),
                     ("stabs", [61, 56, 57], ["stabs", "charleston"], 0.5),
                     ("lead", [53, 52, 66, 65], "melody", 0.7),
                     ("guitar", [27, 26], ["skank", "quarters"], 0.5),
                     ("pad", [52, 53, 19], ["whole"], 0.4)]),
    "5/4 jazz": dict(tempo=(120, 176), meter="5/4", prog=["jazz_minor", "modal_minor"],
                     drums="five4", kits=[32, 40, 0], drum_p=1.0, swing=(0.6, 0.66),
                     bass=([32, 33], ["walking", "five4"]), roles=[
                         ("keys", [0, 4], ["five4"], 0.8),
                         ("lead", [65, 66, 56, 73], "melody", 0.8),
                         ("guitar", [26], ["five4"], 0.4),
                         ("stabs", [61, 57], ["five4"], 0.2)]),
    "7/8 rock": dict(tempo=(100, 150), meter="7/8", prog=["pop_minor", "modal_minor"],
                     drums="seven8", kits=[0, 8, 16], drum_p=1.0,
                     bass=([34, 33, 38], ["seven8"]), roles=[
                         ("guitar", [29, 30, 27], ["power8"], 0.9),
                         ("keys", [4, 18, 0], ["seven8", "whole"], 0.5),
                         ("lead", [81, 29, 30], "melody", 0.5),
                         ("pad", [89, 48], ["whole"], 0.3),
                         ("arp", [81, 80], ["arp8"], 0.3)]),
    "ambient": dict(tempo=(60, 96), meter="4/4", prog=["modal_minor", "pop_major"], bars=2,
                    drums=None, kits=[], bass=([38, 39, 35], ["whole"]), bass_p=0.6, roles=[
                        ("pad", [88, 89, 90, 91, 92, 94, 95], ["whole"], 1.0),
                        ("arp", [81, 80, 5, 46, 98], ["arp8", "arp16"], 0.7),
                        ("keys", [0, 4, 5], ["whole", "arp8"], 0.5),
                        ("strings", [49, 50, 51], ["whole"], 0.5),
                        ("lead", [75, 73, 85, 54, 52], "melody", 0.5)]),
    "orchestral": dict(tempo=(66, 120), meter="4/4", prog=["orchestral"], drums=None, kits=[],
                       bass=([43, 42, 58, 70], ["whole", "pop"]), roles=[
                           ("strings", [48, 49, 44], ["whole", "quarters"], 0.9),
                           ("stabs", [60, 61, 57], ["whole", "pop"], 0.6),
                           ("arp", [46, 45, 73, 71], ["arp8"], 0.6),
                           ("lead", [73, 68, 71, 56, 60, 40, 42, 52], "melody", 0.8),
                           ("pad", [52, 53, 49], ["whole"], 0.3)]),
}

# How often each style is drawn (drums/bass/guitar/synth-heavy styles more often).
STYLE_WEIGHTS = {
    "rock": 1.2, "pop": 1.4, "funk": 1.0, "disco": 0.6, "house": 0.9, "hip-hop": 0.9,
    "reggae": 0.5, "jazz swing": 0.9, "bossa nova": 0.6, "metal": 0.6, "country": 0.6,
    "ballad": 0.8, "soul": 0.8, "blues shuffle": 0.7, "waltz": 0.5, "6/8 ballad": 0.4, "ambient": 0.7,
    "orchestral": 0.8, "5/4 jazz": 0.35, "7/8 rock": 0.35,
}

STYLE_WORD = {  # style -> the caption's style words
    "rock": "rock", "pop": "pop", "funk": "funk groove", "disco": "disco", "house": "house",
    "hip-hop": "hip-hop beat", "reggae": "reggae", "jazz swing": "jazz swing",
    "bossa nova": "bossa nova", "metal": "metal", "country": "country", "ballad": "ballad", "soul": "soul",
    "blues shuffle": "blues shuffle", "waltz": "waltz", "6/8 ballad": "6/8 ballad",
    "ambient": "ambient", "orchestral": "orchestral", "5/4 jazz": "5/4 jazz",
    "7/8 rock": "7/8 rock",
}


# Sixteenths per bar. Tempo counts quarter notes, except in 6/8 (dotted quarters).
STEPS_PER_BAR = {"4/4": 16, "3/4": 12, "6/8": 12, "5/4": 20, "7/8": 14}


class _Grid:
    """Sixteenth-note steps to seconds, with swing on the off-beat eighths."""

    def __init__(self, tempo: float, steps_per_bar: int, swing: float):
        self.beat = 60.0 / tempo
        self.spb = steps_per_bar
        self.swing = swing

    def time(self, step: float) -> float:
        beat, sub = divmod(step, 4)
        s = self.swing
        # piecewise-linear map of the 4 sixteenths of a beat: 0, s/2, s, s + (1-s)/2
        if sub < 2:
            frac = sub / 2 * s
        else:
            frac = s + (sub - 2) / 2 * (1 - s)
        return (beat + frac) * self.beat


def _events(pattern: str):
    """(step, char, length in steps) for each onset of a step string."""
    out = []
    n = len(pattern)
    for i, ch in enumerate(pattern):
        if ch in ".-":
            continue
        j = i + 1
        while j < n and pattern[j] == "-":
            j += 1
        out.append((i, ch, j - i))
    return out


def _jitter(rng, sd: float) -> float:
    return float(np.clip(rng.normal(0, sd), -2.5 * sd, 2.5 * sd))


def _voicing(chord_pcs, center: int, prev: list[int] | None, n_notes: int, lo: int, hi: int):
    """Close voicing of the chord near `center`, moving as little as possible from `prev`."""
    pcs = list(chord_pcs)
    best, best_cost = None, None
    for inv in range(len(pcs)):
        order = pcs[inv:] + pcs[:inv]
        for base in range(center - 14, center + 6):
            if base % 12 != order[0]:
                continue
            notes = [base]
            for pc in order[1:]:
                p = notes[-1] + 1
                while p % 12 != pc:
                    p += 1
                notes.append(p)
            while len(notes) < n_notes:
                notes.append(notes[len(notes) - len(pcs)] + 12)
            notes = notes[:n_notes]
            if notes[0] < lo or notes[-1] > hi:
                continue
            mid = sum(notes) / len(notes)
            if prev:
                cost = sum(abs(a - b) for a, b in zip(sorted(prev), notes, strict=False)) + 0.3 * abs(mid - center)
            else:
                cost = abs(mid - center)
            if best_cost is None or cost < best_cost:
                best, best_cost = notes, cost
    return best or [center]


# The lowest root a bass part plays, drawn per part (MIDI; E1 to E2). Generator 2 put every
# root in E1-D#2 (28-39): its bass lines sat near G#1, about an octave under the bass parts of
# real tunes (the dev set's centre on E2), and a model trained on them made its bass there,
# where a transcriber and the CAE's 47 Hz bins hear pitch worst (docs/dataset.md).
BASS_FLOOR = (28, 40)
WALKING_FLOOR = (28, 34)  # a walking line climbs up to two octaves over its floor


def _bass_pitch(sym: str, root: int, intervals, next_root: int, lo: int) -> int:
    r = lo + ((root - lo) % 12)
    if sym == "R":
        return r
    if sym == "F":
        return r + 7 if r + 7 <= lo + 19 else r - 5
    if sym == "O":
        return r + 12
    if sym == "3":
        return r + intervals[1]
    if sym in "57":
        return r + (intervals[3] if len(intervals) > 3 and sym == "7" else 7)
    if sym == "A":
        nr = lo + ((next_root - lo) % 12)
        return nr - 1 if nr - 1 >= lo else nr + 1
    return r


class GrooveComposer:
    def __init__(self, rng: np.random.Generator, seconds: float):
        self.rng = rng
        self.seconds = seconds

    def pick(self, seq):
        return seq[int(self.rng.integers(len(seq)))]

    def compose(self, piece: str, style: str | None = None) -> Song:
        rng = self.rng
        if style is None:
            names = list(STYLE_WEIGHTS)
            w = np.array([STYLE_WEIGHTS[n] for n in names])
            style = names[int(rng.choice(len(names), p=w / w.sum()))]
        st = STYLES[style]
        tempo = float(int(rng.integers(st["tempo"][0], st["tempo"][1] + 1)))
        meter = st["meter"]
        spb = STEPS_PER_BAR[meter]
        if meter == "6/8":
            tempo_q = tempo * 1.5  # tempo counts dotted quarters; the grid counts quarters
        else:
            tempo_q = tempo
        sw = st.get("swing", (0.5, 0.5))
        swing = float(rng.uniform(sw[0], sw[1]))
        grid = _Grid(tempo_q, spb, swing)
        prog_set = self.pick(st["prog"])
        prog = self.pick(PROGRESSIONS[prog_set]).split()
        mode = "minor" if prog[0][0].islower() or prog_set.endswith("minor") else "major"
        tonic = int(rng.integers(12))
        bars_per_chord = st.get("bars", 1) if prog_set != "blues" else 1
        bar_s = grid.time(spb)
        n_bars = int(np.ceil(self.seconds / bar_s)) + 1
        chords = []  # per bar: (root, intervals)
        for b in range(n_bars):
            sym = prog[(b // bars_per_chord) % len(prog)]
            chords.append(parse_numeral(sym, tonic))
        scale_name = "dorian" if prog_set == "funk" and mode == "minor" else mode
        if prog_set == "blues":
            scale_name = "mixolydian"
        scale = [(tonic + i) % 12 for i in SCALES[scale_name]]
        song = Song(piece=piece, style=STYLE_WORD[style], tempo=tempo,
                    key=key_name(tonic, mode), meter=meter, source="groove")
        ctx = dict(grid=grid, spb=spb, chords=chords, n_bars=n_bars, scale=scale, style=style)

        want = int(rng.integers(3, 8))  # 3-7 stems: contexts of 2-6 instruments
        parts: list[Part] = []
        if st["drums"] and rng.random() < st.get("drum_p", 0.95):
            parts.append(self._drums(ctx, st))
        if rng.random() < st.get("bass_p", 0.95):
            progs, pats = st["bass"]
            parts.append(self._pitched(ctx, "bass", self.pick(progs), self.pick(pats)))
        roles = list(st["roles"])
        order = rng.permutation(len(roles))
        used_roles = set()
        for k in order:
            role, progs, pats, p = roles[k]
            if len(parts) >= want:
                break
            if rng.random() > p or role in used_roles:
                continue
            used_roles.add(role)
            program = self.pick(progs)
            if pats == "melody":
                parts.append(self._melody(ctx, program))
            else:
                parts.append(self._pitched(ctx, role, program, self.pick(pats)))
        # top up from roles not yet used so that a song has `want` stems if it can
        for k in order:
            if len(parts) >= want:
                break
            role, progs, pats, _ = roles[k]
            if role in used_roles:
                continue
            used_roles.add(role)
            program = self.pick(progs)
            parts.append(self._melody(ctx, program) if pats == "melody"
                         else self._pitched(ctx, role, program, self.pick(pats)))
        for part in parts:
            level, reverb = ROLE_MIX.get(part.role, (-21.0, 40))
            part.level_db = level + float(rng.uniform(-1.5, 1.5))
            part.reverb = int(np.clip(reverb + rng.integers(-15, 16), 0, 110))
        song.parts = parts
        return song

    # -- parts ------------------------------------------------------------------------

    def _clip(self, notes: list[Note]) -> list[Note]:
        out = []
        for n in notes:
            if n.start >= self.seconds - 0.05:
                continue
            s = max(0.0, n.start)
            out.append(Note(s, min(n.end, self.seconds), n.pitch, n.velocity))
        return out

    def _drums(self, ctx, st) -> Part:
        rng, grid, spb = self.rng, ctx["grid"], ctx["spb"]
        pats = DRUM_PATTERNS[st["drums"]]
        main = self.pick(pats)
        alt = self.pick(pats)
        kit = int(self.pick(st["kits"]))
        notes = []
        base_vel = int(rng.integers(80, 105))
        for b in range(ctx["n_bars"]):
            pat = alt if (b % 4 == 2 and rng.random() < 0.5) else main
            t0 = grid.time(b * spb)
            fill = b % 4 == 3 and rng.random() < 0.6
            for drum, line in pat.items():
                for i, ch, _ in _events(line):
                    if fill and i >= spb - 4 and drum in (SNARE, KICK, STICK, CLAP):
                        continue
                    if ch == "o" and rng.random() < 0.25:
                        continue
                    vel = {"X": base_vel + 18, "x": base_vel, "o": base_vel - 45}[ch]
                    vel += int(rng.integers(-8, 9))
                    t = grid.time(b * spb + i) + _jitter(rng, 0.004)
                    notes.append(Note(t, t + 0.15, drum, vel))
            if b % 4 == 0 and rng.random() < (0.8 if b else 0.5):
                notes.append(Note(t0, t0 + 0.5, CRASH, base_vel + 10))
            if fill:
                n_hits = int(rng.choice([2, 4]))
                toms = list(TOMS) if rng.random() < 0.6 else [SNARE] * 6
                for j in range(n_hits):
                    i = spb - 4 + (j if n_hits == 4 else 2 * j)
                    t = grid.time(b * spb + i) + _jitter(rng, 0.004)
                    drum = toms[min(j + int(rng.integers(0, 2)), len(toms) - 1)]
                    notes.append(Note(t, t + 0.15, drum, base_vel + int(rng.integers(-5, 15))))
        return Part("drums", kit, self._clip(notes), drum=True)

    def _pitched(self, ctx, role: str, program: int, pattern_name: str) -> Part:
        if role == "bass" and pattern_name == "walking":
            return self._walking(ctx, program)
        rng, grid, spb, chords = self.rng, ctx["grid"], ctx["spb"], ctx["chords"]
        bank = BASS_PATTERNS if role == "bass" else COMP_PATTERNS
        pats = [p for p in bank.get(pattern_name, []) if len(p) == spb]
        if not pats:  # e.g. a 4/4 pattern asked for in 3/4: fall back to held chords
            pats = ["R" + "-" * (spb - 1)] if role == "bass" else ["C" + "-" * (spb - 1)]
        pat_a, pat_b = self.pick(pats), self.pick(pats)
        lo, hi = program_range(program)
        bass_lo = self._bass_floor(lo, BASS_FLOOR) if role == "bass" else lo
        notes: list[Note] = []
        legato = float(rng.uniform(0.75, 0.95))
        base_vel = int(rng.integers(72, 100))
        if role in ("pad", "strings"):
            base_vel -= 10
        center = {"keys": 62, "guitar": 57, "pad": 62, "strings": 64, "stabs": 67,
                  "arp": 67}.get(role, 60)
        center = int(np.clip(center + rng.integers(-3, 4), lo + 6, hi - 6))
        power = program in (29, 30) and pattern_name == "power8"
        n_voice = 3 if role in ("stabs",) else (5 if role == "guitar" else 4)
        prev = None
        arp_i = 0
        arp_dir = 1 if rng.random() < 0.7 else -1
        for b in range(ctx["n_bars"]):
            root, ivs = chords[b]
            next_root = chords[b + 1][0] if b + 1 < len(chords) else root
            pat = pat_b if (b % 4 == 3) else pat_a
            # a bass fill: the phrase's last beat becomes a scale run into the next root
            fill = role == "bass" and b % 4 == 3 and b + 1 < ctx["n_bars"] and rng.random() < 0.5
            fill_from = spb - 4 if fill else spb
            pcs = [(root + i) % 12 for i in ivs]
            if power:
                r = 40 + ((root - 40) % 12)
                voicing = [r, r + 7, r + 12]
            else:
                voicing = _voicing(pcs, center, prev, n_voice, lo, hi)
                prev = voicing
            for i, ch, length in _events(pat):
                if i >= fill_from:
                    continue
                length = min(length, fill_from - i)
                t = grid.time(b * spb + i) + _jitter(rng, 0.006)
                t_end = grid.time(b * spb + i + length) - 0.01
                dur = max(0.06, (t_end - t) * (legato if length == 1 else 0.98))
                accent = 8 if i % 4 == 0 else 0
                vel = base_vel + accent + int(rng.integers(-7, 8))
                if role == "bass":
                    pitch = _bass_pitch(ch, root, ivs, next_root, bass_lo)
                    notes.append(Note(t, t + dur, pitch, vel))
                elif ch == "a":
                    seq = voicing + [voicing[0] + 12] if not power else voicing
                    idx = arp_i % (2 * len(seq) - 2) if len(seq) > 1 else 0
                    if idx >= len(seq):
                        idx = 2 * len(seq) - 2 - idx
                    if arp_dir < 0:
                        idx = len(seq) - 1 - idx
                    arp_i += 1
                    notes.append(Note(t, t + dur * 1.5, seq[idx], vel - 5))
                elif ch in "DU":
                    order = voicing if ch == "D" else voicing[::-1]
                    spread = float(rng.uniform(0.006, 0.014))
                    for k, p in enumerate(order):
                        v = vel - (10 if ch == "U" else 0) - 2 * k
                        notes.append(Note(t + k * spread, t + dur, p, v))
                else:
                    for p in voicing:
                        notes.append(Note(t + _jitter(rng, 0.003), t + dur, p, vel - 4))
            if fill:
                target = _bass_pitch("R", next_root, (), next_root, bass_lo)
                notes.extend(self._bass_run(ctx, b, target, base_vel, legato))
        return Part(role, int(program), self._clip(notes))

    def _bass_floor(self, lo: int, floors: tuple[int, int]) -> int:
        """A bass part's lowest root: drawn in `floors` (inclusive), never under the
        instrument's range."""
        return max(lo, int(self.rng.integers(floors[0], floors[1] + 1)))

    def _bass_run(self, ctx, bar: int, target: int, base_vel: int, legato: float) -> list[Note]:
        """A fill in the last beat of `bar`: 3 or 4 scale tones stepping up (or down) to the
        note next to `target`, the next bar's root, as a bassist leads into a new phrase."""
        rng, grid, spb, scale = self.rng, ctx["grid"], ctx["spb"], ctx["scale"]
        n = 4 if rng.random() < 0.6 else 3
        steps = [spb - 4, spb - 3, spb - 2, spb - 1] if n == 4 else [spb - 4, spb - 2, spb - 1]
        up = rng.random() < 0.6  # from below, usually
        run, p = [], target
        while len(run) < n:
            p += -1 if up else 1
            if p % 12 in scale:
                run.append(p)
        run.reverse()  # ends next to the target
        out = []
        for k, (i, pitch) in enumerate(zip(steps, run, strict=True)):
            t = grid.time(bar * spb + i) + _jitter(rng, 0.005)
            t_end = grid.time(bar * spb + (steps[k + 1] if k + 1 < n else spb)) - 0.01
            vel = base_vel + (6 if k == 0 else 0) + int(rng.integers(-6, 7))
            out.append(Note(t, t + max(0.05, (t_end - t) * legato), pitch, vel))
        return out

    def _walking(self, ctx, program: int) -> Part:
        """A walking bass: one legato note per beat, the chord's root on beat 1, chord and
        scale tones moving by small steps towards the next root, and on the last beat a
        note a semitone or a tone from it (chromatic or diatonic approach)."""
        rng, grid, spb, chords = self.rng, ctx["grid"], ctx["spb"], ctx["chords"]
        lo, _ = program_range(program)
        lo = self._bass_floor(lo, WALKING_FLOOR)
        top = lo + 24
        beats = spb // 4
        scale = set(ctx["scale"])
        base_vel = int(rng.integers(76, 100))
        legato = float(rng.uniform(0.85, 0.95))

        def near(pc: int, ref: int) -> int:
            return min((q for q in range(lo, top + 1) if q % 12 == pc), key=lambda q: abs(q - ref))

        notes: list[Note] = []
        prev = near(chords[0][0], lo + 10)
        for b in range(ctx["n_bars"]):
            root, ivs = chords[b]
            chord = {(root + i) % 12 for i in ivs}
            next_root = chords[b + 1][0] if b + 1 < len(chords) else root
            line = [near(root, prev)]
            target = near(next_root, line[0])
            for k in range(1, beats - 1):
                cands = [q for q in range(lo, top + 1)
                         if (q % 12 in chord or q % 12 in scale) and 1 <= abs(q - line[-1]) <= 5]
                # stay within reach of the approach note (steps of 5 at most, then 7)
                reach = [q for q in cands if abs(q - target) <= 5 * (beats - 2 - k) + 5]
                cands = reach or cands
                w = np.array([np.exp(-abs(q - target) / 3.0)
                              * (2.0 if (q % 12 in chord and k % 2 == 0) else 1.0)
                              * (0.1 if q in line else 1.0) for q in cands])
                line.append(int(cands[int(rng.choice(len(cands), p=w / w.sum()))]))
            if beats > 1:
                approach = [target + d for d in (-1, 1, -2, 2)
                            if lo <= target + d <= top and (abs(d) == 1 or (target + d) % 12 in scale)
                            and target + d != line[-1]]
                close = [q for q in approach if abs(q - line[-1]) <= 7]
                # at the edge of the range every approach may be out of it: land on the target
                close = [q for q in close if q not in line] or close or approach or [target]
                line.append(int(close[int(rng.integers(len(close)))]))
            for k, pitch in enumerate(line):
                t = grid.time(b * spb + 4 * k) + _jitter(rng, 0.006)
                vel = base_vel + (8 if k % 2 == 0 else 0) + int(rng.integers(-6, 7))
                notes.append(Note(t, t + grid.beat * legato, pitch, vel))
            prev = line[-1]
        return Part("bass", int(program), self._clip(notes))

    def _melody(self, ctx, program: int) -> Part:
        rng, grid, spb, chords = self.rng, ctx["grid"], ctx["spb"], ctx["chords"]
        scale = ctx["scale"]
        lo, hi = program_range(program)
        lo, hi = max(lo, 55), min(hi, 88)
        if hi - lo < 12:
            lo, hi = program_range(program)
        center = int((lo + hi) // 2 + rng.integers(-4, 5))
        density = float(rng.uniform(0.25, 0.6))

        def motif():
            steps = []
            i = 0
            while i < 2 * spb:
                if rng.random() < density:
                    length = int(rng.choice([1, 2, 2, 3, 4, 4, 6, 8]))
                    if i % 2 == 1 and length > 1:
                        length = 1
                    steps.append((i, min(length, 2 * spb - i)))
                    i += max(1, length)
                else:
                    i += int(rng.choice([1, 2, 2, 4]))
            return steps

        base = motif()
        notes = []
        pitch = center
        base_vel = int(rng.integers(78, 104))
        for phrase in range(0, ctx["n_bars"], 2):
            if phrase and rng.random() < 0.2:
                continue  # breathe: a rest phrase
            rhythm = base if rng.random() < 0.6 else motif()
            for i, length in rhythm:
                b = phrase + i // spb
                if b >= ctx["n_bars"]:
                    break
                root, ivs = chords[b]
                chord_pcs = {(root + iv) % 12 for iv in ivs}
                strong = (i % spb) % 4 == 0
                cands = [p for p in range(lo, hi + 1)
                         if (p % 12 in chord_pcs if strong else p % 12 in scale)]
                if not cands:
                    cands = list(range(lo, hi + 1))
                w = np.array([np.exp(-abs(p - pitch) / 2.5) * np.exp(-abs(p - center) / 9.0)
                              for p in cands])
                w[[k for k, p in enumerate(cands) if p == pitch]] *= 0.35
                pitch = int(cands[int(rng.choice(len(cands), p=w / w.sum()))])
                t = grid.time(phrase * spb + i) + _jitter(rng, 0.008)
                t_end = grid.time(phrase * spb + i + length)
                vel = base_vel + (6 if strong else 0) + int(rng.integers(-8, 9))
                notes.append(Note(t, t + max(0.08, (t_end - t) * 0.92), pitch, vel))
        return Part("lead", int(program), self._clip(notes))
