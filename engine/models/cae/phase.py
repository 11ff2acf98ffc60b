"""From the CAE decoder's spectra to clean audio: de-texture the magnitudes, rebuild the phase.

Why (measured in docs/cae.md): the decoder's frames carry two frame-periodic artefacts.
1. Its phases are locked to the frame grid: each bin gets a phase that is fixed relative to
   the frame's start. Overlap-added, such frames sum coherently into narrow spectral lines at
   multiples of sr / n_fft (46.875 Hz at 48 kHz, n_fft 1024; strongest at 93.75 and 187.5 Hz,
   the frame rate's harmonics): a buzz under every decoded sound, whatever the key.
2. Its magnitudes carry a texture with a period of two and four frames, the checkerboard of the
   U-Net's stride-2 transposed convolutions.
With random phases the decoded magnitudes alone give no lines; with the decoder's phases, or
with any phase that continues a partial, the texture makes them again. So the decoder's
magnitudes are smoothed over time by a short kernel whose response is zero at periods of two
and three frames and small at four (power domain, 1-2-2-1 over 21 ms: attacks keep their
frame), and their phases are rebuilt:

- every spectral peak of a frame (a local maximum within `floor_db` of the frame's loudest
  bin) gets an exact frequency by parabolic interpolation of the log magnitude, and its
  phase advances from the previous frame's phase at that bin by 2 pi f hop (a phase
  vocoder); the bins of its region (up to the midpoint to the next peak) share that phase
  with the window's alternating sign, so a partial stays one coherent sinusoid ("identity
  phase locking", Laroche & Dolson 1999);
- a peak above `tonal_bins` (22 bins, ~1 kHz) that is not sharp (less than `tonal_db` above
  the bins 3 away on both sides) is noise, not a partial: its region gets random phases, since
  locking broad energy would make steady tones at bin centres, the very lines this module
  removes; below that every peak is a partial (the decoder smears a bass's partials, and
  random phases there leave a bass no pitch a transcriber can follow);
- each bin's interpolated frequency is averaged over `freq_smooth` (5) frames: the smeared
  peaks' frequencies jitter by up to half a bin (23 Hz, more than a semitone at 110 Hz) from
  frame to frame;
- a bin whose magnitude jumps by more than `onset_db` over the previous frame starts a
  transient: its phase is reset as if an impulse sat at the frame's centre, so the attack's
  bins add up in time instead of smearing across the frame.

In the frame-relative convention of `torch.stft` (no centring), a sinusoid of frequency f
(cycles per sample) shows the phase ``psi - pi k`` in bin k of its main lobe, where
``psi = 2 pi f (m hop + n_fft / 2) + theta`` is the same for every bin of the lobe. The code
tracks `psi` per bin and writes out ``psi - pi k``.

Deterministic for a given seed. Everything but the phase recurrence is computed for all
frames at once; the recurrence is one gather per frame.
"""

from __future__ import annotations

import math

import numpy as np

TWO_PI = 2.0 * math.pi
# power-domain smoothing over frames: zeros at periods 2 and 3, 0.24 at period 4
TEXTURE_KERNEL = np.array([1.0, 2.0, 2.0, 1.0]) / 6.0


def smooth_texture(mag: np.ndarray) -> np.ndarray:
    """(..., frames) magnitudes -> the same, power-smoothed over frames by TEXTURE_KERNEL."""
    p = np.asarray(mag, dtype=np.float32) ** 2
    n = len(TEXTURE_KERNEL)
    left = (n - 1) // 2
    pad = [(0, 0)] * (p.ndim - 1) + [(left, n - 1 - left)]
    q = np.pad(p, pad, mode="edge")
    frames = p.shape[-1]
    out = sum(float(c) * q[..., i : i + frames] for i, c in enumerate(TEXTURE_KERNEL))
    return np.sqrt(out, dtype=np.float32)


