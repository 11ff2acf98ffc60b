"""Timbre sources: what turns a part's notes into audio.

A training set rendered with one SoundFont teaches a model that one bank's bass *is* the
bass; real songs use thousands of instruments. So a build may take several sources and draws
one per stem:

- `SoundFontSource`: any General MIDI .sf2/.sf3 bank, rendered by FluidSynth
  (`render.render_notes`). Renders every part.
- `DrumkitSource`: a Hydrogen drumkit folder (`drumkit.xml` + WAV/FLAC/AIFF samples) played by a
  small numpy sampler: General MIDI drum notes are mapped to the kit's instruments by their
  names, a layer is picked by velocity, samples are resampled to 48 kHz and mixed at the note
  times. Renders drum parts only.

`open_sources(specs)` turns ("soundfont" | "drumkit", path) pairs into sources, refusing the
evaluation set's sources (`render.check_training_source`) and kits whose XML tries to reach
outside their folder. `pick_source(sources, part, rng)` draws one that can render the part.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.errors import RiffwrightError

from .midi import Note
from .render import (
    RESERVED_SOURCES,
    SAMPLE_RATE,
    SOUNDFONT_SUFFIXES,
    check_training_source,
    find_soundfont,
    render_notes,
)

KINDS = ("soundfont", "drumkit")
KIT_FILE = "drumkit.xml"

# ----------------------------------------------------------------------------- interface


class TimbreSource:
    """One way of rendering parts. `kind` and `name` go into each stem's metadata."""

    kind = ""

    def __init__(self, path: Path, name: str):
        self.path = path
        self.name = name

    def describe(self) -> dict:
        """What the manifest records about this source."""
        return {"kind": self.kind, "name": self.name, "path": str(self.path)}

    def label(self) -> dict:
        """What a stem records about the source it came from."""
        return {"kind": self.kind, "name": self.name}

    def coverage(self, notes: list[Note], drum: bool) -> float:
        """Fraction of `notes` this source can play (0 when it cannot render the part)."""
        raise NotImplementedError

    def render(self, notes: list[Note], program: int, n_samples: int, *, drum: bool,
               reverb: int, seed: int) -> np.ndarray:
        """Mono float32 audio of exactly `n_samples` at 48 kHz."""
        raise NotImplementedError


class SoundFontSource(TimbreSource):
    """A General MIDI SoundFont rendered by FluidSynth: plays every part."""

    kind = "soundfont"

    def __init__(self, path: Path):
        super().__init__(path, path.stem)

    def coverage(self, notes, drum):
        return 1.0

    def render(self, notes, program, n_samples, *, drum, reverb, seed):
        return render_notes(notes, program, n_samples, drum=drum, reverb=reverb,
                            soundfont=self.path)


# ----------------------------------------------------------------------------- drum kits

# General MIDI drum notes -> the kit "classes" that may play them, best first. A kit without
# a ride plays ride notes on its closed hat, and an electronic kit without toms or crash plays
# fills on its snare and crashes on its open hat, as a drummer with a small kit would.
GM_DRUM_CLASSES: dict[int, tuple[str, ...]] = {
    35: ("kick",), 36: ("kick",),
    37: ("stick", "snare"), 38: ("snare",), 40: ("snare",), 39: ("clap", "snare"),
    42: ("hat_closed", "hat_pedal", "hat_open"), 44: ("hat_pedal", "hat_closed"),
    46: ("hat_open", "hat_closed"),
    41: ("tom_low", "tom_mid", "tom_high", "snare"), 43: ("tom_low", "tom_mid", "tom_high", "snare"),
    45: ("tom_mid", "tom_low", "tom_high", "snare"), 47: ("tom_mid", "tom_high", "tom_low", "snare"),
    48: ("tom_high", "tom_mid", "tom_low", "snare"), 50: ("tom_high", "tom_mid", "tom_low", "snare"),
    49: ("crash", "ride", "hat_open"), 57: ("crash", "ride", "hat_open"),
    52: ("crash", "hat_open"), 55: ("crash", "hat_open"),
    51: ("ride", "ride_bell", "hat_closed"), 59: ("ride", "ride_bell", "hat_closed"),
    53: ("ride_bell", "ride"),
    54: ("tambourine", "shaker", "hat_closed"), 69: ("shaker", "tambourine", "hat_closed"),
    70: ("shaker", "tambourine", "hat_closed"), 82: ("shaker", "tambourine", "hat_closed"),
    56: ("cowbell", "ride_bell"),
}
HAT_CLASSES = ("hat_closed", "hat_pedal", "hat_open")  # a closed or pedal hat chokes an open one


