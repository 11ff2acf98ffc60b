"""The session model: tracks, regions, tempo/meter/key, takes and provenance, with undo.

Plain Python, no Qt. The app subscribes to changes with `Session.subscribe(callback)`; the
callback gets `(event, payload)` where event is one of `track_added`, `track_removed`,
`track_changed`, `regions_changed`, `session_changed`, `reset`.

A session on disk is a folder (like an Ardour session)::

    session.json      versioned manifest, written atomically (temp file + rename)
    audio/<id>.wav    one 32-bit float WAV per track, written once (track audio is immutable)
    peaks/<id>.npy    min/max peak summary at PEAK_BLOCK samples per block

What a session may contain (docs/trust.md): track ids are slugs (`check_id`), every file
named in session.json must resolve inside the session folder (a path or link that leads
outside refuses the whole session, with a message naming the track), and `session.json`
lists under "files" what the session itself wrote: Save only ever removes files from that
list, and refuses a non-empty folder that is not a session.

Every edit goes through an undo command (`UndoStack.push`); commands with the same merge key
pushed in a row (a slider drag) merge into one step until `UndoStack.close_merge()`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from engine.audio import load_audio
from engine.document.recipe import Recipe
from engine.errors import AudioError, RiffwrightError
from engine.fsutil import (
    atomic_path,
    atomic_write_text,
    clean_stale_temps,
    read_json_object,
    user_write,
)

MANIFEST_VERSION = 1
MANIFEST_NAME = "session.json"
PEAK_BLOCK = 64
ROLES = ("context", "reference", "generated")
DEFAULT_COLORS = (
    "#e0a040", "#4fb0e8", "#8fd460", "#e86f8f", "#b48cf0", "#50d0b8", "#f08a4b", "#d0d060",
)


class SessionError(RiffwrightError):
    """A session folder that cannot be read or written."""


_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def check_id(value: Any, what: str = "track id") -> str:
    """A track id becomes a file name (audio/<id>.wav): only a slug is accepted, so an id
    from a session file can never be an absolute path, contain '..' or a separator, or a
    control character."""
    if not isinstance(value, str) or not _ID.match(value):
        shown = repr(value)[:40]
        raise SessionError(f"{what} {shown} is not valid: ids are 1-64 letters, digits, "
                           "'-' or '_'")
    return value


def _new_id() -> str:
    return uuid.uuid4().hex[:10]


# --------------------------------------------------------------------------------------------
# peaks


def compute_peaks(audio: np.ndarray, block: int = PEAK_BLOCK) -> np.ndarray:
    """(channels, frames) -> (2, ceil(frames / block)) float32: min and max over channels."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None]
    frames = audio.shape[1]
    n = max(1, math.ceil(frames / block))
    pad = n * block - frames
    lo = audio.min(axis=0)
    hi = audio.max(axis=0)
    if pad:
        lo = np.concatenate([lo, np.full(pad, lo[-1] if frames else 0.0, np.float32)])
        hi = np.concatenate([hi, np.full(pad, hi[-1] if frames else 0.0, np.float32)])
    return np.stack([lo.reshape(n, block).min(axis=1), hi.reshape(n, block).max(axis=1)])