class PhaseBuilder:
    """Magnitudes -> complex frames with rebuilt phases, one block of frames per call.

    Carries the last frame's phases and magnitudes from block to block, so a long decode can
    be processed in pieces; the random phases of a block come from (seed, block number), so the
    result depends on the block size but not on anything else.
    """

    def __init__(self, n_fft: int, hop: int, seed: int = 0, floor_db: float = -60.0,
                 onset_db: float = 6.0, tonal_db: float = 6.0, tonal_bins: int = 22,
                 freq_smooth: int = 5):
        self.n_fft, self.hop, self.seed = n_fft, hop, int(seed)
        self.tonal_bins = int(tonal_bins)
        self.freq_smooth = int(freq_smooth)
        self.floor_db, self.onset_db, self.tonal_db = floor_db, onset_db, tonal_db
        self.cur: np.ndarray | None = None
        self.prev: np.ndarray | None = None
        self.block = 0

    def __call__(self, mag: np.ndarray) -> np.ndarray:
        """(bins, frames) magnitudes -> (bins, frames) complex64."""
        mag = np.asarray(mag, dtype=np.float32)
        bins, frames = mag.shape
        out = np.zeros((bins, frames), dtype=np.complex64)
        rng = np.random.default_rng([self.seed, self.block])
        self.block += 1
        if frames == 0 or bins < 3:
            return out
        if self.cur is None:
            self.cur, self.prev = np.zeros(bins), np.zeros(bins, np.float32)
        top = mag.max(axis=0)  # (frames,)
        live = top > 0.0
        la = np.log(mag + np.maximum(top, 1e-30)[None] * 1e-7)
        mid = mag[1:-1]
        is_peak = (mid >= mag[:-2]) & (mid > mag[2:]) & (mid > (top * 10.0 ** (self.floor_db / 20.0))[None])
        k = np.arange(bins)
        noise = rng.uniform(0.0, TWO_PI, size=(bins, frames))
        # every peak's exact frequency: parabolic interpolation of the log magnitude
        peak = np.zeros((bins, frames), dtype=bool)
        peak[1:-1] = is_peak
        none = ~peak.any(axis=0)
        peak[np.argmax(mag, axis=0)[none], np.flatnonzero(none)] = True
        l0 = np.concatenate([la[:1], la[:-1]])
        l2 = np.concatenate([la[1:], la[-1:]])
        den = l0 - 2.0 * la + l2
        delta = np.clip(np.where(den < -1e-12, 0.5 * (l0 - l2) / np.minimum(den, -1e-12), 0.0),
                        -0.5, 0.5)
        if self.freq_smooth > 1:  # a steadier frequency per bin: the mean over a few frames
            n = self.freq_smooth
            pad = np.pad(delta, ((0, 0), (n // 2, n - 1 - n // 2)), mode="edge")
            delta = sum(pad[:, i : i + frames] for i in range(n)) / n
        # each bin belongs to its nearest peak (the lower one on a tie)
        kk = np.broadcast_to(k[:, None], (bins, frames))
        below = np.maximum.accumulate(np.where(peak, kk, -1), axis=0)
        above = np.minimum.accumulate(np.where(peak, kk, bins * 4)[::-1], axis=0)[::-1]
        use_above = (below < 0) | ((above < bins) & (above - kk < kk - below))
        owner = np.where(use_above, above, below)
        flat = (owner * frames + np.arange(frames)[None]).ravel()  # one gather index for all
        freq = np.take((k[:, None] + delta).ravel(), flat).reshape(bins, frames)
        advance = (TWO_PI * self.hop / self.n_fft) * freq
        # a peak that is not sharp is noise: its region gets random phases
        ext = np.concatenate([np.repeat(la[:1], 3, axis=0), la, np.repeat(la[-1:], 3, axis=0)])
        sharpness = la - 0.5 * (ext[:-6] + ext[6:])
        reset = np.take(sharpness.ravel(), flat).reshape(bins, frames) <= self.tonal_db / 20.0 * math.log(10.0)
        reset &= owner >= self.tonal_bins  # peaks in the lowest bins are always partials
        # transients: bins that jump start afresh, as an impulse at the frame's centre (psi = 0)
        prev = np.concatenate([self.prev[:, None], mag[:, :-1]], axis=1)
        jump = mag > 10.0 ** (self.onset_db / 20.0) * (prev + top[None] * 1e-4)
        start = np.where(reset, noise, 0.0)
        reset |= jump
        # the recurrence, frame-major so each step reads contiguous rows
        reset_t, start_t = np.ascontiguousarray(reset.T), np.ascontiguousarray(start.T)
        owner_t, advance_t = np.ascontiguousarray(owner.T), np.ascontiguousarray(advance.T)
        psi = np.zeros((frames, bins))
        cur = self.cur
        for m in np.flatnonzero(live):
            cur = np.where(reset_t[m], start_t[m], cur[owner_t[m]] + advance_t[m])
            psi[m] = cur
        self.cur, self.prev = cur, mag[:, -1].copy()
        import torch  # vectorised, multi-threaded sin/cos for the last step

        phase = torch.from_numpy(psi).T.remainder(TWO_PI) - torch.from_numpy(np.pi * k)[:, None]
        out[:] = torch.polar(torch.from_numpy(mag), phase.float()).numpy()
        return out


def rebuild_phase(mag: np.ndarray, n_fft: int, hop: int, seed: int = 0) -> np.ndarray:
    """(bins, frames) magnitudes -> (bins, frames) complex64 frames with rebuilt phases."""
    return PhaseBuilder(n_fft, hop, seed)(mag)


# ---------------------------------------------------------------- the low band: network phases

# Below about 1 kHz the decoder's own phases carry the pitch: a bass's partials lie one or two
# bins apart at n_fft 1024, unresolved in any single frame's magnitudes, so no rebuild from
# magnitudes can place them (measured: the rebuild left a bass's transcribed pitch coverage at
# 0.37 where the network's phases keep 0.73, originals 0.86). There the network's spectrum is
# kept and only its frame-locked part removed (`decohere`); above, the rebuilt phases are used.
LOW_BAND_BINS = 22  # bins 0..21, up to ~1 kHz, come from the network's phases
CROSSOVER_BINS = 8  # a linear crossfade over this many bins around LOW_BAND_BINS
DECOHERE_FRAMES = 128  # the window over which a bin's locked phase is estimated (0.68 s)
LOCK_RATES = 4  # phase advances per frame that overlap-add into lines: 0, pi/2, pi, 3pi/2


def low_band_weight(bins: int) -> np.ndarray:
    """(bins,) weight of the network's spectrum: 1 below the crossover, 0 above, linear between."""
    k = np.arange(bins, dtype=np.float64)
    return np.clip((LOW_BAND_BINS + CROSSOVER_BINS / 2 - k) / CROSSOVER_BINS, 0.0, 1.0)


def _moving_mean(a, width: int):
    """Centred moving mean over the last axis of a real (..., n) float64 tensor, edges
    replicated; by a running sum, so its cost does not grow with `width`."""
    import torch

    left, right = width // 2, width - 1 - width // 2
    padded = torch.cat([a[..., :1].expand(*a.shape[:-1], left), a,
                        a[..., -1:].expand(*a.shape[:-1], right)], dim=-1)
    c = torch.nn.functional.pad(padded.cumsum(-1), (1, 0))
    return (c[..., width:] - c[..., :-width]) / width


def decohere(X, width: int = DECOHERE_FRAMES, rates: int = LOCK_RATES, soft: float = 1.0):
    """(bins, frames) complex STFT -> the same without its frame-locked phase component.

    A bin whose phase advances by a multiple of pi/2 per hop (hop = n_fft / 4) overlap-adds
    into a line at a multiple of 46.875 Hz: the decoder's buzz. For each such advance r, the
    frames are counter-rotated by r, and the magnitude-weighted mean unit phasor R over
    `width` frames measures how locked the bin is. What is locked, |X| R, is removed from every
    frame in proportion to that frame's own magnitude, so a quiet frame before an onset gets
    nothing injected. Unlocked material leaves |R|^2 near its chance level
    mean(|X|^2) / (width mean(|X|)^2); a soft gain removes only the excess over `soft` times
    that, so a partial keeps its energy unless it sits within ~1/width of a line frequency.
    """
    import torch

    X = torch.as_tensor(X)
    n = X.shape[-1]
    if n == 0:
        return X.clone()
    m = torch.arange(n, dtype=torch.float64)
    out = X.to(torch.complex128)
    for j in range(rates):
        rot = torch.polar(torch.ones(n, dtype=torch.float64), -TWO_PI * j / rates * m)
        A = out.abs()
        Y = out * rot
        EA = _moving_mean(A, width)
        EA2 = _moving_mean(A * A, width)
        R = torch.complex(_moving_mean(Y.real, width), _moving_mean(Y.imag, width)) / EA.clamp_min(1e-30)
        chance = EA2 / (width * EA * EA).clamp_min(1e-30)
        gain = (1.0 - soft * chance / (R.abs() ** 2).clamp_min(1e-30)).clamp_min(0.0)
        out = out - A * R * gain / rot
    return out.to(X.dtype)


LEVEL_FRAMES = 16  # the window (85 ms) over which the low band's level is matched
MAX_LEVEL_GAIN = 2.0  # at most +-6 dB


def match_level(X, target, weight, width: int = LEVEL_FRAMES, max_gain: float = MAX_LEVEL_GAIN):
    """(L, frames) complex X scaled, frame by frame, to the energy of (L, frames) magnitudes
    `target`, both weighted per bin by `weight` (L,) and averaged over `width` frames.

    The network's phases are not consistent from frame to frame: overlap-added, its low band
    comes out ~1-2 dB under the level its own magnitudes describe, and `decohere` removes the
    locked share on top (held-out round trips: the low band 2-3 dB under the originals'). The
    decoded magnitudes carry the level; the phases only where its partials lie.
    """
    import torch

    X = torch.as_tensor(X)
    w2 = torch.as_tensor(weight, dtype=torch.float64).reshape(-1, 1) ** 2
    have = _moving_mean((w2 * X.abs().double() ** 2).sum(0), width)
    want = _moving_mean((w2 * torch.as_tensor(target).double() ** 2).sum(0), width)
    gain = torch.sqrt(want / have.clamp_min(1e-30)).clamp(1.0 / max_gain, max_gain)
    gain = torch.where(have > 0, gain, torch.ones_like(gain))
    return X * gain.to(X.real.dtype)
