"""Note-level analysis for the evaluation: pitch, notes, onsets and beats from audio alone.

The chroma correlation the model was trained against rewards any stem whose energy spreads over
the context's pitch classes, so `riffwright eval` judges what a listener hears instead: the notes
a bass line plays and where a part's onsets fall. Everything here is plain numpy (and soxr for
resampling) so the engine never depends on the external judge it is compared against.

- `yin`: a monophonic pitch tracker (de Cheveigné & Kawahara's YIN) with a voicing decision;
  `bass_notes` segments its track into notes (enough for a bass line, which is monophonic).
- `onsets`: spectral flux of log magnitudes with adaptive-threshold peak picking.
- `estimate_tempo` / `beat_times`: a beat grid when the tempo is unknown.
- `pitch_classes_per_segment`: which pitch classes the context plays in each beat or bar.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PITCH_SR = 8000      # the pitch tracker's rate: a bass's fundamentals lie far below 4 kHz
PITCH_HOP = 80       # 10 ms
PITCH_WIN = 400      # 50 ms integration window (more than the period of the lowest note)
FMIN, FMAX = 35.0, 500.0  # a bass line's range with room either side (B0 is 31 Hz, G4 392 Hz)
YIN_THRESHOLD = 0.2
MIN_NOTE_S = 0.06

ONSET_N_FFT = 2048
ONSET_HOP = 480      # 10 ms at 48 kHz
ONSET_FLOOR = 20.0   # flux (summed log-magnitude rise) below which nothing is scaled up


def _resample(x: np.ndarray, sr: int, to: int) -> np.ndarray:
    if sr == to:
        return np.asarray(x, np.float32)
    import soxr

    return soxr.resample(np.asarray(x, np.float32), sr, to).astype(np.float32)


def _frames(x: np.ndarray, length: int, hop: int) -> np.ndarray:
    """(n, length) frames starting every `hop` samples; the tail is zero-padded."""
    n = max(1, 1 + int(np.ceil((len(x) - 1) / hop)))
    x = np.pad(x, (0, max(0, (n - 1) * hop + length - len(x))))
    idx = np.arange(length)[None, :] + hop * np.arange(n)[:, None]
    return x[idx]


def yin(x: np.ndarray, sr: int, fmin: float = FMIN, fmax: float = FMAX,
        threshold: float = YIN_THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """Fundamental frequency every 10 ms (Hz, NaN where unvoiced) and each frame's aperiodicity.

    YIN: the cumulative-mean-normalised difference function d'(tau) of each frame; the first
    dip below `threshold` (then its local minimum, refined by a parabola) is the period. A frame
    is voiced when such a dip exists and the frame is no more than 40 dB below the loudest one,
    so reverberant tails and silence carry no pitch.
    """
    y = _resample(x, sr, PITCH_SR)
    tau_min = max(2, int(PITCH_SR / fmax))
    tau_max = int(np.ceil(PITCH_SR / fmin))
    frames = _frames(y, PITCH_WIN + tau_max, PITCH_HOP).astype(np.float64)
    w = PITCH_WIN
    # d(tau) = e(0) + e(tau) - 2 r(tau) over the first `w` samples, r by FFT
    nfft = 1 << int(np.ceil(np.log2(2 * (w + tau_max))))
    head = np.fft.rfft(frames[:, :w], nfft)
    full = np.fft.rfft(frames, nfft)
    r = np.fft.irfft(np.conj(head) * full, nfft)[:, :tau_max + 1]
    sq = np.concatenate([np.zeros((len(frames), 1)), np.cumsum(frames ** 2, axis=1)], axis=1)
    e = sq[:, w:w + tau_max + 1] - sq[:, :tau_max + 1]  # energy of x[tau:tau+w]
    d = np.maximum(e[:, :1] + e - 2 * r, 0.0)
    cum = np.cumsum(d[:, 1:], axis=1)
    dn = np.ones_like(d)
    dn[:, 1:] = d[:, 1:] * np.arange(1, tau_max + 1) / np.maximum(cum, 1e-12)
    f0 = np.full(len(frames), np.nan)
    aper = dn[:, tau_min:].min(axis=1)
    level = e[:, 0]
    loud = level >= max(level.max(), 1e-12) * 1e-4
    for i in np.flatnonzero(loud & (aper < threshold)):
        row = dn[i]
        below = np.flatnonzero(row[tau_min:] < threshold)
        t = tau_min + int(below[0])
        while t + 1 <= tau_max and row[t + 1] < row[t]:
            t += 1
        if 0 < t < tau_max:  # parabolic refinement of the minimum
            a, b, c = row[t - 1], row[t], row[t + 1]
            den = a - 2 * b + c
            shift = 0.5 * (a - c) / den if abs(den) > 1e-12 else 0.0
        else:
            shift = 0.0
        f0[i] = PITCH_SR / (t + float(np.clip(shift, -1, 1)))
    return f0, aper


@dataclass(frozen=True)
class NoteEvent:
    start: float  # seconds
    end: float
    pitch: int    # MIDI note number

    @property
    def pitch_class(self) -> int:
        return self.pitch % 12


def bass_notes(x: np.ndarray, sr: int, min_note_s: float = MIN_NOTE_S) -> list[NoteEvent]:
    """The notes of a monophonic line: runs of voiced frames on one semitone.

    The pitch track is smoothed with a 5-frame median (one-frame octave slips and vibrato do not
    break a note) and rounded to semitones; runs shorter than `min_note_s` are dropped.
    """
    f0, _ = yin(x, sr)
    midi = np.full(len(f0), np.nan)
    ok = ~np.isnan(f0)
    midi[ok] = 69 + 12 * np.log2(f0[ok] / 440.0)
    smooth = midi.copy()
    for i in np.flatnonzero(ok):
        win = midi[max(0, i - 2):i + 3]
        smooth[i] = np.median(win[~np.isnan(win)])
    notes: list[NoteEvent] = []
    hop_s = PITCH_HOP / PITCH_SR
    start, cur = None, None
    for i, m in enumerate(np.append(smooth, np.nan)):
        p = None if np.isnan(m) else int(np.round(m))
        if p != cur:
            if cur is not None and (i - start) * hop_s >= min_note_s:
                notes.append(NoteEvent(start * hop_s, i * hop_s, cur))
            start, cur = i, p
    return notes


def onset_strength(x: np.ndarray, sr: int) -> tuple[np.ndarray, float]:
    """Half-wave rectified spectral flux of log magnitudes and its frame rate (frames/s).

    Magnitudes are scaled to the clip's loudest bin before the log, so the envelope does not
    depend on the stem's level; bins more than 60 dB below it count as silence.
    """
    hop = max(1, int(round(ONSET_HOP * sr / 48000)))
    n_fft = max(256, int(round(ONSET_N_FFT * sr / 48000)))
    # centred frames: frame i describes the sound around i * hop
    x = np.pad(np.asarray(x, np.float64), (n_fft // 2, 0))
    frames = _frames(x, n_fft, hop) * np.hanning(n_fft)
    mag = np.abs(np.fft.rfft(frames, axis=1))
    peak = mag.max()
    if peak <= 1e-9:
        return np.zeros(len(mag)), sr / hop
    logm = np.log1p(1000.0 * np.maximum(mag / peak - 1e-3, 0.0))
    flux = np.concatenate([[0.0], np.maximum(0.0, np.diff(logm, axis=0)).sum(axis=1)])
    # a light smoothing: a low note's magnitude wobbles from frame to frame (its period is
    # close to the window), which single-frame spikes of flux would read as onsets
    return np.convolve(flux, [0.25, 0.5, 0.25], mode="same"), sr / hop


def onsets(x: np.ndarray, sr: int, delta: float = 0.1) -> np.ndarray:
    """Onset times (s): peaks of the flux that top their neighbourhood's mean by `delta`.

    The envelope is scaled to its 99th percentile (one huge hit does not hide the rest), or to
    `ONSET_FLOOR` when that is lower (a steady tone has no onsets to scale up); a peak
    must be the maximum within ±30 ms, exceed the mean over -100..+70 ms by `delta`, and follow
    the previous onset by at least 30 ms.
    """
    env, rate = onset_strength(x, sr)
    if not len(env) or env.max() <= 1e-9:
        return np.zeros(0)
    # the floor: a steady tone's frame-to-frame wobble is a flux of about 2, a soft sine note's
    # start about 15 and a real part's onsets hundreds; without it the wobble would be scaled up
    env = np.minimum(env / max(float(np.percentile(env, 99)), ONSET_FLOOR), 1.5)
    w_max, w_pre, w_post = (max(1, int(round(s * rate))) for s in (0.03, 0.10, 0.07))
    pad = np.pad(env, (w_pre, w_pre), constant_values=0.0)
    out, last = [], -np.inf
    cs = np.concatenate([[0.0], np.cumsum(pad)])
    for i in range(1, len(env)):
        lo, hi = max(0, i - w_max), min(len(env), i + w_max + 1)
        if env[i] < env[lo:hi].max() or env[i] <= 0:
            continue
        a, b = i, i + w_pre + w_post + 1  # indices into pad of i - w_pre .. i + w_post
        mean = (cs[min(b, len(pad))] - cs[a]) / (b - a)
        t = i / rate
        if env[i] >= mean + delta and t - last >= 0.03:
            out.append(t)
            last = t
    return np.asarray(out)


def match_count(est: np.ndarray, ref: np.ndarray, tol: float) -> int:
    """Largest number of (est, ref) pairs within `tol` seconds, each onset used once.

    On sorted lists matching the earliest available pair first is optimal for a fixed tolerance.
    """
    est, ref = np.sort(est), np.sort(ref)
    i = j = n = 0
    while i < len(est) and j < len(ref):
        if abs(est[i] - ref[j]) <= tol:
            n, i, j = n + 1, i + 1, j + 1
        elif est[i] < ref[j]:
            i += 1
        else:
            j += 1
    return n


def onset_f(est: np.ndarray, ref: np.ndarray, tol: float = 0.05) -> float:
    """F-measure of `est` onsets against `ref` (NaN when both are empty)."""
    if len(est) + len(ref) == 0:
        return float("nan")
    return 2.0 * match_count(est, ref, tol) / (len(est) + len(ref))


def estimate_tempo(x: np.ndarray, sr: int, lo: float = 60.0, hi: float = 200.0) -> float:
    """The tempo (BPM) whose beat period best explains the flux's autocorrelation.

    Each candidate lag scores its autocorrelation plus half that at twice and at half the lag
    (peaks widened by ±20 ms, as onsets are not frame-exact), weighted by a log-normal
    preference for about 120 BPM, half an octave wide, which settles the tie between a beat and
    two. On the dev set it finds the written tempo for two pieces in three and is an octave off
    for most of the rest; pieces with a dotted feel read 1.5 beats long. 120 when the clip has
    no onsets. Prefer a known tempo (`midi_tempo`, the dataset's) when there is one.
    """
    env, rate = onset_strength(x, sr)
    env = env - env.mean()
    if not np.any(env):
        return 120.0
    n = len(env)
    nfft = 1 << int(np.ceil(np.log2(2 * n)))
    spec = np.fft.rfft(env, nfft)
    ac = np.fft.irfft(spec * np.conj(spec), nfft)[:n] / max(float(np.sum(env ** 2)), 1e-12)
    ac = np.array([ac[max(0, i - 2):i + 3].max() for i in range(n)])
    lags = np.arange(int(rate * 60 / hi), min(n // 2, int(rate * 60 / lo) + 1))
    if len(lags) < 3:
        return 120.0
    score = ac[lags] + 0.5 * ac[np.minimum(2 * lags, n - 1)] + 0.5 * ac[lags // 2]
    bpm = 60.0 * rate / lags
    score = np.maximum(score, 0.0) * np.exp(-0.5 * (np.log2(bpm / 120.0) / 0.5) ** 2)
    return float(bpm[int(np.argmax(score))])


def _varlen(data: bytes, i: int) -> tuple[int, int]:
    v = 0
    while True:
        c = data[i]
        i += 1
        v = (v << 7) | (c & 0x7F)
        if not c & 0x80:
            return v, i


def _bpm(us_per_beat: bytes) -> float | None:
    """A Set Tempo's beats per minute; None for 0 us a beat (malformed)."""
    us = int.from_bytes(us_per_beat, "big")
    return 60e6 / us if us else None


def _track_tempo(data: bytes, j: int, end: int, tempo: float | None,
                 num: int | None) -> tuple[float | None, int | None]:
    """`tempo` and `num`, each filled in from the track's events in data[j:end] (its first
    Set Tempo and Time Signature) where still None."""
    status = 0
    while j < end:
        _, j = _varlen(data, j)
        if data[j] & 0x80:
            status, j = data[j], j + 1
        if status == 0xFF:
            kind = data[j]
            length, j = _varlen(data, j + 1)
            if kind == 0x51 and tempo is None and length == 3:
                tempo = _bpm(data[j:j + 3])
            elif kind == 0x58 and num is None and length >= 1:
                num = int(data[j])
            j += length
            status = 0  # meta and sysex events cancel running status
        elif status in (0xF0, 0xF7):
            length, j = _varlen(data, j)
            j += length
            status = 0
        else:
            j += 1 if 0xC0 <= status < 0xE0 else 2
    return tempo, num


def midi_tempo(data: bytes) -> tuple[float | None, int | None]:
    """The first tempo (BPM) and time-signature numerator in a Standard MIDI File, or None.

    Only what the evaluation needs to lay a beat grid over a case whose MIDI is known: the
    first Set Tempo (FF 51) and Time Signature (FF 58) events of any track. Malformed data
    gives (None, None).
    """
    tempo = num = None
    try:
        if data[:4] != b"MThd":
            return None, None
        i = 8 + int.from_bytes(data[4:8], "big")
        while i + 8 <= len(data) and (tempo is None or num is None):
            end = i + 8 + int.from_bytes(data[i + 4:i + 8], "big")
            if data[i:i + 4] == b"MTrk":
                tempo, num = _track_tempo(data, i + 8, end, tempo, num)
            i = end
    except IndexError:
        return None, None
    return tempo, num


def beat_times(x: np.ndarray, sr: int, tempo: float, seconds: float | None = None) -> np.ndarray:
    """Beats (s) at `tempo`, phase chosen where the clip's onset strength is highest."""
    env, rate = onset_strength(x, sr)
    # widened by ±20 ms (a piece's onsets are not frame-exact) but still peaked at the onset
    env = np.convolve(env, [0.25, 0.5, 1.0, 0.5, 0.25], mode="same")
    seconds = len(x) / sr if seconds is None else seconds
    period = 60.0 / tempo
    best, phase = -1.0, 0.0
    for p in np.arange(0.0, period, 1.0 / rate):
        idx = np.round((np.arange(p, seconds, period)) * rate).astype(int)
        idx = idx[idx < len(env)]
        s = float(env[idx].mean()) if len(idx) else 0.0
        if s > best:
            best, phase = s, p
    return np.arange(phase, seconds, period)


def grid_hits(ons: np.ndarray, beats: np.ndarray, tol: float = 0.07) -> float:
    """Share of onsets within `tol` of a beat or half-beat (NaN without onsets)."""
    if len(ons) == 0 or len(beats) < 2:
        return float("nan")
    grid = _half_beat_grid(beats)
    return float(np.mean([np.abs(grid - t).min() <= tol for t in ons]))


def grid_chance(beats: np.ndarray, seconds: float, tol: float = 0.07) -> float:
    """What onsets at random times would score on `grid_hits`: the share of the clip within
    `tol` of a beat or half-beat."""
    if len(beats) < 2:
        return float("nan")
    t = np.arange(0.0, seconds, 0.001)
    grid = _half_beat_grid(beats)
    near = np.abs(t[:, None] - grid[None, :]).min(axis=1) <= tol
    return float(near.mean())


def _half_beat_grid(beats: np.ndarray) -> np.ndarray:
    period = float(np.median(np.diff(beats)))
    ext = np.concatenate([[beats[0] - period], beats, [beats[-1] + period]])
    return np.sort(np.concatenate([ext, ext[:-1] + np.diff(ext) / 2]))


PCP_N_FFT = 8192  # 5.9 Hz bins at 48 kHz: neighbouring semitones resolve from about 100 Hz
PCP_HOP = 2048


def pitch_class_profile(x: np.ndarray, sr: int, fmin: float = 50.0,
                        fmax: float = 5000.0) -> tuple[np.ndarray, float]:
    """(12, frames) pitch-class magnitude from spectral peaks, and its frame rate (frames/s).

    Only local maxima of each frame's spectrum count, each at its parabola-refined frequency
    and only when within a third of a semitone of a note: a chroma that sums every bin smears
    a note's window leakage over its neighbouring classes and reads a triad as five classes.
    Peaks more than 50 dB below the frame's strongest are ignored.
    """
    n_fft = max(1024, int(round(PCP_N_FFT * sr / 48000)))
    hop = max(1, int(round(PCP_HOP * sr / 48000)))
    frames = _frames(np.pad(np.asarray(x, np.float64), (n_fft // 2, 0)), n_fft, hop)
    mag = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1))
    out = np.zeros((12, len(mag)))
    lo, hi = int(fmin * n_fft / sr), min(mag.shape[1] - 2, int(fmax * n_fft / sr))
    m = mag[:, lo - 1:hi + 2]
    peak = (m[:, 1:-1] > m[:, :-2]) & (m[:, 1:-1] >= m[:, 2:])
    peak &= m[:, 1:-1] >= m.max(axis=1, keepdims=True) * 10 ** (-50 / 20)
    fi, bi = np.nonzero(peak)
    if len(fi):
        la, lb, lc = (np.log(m[fi, bi + k] + 1e-12) for k in (0, 1, 2))
        den = la - 2 * lb + lc
        shift = np.where(np.abs(den) > 1e-12, 0.5 * (la - lc) / np.where(den == 0, 1, den), 0)
        freq = (lo + bi + np.clip(shift, -0.5, 0.5)) * sr / n_fft
        midi = 69 + 12 * np.log2(freq / 440.0)
        near = np.abs(midi - np.round(midi)) <= 1 / 3
        np.add.at(out, (np.round(midi[near]).astype(int) % 12, fi[near]), m[fi, bi + 1][near])
    return out, sr / hop


def pitch_classes_per_segment(chroma: np.ndarray, frame_rate: float, bounds: np.ndarray,
                              rel: float = 0.5) -> list[set[int]]:
    """The context's pitch classes in each segment [bounds[i], bounds[i+1]): the classes whose
    summed chroma is at least `rel` of the segment's strongest (none in a silent segment)."""
    out = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        i, j = int(a * frame_rate), max(int(a * frame_rate) + 1, int(b * frame_rate))
        seg = chroma[:, i:j].sum(axis=1) if i < chroma.shape[1] else np.zeros(12)
        top = seg.max()
        out.append(set(np.flatnonzero(seg >= rel * top).tolist()) if top > 1e-9 else set())
    return out


def note_time_on_classes(notes: list[NoteEvent], bounds: np.ndarray,
                         classes: list[set[int]]) -> tuple[float, float]:
    """(note-time on the segment's pitch classes, note-time in segments that have classes), s.

    Each note is cut at the segment boundaries; note-time in segments where the context is
    silent counts neither way.
    """
    on = total = 0.0
    for n in notes:
        for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            overlap = min(n.end, b) - max(n.start, a)
            if overlap <= 0 or not classes[k]:
                continue
            total += overlap
            if n.pitch_class in classes[k]:
                on += overlap
    return on, total