class PeakPyramid:
    """Min/max summaries at block sizes PEAK_BLOCK * 4**k, for drawing at any zoom."""

    def __init__(self, base: np.ndarray, block: int = PEAK_BLOCK):
        self.block = block
        self.levels: list[np.ndarray] = [np.asarray(base, np.float32)]
        while self.levels[-1].shape[1] > 512:
            prev = self.levels[-1]
            n = math.ceil(prev.shape[1] / 4)
            pad = n * 4 - prev.shape[1]
            lo = np.pad(prev[0], (0, pad), mode="edge").reshape(n, 4).min(axis=1)
            hi = np.pad(prev[1], (0, pad), mode="edge").reshape(n, 4).max(axis=1)
            self.levels.append(np.stack([lo, hi]))

    def level_for(self, frames_per_pixel: float) -> int:
        """The coarsest level whose blocks are at most one pixel wide (1-4 blocks a pixel)."""
        k = 0
        while k + 1 < len(self.levels) and self.block * 4 ** (k + 1) <= frames_per_pixel:
            k += 1
        return k

    def segment(self, start: int, stop: int, frames_per_pixel: float):
        """(block_frames, first_block_index, (2, n) peaks) covering frames [start, stop)."""
        k = self.level_for(frames_per_pixel)
        bf = self.block * 4**k
        lev = self.levels[k]
        i0 = max(0, start // bf)
        i1 = min(lev.shape[1], stop // bf + 2)
        return bf, i0, lev[:, i0:max(i0, i1)]


# --------------------------------------------------------------------------------------------
# model


@dataclass
class Region:
    start: float
    end: float
    id: str = field(default_factory=_new_id)

    def to_dict(self) -> dict:
        return {"id": self.id, "start": self.start, "end": self.end}


@dataclass
class Track:
    name: str
    audio: np.ndarray  # (channels, frames) float32 at the session rate; never mutated
    role: str = "context"
    id: str = field(default_factory=_new_id)
    offset: int = 0  # frames from session time zero
    mute: bool = False
    solo: bool = False
    gain_db: float = 0.0
    in_context: bool = True
    color: str = ""
    regions: list[Region] = field(default_factory=list)
    provenance: dict | None = None
    take_group: str | None = None
    take: int | None = None
    source_file: str = ""
    _peaks: PeakPyramid | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_id(self.id)

    @property
    def frames(self) -> int:
        return int(self.audio.shape[1])

    @property
    def end(self) -> int:
        return self.offset + self.frames

    @property
    def gain(self) -> float:
        return 0.0 if self.gain_db <= -60 else 10 ** (self.gain_db / 20)

    def peaks(self) -> PeakPyramid:
        if self._peaks is None:
            self._peaks = PeakPyramid(compute_peaks(self.audio))
        return self._peaks

    def meta(self) -> dict:
        d = {
            k: getattr(self, k)
            for k in ("id", "name", "role", "offset", "mute", "solo", "gain_db", "in_context",
                      "color", "provenance", "take_group", "take", "source_file")
        }
        d["regions"] = [r.to_dict() for r in self.regions]
        d["channels"] = int(self.audio.shape[0])
        d["frames"] = self.frames
        return d


TRACK_ATTRS = ("name", "role", "mute", "solo", "gain_db", "in_context", "color", "offset")
SESSION_ATTRS = ("tempo", "meter", "key", "bar_start", "loop", "recipe", "active_takes",
                 "title")


class SessionEvent(StrEnum):
    """What changed, as `Session.subscribe` listeners hear it. The payload names the track
    (`track`, and `index` when added or removed) and, for attribute changes, the `attr`."""

    TRACK_ADDED = "track_added"
    TRACK_REMOVED = "track_removed"
    TRACK_CHANGED = "track_changed"  # attr: one of TRACK_ATTRS
    REGIONS_CHANGED = "regions_changed"
    SESSION_CHANGED = "session_changed"  # attr: one of SESSION_ATTRS


class Session:
    """Tracks and settings of one song; observable; saved as a folder."""

    def __init__(self, sample_rate: int = 48000):
        self.sample_rate = int(sample_rate)
        self.tracks: list[Track] = []
        self.tempo: float | None = None
        self.meter: tuple[int, int] = (4, 4)
        self.bar_start = 0.0  # where bar 1 begins (s): a clip whose first bar line is late
        self.key: str | None = None
        self.loop: tuple[float, float] | None = None
        self.recipe: Recipe | None = None  # None: not chosen yet (the app fills it in)
        self.active_takes: dict[str, str] = {}  # take group -> active track id (A/B switch)
        self.title = "Untitled"
        self.path: Path | None = None
        self.dirty = False
        self._listeners: list[Callable[[SessionEvent, dict], None]] = []

    # ---- observation
    def subscribe(self, callback: Callable[[SessionEvent, dict], None]) -> None:
        self._listeners.append(callback)

    def unsubscribe(self, callback: Callable[[SessionEvent, dict], None]) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)

    def emit(self, event: SessionEvent, **payload: Any) -> None:
        """Tell the listeners about a change; every change leaves the session unsaved."""
        self.dirty = True
        for cb in list(self._listeners):
            cb(event, payload)

    # ---- queries
    def track(self, track_id: str) -> Track:
        for t in self.tracks:
            if t.id == track_id:
                return t
        raise KeyError(track_id)

    def index_of(self, track_id: str) -> int:
        return next(i for i, t in enumerate(self.tracks) if t.id == track_id)

    @property
    def frames(self) -> int:
        return max((t.end for t in self.tracks), default=0)

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate

    def audible(self, track: Track) -> bool:
        """Mute/solo rule: any solo -> only soloed tracks; muted tracks never; inactive takes never."""
        if track.mute or not self.take_active(track):
            return False
        if any(t.solo for t in self.tracks):
            return track.solo
        return True

    def take_active(self, track: Track) -> bool:
        if not track.take_group:
            return True
        return self.active_takes.get(track.take_group, track.id) == track.id

    def takes(self, group: str) -> list[Track]:
        return [t for t in self.tracks if t.take_group == group]

    def next_color(self) -> str:
        return DEFAULT_COLORS[len(self.tracks) % len(DEFAULT_COLORS)]

    def render(self, tracks: list[Track] | None = None, start: float | None = None,
               end: float | None = None, apply_mute: bool = True,
               frames: int | None = None, interleaved: bool = False) -> np.ndarray:
        """Mix `tracks` (default: all audible) to stereo float32 from session zero:
        (2, frames), or (frames, 2) C-contiguous with `interleaved` (for playback)."""
        tracks = self.tracks if tracks is None else tracks
        total = self.frames if frames is None else frames
        a = 0 if start is None else int(round(start * self.sample_rate))
        b = total if end is None else int(round(end * self.sample_rate))
        if interleaved:
            buf = np.zeros((max(0, b - a), 2), np.float32)
            out = buf.T
        else:
            out = buf = np.zeros((2, max(0, b - a)), np.float32)
        for t in tracks:
            if apply_mute and not self.audible(t):
                continue
            add_track_into(out, t, a)
        return buf

    # ---- mutation (used by commands; each emits an event)
    def insert_track(self, track: Track, index: int | None = None) -> None:
        if not track.color:
            track.color = self.next_color()
        index = len(self.tracks) if index is None else index
        self.tracks.insert(index, track)
        self.emit(SessionEvent.TRACK_ADDED, track=track, index=index)

    def pop_track(self, track_id: str) -> tuple[Track, int]:
        i = self.index_of(track_id)
        t = self.tracks.pop(i)
        self.emit(SessionEvent.TRACK_REMOVED, track=t, index=i)
        return t, i

    def set_track_attr(self, track_id: str, attr: str, value: Any) -> None:
        if attr not in TRACK_ATTRS:
            raise AttributeError(attr)
        setattr(self.track(track_id), attr, value)
        self.emit(SessionEvent.TRACK_CHANGED, track=self.track(track_id), attr=attr)

    def set_regions(self, track_id: str, regions: list[Region]) -> None:
        self.track(track_id).regions = [copy.copy(r) for r in regions]
        self.emit(SessionEvent.REGIONS_CHANGED, track=self.track(track_id))

    def set_attr(self, attr: str, value: Any) -> None:
        if attr not in SESSION_ATTRS:
            raise AttributeError(attr)
        setattr(self, attr, copy.deepcopy(value))
        self.emit(SessionEvent.SESSION_CHANGED, attr=attr)

    # ---- time helpers
    def seconds_per_bar(self) -> float | None:
        if not self.tempo:
            return None
        num, den = self.meter
        return num * (4.0 / den) * 60.0 / self.tempo

    def bars_at(self, seconds: float) -> float | None:
        """Bars from bar 1's start to `seconds` (0.5: half-way through bar 1; negative in
        the bars before it), or None without a tempo."""
        spb = self.seconds_per_bar()
        return (seconds - self.bar_start) / spb if spb else None

    def bar_time(self, bars: float) -> float:
        """The time `bars` bars after bar 1's start (the inverse of `bars_at`; needs a
        tempo)."""
        return self.bar_start + bars * self.seconds_per_bar()

    def snap(self, seconds: float, division: int = 1) -> float:
        """Snap to the nearest bar line (or 1/division of a bar) when a tempo is set."""
        bars = self.bars_at(seconds)
        if bars is None:
            return seconds
        return self.bar_time(round(bars * division) / division)

    def bars_beats(self, seconds: float) -> str:
        """'bar|beat' (1-based from bar 1's start) for a time, or '' without tempo."""
        bars = self.bars_at(seconds)
        if bars is None:
            return ""
        num = self.meter[0]
        beats = round(bars * num, 2) + 0.0  # to the shown precision first: 4.999 is bar 2
        bar = math.floor(beats / num)
        beat = beats - bar * num + 1
        return f"{bar + 1}|{beat:.0f}" if abs(beat - round(beat)) < 1e-6 else \
            f"{bar + 1}|{beat:.2f}"

    # ---- persistence
    def manifest(self) -> dict:
        return {
            "format": "riffwright-session",
            "version": MANIFEST_VERSION,
            "title": self.title,
            "sample_rate": self.sample_rate,
            "tempo": self.tempo,
            "meter": list(self.meter),
            "bar_start": self.bar_start,
            "key": self.key,
            "loop": list(self.loop) if self.loop else None,
            "recipe": self.recipe.to_dict() if self.recipe else {},
            "active_takes": self.active_takes,
            "tracks": [dict(t.meta(), audio=f"audio/{t.id}.wav", peaks=f"peaks/{t.id}.npy")
                       for t in self.tracks],
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }

    def save(self, folder: str | os.PathLike, *, set_path: bool = True) -> Path:
        """Write the session folder as one job; returns it.

        Audio and peaks are written once per track (track audio is immutable), the manifest
        atomically and last: it is the commit point. The folder must be new, empty or a
        Riffwright session; only files an earlier save listed as its own are ever removed
        or reused. When anything fails (a full or read-only disk...), the files this save
        added are removed again and a `SessionError` says what happened in one line.
        """
        folder = Path(folder)
        with user_write(f"cannot save the session to {folder}", SessionError):
            previous = _owned_files(folder)
            for sub in (folder, folder / "audio", folder / "peaks"):
                clean_stale_temps(sub)
            added: list[Path] = []
            created = [d for d in (folder, folder / "audio", folder / "peaks") if not d.exists()]
            try:
                files = self._write_media(folder, previous, added)
                m = self.manifest()
                m["files"] = sorted(files)
                atomic_write_text(folder / MANIFEST_NAME,
                                  json.dumps(m, indent=1, default=_json_default))
            except BaseException:
                for f in added:
                    f.unlink(missing_ok=True)
                for d in reversed(created):
                    with contextlib.suppress(OSError):
                        d.rmdir()  # only when empty
                raise
            # drop the media of tracks no longer in the session: only files we wrote
            for rel in previous - files:
                with contextlib.suppress(OSError):
                    (folder / rel).unlink(missing_ok=True)
        if set_path:
            self.path = folder
            self.dirty = False
        return folder

    def _write_media(self, folder: Path, previous: set[str], added: list[Path]) -> set[str]:
        """Write each track's audio and peaks unless an earlier save of this folder did;
        returns the relative paths the new manifest owns. `added` collects new files."""
        import soundfile as sf

        (folder / "audio").mkdir(parents=True, exist_ok=True)
        (folder / "peaks").mkdir(exist_ok=True)
        files: set[str] = set()
        for t in self.tracks:
            check_id(t.id)
            wav_rel, pk_rel = f"audio/{t.id}.wav", f"peaks/{t.id}.npy"
            files.update((wav_rel, pk_rel))
            wav, pk = folder / wav_rel, folder / pk_rel
            if not _reusable(wav, wav_rel, previous):
                # in one-second blocks: a background autosave never holds the interpreter
                # lock for long, whatever the length of the track
                with atomic_path(wav) as tmp, sf.SoundFile(
                        tmp, "w", self.sample_rate, t.audio.shape[0], subtype="FLOAT",
                        format="WAV") as f:
                    for i in range(0, t.frames, self.sample_rate):
                        f.write(t.audio[:, i:i + self.sample_rate].T)
                added.append(wav)
            if not _reusable(pk, pk_rel, previous):
                _atomic_np_save(pk, t.peaks().levels[0])
                added.append(pk)
        return files

    @classmethod
    def load(cls, folder: str | os.PathLike) -> Session:
        """Read a session folder; anything malformed or reaching outside the folder raises
        `SessionError` with one line naming the problem (never another exception)."""
        folder = Path(folder)
        mf = folder / MANIFEST_NAME
        if not mf.is_file():
            raise SessionError(f"{folder} is not a Riffwright session (no {MANIFEST_NAME})")
        m = read_json_object(mf, SessionError, "a session (a JSON object)")
        try:
            return cls._from_manifest(folder, m)
        except SessionError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, IndexError,
                OverflowError) as e:
            raise SessionError(f"{mf} is malformed ({type(e).__name__}: {e})") from None

    @classmethod
    def _from_manifest(cls, folder: Path, m: dict) -> Session:
        mf = folder / MANIFEST_NAME
        version = m.get("version", 0)
        if not isinstance(version, int) or version > MANIFEST_VERSION:
            raise SessionError(f"{mf} was written by a newer Riffwright (manifest version "
                               f"{version!r})")
        sr = _field(m, "sample_rate", int, 48000)
        if not 1000 <= sr <= 768_000:
            raise SessionError(f"{mf}: sample rate {sr} is out of range")
        s = cls(sr)
        s.title = _field(m, "title", str, folder.name)
        tempo = _field(m, "tempo", (int, float), None)
        s.tempo = float(tempo) if tempo is not None and math.isfinite(tempo) and tempo > 0 \
            else None
        meter = _field(m, "meter", list, [4, 4])
        if len(meter) != 2 or not all(isinstance(v, int) and 0 < v <= 64 for v in meter):
            raise SessionError(f"{mf}: meter {meter!r} is not two small positive numbers")
        s.meter = (meter[0], meter[1])
        bar_start = _field(m, "bar_start", (int, float), 0.0)  # sessions before it: 0
        try:
            bar_start = float(bar_start)
        except OverflowError:
            raise SessionError(f"{mf}: bar_start {str(bar_start)[:20]}… is not a time") from None
        s.bar_start = bar_start if math.isfinite(bar_start) and bar_start >= 0 else 0.0
        s.key = _field(m, "key", str, None)
        loop = _field(m, "loop", list, None)
        if loop is not None:
            if len(loop) != 2 or not all(_is_number(v) for v in loop):
                raise SessionError(f"{mf}: loop {loop!r} is not two times in seconds")
            s.loop = (float(loop[0]), float(loop[1]))
        recipe = _field(m, "recipe", dict, {})
        # a user's file: unknown or out-of-range settings are dropped or clamped (logged)
        s.recipe = Recipe.from_dict(recipe, where=f"{mf} recipe") if recipe else None
        active = _field(m, "active_takes", dict, {})
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in active.items()):
            raise SessionError(f"{mf}: active_takes must map take groups to track ids")
        s.active_takes = active
        seen: set[str] = set()
        for i, tm in enumerate(_field(m, "tracks", list, [])):
            t = _track_from_meta(folder, tm, i, sr)
            if t.id in seen:
                raise SessionError(f"{mf}: two tracks share the id {t.id}")
            seen.add(t.id)
            s.tracks.append(t)
        s.path = folder
        s.dirty = False
        return s


