"""Rendering MIDI parts to audio with the FluidSynth command-line program, and the audio
helpers the builders share (loudness, silence, atomic WAV writing)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from engine.errors import RiffwrightError

from .midi import Note, midi_bytes

SAMPLE_RATE = 48000
SOUNDFONT_CANDIDATES = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/usr/local/share/soundfonts/FluidR3_GM.sf2",
    "/opt/homebrew/share/soundfonts/FluidR3_GM.sf2",
)


# Sources the dev evaluation set is built from (docs/evaluation.md): training must never see
# them, or the evaluation measures memory instead of fit. (label, token): a path is reserved when
# the token appears in its resolved path or file names, or (for a SoundFont) in its header,
# which names the bank even when the file was renamed.
RESERVED_SOURCES = (
    ("the TimGM6mb SoundFont (Debian timgm6mb-soundfont)", "timgm6mb"),
    ("the openttd-openmsx MIDI tunes (Debian openttd-openmsx)", "openmsx"),
)
JUDGE_CASE_FILES = {"role.txt", "context.flac"}
SOUNDFONT_SUFFIXES = (".sf2", ".sf3")  # a case folder of the evaluation judge


def reserved_source(path: str | os.PathLike) -> str | None:
    """What evaluation source `path` is (or holds), or None when training may use it.

    Checks the resolved path (so a symlink such as default-GM.sf2 counts as its target), a
    SoundFont's header, and for a folder every file name under it, including the judge's case
    folders (context.flac + role.txt), which look like multitrack songs to the importer.
    """
    p = Path(path).resolve()
    names = [p.as_posix().lower()]
    if p.is_file() and p.suffix.lower() in SOUNDFONT_SUFFIXES:
        with open(p, "rb") as f:
            names.append(f.read(4096).decode("latin-1").lower())
    elif p.is_dir():
        for d, _, files in os.walk(p):
            if JUDGE_CASE_FILES <= set(files):
                return f"an evaluation case folder ({d} holds context.flac and role.txt)"
            names.extend(f.lower() for f in files)
    for label, token in RESERVED_SOURCES:
        if any(token in n for n in names):
            return label
    return None


def check_training_source(path: str | os.PathLike) -> None:
    """Refuse a SoundFont or data folder that the dev evaluation set is built from."""
    what = reserved_source(path)
    if what:
        raise RiffwrightError(
            f"{path} is reserved for evaluation: it is or holds {what}, which the dev set is "
            "built from; training data must not come from it (docs/evaluation.md)")


def find_soundfont(explicit: str | os.PathLike | None = None) -> Path:
    cands = [explicit] if explicit else [os.environ.get("RIFFWRIGHT_SOUNDFONT"), *SOUNDFONT_CANDIDATES]
    for c in cands:
        if c and Path(c).is_file():
            check_training_source(c)
            return Path(c)
    raise RiffwrightError(
        "no General MIDI SoundFont found: install fluid-soundfont-gm "
        "(apt-get install fluid-soundfont-gm) or set RIFFWRIGHT_SOUNDFONT to an .sf2 file"
    )


def find_fluidsynth() -> str:
    exe = shutil.which("fluidsynth")
    if not exe:
        raise RiffwrightError(
            "the fluidsynth program is not installed (apt-get install fluidsynth, "
            "brew install fluid-synth); it renders the score dataset"
        )
    return exe


def render_notes(
    notes: list[Note],
    program: int,
    n_samples: int,
    *,
    drum: bool = False,
    reverb: int = 40,
    soundfont: Path | None = None,
) -> np.ndarray:
    """Render one part to mono float32 audio of exactly `n_samples` at 48 kHz."""
    import soundfile as sf

    sf2 = find_soundfont(soundfont)
    exe = find_fluidsynth()
    with tempfile.TemporaryDirectory(prefix="rw-fs-") as tmp:
        mid = Path(tmp) / "part.mid"
        wav = Path(tmp) / "part.wav"
        mid.write_bytes(midi_bytes(notes, program, drum=drum, reverb=reverb))
        cmd = [exe, "-ni", "-q", "-C", "0", "-O", "float", "-T", "wav",
               "-r", str(SAMPLE_RATE)]
        if sf2.suffix.lower() == ".sf3":  # decode only the Vorbis samples this part plays
            cmd += ["-o", "synth.dynamic-sample-loading=1"]
        cmd += ["-F", str(wav), str(sf2), str(mid)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0 or not wav.exists():
            msg = (proc.stderr or proc.stdout).strip().splitlines()
            raise RiffwrightError(f"fluidsynth failed: {msg[-1] if msg else proc.returncode}")
        audio, sr = sf.read(str(wav), dtype="float32", always_2d=True)
    if sr != SAMPLE_RATE:
        raise RiffwrightError(f"fluidsynth wrote {sr} Hz instead of {SAMPLE_RATE}")
    mono = audio.mean(axis=1).astype(np.float32)
    out = np.zeros(n_samples, dtype=np.float32)
    k = min(n_samples, len(mono))
    out[:k] = mono[:k]
    return out


def active_rms(x: np.ndarray, block: int = 4800, floor_db: float = -60.0) -> float:
    """RMS over the blocks that are not near-silent (so rests do not lower the level)."""
    n = len(x) // block
    if n == 0:
        return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0
    blocks = np.square(x[: n * block].astype(np.float64)).reshape(n, block).mean(axis=1)
    peak = blocks.max()
    if peak <= 0:
        return 0.0
    keep = blocks[blocks > peak * 10 ** (floor_db / 10)]
    return float(np.sqrt(keep.mean()))


def active_fraction(x: np.ndarray, block: int = 4800, threshold_db: float = -50.0) -> float:
    """Fraction of 100 ms blocks whose RMS is above `threshold_db` dBFS."""
    n = len(x) // block
    if n == 0:
        return 0.0
    rms = np.sqrt(np.square(x[: n * block].astype(np.float64)).reshape(n, block).mean(axis=1))
    return float(np.mean(rms > 10 ** (threshold_db / 20)))


def is_silent(x: np.ndarray, min_active: float = 0.1, threshold_db: float = -50.0) -> bool:
    return active_fraction(x, threshold_db=threshold_db) < min_active


def fade_edges(x: np.ndarray, fade: int = 480) -> np.ndarray:
    """Short fades at both ends so a cut never clicks."""
    fade = min(fade, len(x) // 2)
    if fade > 0:
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        x[:fade] *= ramp
        x[-fade:] *= ramp[::-1]
    return x


def balance_stems(
    stems: list[np.ndarray], levels_db: list[float], mix_peak: float = 0.89
) -> list[np.ndarray]:
    """Bring each stem's active RMS to its level (dBFS), then scale the whole song by one
    factor so that the sum of all stems peaks at most at `mix_peak` and no stem clips."""
    out = []
    for x, db in zip(stems, levels_db, strict=True):
        r = active_rms(x)
        g = (10 ** (db / 20) / r) if r > 0 else 0.0
        out.append((x * g).astype(np.float32))
    if not out:
        return out
    peak_mix = float(np.abs(np.sum(out, axis=0)).max())
    peak_one = max(float(np.abs(x).max()) for x in out)
    worst = max(peak_mix / mix_peak, peak_one / 0.99, 1e-9)
    if worst > 1.0:
        out = [(x / worst).astype(np.float32) for x in out]
    return out


def write_wav(path: Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE,
              subtype: str = "PCM_16") -> None:
    """Write mono audio to `path` (no temp file: callers write into a staging folder)."""
    import soundfile as sf

    sf.write(str(path), np.clip(audio, -1.0, 1.0), sample_rate, subtype=subtype, format="WAV")
