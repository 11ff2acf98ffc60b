"""Export stems and the mix for a DAW: 24-bit WAV at the session rate, aligned to zero.

Every file starts at session time zero and all have the same length, so dropping them at
bar 1 of a DAW lines them up exactly (we never rely on BWF/acid chunks for alignment).

An export never replaces a file: a DAW may already reference an earlier export of the same
name, so a taken name gets a number ("Bass_120bpm 2.wav"). A failed write (full or read-only
disk) raises one `RiffwrightError` line and leaves no partial file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from engine.audio import write_audio
from engine.document.session import Session, Track, add_track_into, safe_name
from engine.fsutil import new_file, user_write
from engine.gain import apply_ceiling, guard_full_scale


def tempo_key_suffix(session: Session) -> str:
    """'_120bpm_Am' when tempo and key are known (either part alone when only one is)."""
    parts = []
    if session.tempo:
        t = float(session.tempo)
        parts.append(f"{t:g}bpm" if abs(t - round(t)) > 1e-6 else f"{round(t)}bpm")
    if session.key:
        parts.append(safe_name(session.key.replace(" major", "").replace(" minor", "m")))
    return "".join(f"_{p}" for p in parts)


def stem_filename(session: Session, track: Track) -> str:
    name = safe_name(track.name)
    if track.take is not None and f"take{track.take}" not in name:
        name += f"_take{track.take}"
    return f"{name}{tempo_key_suffix(session)}.wav"


NOTE_NAMES = {"C": 0, "C#": 1, "Db": 1, "D": 2, "D#": 3, "Eb": 3, "E": 4, "F": 5, "F#": 6,
              "Gb": 6, "G": 7, "G#": 8, "Ab": 8, "A": 9, "A#": 10, "Bb": 10, "B": 11}


def key_root_midi(key: str | None) -> int | None:
    """MIDI root note (octave of middle C) of a key name like 'Am', 'F# minor', 'Eb'."""
    if not key:
        return None
    k = key.strip()
    name = k[:2] if k[:2] in NOTE_NAMES else k[:1].upper()
    return 60 + NOTE_NAMES[name] if name in NOTE_NAMES else None


def bext_chunk(description: str, sample_rate: int, time_reference: int = 0) -> bytes:
    """A Broadcast WAV `bext` chunk (version 1) whose time reference is session zero."""
    import struct
    import time as _time

    now = _time.localtime()
    body = b"".join([
        description.encode("ascii", "replace")[:256].ljust(256, b"\0"),
        b"Riffwright".ljust(32, b"\0"),
        b"".ljust(32, b"\0"),
        _time.strftime("%Y-%m-%d", now).encode(),
        _time.strftime("%H:%M:%S", now).encode(),
        struct.pack("<IIH", time_reference & 0xFFFFFFFF, time_reference >> 32, 1),
        b"\0" * 64,  # UMID
        b"\0" * 10,  # loudness fields (not measured)
        b"\0" * 180,  # reserved
        f"A=PCM,F={sample_rate},W=24,T=Riffwright\r\n".encode(),
    ])
    return b"bext" + struct.pack("<I", len(body)) + body + (b"\0" if len(body) % 2 else b"")


def acid_chunk(tempo: float, seconds: float, meter: tuple[int, int],
               root: int | None) -> bytes:
    """An ACID loop chunk: tempo, beats and meter (and the root note when the key is known)."""
    import struct

    beats = int(round(seconds * tempo / 60.0 * (meter[1] / 4.0)))
    flags = 0x02 if root is not None else 0x00
    body = struct.pack("<IHHfIHHf", flags, root if root is not None else 60, 0x8000, 0.0,
                       beats, meter[1], meter[0], float(tempo))
    return b"acid" + struct.pack("<I", len(body)) + body


def _append_chunks(path: Path, chunks: list[bytes]) -> None:
    import struct

    with open(path, "r+b") as f:
        head = f.read(12)
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return
        f.seek(0, 2)
        if f.tell() % 2:
            f.write(b"\0")
        for c in chunks:
            f.write(c)
        size = f.tell() - 8
        f.seek(4)
        f.write(struct.pack("<I", size))


def _write_pcm24(path: Path, audio: np.ndarray, sr: int,
                 session: Session | None = None, description: str = "") -> Path:
    """Atomic 24-bit WAV write, with `bext` (time reference 0) and, when the tempo is known,
    `acid` chunks. Alignment never depends on them: every file starts at session zero."""
    path = Path(path)
    chunks = [bext_chunk(description or path.stem, sr)]
    if session is not None and session.tempo:
        chunks.append(acid_chunk(session.tempo, audio.shape[-1] / sr, tuple(session.meter),
                                 key_root_midi(session.key)))
    with user_write(f"cannot export {path.name}"), new_file(path) as placed:
        # write_audio is itself atomic; the chunks are appended before the file is placed
        write_audio(placed[0], audio, sr, subtype="PCM_24")
        _append_chunks(placed[0], chunks)
    return placed[-1]


def render_track(session: Session, track: Track, frames: int | None = None) -> np.ndarray:
    """One track from session zero to `frames` (default: session length), gain applied,
    keeping its own channel count (mono stays mono)."""
    frames = session.frames if frames is None else frames
    ch = track.audio.shape[0]
    out = np.zeros((min(ch, 2), frames), np.float32)
    if ch == 1:
        tmp = np.zeros((2, frames), np.float32)
        add_track_into(tmp, track)
        out[0] = tmp[0]
    else:
        add_track_into(out, track)
    return out


def mixed_tracks(session: Session, tracks: list[Track], all_takes: bool = False) -> list[Track]:
    """The tracks a mix holds: what the musician hears (mute and solo applied, and of each
    group of takes only the chosen one), or with `all_takes` every take of each group."""
    if not all_takes:
        return [t for t in tracks if session.audible(t)]
    solo = any(t.solo for t in session.tracks)
    return [t for t in tracks if not t.mute and (t.solo or not solo)]


def export_stems(session: Session, out_dir: str | os.PathLike, track_ids: list[str] | None = None,
                 include_mix: bool = True, mix_name: str = "mix",
                 all_takes: bool = False) -> list[Path]:
    """Write the chosen stems (default: all) and the mix of the audible ones: the take you
    hear of each part, or every take with `all_takes`.

    All files cover [0, session length) at the session rate, 24-bit PCM.
    """
    out_dir = Path(out_dir)
    with user_write(f"cannot export to {out_dir}"):
        out_dir.mkdir(parents=True, exist_ok=True)
    frames = session.frames
    tracks = session.tracks if track_ids is None else [session.track(i) for i in track_ids]
    written: list[Path] = []
    used: set[str] = set()
    for t in tracks:
        fn = stem_filename(session, t)
        base = fn[:-4]
        k = 2
        while fn in used:
            fn = f"{base}_{k}.wav"
            k += 1
        used.add(fn)
        audio, _ = guard_full_scale(render_track(session, t, frames), session.sample_rate)
        written.append(_write_pcm24(out_dir / fn, audio, session.sample_rate, session, t.name))
    if include_mix and tracks:
        mix = session.render(mixed_tracks(session, tracks, all_takes), frames=frames,
                             apply_mute=False)
        mix, _ = apply_ceiling(mix, session.sample_rate)
        written.append(_write_pcm24(out_dir / f"{safe_name(mix_name)}{tempo_key_suffix(session)}.wav",
                                    mix, session.sample_rate, session, f"{session.title} mix"))
    return written


def export_track_for_drag(session: Session, track_id: str, export_dir: str | os.PathLike) -> Path:
    """Write one stem into the permanent export folder before a drag starts."""
    t = session.track(track_id)
    out = Path(export_dir)
    with user_write(f"cannot write to {out}"):
        out.mkdir(parents=True, exist_ok=True)
    audio, _ = guard_full_scale(render_track(session, t), session.sample_rate)
    return _write_pcm24(out / stem_filename(session, t), audio, session.sample_rate, session, t.name)
