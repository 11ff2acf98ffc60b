"""Explicit musical features of the context, one column per latent frame.

The diffusion model sees the context as CAE latents, and a small network struggles to read
pitch and rhythm out of them: the round-2 default model had learned to ignore its context
altogether (its denoising error was the same with the true context, none, or another song's).
So models trained with `context_features` also get, per latent frame of the context:

- 12 chroma values: pitch-class power from 55 Hz to 5 kHz over the frame, divided by the
  frame's strongest class (0 where the frame is more than 60 dB below the clip's loudest);
- 4 onset values: half-wave rectified flux of the log spectrum (magnitudes relative to the
  clip's peak) for each quarter of the frame, so the model knows *where* inside an 85 ms frame
  a note starts; divided by the clip's mean flux over its sounding stretches, squashed with
  log1p.

Both are scale-free (a quieter context gives the same features) and computed in numpy from
mono audio at the model's rate, in chunks, so a ten-minute context costs a second or two.

Models trained with `beat_grid` take four more: where each frame falls in the beat and in
the bar, from the tempo the musician set (`BeatGrid`, `grid_features`, below).

Models trained with `bass_chroma` take twelve more after those: the pitch classes of the
context's low register (35-330 Hz), read with a 16384-point window (2.9 Hz bins, fine enough
to tell semitones apart down to ~50 Hz, which the chroma's 4096 points are not), one per
latent frame (`bass_features`, below). The lowest voices of a mix usually sound the chord's
root, the note a bass line most often plays.

The model's context input is laid out as `feature_layout` says: chroma and onsets, then the
grid, then the low register (each later group was added to a trained model at zero weight,
so a warm-started model begins by computing what it did).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CHROMA = 12
SUBFRAMES = 4
FEATURE_DIM = CHROMA + SUBFRAMES
N_FFT = 4096  # chroma window
N_FFT_ONSET = 1024  # onset window
FMIN, FMAX = 55.0, 5000.0
GATE_DB = 60.0
_CHUNK = 1024  # STFT frames per chunk


def _chroma_bins(sr: int, n_fft: int = N_FFT, fmin: float = FMIN,
                 fmax: float = FMAX) -> tuple[np.ndarray, np.ndarray]:
    """The rfft bins of an `n_fft` window from `fmin` to `fmax` Hz, and their pitch classes
    (0 = C)."""
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    ok = np.nonzero((freqs >= fmin) & (freqs <= fmax))[0]
    return ok, ((np.round(12 * np.log2(freqs[ok] / 440.0)) + 9) % 12).astype(np.int64)


def _class_power(spec: np.ndarray, pcs: np.ndarray) -> np.ndarray:
    """(CHROMA, windows) mean power per pitch class of (windows, bins) complex spectra whose
    bins have pitch classes `pcs`."""
    power = np.zeros((CHROMA, spec.shape[0]), np.float32)
    np.add.at(power, pcs, (np.abs(spec) ** 2).T)
    return power / np.maximum(np.bincount(pcs, minlength=CHROMA), 1).astype(np.float32)[:, None]


def _peak_relative(pc: np.ndarray, gate: np.ndarray) -> np.ndarray:
    """(CHROMA, frames) class power divided by each frame's strongest class where `gate`
    (frames,) is true and the frame holds anything; zero elsewhere."""
    peak = pc.max(axis=0)
    return np.where(gate & (peak > 0), pc / np.maximum(peak, 1e-30), 0.0).astype(np.float32)


def spectra(mono: np.ndarray, sample_rate: int, hop: int,
            frames: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The two short-time spectra the features are made of, for windows centred on each
    quarter of each latent frame: (sub-frames, pitch bins) complex with the long window (only
    the bins from FMIN to FMAX) and (sub-frames, bins) complex with the short one.

    Spectra add: the spectra of a mix are the sum of its stems' spectra, which is how the
    trainer makes features for every context mix without another transform.
    """
    x = np.asarray(mono, dtype=np.float32).reshape(-1)
    if frames is None:
        frames = -(-len(x) // hop)
    sub = hop // SUBFRAMES
    n_sub = frames * SUBFRAMES
    pad = N_FFT // 2
    xp = np.pad(x, (pad, pad + max(0, n_sub * sub - len(x))))
    win, win_on = np.hanning(N_FFT).astype(np.float32), np.hanning(N_FFT_ONSET).astype(np.float32)
    ok, _ = _chroma_bins(sample_rate)
    long = np.zeros((n_sub, len(ok)), np.complex64)
    short = np.zeros((n_sub, N_FFT_ONSET // 2 + 1), np.complex64)
    idx, idx_on = np.arange(N_FFT), np.arange(N_FFT_ONSET) + (N_FFT - N_FFT_ONSET) // 2
    for c0 in range(0, n_sub, _CHUNK):
        c1 = min(n_sub, c0 + _CHUNK)
        starts = np.arange(c0, c1)[:, None] * sub + sub // 2  # window starts in xp
        long[c0:c1] = np.fft.rfft(xp[starts + idx] * win, axis=1)[:, ok]
        short[c0:c1] = np.fft.rfft(xp[starts + idx_on] * win_on, axis=1)
    return long, short


def features_from_spectra(long: np.ndarray, short: np.ndarray, sample_rate: int) -> np.ndarray:
    """(FEATURE_DIM, frames) float32 features from `spectra`' output."""
    n_sub = long.shape[0]
    frames = n_sub // SUBFRAMES
    out = np.zeros((FEATURE_DIM, frames), np.float32)
    if frames == 0:
        return out
    _, pcs = _chroma_bins(sample_rate)
    # chroma per latent frame: the frame's power per class, relative to its peak class (power,
    # not amplitude: at 4096 points neighbouring semitones share bins below ~300 Hz, and
    # squaring keeps the leak small beside the note)
    pc = _class_power(long, pcs).reshape(CHROMA, frames, SUBFRAMES).sum(axis=2)
    peak = pc.max(axis=0)
    loud = peak.max()
    if loud <= 0:
        return out
    gate = peak >= loud * 10 ** (-GATE_DB / 10)  # frames within GATE_DB of the loudest
    out[:CHROMA] = _peak_relative(pc, gate)
    # onsets per quarter frame, relative to the clip's typical flux where it sounds
    mag = np.abs(short)
    logm = np.log1p(1000.0 * mag / max(float(mag.max()), 1e-12))  # relative to the clip's peak
    flux = np.concatenate([[0.0], np.maximum(np.diff(logm, axis=0), 0).sum(axis=1)])
    sounding = np.repeat(gate, SUBFRAMES)
    scale = flux[sounding].mean() if sounding.any() else 0.0
    if scale > 0:
        f = np.log1p(np.where(sounding, flux, 0.0) / scale)
        out[CHROMA:] = f.reshape(frames, SUBFRAMES).T
    return out


def context_features(mono: np.ndarray, sample_rate: int, hop: int,
                     frames: int | None = None) -> np.ndarray:
    """(FEATURE_DIM, frames) float32 features of `mono` for latent frames of `hop` samples."""
    x = np.asarray(mono, dtype=np.float32).reshape(-1)
    if frames is None:
        frames = -(-len(x) // hop)
    if frames == 0 or len(x) == 0:
        return np.zeros((FEATURE_DIM, frames), np.float32)
    return features_from_spectra(*spectra(x, sample_rate, hop, frames), sample_rate)


# ----------------------------------------------------------------------------- the beat grid
#
# Models trained with `beat_grid` also take, per latent frame, where the frame's centre falls
# in the beat and in the bar: sin and cos of 2π × the beat phase and of 2π × the bar phase
# (quarter-note beats, as a DAW counts tempo). The musician's session tempo places them; a
# model that hears a context but no tempo gets zeros, which no phase can give (sin and cos
# are never both 0), so "no grid" is its own input.

GRID_DIM = 4


@dataclass(frozen=True)
class BeatGrid:
    """A tempo map for one request: `bpm` quarter notes per minute, bars of `bar_beats`
    quarter notes, and a bar line at `downbeat` seconds from the start of the request's
    audio (any bar line; negative when the audio starts inside a bar)."""

    bpm: float
    bar_beats: float = 4.0
    downbeat: float = 0.0

    def __post_init__(self):
        for name in ("bpm", "bar_beats", "downbeat"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"beat grid {name} must be a finite number, not {v!r}")
        if not 20.0 <= self.bpm <= 400.0:
            raise ValueError(f"beat grid tempo {self.bpm:g} BPM is outside 20–400")
        if not 0.5 <= self.bar_beats <= 32.0:
            raise ValueError(f"a bar of {self.bar_beats:g} beats is outside 0.5–32")

    @classmethod
    def from_meter(cls, bpm: float, meter: str = "4/4", downbeat: float = 0.0) -> BeatGrid:
        """A grid from a time signature such as "6/8" (a bar of num × 4/den quarters)."""
        try:
            num, den = (int(p) for p in str(meter).split("/"))
        except ValueError:
            raise ValueError(f"meter {meter!r} is not like 4/4") from None
        if num <= 0 or den not in (1, 2, 4, 8, 16, 32):
            raise ValueError(f"meter {meter!r} is not like 4/4")
        return cls(float(bpm), num * 4.0 / den, float(downbeat))

    def shifted(self, seconds: float) -> BeatGrid:
        """The same grid for audio that starts `seconds` later."""
        return BeatGrid(self.bpm, self.bar_beats, self.downbeat - seconds)


def grid_features(grid: BeatGrid | None, frames: int, hop: int, sample_rate: int,
                  first_frame: int = 0) -> np.ndarray:
    """(GRID_DIM, frames) float32 beat-grid features of latent frames `first_frame`… (zeros
    without a grid)."""
    out = np.zeros((GRID_DIM, frames), np.float32)
    if grid is None or frames <= 0:
        return out
    t = (np.arange(first_frame, first_frame + frames) + 0.5) * hop / sample_rate - grid.downbeat
    beats = t * grid.bpm / 60.0
    for k, phase in enumerate((beats % 1.0, (beats / grid.bar_beats) % 1.0)):
        out[2 * k] = np.sin(2 * np.pi * phase)
        out[2 * k + 1] = np.cos(2 * np.pi * phase)
    return out


# ----------------------------------------------------------------------------- the low register

BASS_DIM = 12
N_FFT_BASS = 16384  # 341 ms at 48 kHz: 2.9 Hz bins, a semitone apart from ~50 Hz up
BASS_FMIN, BASS_FMAX = 35.0, 330.0


def bass_spectra(mono: np.ndarray, sample_rate: int, hop: int,
                 frames: int | None = None) -> np.ndarray:
    """(frames, bins) complex64 spectra of `N_FFT_BASS`-point windows centred on each latent
    frame, bins from BASS_FMIN to FMAX (the low register, and above it the level the low
    register is gated against). They add as `spectra`' do (a mix's are its stems' sum)."""
    x = np.asarray(mono, dtype=np.float32).reshape(-1)
    if frames is None:
        frames = -(-len(x) // hop)
    ok, _ = _chroma_bins(sample_rate, N_FFT_BASS, BASS_FMIN, FMAX)
    out = np.zeros((frames, len(ok)), np.complex64)
    if frames == 0:
        return out
    pad = N_FFT_BASS // 2
    xp = np.pad(x, (pad, pad + max(0, frames * hop - len(x))))
    win, idx = np.hanning(N_FFT_BASS).astype(np.float32), np.arange(N_FFT_BASS)
    step = max(1, _CHUNK // 8)  # 16384-point windows: fewer per chunk
    for c0 in range(0, frames, step):
        c1 = min(frames, c0 + step)
        starts = np.arange(c0, c1)[:, None] * hop + hop // 2  # centred on the frame's centre
        out[c0:c1] = np.fft.rfft(xp[starts + idx] * win, axis=1)[:, ok]
    return out


def bass_from_spectra(spec: np.ndarray, sample_rate: int) -> np.ndarray:
    """(BASS_DIM, frames) float32 low-register chroma from `bass_spectra`' output.

    Each spectral peak from BASS_FMIN to BASS_FMAX gives its power (its bin and the two
    beside it) to the pitch class of its frequency, refined by parabolic interpolation of the
    log power: a semitone at 55 Hz is about one bin, so summing bins by class, as the chroma
    does, would hand half of a note to its neighbours. Relative to the frame's strongest
    class; zero where the low register holds less than 10^(-GATE_DB/10) of the power the
    clip's loudest frame has from BASS_FMIN to FMAX (so a context with nothing down there
    gives zeros, not its window's leakage scaled up)."""
    ok, _ = _chroma_bins(sample_rate, N_FFT_BASS, BASS_FMIN, FMAX)
    freqs = np.fft.rfftfreq(N_FFT_BASS, 1.0 / sample_rate)[ok]
    n_low = int(np.count_nonzero(freqs <= BASS_FMAX))
    frames = spec.shape[0]
    out = np.zeros((BASS_DIM, frames), np.float32)
    power = (np.abs(spec) ** 2).astype(np.float64)
    full = power.sum(axis=1).max() if frames else 0.0
    if full <= 0 or n_low < 3:
        return out
    p = power[:, :n_low + 1]  # one bin more, so a peak at BASS_FMAX has a right neighbour
    a, b, c = p[:, :-2], p[:, 1:-1], p[:, 2:]
    frame, k = np.nonzero((b > a) & (b >= c) & (b > 0))
    la, lb, lc = (np.log(np.maximum(v[frame, k], 1e-300)) for v in (a, b, c))
    den = la - 2 * lb + lc
    shift = np.where(den < 0, 0.5 * (la - lc) / np.where(den < 0, den, -1.0), 0.0)
    hz = freqs[k + 1] + np.clip(shift, -0.5, 0.5) * sample_rate / N_FFT_BASS
    pcs = ((np.round(12 * np.log2(hz / 440.0)) + 9) % 12).astype(np.int64)
    np.add.at(out, (pcs, frame), (a + b + c)[frame, k])
    return _peak_relative(out, power[:, :n_low].sum(axis=1) >= full * 10 ** (-GATE_DB / 10))


def bass_features(mono: np.ndarray, sample_rate: int, hop: int,
                  frames: int | None = None) -> np.ndarray:
    """(BASS_DIM, frames) float32 low-register chroma of `mono` for latent frames of `hop`."""
    return bass_from_spectra(bass_spectra(mono, sample_rate, hop, frames), sample_rate)


def feature_layout(feature_dim: int) -> tuple[bool, bool]:
    """(beat grid, low register): which groups a model with `feature_dim` feature channels
    takes after the chroma and onsets. Raises ValueError for a width no layout has."""
    layouts = {0: (False, False), FEATURE_DIM: (False, False),
               FEATURE_DIM + GRID_DIM: (True, False),
               FEATURE_DIM + GRID_DIM + BASS_DIM: (True, True)}
    if feature_dim not in layouts:
        raise ValueError(f"no context-feature layout has {feature_dim} channels "
                         f"(known: {', '.join(map(str, sorted(layouts)))})")
    return layouts[feature_dim]
