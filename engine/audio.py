"""Audio I/O: read what musicians drop in, write what the DAW takes back.

Layout everywhere: ``(channels, frames)`` float32 in [-1, 1]. Files are read with
soundfile (libsndfile: WAV, FLAC, AIFF, OGG/Vorbis/Opus, MP3), resampled with soxr, and
written atomically (temporary file beside the target, then rename). Anything that cannot be
read raises :class:`~engine.errors.AudioError` with a one-line message naming the problem:
M4A/AAC, truncated files, empty files, NaN/Inf samples, absurd channel counts or rates.

Long files are read block by block (:func:`iter_blocks`), so hours of audio never sit in
memory at once; :func:`load_audio` takes ``offset``/``duration`` to read a window. Only
regular files are opened (a FIFO or a device would block or never end), and a whole-file
read longer than the `max_input_seconds()` setting is refused from the header, before a
sample is decoded; samples are read in blocks, so a header that lies about the length can
never make Riffwright allocate what the file does not hold.
"""

from __future__ import annotations

import os
import stat
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import AudioError

SUPPORTED_EXTENSIONS = (".wav", ".flac", ".aif", ".aiff", ".aifc", ".ogg", ".oga", ".opus", ".mp3")
"""Extensions `load_audio` reads (all through libsndfile)."""

UNSUPPORTED_CONTAINERS = {
    ".m4a": "M4A/AAC",
    ".aac": "AAC",
    ".mp4": "MP4/AAC",
    ".m4b": "M4B/AAC",
    ".alac": "ALAC",
    ".wma": "WMA",
    ".ape": "Monkey's Audio (APE)",
    ".mid": "MIDI (notes, not audio)",
    ".midi": "MIDI (notes, not audio)",
}

MAX_CHANNELS = 64
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 768_000
WRITE_SUBTYPES = {"PCM_16", "PCM_24", "FLOAT"}
_BLOCK = 1 << 18  # frames per read when loading a whole file

MAX_INPUT_SECONDS = 600.0
"""The longest audio `load_audio` reads at once unless told otherwise (10 minutes of stereo
at 48 kHz is 230 MB as float32). Override with the environment variable
``RIFFWRIGHT_MAX_INPUT_SECONDS``."""
MAX_INPUT_SECONDS_ENV = "RIFFWRIGHT_MAX_INPUT_SECONDS"
_FROM_SETTING = -1.0


def max_input_seconds() -> float:
    """The input length limit in seconds: ``RIFFWRIGHT_MAX_INPUT_SECONDS`` when set to a
    positive number, else `MAX_INPUT_SECONDS`."""
    raw = os.environ.get(MAX_INPUT_SECONDS_ENV, "").strip()
    try:
        value = float(raw) if raw else MAX_INPUT_SECONDS
    except ValueError:
        return MAX_INPUT_SECONDS
    return value if value > 0 and value == value else MAX_INPUT_SECONDS


@dataclass(frozen=True)
class AudioInfo:
    """What a file holds, from its header (no samples decoded)."""

    path: str
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


# ----------------------------------------------------------------------------- sniffing


def _sniff_unsupported(path: Path, head: bytes) -> str | None:
    """Name a container libsndfile cannot read, from the extension or the first bytes."""
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return "M4A/AAC" if head[8:11] != b"qt " else "QuickTime"
    if len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xF6) == 0xF0:
        return "AAC (ADTS)"  # MPEG sync word with layer bits 00: AAC, not MP3
    if head[:4] == b"ADIF":
        return "AAC (ADIF)"
    if head[:4] == b"MThd":
        return "MIDI (notes, not audio)"
    return UNSUPPORTED_CONTAINERS.get(path.suffix.lower())


