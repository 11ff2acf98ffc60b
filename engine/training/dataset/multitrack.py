"""Importing folders of real multitrack songs as a stem dataset.

Recognised layouts (one folder per song):

- **Slakh2100**: `TrackXXXXX/metadata.yaml` + `TrackXXXXX/stems/SNN.flac`; the metadata gives
  each stem's GM program (`program_num`), `is_drum`, `inst_class` and whether it was rendered.
- **MoisesDB**: `<song>/data.json` + one subfolder per stem (`bass/`, `guitar/`,
  `bowed_strings/`...) holding one or more audio files (tracks) that are summed; `data.json`
  gives the genre and each track's `trackType`.
- **MUSDB18-HQ** and generic sessions: a folder with two or more audio files, one per stem
  (`bass.wav`, `drums.wav`, `vocals.wav`, `other.wav`; any mixture file is skipped); the
  family is guessed from the file name.

Songs are resampled to 48 kHz mono and cut into segments of `seconds`; stems that are silent
in a segment are dropped. One gain per segment keeps the stems' original balance. A parent
folder named `test`, `validation`/`valid` (as in MUSDB18 and Slakh) fixes a song's split;
otherwise the split comes from a hash of the song's name, so all segments of a song share it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from engine.errors import RiffwrightError
from engine.fsutil import atomic_write_json

from .gm import GM_FAMILY, GM_NAMES
from .render import SAMPLE_RATE, active_rms, fade_edges, is_silent, write_wav
from .songs import commit_song_dir, make_caption, slug, split_for, staging_dir

AUDIO_EXTS = (".wav", ".flac", ".aif", ".aiff", ".ogg", ".mp3")
MIX_NAMES = ("mixture", "mix", "master", "full", "song")

# file-name or stem-name keyword -> (family, instrument words); first match wins
KEYWORDS = [
    (("kick", "snare", "drum", "hihat", "hi-hat", "overhead", "cymbal", "tom", "perc",
      "percussion", "clap", "shaker", "conga", "tamb"), "drums", "drums"),
    (("bass", "sub"), "bass", "bass"),
    (("vocal", "vox", "voice", "choir", "singer", "lead_v", "bgv", "backing"), "voice",
     "vocals"),
    (("piano", "keys", "rhodes", "wurli", "epiano", "clav", "harpsichord"), "piano", "piano"),
    (("organ", "hammond", "b3", "accordion"), "organ", "organ"),
    (("guitar", "gtr", "acoustic", "banjo", "mandolin", "ukulele"), "guitar", "guitar"),
    (("string", "violin", "viola", "cello", "fiddle", "orchestra", "harp"), "strings",
     "strings"),
    (("brass", "trumpet", "trombone", "horn", "tuba", "flugel"), "brass", "brass"),
    (("sax", "flute", "clarinet", "oboe", "bassoon", "wind", "woodwind", "reed", "piccolo"),
     "woodwind", "woodwinds"),
    (("synth", "pad", "lead", "arp", "pluck", "saw"), "synth", "synth"),
]

MOISES_STEMS = {
    "vocals": ("voice", "vocals"), "bass": ("bass", "bass"), "drums": ("drums", "drums"),
    "percussion": ("drums", "percussion"), "guitar": ("guitar", "guitar"),
    "piano": ("piano", "piano"), "bowed_strings": ("strings", "bowed strings"),
    "other_plucked": ("guitar", "plucked strings"), "other_keys": (None, "keys"),
    "wind": (None, "winds"), "other": (None, "other instruments"),
}
SLAKH_CLASS = {
    "piano": "piano", "organ": "organ", "guitar": "guitar", "bass": "bass",
    "strings": "strings", "strings (continued)": "strings", "brass": "brass",
    "reed": "woodwind", "pipe": "woodwind", "synth lead": "synth", "synth pad": "synth",
    "drums": "drums", "percussive": "drums",
}


def guess_family(name: str) -> tuple[str | None, str]:
    n = name.lower()
    for words, fam, inst in KEYWORDS:
        if any(w in n for w in words):
            return fam, inst
    return None, re.sub(r"[_\-]+", " ", Path(name).stem).strip() or "stem"


def _audio_files(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTS
                  and not p.name.startswith("."))


def find_songs(root: Path) -> list[tuple[Path, str]]:
    """(song folder, layout) for every song under `root`, sorted by path."""
    found: list[tuple[Path, str]] = []

    def visit(d: Path, depth: int):
        if depth > 6:
            return
        if (d / "metadata.yaml").is_file() and (d / "stems").is_dir():
            found.append((d, "slakh"))
            return
        if (d / "data.json").is_file() and any(x.is_dir() for x in d.iterdir()):
            found.append((d, "moisesdb"))
            return
        files = [f for f in _audio_files(d) if Path(f).stem.lower() not in MIX_NAMES]
        if len(files) >= 2:
            names = {f.stem.lower() for f in files}
            found.append((d, "musdb" if {"bass", "drums", "vocals"} <= names else "folder"))
            return
        for sub in sorted(x for x in d.iterdir() if x.is_dir() and not x.name.startswith(".")
                          and x.name != "omitted"):  # Slakh duplicates
            visit(sub, depth + 1)

    visit(Path(root), 0)
    return found


# ---------------------------------------------------------------------- tiny YAML reader

def _scalar(v: str):
    v = v.strip()
    if not v or v in ("~", "null"):
        return None
    if (v[0] == v[-1]) and v[0] in "'\"" and len(v) >= 2:
        return v[1:-1]
    low = v.lower()
    if low in ("true", "yes"):
        return True
    if low in ("false", "no"):
        return False
    try:
        return int(v)
    except ValueError:
        pass
    try:
        return float(v)
    except ValueError:
        return v


def read_simple_yaml(text: str) -> dict:
    """Nested `key: value` mappings by indentation (what Slakh's metadata.yaml uses). Uses
    PyYAML when it is installed."""
    try:
        import yaml

        out = yaml.safe_load(text)
        return out if isinstance(out, dict) else {}
    except ImportError:
        pass
    root: dict = {}
    stack: list[tuple[int, dict]] = [(-1, root)]
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].rstrip()
        if not line.strip() or line.lstrip().startswith(("#", "-", "---")):
            continue
        indent = len(line) - len(line.lstrip())
        key, sep, val = line.strip().partition(":")
        if not sep:
            continue
        while stack and indent <= stack[-1][0]:
            stack.pop()
        parent = stack[-1][1]
        if val.strip() == "":
            child: dict = {}
            parent[key.strip()] = child
            stack.append((indent, child))
        else:
            parent[key.strip()] = _scalar(val)
    return root


# ---------------------------------------------------------------------- reading songs

def _load_mono(path: Path) -> np.ndarray:
    import soundfile as sf
    import soxr

    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:
        raise RiffwrightError(f"cannot read {path}: {e}") from None
    mono = audio.mean(axis=1)
    if sr != SAMPLE_RATE:
        mono = soxr.resample(mono, sr, SAMPLE_RATE, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def _slakh_identity(m: dict) -> tuple[str | None, str, int | None, bool]:
    """A Slakh stem's family, instrument name, GM program and drum flag, from its metadata:
    the program's, else the stem's own names, else its instrument class."""
    drum = bool(m.get("is_drum"))
    prog = m.get("program_num")
    prog = int(prog) if isinstance(prog, int) and 0 <= prog < 128 else None
    if drum:
        fam, inst = "drums", "drums"
    elif prog is not None:
        fam, inst = GM_FAMILY[prog], GM_NAMES[prog]
    else:
        fam, inst = None, str(m.get("midi_program_name") or "stem").lower()
    if fam is None:
        fam = SLAKH_CLASS.get(str(m.get("inst_class", "")).lower())
    return fam, inst, None if drum else prog, drum


def _slakh_stems(song: Path) -> list[dict]:
    """The rendered stems `metadata.yaml` lists, with the files found for each."""
    meta = read_simple_yaml((song / "metadata.yaml").read_text())
    stems = []
    for name, m in sorted((meta.get("stems") or {}).items()):
        if not isinstance(m, dict) or m.get("audio_rendered") is False:
            continue
        files = [f for f in _audio_files(song / "stems") if f.stem == name]
        if files:
            fam, inst, prog, drum = _slakh_identity(m)
            stems.append({"files": files, "instrument": inst, "family": fam,
                          "program": prog, "drum": drum})
    return stems


_BRASS_WORDS = ("trumpet", "trombone", "horn", "tuba", "brass")


def _moises_identity(folder: str, kinds: list[str]) -> tuple[str | None, str]:
    """A MoisesDB stem folder's family and instrument name: the folder's own, else a guess
    from its tracks' types (a `wind` folder is brass or woodwind by them)."""
    fam, inst = MOISES_STEMS.get(folder, (None, folder.replace("_", " ")))
    words = " ".join(kinds).lower()
    if fam is None and words:
        fam, _ = guess_family(words)
        if folder == "wind":
            fam = "brass" if any(w in words for w in _BRASS_WORDS) else "woodwind"
    if words and len(set(kinds)) == 1:
        inst = kinds[0].lower()
    return fam, inst


def _moises_stems(song: Path) -> tuple[list[dict], dict]:
    """One stem per folder with audio; the song's genre from `data.json`."""
    data = json.loads((song / "data.json").read_text())
    info = {"style": str(data.get("genre") or "").lower()}
    types = {s.get("stemName"): [t.get("trackType", "") for t in s.get("tracks", [])]
             for s in data.get("stems", []) if isinstance(s, dict)}
    stems = []
    for d in sorted(x for x in song.iterdir() if x.is_dir()):
        files = _audio_files(d)
        if files:
            fam, inst = _moises_identity(d.name, types.get(d.name, []))
            stems.append({"files": files, "instrument": inst, "family": fam,
                          "program": None, "drum": fam == "drums"})
    return stems, info


_MUSDB_STEMS = {"bass": ("bass", "bass"), "drums": ("drums", "drums"),
                "vocals": ("voice", "vocals")}


def _file_stems(song: Path, layout: str) -> list[dict]:
    """One stem per audio file but the mix (MUSDB names, else a guess from the name)."""
    stems = []
    for f in _audio_files(song):
        if f.stem.lower() in MIX_NAMES:
            continue
        if layout == "musdb":
            fam, inst = _MUSDB_STEMS.get(f.stem.lower(), (None, "other instruments"))
        else:
            fam, inst = guess_family(f.name)
        stems.append({"files": [f], "instrument": inst, "family": fam, "program": None,
                      "drum": fam == "drums"})
    return stems


def _stem_list(song: Path, layout: str) -> tuple[list[dict], dict]:
    """[{files, instrument, family, program, drum}], song info {style}."""
    if layout == "slakh":
        return _slakh_stems(song), {"style": ""}
    if layout == "moisesdb":
        return _moises_stems(song)
    return _file_stems(song, layout), {"style": ""}


def _split_from_path(song: Path) -> str | None:
    for part in reversed(song.parts[:-1]):
        p = part.lower()
        if p == "test":
            return "test"
        if p in ("validation", "valid", "val"):
            return "valid"
        if p == "train":
            return "train"
    return None


def _stem_audio(stems: list[dict]) -> list[np.ndarray]:
    """Each stem's files summed (aligned at zero), all padded to the longest."""
    audios = []
    for st in stems:
        parts = [_load_mono(f) for f in st["files"]]
        mix = np.zeros(max(len(p) for p in parts), dtype=np.float32)
        for p in parts:
            mix[: len(p)] += p
        audios.append(mix)
    total = max(len(a) for a in audios)
    return [np.pad(a, (0, total - len(a))) for a in audios]


def _segment_gain(cut: list[np.ndarray], keep: list[int]) -> float:
    """One gain for a segment's stems: the mix at -16 dB active RMS, but the mix and every
    stem below full scale."""
    mix = np.sum([cut[i] for i in keep], axis=0)
    r = active_rms(mix)
    gain = 10 ** (-16 / 20) / r if r > 0 else 1.0
    gain = min(gain, 0.95 / max(float(np.abs(mix).max()), 1e-9))
    return min(gain, 0.99 / max(max(float(np.abs(cut[i]).max()) for i in keep), 1e-9))


def _write_segment(staging: Path, song_id: str, stems: list[dict], cut: list[np.ndarray],
                   keep: list[int], style: str) -> list[dict]:
    """Write a segment's sounding stems (one gain for all) into `staging`; their manifest
    entries."""
    gain = _segment_gain(cut, keep)
    entries = []
    used = set()
    for i in keep:
        st = stems[i]
        name = f"{len(entries):02d}-{slug(st['instrument'], 40)}"
        while name in used:
            name += "x"
        used.add(name)
        write_wav(staging / f"{name}.wav", fade_edges(cut[i] * gain))
        entries.append({
            "path": f"songs/{song_id}/{name}.wav", "instrument": st["instrument"],
            "family": st["family"], "program": st["program"],
            "register": "full" if st["drum"] else None, "drum": st["drum"],
            "caption": make_caption(st["instrument"], st["family"], None, style, None),
        })
    return entries


def _segments(audios: list[np.ndarray], seconds: float, max_segments: int | None):
    """Yield (k, the stems' audio of segment k): whole segments of `seconds` (a song of at
    least half a segment gives one, padded), at most `max_segments`."""
    seg = int(round(seconds * SAMPLE_RATE))
    total = len(audios[0])
    n_seg = max(1, total // seg) if total >= seg // 2 else 0
    if max_segments is not None:
        n_seg = min(n_seg, int(max_segments))
    for k in range(n_seg):
        cut = [np.zeros(seg, dtype=np.float32) for _ in audios]
        for c, a in zip(cut, audios, strict=True):
            chunk = a[k * seg:(k + 1) * seg]
            c[: len(chunk)] = chunk
        yield k, cut


def import_song(out_dir: Path, song: Path, seconds: float, layout: str,
                max_segments: int | None = None, name: str | None = None) -> str:
    """Import one multitrack song as segments `songs/<slug>-NNN/` (slug of the layout and
    `name`, the song's path below the source folder). Returns a status line."""
    out_dir = Path(out_dir)
    base = slug(f"{layout}-{name or song.name}", 72)
    marker = out_dir / "songs" / ".imported" / f"{base}.json"
    if marker.is_file():
        return "exists"
    stems, info = _stem_list(song, layout)
    if not stems:
        return "skipped: no stems"
    piece = f"{layout}:{song.name}"
    split = _split_from_path(song) or split_for(piece)
    written = []
    for k, cut in _segments(_stem_audio(stems), seconds, max_segments):
        keep = [i for i, c in enumerate(cut) if not is_silent(c)]
        if not keep:
            continue
        song_id = f"{base}-{k:03d}"
        if not (out_dir / "songs" / song_id).exists():
            staging = staging_dir(out_dir, song_id)
            entries = _write_segment(staging, song_id, stems, cut, keep, info["style"])
            entry = {"id": song_id, "split": split, "tempo": None, "key": None, "meter": None,
                     "style": info["style"], "seconds": float(seconds), "piece": piece,
                     "source": str(song), "stems": entries}
            atomic_write_json(staging / "song.json", entry)
            commit_song_dir(staging, out_dir / "songs" / song_id)
        written.append(song_id)
    marker.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(marker, {"song": str(song), "segments": written})
    return f"done ({len(written)} segments)"