def add_track_into(out: np.ndarray, t: Track, start_frame: int = 0) -> None:
    """Add track `t` (with gain, mono spread to both sides) into stereo `out` in place."""
    n = out.shape[1]
    a = t.offset - start_frame  # where the track starts inside `out`
    src0 = max(0, -a)
    dst0 = max(0, a)
    m = min(t.frames - src0, n - dst0)
    if m <= 0 or t.gain == 0:
        return
    seg = t.audio[:, src0:src0 + m]
    g = np.float32(t.gain)
    if seg.shape[0] == 1:
        out[:, dst0:dst0 + m] += g * seg[0]
    else:
        out[:, dst0:dst0 + m] += g * seg[:2]

# --------------------------------------------------------------------------------------------
# reading and owning session files safely

_OWNED = re.compile(r"^(audio/[A-Za-z0-9][A-Za-z0-9_-]{0,63}\.wav|"
                    r"peaks/[A-Za-z0-9][A-Za-z0-9_-]{0,63}\.npy)$")
_IGNORED_IN_EMPTY = {".DS_Store", "Thumbs.db", "desktop.ini"}
_TRACK_FIELDS: dict[str, tuple] = {
    "role": (str,), "offset": (int,), "mute": (bool,), "solo": (bool,),
    "gain_db": (int, float), "in_context": (bool,), "color": (str,),
    "provenance": (dict, type(None)), "take_group": (str, type(None)),
    "take": (int, type(None)), "source_file": (str,),
}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _field(d: dict, key: str, kinds, default):
    """`d[key]` when present and not null, checked against `kinds`; else `default`."""
    v = d.get(key)
    if v is None:
        return default
    if not isinstance(v, kinds) or (isinstance(v, bool) and bool not in
                                    (kinds if isinstance(kinds, tuple) else (kinds,))):
        raise SessionError(f"{MANIFEST_NAME}: field '{key}' has the wrong type "
                           f"({type(v).__name__})")
    return v


