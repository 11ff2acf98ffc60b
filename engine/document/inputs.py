"""What the model accepts as input audio, checked once for the CLI and the app alike."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.audio import audio_info, load_audio
from engine.errors import AudioError

MAX_INPUT_CHANNELS = 2
MIN_INPUT_RATE = 16000
MIN_INPUT_SECONDS = 0.1


def load_input(path: str | Path, sample_rate: int, role: str = "input") -> np.ndarray:
    """Read a file a user gives as context/reference/source: (channels, T) at `sample_rate`.

    Beyond what `engine.audio.load_audio` refuses (unreadable, empty, NaN/Inf), a model input
    must be mono or stereo, recorded at 16 kHz or more, and at least 0.1 s long.
    """
    name = Path(path).name
    info = audio_info(path)
    if info.channels > MAX_INPUT_CHANNELS:
        raise AudioError(f"{role} {name} has {info.channels} channels; Riffwright takes mono or "
                         "stereo audio (bounce it to stereo first)")
    if info.sample_rate < MIN_INPUT_RATE:
        raise AudioError(f"{role} {name} is sampled at {info.sample_rate} Hz; Riffwright needs "
                         f"at least {MIN_INPUT_RATE} Hz")
    audio, _ = load_audio(path, sample_rate=sample_rate)
    if audio.shape[-1] < MIN_INPUT_SECONDS * sample_rate:
        raise AudioError(f"{role} {name} is too short ({audio.shape[-1] / sample_rate:.3f} s; "
                         f"at least {MIN_INPUT_SECONDS} s)")
    if not np.isfinite(audio).all():
        raise AudioError(f"{role} {name} contains NaN or infinite samples")
    return audio


def mix_down(clips: list[np.ndarray]) -> np.ndarray:
    """Sum clips aligned at zero into one (channels, max length) mix."""
    length = max(c.shape[-1] for c in clips)
    ch = max(c.shape[0] for c in clips)
    out = np.zeros((ch, length), dtype=np.float32)
    for c in clips:
        out[:, : c.shape[-1]] += np.broadcast_to(c, (ch, c.shape[-1]))
    return out