def _declared_data_bytes(path: Path, head: bytes) -> tuple[int, int] | None:
    """For WAV/AIFF: (declared size of the sample chunk, bytes actually present), else None."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            if head[:4] in (b"RIFF", b"RIFX") and head[8:12] == b"WAVE":
                endian = "<" if head[:4] == b"RIFF" else ">"
                pos = 12
                while pos + 8 <= size:
                    f.seek(pos)
                    cid, clen = struct.unpack(endian + "4sI", f.read(8))
                    if cid == b"data":
                        if clen in (0, 0xFFFFFFFF):  # streaming writers leave it unset
                            return None
                        return clen, size - pos - 8
                    pos += 8 + clen + (clen & 1)
                return None
            if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
                pos = 12
                while pos + 8 <= size:
                    f.seek(pos)
                    cid, clen = struct.unpack(">4sI", f.read(8))
                    if cid == b"SSND":
                        return clen, size - pos - 8
                    pos += 8 + clen + (clen & 1)
                return None
    except (OSError, struct.error):
        return None
    return None


def _open_checked(path: str | Path):
    """Open `path` with soundfile after every check that does not need the samples."""
    import soundfile as sf

    p = Path(path)
    try:
        mode = os.stat(p).st_mode  # never blocks, even on a FIFO
    except FileNotFoundError:
        raise AudioError(f"audio file not found: {p}") from None
    except OSError as e:
        raise AudioError(f"cannot open {p.name[:80]}: {e.strerror or e}") from None
    if stat.S_ISDIR(mode):
        raise AudioError(f"{p} is a folder, not an audio file")
    if not stat.S_ISREG(mode):
        raise AudioError(f"{p.name} is not a regular file (a pipe, device or socket); "
                         "Riffwright reads audio files only")
    try:
        with open(p, "rb") as f:
            head = f.read(64)
    except OSError as e:
        raise AudioError(f"cannot open {p.name}: {e.strerror or e}") from None
    if not head:
        raise AudioError(f"{p.name} is an empty file (0 bytes)")
    kind = _sniff_unsupported(p, head)
    if kind is not None:
        raise AudioError(
            f"{p.name} is {kind}, which Riffwright cannot read; "
            "convert it to WAV, FLAC, AIFF, OGG or MP3"
        )
    declared = _declared_data_bytes(p, head)
    if declared is not None and declared[1] < declared[0]:
        raise AudioError(
            f"{p.name} is truncated: its header promises {declared[0]} bytes of audio, "
            f"the file holds {max(declared[1], 0)}"
        )
    try:
        snd = sf.SoundFile(str(p))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        detail = str(e).split(":")[-1].strip() or "unknown format"
        raise AudioError(
            f"{p.name} is not a readable audio file ({detail}); "
            "Riffwright reads WAV, FLAC, AIFF, OGG and MP3"
        ) from None
    try:
        _check_header(p, snd.samplerate, snd.channels, snd.frames)
    except AudioError:
        snd.close()
        raise
    return snd


def _check_header(p: Path, sr: int, channels: int, frames: int) -> None:
    if channels < 1 or channels > MAX_CHANNELS:
        raise AudioError(
            f"{p.name} claims {channels} channels; Riffwright reads 1 to {MAX_CHANNELS}"
        )
    if sr < MIN_SAMPLE_RATE or sr > MAX_SAMPLE_RATE:
        raise AudioError(
            f"{p.name} claims a sample rate of {sr} Hz; Riffwright reads "
            f"{MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz"
        )
    if frames == 0:
        raise AudioError(f"{p.name} contains no audio (0 samples)")


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _check_finite(block: np.ndarray, name: str) -> None:
    if not np.isfinite(block).all():
        raise AudioError(f"{name} contains NaN or infinite sample values")


# ----------------------------------------------------------------------------- reading


def audio_info(path: str | Path) -> AudioInfo:
    """Header facts about `path` (rate, channels, frames, format); raises `AudioError`."""
    snd = _open_checked(path)
    with snd:
        return AudioInfo(
            str(path), snd.samplerate, snd.channels, snd.frames, snd.format, snd.subtype
        )


def _read_blocks(snd, name: str, start: int, stop: int, block_frames: int) -> Iterator[np.ndarray]:
    """Yield (channels, n) float32 blocks of frames [start, stop); detect truncation."""
    import soundfile as sf

    if start:
        snd.seek(start)
    pos = start
    while pos < stop:
        want = min(block_frames, stop - pos)
        try:
            block = snd.read(want, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as e:
            raise AudioError(f"{name} is damaged or truncated after {pos} samples ({e})") from None
        n = block.shape[0]
        if n == 0:
            break
        _check_finite(block, name)
        pos += n
        yield np.ascontiguousarray(block.T)
        if n < want:
            break
    if pos < stop:
        raise AudioError(
            f"{name} is truncated: its header promises {stop} samples, only {pos} could be read"
        )


def _window(snd, sr: int, offset: float, duration: float | None) -> tuple[int, int]:
    start = int(round(max(offset, 0.0) * sr))
    total = snd.frames
    if start >= total and total > 0:
        raise AudioError(
            f"offset {offset:.2f} s is past the end of the file ({total / sr:.2f} s)"
        )
    stop = total if duration is None else min(total, start + int(round(duration * sr)))
    return start, stop


def load_audio(
    path: str | Path,
    sample_rate: int | None = None,
    offset: float = 0.0,
    duration: float | None = None,
    max_seconds: float | None = _FROM_SETTING,
) -> tuple[np.ndarray, int]:
    """Read `path` as float32 ``(channels, frames)``; resample to `sample_rate` if given.

    `offset`/`duration` (seconds, in the file's own time) read a window without decoding the
    rest. `max_seconds` (default: the `max_input_seconds()` setting; None: no limit) refuses,
    from the header and before decoding anything, a window longer than that in stereo
    (frames x channels against seconds x rate x 2), so a caller that cannot hold hours of
    audio gets a message instead of a memory error; use `iter_blocks` to stream such files. Returns ``(audio, sample_rate)``. Raises `AudioError`
    with a specific message for anything that cannot be read.
    """
    snd = _open_checked(path)
    name = Path(path).name
    with snd:
        sr = snd.samplerate
        start, stop = _window(snd, sr, offset, duration)
        if max_seconds is not None and max_seconds < 0:
            max_seconds = max_input_seconds()
        if max_seconds is not None and (
                (stop - start) > max_seconds * sr
                or (stop - start) * snd.channels > max_seconds * sr * 2):
            many = f" of {snd.channels}-channel audio" if snd.channels > 2 else ""
            raise AudioError(
                f"{name} is {_hms((stop - start) / sr)} long{many}; at most "
                f"{_hms(max_seconds)} can be loaded at once here ({MAX_INPUT_SECONDS_ENV})"
            )
        # blocks, joined at the end: memory follows the samples actually read, never the
        # length a header claims
        blocks = list(_read_blocks(snd, name, start, stop, _BLOCK))
        pos = sum(b.shape[1] for b in blocks)
        out = blocks[0] if len(blocks) == 1 else (
            np.concatenate(blocks, axis=1) if blocks else np.empty((snd.channels, 0), np.float32))
        del blocks
    if pos == 0:
        raise AudioError(f"{name} contains no audio (0 samples)")
    if sample_rate is not None and sample_rate != sr:
        return resample(out, sr, sample_rate), int(sample_rate)
    return out, sr


def iter_blocks(
    path: str | Path, block_frames: int, sample_rate: int | None = None
) -> Iterator[np.ndarray]:
    """Stream `path` as float32 ``(channels, n)`` blocks of about `block_frames` frames.

    With `sample_rate`, blocks are resampled on the fly (soxr's streaming resampler), so the
    concatenation equals the resampled file. Memory stays ~`block_frames` whatever the length.
    """
    import soxr

    if block_frames < 1:
        raise ValueError("block_frames must be positive")
    snd = _open_checked(path)
    name = Path(path).name
    with snd:
        sr = snd.samplerate
        if sample_rate is None or sample_rate == sr:
            yield from _read_blocks(snd, name, 0, snd.frames, block_frames)
            return
        stream = soxr.ResampleStream(sr, sample_rate, snd.channels, dtype="float32")
        blocks = _read_blocks(snd, name, 0, snd.frames, block_frames)
        block = next(blocks, None)
        while block is not None:
            nxt = next(blocks, None)
            y = stream.resample_chunk(np.ascontiguousarray(block.T), last=nxt is None)
            if y.shape[0]:
                yield np.ascontiguousarray(y.T, dtype=np.float32)
            block = nxt


# ----------------------------------------------------------------------------- transforms


def to_mono(audio: np.ndarray) -> np.ndarray:
    """``(channels, frames)`` or ``(frames,)`` -> ``(frames,)`` float32 (channel mean)."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        return audio
    if audio.ndim != 2:
        raise ValueError(f"expected (channels, frames) audio, got shape {audio.shape}")
    return audio.mean(axis=0, dtype=np.float32) if audio.shape[0] > 1 else audio[0].copy()


def resample(audio: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample with soxr (HQ); same layout back: ``(frames,)`` or ``(channels, frames)``."""
    import soxr

    audio = np.asarray(audio, dtype=np.float32)
    if int(sr_in) == int(sr_out):
        return audio.copy()
    if audio.ndim == 1:
        return soxr.resample(audio, sr_in, sr_out).astype(np.float32, copy=False)
    y = soxr.resample(np.ascontiguousarray(audio.T), sr_in, sr_out)
    return np.ascontiguousarray(y.T, dtype=np.float32)


# ----------------------------------------------------------------------------- writing

_FORMATS = {".wav": "WAV", ".flac": "FLAC", ".aif": "AIFF", ".aiff": "AIFF"}


def write_audio(
    path: str | Path, audio: np.ndarray, sample_rate: int, subtype: str = "PCM_24"
) -> Path:
    """Write ``(channels, frames)`` or ``(frames,)`` audio atomically; returns the path.

    `subtype`: "PCM_16", "PCM_24" or "FLOAT". PCM output is clipped to [-1, 1]. The file
    appears complete or not at all: it is written to a temporary file beside the target,
    flushed, then renamed over it.
    """
    import soundfile as sf

    path = Path(path)
    subtype = subtype.upper()
    if subtype not in WRITE_SUBTYPES:
        raise AudioError(f"cannot write subtype {subtype}; use one of {sorted(WRITE_SUBTYPES)}")
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise AudioError(f"cannot write {path.suffix or 'extensionless'} files; use .wav or .flac")
    if fmt == "FLAC" and subtype == "FLOAT":
        raise AudioError("FLAC cannot hold float samples; use PCM_16/PCM_24 or a .wav file")
    a = np.asarray(audio, dtype=np.float32)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[0] > MAX_CHANNELS:
        raise AudioError(f"cannot write audio of shape {a.shape}; expected (channels, frames)")
    if not np.isfinite(a).all():
        raise AudioError(f"refusing to write {path.name}: the audio contains NaN or Inf")
    if subtype != "FLOAT":
        a = np.clip(a, -1.0, 1.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        sf.write(tmp, a.T, int(sample_rate), subtype=subtype, format=fmt)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