def _inside(folder: Path, rel: Any, what: str) -> Path:
    """`folder/rel`, resolved (links followed), which must stay inside `folder`."""
    if not isinstance(rel, str) or not rel or "\0" in rel:
        raise SessionError(f"{what}: the file name {str(rel)[:60]!r} is not valid")
    root = folder.resolve()
    path = (root / rel).resolve()
    if path != root and root not in path.parents:
        raise SessionError(f"{what}: {rel[:80]} is outside the session folder; a session "
                           "only reads files inside its own folder")
    return path


def _read_track_audio(path: Path, what: str, sample_rate: int) -> np.ndarray:
    """A track's audio: a regular file at the session's rate, no longer than the input
    limit (`engine.audio.max_input_seconds`), checked from its header before decoding."""

    if not path.exists():
        raise SessionError(f"{what}: its audio file {path.name} is missing")
    try:
        data, sr = load_audio(path)  # refuses FIFOs, devices, lying headers, NaN
    except AudioError as e:
        raise SessionError(f"{what}: {e}") from None
    if sr != sample_rate:
        raise SessionError(f"{what}: {path.name} is at {sr} Hz, the session at {sample_rate} Hz")
    return data


def _track_from_meta(folder: Path, tm: Any, index: int, sample_rate: int) -> Track:
    if not isinstance(tm, dict):
        raise SessionError(f"{MANIFEST_NAME}: track {index + 1} is not an object")
    tid = check_id(tm.get("id"), f"track {index + 1}: id")
    name = tm.get("name", tid)
    if not isinstance(name, str):
        raise SessionError(f"track {tid}: its name is not text")
    what = f"track {name[:40]!r}"
    audio = _read_track_audio(_inside(folder, tm.get("audio", f"audio/{tid}.wav"), what),
                              what, sample_rate)
    t = Track(name=name, audio=audio, id=tid)
    for k, kinds in _TRACK_FIELDS.items():
        if k not in tm:
            continue
        v = tm[k]
        if not isinstance(v, kinds) or (isinstance(v, bool) and bool not in kinds):
            raise SessionError(f"{what}: field '{k}' has the wrong type ({type(v).__name__})")
        setattr(t, k, v)
    if t.role not in ROLES:
        raise SessionError(f"{what}: role {t.role[:20]!r} is not one of {', '.join(ROLES)}")
    if not math.isfinite(t.gain_db):
        raise SessionError(f"{what}: gain is not a number")
    regions = tm.get("regions") or []
    if not isinstance(regions, list):
        raise SessionError(f"{what}: regions must be a list")
    for r in regions:
        if not isinstance(r, dict) or not _is_number(r.get("start")) \
                or not _is_number(r.get("end")):
            raise SessionError(f"{what}: a region needs numeric start and end")
        rid = r.get("id")
        t.regions.append(Region(float(r["start"]), float(r["end"]),
                                rid if isinstance(rid, str) and rid else _new_id()))
    pk = _inside(folder, tm.get("peaks", f"peaks/{tid}.npy"), what)
    if pk.is_file():
        try:
            peaks = np.load(pk, allow_pickle=False)
            if peaks.ndim == 2 and peaks.shape[0] == 2:
                t._peaks = PeakPyramid(peaks)
        except (OSError, ValueError, TypeError):
            t._peaks = None
    return t


