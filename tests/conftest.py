"""Shared fixtures: offscreen Qt, a tiny model bundle (built once per run), test audio."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """An untrained `tiny` model bundle (fast enough for end-to-end tests)."""
    from engine.bundles.bundle import init_bundle

    return init_bundle("tiny", tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.fixture
def clip_wav(tmp_path):
    """A 4-second stereo 44.1 kHz WAV with a beat at 120 BPM (resampled on import)."""
    import soundfile as sf

    sr = 44100
    t = np.arange(4 * sr) / sr
    x = 0.2 * np.sin(2 * np.pi * 110 * t)
    env = np.exp(-((t % 0.5) * 30))
    x = x + 0.5 * env * np.sin(2 * np.pi * 60 * t)
    audio = np.stack([x, 0.8 * x], axis=1).astype(np.float32)
    p = tmp_path / "groove.wav"
    sf.write(p, audio, sr)
    return p
