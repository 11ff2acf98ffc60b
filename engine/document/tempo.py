"""The tempo of a clip, estimated from its onsets (spectral flux and a comb over the onsets'
autocorrelation). Signal processing on numpy arrays only: the app calls it on the context
mix when a context is imported or the user asks for an estimate."""

from __future__ import annotations

import numpy as np

ONSET_HOP = 256  # samples at 48 kHz: 5.3 ms frames, fine enough for a beat's phase


def onset_envelope(x: np.ndarray, sr: int, hop: int = ONSET_HOP) -> np.ndarray:
    """Spectral flux: how much louder each frame got than the last, summed over frequency
    (log1p of the magnitudes: compressed, yet an accented beat stays louder than its
    off-beat, which tells a tempo from its double)."""
    n_fft = 4 * hop
    n = 1 + max(0, (x.size - n_fft) // hop)
    if n < 4:
        return np.zeros(0, np.float32)
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n)[:, None]
    frames = x[idx] * np.hanning(n_fft)[None, :].astype(np.float32)
    mag = np.log1p(np.abs(np.fft.rfft(frames, axis=1)))
    flux = np.maximum(0.0, np.diff(mag, axis=0)).sum(axis=1)
    return (flux - flux.mean()).astype(np.float64)


def _comb(ac: np.ndarray, lag: float, beats: int) -> float:
    """Mean autocorrelation at the first `beats` multiples of a (fractional) lag."""
    ks = lag * np.arange(1, beats + 1)
    ks = ks[ks < ac.size - 1]
    if ks.size == 0:
        return -np.inf
    return float(np.interp(ks, np.arange(ac.size), ac).mean())


def estimate_tempo(audio: np.ndarray, sr: int) -> float | None:
    """The tempo (BPM, 60–180) of a clip from its onsets, to a tenth of a BPM.

    A beat period is scored by the onsets' autocorrelation at its first eight multiples (a
    comb): a wrong period drifts off the beats after a few of them, so short excerpts give
    the same answer as whole tracks, which a single autocorrelation peak (rounded to a
    whole frame: 110 BPM read as 112.5) does not. Between a tempo and its double, the
    stronger comb wins (accented beats over off-beats); a mild preference for tempi near
    120 BPM breaks only near-ties."""
    x = audio.mean(axis=0) if audio.ndim == 2 else audio
    if x.size < sr * 2:
        return None
    hop = max(1, int(round(ONSET_HOP * sr / 48000)))
    onset = onset_envelope(np.asarray(x, np.float32), sr, hop)
    if onset.size < 8 or not np.any(onset):
        return None
    fps = sr / hop
    full = np.correlate(onset, onset, mode="full")[onset.size - 1:]
    ac = full / np.arange(onset.size, 0, -1)  # unbiased: long lags overlap less
    ac /= ac[0] if ac[0] > 0 else 1.0
    if 60 * fps / 60 >= ac.size - 1:
        return None

    def score(bpm: float) -> float:
        lag = 60.0 * fps / bpm
        beats = int(min(8, (ac.size - 1) / lag))
        if beats < 2:
            return -np.inf
        prior = np.exp(-0.5 * (np.log2(bpm / 120.0) / 1.5) ** 2)
        return _comb(ac, lag, beats) * (0.9 + 0.1 * prior)

    coarse = np.arange(60.0, 180.01, 0.5)
    scores = np.array([score(b) for b in coarse])
    if not np.isfinite(scores).any() or np.nanmax(scores) <= 0:
        return None
    best = float(coarse[int(np.nanargmax(scores))])
    fine = np.arange(best - 0.6, best + 0.601, 0.02)
    best = float(fine[int(np.argmax([score(b) for b in fine]))])
    return round(best, 1)


def estimate_beat_phase(audio: np.ndarray, sr: int, bpm: float) -> float:
    """Where the beats of a clip at `bpm` fall: the time (seconds, within the first beat) of
    the beat comb that collects the most onset strength, each onset weighted by how far it
    stands above the clip's mean."""
    x = audio.mean(axis=0) if audio.ndim == 2 else audio
    hop = max(1, int(round(ONSET_HOP * sr / 48000)))
    onset = np.maximum(onset_envelope(np.asarray(x, np.float32), sr, hop), 0.0)
    period = 60.0 * sr / hop / bpm  # onset frames per beat
    if onset.size < 2 * period or not np.any(onset):
        return 0.0
    n = int(onset.size // period)
    frames = np.arange(onset.size)
    best, best_score = 0.0, -1.0
    for phase in np.arange(0.0, period, 0.25):
        ks = phase + period * np.arange(n)
        score = float(np.interp(ks, frames, onset).sum())
        if score > best_score:
            best, best_score = phase, score
    # a flux frame peaks when the note reaches the middle of the later window of its pair:
    # about 3.75 hops before the note (measured on clicks)
    return float((best + 3.75) * hop / sr % (60.0 / bpm))
