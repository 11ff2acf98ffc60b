"""Gain staging: one policy for every take, mix and export, so nothing Riffwright writes clips.

A mixing engineer expects files from a generator to leave headroom and never to be clipped
flat. The policy:

- **Takes** (and the generated part of an inpaint, continuation or transition) are scaled by
  one gain so that their true peak stays at or below `CEILING_DBTP` (-1 dBTP). Quiet takes are
  never boosted: a take's level against its context is part of what the model made. The gain
  and the true peak are recorded in the take's provenance.
- **The mix export** gets the same ceiling (one gain over the whole mix); the stems in it are
  not changed.
- **Stem exports** keep the session's levels (so they line up in the DAW as they sounded),
  unless a track's gain would push it to full scale; then that file alone gets the ceiling.

True peak is read on a 4x oversampled signal (ITU-R BS.1770's recommendation), so peaks
between samples, which a DAC or a lossy encoder would reconstruct, count too.
"""

from __future__ import annotations

import math

import numpy as np

CEILING_DBTP = -1.0
OVERSAMPLE = 4


def db(x: float) -> float:
    return 20.0 * math.log10(max(float(x), 1e-12))


def true_peak(audio: np.ndarray, sample_rate: int) -> float:
    """Linear true peak of (channels, T) or (T,) audio, 4x oversampled."""
    import soxr

    a = np.atleast_2d(np.asarray(audio, dtype=np.float32))
    if a.size == 0:
        return 0.0
    up = soxr.resample(a.T, sample_rate, sample_rate * OVERSAMPLE, quality="HQ")
    return float(max(np.max(np.abs(a)), np.max(np.abs(up)) if up.size else 0.0))


def ceiling_gain(audio: np.ndarray, sample_rate: int,
                 ceiling_dbtp: float = CEILING_DBTP) -> tuple[float, dict]:
    """(the gain, linear and <= 1, that brings the true peak down to the ceiling — 1 if it is
    under; {"gain_db", "true_peak_dbtp", "ceiling_dbtp"} of the scaled result). The true
    peak is measured once: scaling by g scales it by g."""
    peak = true_peak(audio, sample_rate)
    limit = 10.0 ** (ceiling_dbtp / 20.0)
    g = 1.0 if peak <= limit else limit / peak
    return g, {"gain_db": round(db(g), 3), "true_peak_dbtp": round(db(peak * g), 3),
               "ceiling_dbtp": ceiling_dbtp}


def apply_ceiling(audio: np.ndarray, sample_rate: int,
                  ceiling_dbtp: float = CEILING_DBTP) -> tuple[np.ndarray, dict]:
    """(audio scaled under the ceiling, {"gain_db", "true_peak_dbtp", "ceiling_dbtp"})."""
    g, info = ceiling_gain(audio, sample_rate, ceiling_dbtp)
    return np.asarray(audio, dtype=np.float32) * np.float32(g), info


def guard_full_scale(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, float]:
    """Stems keep their level unless a sample would reach full scale: then the ceiling.
    Returns (audio, gain in dB applied)."""
    a = np.asarray(audio, dtype=np.float32)
    if a.size == 0 or float(np.max(np.abs(a))) < 1.0:
        return a, 0.0
    out, info = apply_ceiling(a, sample_rate)
    return out, info["gain_db"]