def _owned_files(folder: Path) -> set[str]:
    """What an earlier save of `folder` wrote (and a new save may reuse or remove).

    A new or empty folder owns nothing. A folder that is not a session and holds anything
    is refused: Riffwright never saves over a musician's own files.
    """
    if not os.path.lexists(folder):
        return set()
    if not folder.is_dir():
        raise SessionError(f"cannot save the session to {folder}: it is a file, not a folder")
    mf = folder / MANIFEST_NAME
    if not mf.is_file():
        if any(e.name not in _IGNORED_IN_EMPTY for e in os.scandir(folder)):
            raise SessionError(f"{folder} is not empty and is not a Riffwright session; save "
                               "into a new or empty folder")
        return set()
    try:
        m = json.loads(mf.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return set()
    if not isinstance(m, dict):
        return set()
    listed = m.get("files")
    if not isinstance(listed, list):  # written before the list existed: its tracks' files
        ids = [t.get("id") for t in m.get("tracks") or [] if isinstance(t, dict)] \
            if isinstance(m.get("tracks"), list) else []
        listed = [f"{d}/{i}.{x}" for i in ids if isinstance(i, str)
                  for d, x in (("audio", "wav"), ("peaks", "npy"))]
    return {f for f in listed if isinstance(f, str) and _OWNED.match(f)}


def _reusable(path: Path, rel: str, owned: set[str]) -> bool:
    """True when an earlier save wrote `path`; an existing file it did not write is never
    overwritten."""
    if rel in owned and path.is_file() and not path.is_symlink():
        return True
    if os.path.lexists(path):
        if rel in owned:  # ours, but a link or folder now: replace the link, not its target
            if path.is_symlink():
                path.unlink()
                return False
        raise SessionError(f"cannot save: {path} exists and was not written by this session")
    return False



def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (tuple, set)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    return str(o)


def _atomic_np_save(path: Path, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        np.save(tmp, arr)


# --------------------------------------------------------------------------------------------
# autosave and crash recovery


def autosave(session: Session, root: str | os.PathLike, slot: str) -> Path:
    """Write the whole session to `root/slot` (Ardour's `.pending`), with a marker file."""
    return autosave_snapshot(session, root, slot)()


def autosave_snapshot(session: Session, root: str | os.PathLike, slot: str
                      ) -> Callable[[], Path]:
    """Take an autosave snapshot now (cheap) and return a function that writes it.

    The returned function touches no live session state (track audio is immutable), so it
    can run in a background thread while the user keeps editing.
    """
    folder = Path(root) / slot
    snap = Session(session.sample_rate)
    for attr in SESSION_ATTRS:
        setattr(snap, attr, copy.deepcopy(getattr(session, attr)))
    snap.tracks = [copy.copy(t) for t in session.tracks]
    for t in snap.tracks:
        t.regions = [copy.copy(r) for r in t.regions]
    info = json.dumps({
        "origin": str(session.path) if session.path else None,
        "time": time.time(),
        "title": session.title,
    })

    def write() -> Path:
        snap.save(folder, set_path=False)
        atomic_write_text(folder / "autosave.json", info)
        return folder

    return write


def recovery_candidates(root: str | os.PathLike) -> list[tuple[Path, dict]]:
    """Autosaves left behind by a session that did not close cleanly, newest first.

    One whose `autosave.json` is unreadable or not an object is skipped (`discard_autosave`
    removes it); it is never offered, so a broken autosave cannot come back on every start.
    """
    root = Path(root)
    out = []
    if root.is_dir():
        for d in root.iterdir():
            info = d / "autosave.json"
            if info.is_file() and (d / MANIFEST_NAME).is_file():
                try:
                    data = json.loads(info.read_text(encoding="utf-8"))
                except (OSError, ValueError, RecursionError):
                    continue
                if isinstance(data, dict):
                    t = data.get("time")
                    data["time"] = float(t) if _is_number(t) else 0.0
                    out.append((d, data))
    return sorted(out, key=lambda x: -x[1]["time"])


def discard_autosave(root: str | os.PathLike, slot: str) -> None:
    shutil.rmtree(Path(root) / slot, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# undo commands


class Command:
    """A named, undoable edit. `merge_key` not None -> merges with the previous same-key command."""

    text = "Edit"
    merge_key: Any = None

    def redo(self, s: Session) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def undo(self, s: Session) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def merge(self, other: Command) -> bool:
        return False


class SetTrackAttr(Command):
    def __init__(self, s: Session, track_id: str, attr: str, value: Any, merge: bool = False):
        self.track_id, self.attr, self.new = track_id, attr, value
        self.old = getattr(s.track(track_id), attr)
        self.text = f"Change {attr.replace('_db', '').replace('_', ' ')} of {s.track(track_id).name}"
        self.merge_key = ("track", track_id, attr) if merge else None

    def redo(self, s):
        s.set_track_attr(self.track_id, self.attr, self.new)

    def undo(self, s):
        s.set_track_attr(self.track_id, self.attr, self.old)

    def merge(self, other):
        self.new = other.new
        return True


class SetSessionAttr(Command):
    def __init__(self, s: Session, attr: str, value: Any, merge: bool = False, text: str = ""):
        self.attr, self.new = attr, copy.deepcopy(value)
        self.old = copy.deepcopy(getattr(s, attr))
        self.text = text or f"Change {attr}"
        self.merge_key = ("session", attr) if merge else None

    def redo(self, s):
        s.set_attr(self.attr, self.new)

    def undo(self, s):
        s.set_attr(self.attr, self.old)

    def merge(self, other):
        self.new = other.new
        return True


class SetRegions(Command):
    def __init__(self, s: Session, track_id: str, regions: list[Region], text: str = "Edit region"):
        self.track_id = track_id
        self.old = [copy.copy(r) for r in s.track(track_id).regions]
        self.new = [copy.copy(r) for r in regions]
        self.text = text

    def redo(self, s):
        s.set_regions(self.track_id, self.new)

    def undo(self, s):
        s.set_regions(self.track_id, self.old)


class AddTracks(Command):
    def __init__(self, tracks: list[Track], text: str = "Add tracks",
                 active_takes: dict[str, str] | None = None):
        self.tracks = list(tracks)
        self.text = text
        self.active_takes = active_takes or {}
        self._old_active: dict[str, str] = {}

    def redo(self, s):
        for t in self.tracks:
            s.insert_track(t)
        if self.active_takes:
            self._old_active = dict(s.active_takes)
            s.set_attr("active_takes", {**s.active_takes, **self.active_takes})

    def undo(self, s):
        for t in reversed(self.tracks):
            s.pop_track(t.id)
        if self.active_takes:
            s.set_attr("active_takes", self._old_active)


class RemoveTrack(Command):
    def __init__(self, s: Session, track_id: str):
        self.track_id = track_id
        self.text = f"Delete {s.track(track_id).name}"
        self.saved: tuple[Track, int] | None = None

    def redo(self, s):
        self.saved = s.pop_track(self.track_id)

    def undo(self, s):
        t, i = self.saved
        s.insert_track(t, i)


class Macro(Command):
    def __init__(self, text: str, commands: list[Command]):
        self.text, self.commands = text, commands

    def redo(self, s):
        for c in self.commands:
            c.redo(s)

    def undo(self, s):
        for c in reversed(self.commands):
            c.undo(s)


class UndoStack:
    """Linear undo history over a Session. Listeners get called after every change."""

    def __init__(self, session: Session):
        self.session = session
        self._done: list[Command] = []
        self._undone: list[Command] = []
        self._merge_open = False
        self._listeners: list[Callable[[], None]] = []

    def subscribe(self, cb: Callable[[], None]) -> None:
        self._listeners.append(cb)

    def _changed(self) -> None:
        for cb in list(self._listeners):
            cb()

    def push(self, cmd: Command) -> None:
        """Apply `cmd` and record it (merging into the previous one while a drag is open)."""
        cmd.redo(self.session)
        top = self._done[-1] if self._done else None
        if (cmd.merge_key is not None and self._merge_open and top is not None
                and top.merge_key == cmd.merge_key and top.merge(cmd)):
            pass
        else:
            self._done.append(cmd)
        self._merge_open = cmd.merge_key is not None
        self._undone.clear()
        self._changed()

    def close_merge(self) -> None:
        """End the current drag: the next push starts a new step."""
        self._merge_open = False

    def undo(self) -> bool:
        if not self._done:
            return False
        cmd = self._done.pop()
        cmd.undo(self.session)
        self._undone.append(cmd)
        self._merge_open = False
        self._changed()
        return True

    def redo(self) -> bool:
        if not self._undone:
            return False
        cmd = self._undone.pop()
        cmd.redo(self.session)
        self._done.append(cmd)
        self._merge_open = False
        self._changed()
        return True

    def can_undo(self) -> bool:
        return bool(self._done)

    def can_redo(self) -> bool:
        return bool(self._undone)

    def undo_text(self) -> str:
        return self._done[-1].text if self._done else ""

    def redo_text(self) -> str:
        return self._undone[-1].text if self._undone else ""

    def __len__(self) -> int:
        return len(self._done)

    def clear(self) -> None:
        self._done.clear()
        self._undone.clear()
        self._merge_open = False
        self._changed()


def safe_name(text: str) -> str:
    """A file-name-safe version of a track or session name."""
    s = re.sub(r"[^A-Za-z0-9#+\-]+", "_", text.strip()).strip("_")
    return s[:60] or "track"


def track_from_audio(name: str, audio: np.ndarray, role: str = "context", **kw) -> Track:
    audio = np.asarray(audio, np.float32)
    if audio.ndim == 1:
        audio = audio[None]
    return Track(name=name, audio=np.ascontiguousarray(audio), role=role, **kw)


__all__ = [
    "AddTracks", "Command", "Macro", "PeakPyramid", "Region", "RemoveTrack", "Session",
    "SessionError", "SessionEvent", "SetRegions", "SetSessionAttr", "SetTrackAttr", "Track", "UndoStack",
    "add_track_into", "autosave", "autosave_snapshot", "compute_peaks", "discard_autosave",
    "recovery_candidates", "safe_name", "track_from_audio",
]