def _words(name: str) -> set[str]:
    """Lower-case words of an instrument name, camel case split ('BassDrum' -> bass, drum)."""
    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", name)
    return set(re.findall(r"[a-z]+|\d+", spaced.lower()))


def instrument_class(name: str) -> str | None:
    """The drum class a kit instrument plays, from its name ('Hi-Hat Closed' -> hat_closed);
    None for anything the General MIDI drum map does not use (congas, zaps, unnamed slots)."""
    w = _words(name)
    low = name.lower()
    if w & {"kick", "kik", "bd"} or "bass drum" in low or "bassdrum" in low:
        return "kick"
    if w & {"clap", "claps"}:
        return "clap"
    if "stick" in w or "sidestick" in w or ("rim" in w and "click" in w):
        return "stick"
    if "snare" in w or "sd" in w:
        return None if "roll" in w else "snare"  # a roll is a sound, not one hit
    if w & {"hat", "hh", "hihat", "hats"} or "hi-hat" in low or "hihat" in low:
        if w & {"pedal", "pd", "foot"}:
            return "hat_pedal"
        if w & {"open", "op", "opened", "semi", "semiopen", "swish", "free"}:
            return "hat_open"
        return "hat_closed"
    if "tom" in w or "toms" in w or any(x.startswith("tom") for x in w):
        if w & {"floor", "low", "lo"}:
            return "tom_low"
        if w & {"high", "hi", "1"}:
            return "tom_high"
        return "tom_mid"
    if "ride" in w:
        return "ride_bell" if w & {"bell", "cup"} else "ride"
    if w & {"crash", "china", "splash"}:
        return "crash"
    if "cowbell" in w:
        return "cowbell"
    if any(x.startswith("tamb") for x in w):
        return "tambourine"
    if w & {"shaker", "maraca", "maracas"}:
        return "shaker"
    return None


@dataclass
class _Layer:
    path: Path
    lo: float
    hi: float
    gain: float
    pitch: float


@dataclass
class _Instrument:
    name: str
    cls: str
    gain: float
    layers: list[_Layer] = field(default_factory=list)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child_text(el: ET.Element, tag: str, default: str = "") -> str:
    for c in el:
        if _local(c.tag) == tag:
            return (c.text or "").strip()
    return default


def _num(el: ET.Element, tag: str, default: float) -> float:
    try:
        return float(_child_text(el, tag, str(default)))
    except ValueError:
        return default


def _read_kit_xml(path: Path) -> ET.Element:
    """Parse drumkit.xml without ever resolving a DTD or an entity: a document that declares
    either is refused before the parser sees it (no entity expansion, no external fetches)."""
    data = path.read_bytes()
    try:  # checked as text, so no other encoding (UTF-16, say) can hide a declaration
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise RiffwrightError(f"{path} is not UTF-8 text, as a drumkit.xml is") from None
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise RiffwrightError(f"{path} declares a DTD or entities, which a drumkit never needs")
    try:
        return ET.fromstring(data)
    except ET.ParseError as e:
        raise RiffwrightError(f"{path} is not valid XML ({e})") from None


def _inside(kit_dir: Path, filename: str) -> Path:
    """`filename` resolved inside the kit folder; a path that leaves it is refused."""
    if not filename or os.path.isabs(filename):
        raise RiffwrightError(f"{kit_dir / KIT_FILE} names a sample outside the kit: {filename!r}")
    p = (kit_dir / filename).resolve()
    if not p.is_relative_to(kit_dir.resolve()):
        raise RiffwrightError(f"{kit_dir / KIT_FILE} names a sample outside the kit: {filename!r}")
    return p


def parse_drumkit(kit_dir: Path) -> tuple[str, list[_Instrument]]:
    """The kit's name and its playable instruments (muted ones, unnamed slots, instruments
    that are no drum-map class, and layers whose file is missing are left out)."""
    root = _read_kit_xml(kit_dir / KIT_FILE)
    name = _child_text(root, "name") or kit_dir.name
    instruments = []
    for inst in root.iter():
        if _local(inst.tag) != "instrument":
            continue
        iname = _child_text(inst, "name")
        cls = instrument_class(iname)
        if cls is None or _child_text(inst, "isMuted", "false").lower() == "true":
            continue
        # mono: the average of Hydrogen's left/right pan gains
        gain = (_num(inst, "volume", 1.0) * _num(inst, "gain", 1.0)
                * (_num(inst, "pan_L", 1.0) + _num(inst, "pan_R", 1.0)) / 2)
        layers = []
        for lay in inst.iter():
            if _local(lay.tag) != "layer":
                continue
            fname = _child_text(lay, "filename")
            layers.append(_Layer(_inside(kit_dir, fname), _num(lay, "min", 0.0),
                                 _num(lay, "max", 1.0), _num(lay, "gain", 1.0),
                                 _num(lay, "pitch", 0.0)))
        if not layers and _child_text(inst, "filename"):  # the old one-sample format
            layers.append(_Layer(_inside(kit_dir, _child_text(inst, "filename")), 0.0, 1.0,
                                 1.0, 0.0))
        layers = [lay for lay in layers if lay.path.is_file()]
        if layers and gain > 0:
            instruments.append(_Instrument(iname, cls, gain, sorted(layers, key=lambda x: x.lo)))
    return name, instruments


