"""Export stems and the mix for a DAW: 24-bit WAV at the session rate, aligned to zero.

Every file starts at session time zero and all have the same length, so dropping them at
bar 1 of a DAW lines them up exactly (we never rely on BWF/acid chunks for alignment).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from engine.session import Session, Track, add_track_into, safe_name


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


def _write_pcm24(path: Path, audio: np.ndarray, sr: int) -> Path:
    """Atomic 24-bit WAV write; uses engine.audio.write_audio when available."""
    try:
        from engine.audio import write_audio
    except ImportError:  # pragma: no cover - until engine.audio lands
        write_audio = None
    if write_audio is not None:
        write_audio(path, audio, sr, subtype="PCM_24")
        return Path(path)
    import soundfile as sf

    tmp = Path(path).with_name(f".{Path(path).name}.tmp.wav")
    sf.write(tmp, np.clip(audio, -1, 1).T, sr, subtype="PCM_24")
    os.replace(tmp, path)
    return Path(path)


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


def export_stems(session: Session, out_dir: str | os.PathLike, track_ids: list[str] | None = None,
                 include_mix: bool = True, mix_name: str = "mix") -> list[Path]:
    """Write the chosen stems (default: all) and the mix of the audible ones.

    All files cover [0, session length) at the session rate, 24-bit PCM.
    """
    out_dir = Path(out_dir)
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
        written.append(_write_pcm24(out_dir / fn, render_track(session, t, frames),
                                    session.sample_rate))
    if include_mix and tracks:
        mix = session.render([t for t in tracks if session.audible(t)], frames=frames)
        peak = float(np.max(np.abs(mix))) if mix.size else 0.0
        if peak > 1.0:
            mix /= peak
        written.append(_write_pcm24(out_dir / f"{safe_name(mix_name)}{tempo_key_suffix(session)}.wav",
                                    mix, session.sample_rate))
    return written


def export_track_for_drag(session: Session, track_id: str, export_dir: str | os.PathLike) -> Path:
    """Write one stem into the permanent export folder before a drag starts."""
    t = session.track(track_id)
    out = Path(export_dir)
    out.mkdir(parents=True, exist_ok=True)
    return _write_pcm24(out / stem_filename(session, t), render_track(session, t),
                        session.sample_rate)