def _pick_layer(layers: list[_Layer], v: float) -> _Layer:
    """The layer whose velocity range holds `v` (0..1), else the nearest one."""
    for lay in layers:
        if lay.lo <= v <= lay.hi:
            return lay
    return min(layers, key=lambda lay: min(abs(v - lay.lo), abs(v - lay.hi)))


class DrumkitSource(TimbreSource):
    """A Hydrogen drumkit played by a numpy sampler: drum parts only."""

    kind = "drumkit"
    choke_s = 0.012  # an open hat is cut with this fade when the hat closes

    def __init__(self, path: Path):
        name, instruments = parse_drumkit(path)
        super().__init__(path, name)
        self.by_class: dict[str, list[_Instrument]] = {}
        for inst in instruments:
            self.by_class.setdefault(inst.cls, []).append(inst)
        self._cache: dict[tuple[Path, float], np.ndarray] = {}

    def classes(self) -> set[str]:
        return set(self.by_class)

    def _class_for(self, pitch: int) -> str | None:
        for cls in GM_DRUM_CLASSES.get(pitch, ()):
            if cls in self.by_class:
                return cls
        return None

    def coverage(self, notes, drum):
        if not drum or not notes:
            return 0.0
        return sum(self._class_for(n.pitch) is not None for n in notes) / len(notes)

    def _sample(self, layer: _Layer) -> np.ndarray:
        """A layer's sample as mono float32 at 48 kHz, pitch-shifted by its `pitch` semitones
        (played faster or slower, as a sampler does)."""
        key = (layer.path, layer.pitch)
        if key not in self._cache:
            import soundfile as sf
            import soxr

            try:
                x, sr = sf.read(str(layer.path), dtype="float32", always_2d=True)
            except RuntimeError as e:
                raise RiffwrightError(f"cannot read drum sample {layer.path}: {e}") from None
            mono = x.mean(axis=1)
            src_rate = sr * 2.0 ** (layer.pitch / 12.0)
            if abs(src_rate - SAMPLE_RATE) > 0.5:
                mono = soxr.resample(mono, src_rate, SAMPLE_RATE, quality="HQ")
            self._cache[key] = np.ascontiguousarray(mono, dtype=np.float32)
        return self._cache[key]

    def render(self, notes, program, n_samples, *, drum, reverb, seed):
        """Mix one sample per note at its start; one instrument per class for the whole
        part (drawn from `seed`), the layer by velocity, gain = velocity x layer x
        instrument. Hydrogen plays drum samples to their end; only an open hi-hat is cut
        (choked, with a short fade) when the hat closes again."""
        rng = np.random.default_rng(seed)
        chosen = {cls: insts[int(rng.integers(len(insts)))]
                  for cls, insts in sorted(self.by_class.items())}
        hits = []  # (start sample, class, velocity)
        for n in sorted(notes, key=lambda n: (n.start, n.pitch)):
            cls = self._class_for(n.pitch)
            start = int(round(max(0.0, n.start) * SAMPLE_RATE))
            if cls is not None and start < n_samples:
                hits.append((start, cls, max(1, min(127, int(n.velocity))) / 127.0))
        closes = [s for s, cls, _ in hits if cls in ("hat_closed", "hat_pedal")]
        out = np.zeros(n_samples, dtype=np.float32)
        for start, cls, v in hits:
            inst = chosen[cls]
            lay = _pick_layer(inst.layers, v)
            x = self._sample(lay)
            k = min(len(x), n_samples - start)
            seg = x[:k] * np.float32(v * lay.gain * inst.gain)
            if cls == "hat_open":
                seg = self._choked(seg, start, closes)
            out[start:start + len(seg)] += seg
        return out

    def _choked(self, seg: np.ndarray, start: int, closes: list[int]) -> np.ndarray:
        """An open hat's sample cut where the next closed or pedal hat starts."""
        nxt = next((c for c in closes if c > start), None)
        if nxt is None or nxt - start >= len(seg):
            return seg
        seg = seg[: nxt - start].copy()
        fade = min(int(self.choke_s * SAMPLE_RATE), len(seg))
        seg[len(seg) - fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
        return seg


# ----------------------------------------------------------------------------- choosing

MIN_COVERAGE = 0.95  # a kit must play this fraction of a drum part's notes to render it


def _one_source(kind: str, path: Path) -> TimbreSource:
    check_training_source(path)
    if kind == "soundfont":
        if not path.is_file() or path.suffix.lower() not in SOUNDFONT_SUFFIXES:
            raise RiffwrightError(f"{path} is not a SoundFont (.sf2 or .sf3 file)")
        return SoundFontSource(find_soundfont(path))
    if kind == "drumkit":
        if not (path / KIT_FILE).is_file():
            raise RiffwrightError(f"{path} is not a Hydrogen drumkit folder (no {KIT_FILE})")
        src = DrumkitSource(path)
        for label, token in RESERVED_SOURCES:  # a renamed folder still names its kit inside
            if token in src.name.lower():
                raise RiffwrightError(f"{path} is reserved for evaluation: it is {label}")
        if not src.by_class:
            raise RiffwrightError(f"{path}: no instrument of this kit plays a General MIDI drum")
        return src
    raise RiffwrightError(f"unknown timbre source kind {kind!r} (expected one of {KINDS})")


def scan_folder(folder: Path) -> list[tuple[str, str]]:
    """Every SoundFont file and Hydrogen kit folder under `folder`, in a stable order. A
    folder that holds an evaluation source is refused whole, as data folders are."""
    check_training_source(folder)
    specs = []
    for d, dirs, files in os.walk(folder):
        dirs.sort()
        if KIT_FILE in files:
            dirs.clear()  # a kit's subfolders hold its samples
            if parse_drumkit(Path(d))[1]:  # hand-percussion kits with no GM drum are left out
                specs.append(("drumkit", d))
            continue
        specs.extend(("soundfont", os.path.join(d, f)) for f in sorted(files)
                     if Path(f).suffix.lower() in SOUNDFONT_SUFFIXES)
    if not specs:
        raise RiffwrightError(f"no SoundFont (.sf2/.sf3) or Hydrogen drumkit under {folder}")
    return specs


def source_specs(soundfonts=(), drumkits=(), folders=()) -> list[tuple[str, str]]:
    """("kind", absolute path) for every source named on the command line, duplicates (also
    through symlinks) dropped; the default SoundFont when none was named, because pitched
    parts need one. Sorted, so the order flags are given in does not change a build."""
    specs = [("soundfont", str(p)) for p in soundfonts] + [("drumkit", str(p)) for p in drumkits]
    for f in folders:
        specs.extend(scan_folder(Path(f)))
    seen = {}
    for kind, p in specs:
        check_training_source(p)
        seen.setdefault(str(Path(p).resolve()), (kind, str(Path(p).resolve())))
    out = sorted(seen.values(), key=lambda s: (s[0], s[1]))
    if not any(kind == "soundfont" for kind, _ in out):
        out.insert(0, ("soundfont", str(find_soundfont().resolve())))
    return out


_OPENED: dict[tuple[str, str], TimbreSource] = {}


def open_sources(specs: list[tuple[str, str]] | list[list[str]]) -> list[TimbreSource]:
    """The sources for `specs`, opened once per process (kits keep their decoded samples)."""
    out = []
    for kind, p in specs:
        key = (kind, p)
        if key not in _OPENED:
            _OPENED[key] = _one_source(kind, Path(p))
        out.append(_OPENED[key])
    return out


def pick_source(sources: list[TimbreSource], notes: list[Note], drum: bool,
                rng: np.random.Generator) -> TimbreSource:
    """A kind first (uniformly among the kinds that can play the part), then a source of
    that kind: with 3 SoundFonts and 13 kits, drums still come from a SoundFont half of the
    time, so neither kind's sound becomes what "drums" means."""
    ok = [s for s in sources if s.coverage(notes, drum) >= MIN_COVERAGE]
    if not ok:
        raise RiffwrightError("no timbre source can render this part (add a SoundFont)")
    kinds = sorted({s.kind for s in ok})
    kind = kinds[int(rng.integers(len(kinds)))]
    of_kind = [s for s in ok if s.kind == kind]
    return of_kind[int(rng.integers(len(of_kind)))]
