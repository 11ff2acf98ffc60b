"""Per-stem mixing randomisation (`--mix-fx`): each stem goes through its own channel strip.

Produced songs are not dry synth renders at fixed levels: every track is filtered,
equalised, compressed, sometimes driven, and sent to a reverb, differently in every mix. A
model that only heard FluidSynth's dry output learns that timbre. `draw_chain(rng, role,
drum)` draws a strip with the ranges a mixing engineer would use for that role, as plain
JSON-able numbers (they go into the stem's metadata); `apply_chain(audio, chain)` runs it
with Spotify's `pedalboard`. The strip's input is first brought to a fixed level so that a
compressor threshold or a drive means the same on every stem; the build's balance and
peak handling (`render.balance_stems`) set the final level afterwards, `gain_db` being this
stem's fader offset from its role's level.
"""

from __future__ import annotations

import numpy as np

from engine.errors import RiffwrightError

from .render import SAMPLE_RATE, active_rms

STRIP_INPUT_DB = -20.0  # active RMS of a stem entering the strip, dBFS


def require_pedalboard():
    """The pedalboard module, or the one-line reason a --mix-fx build cannot run."""
    try:
        import pedalboard
    except ImportError as e:
        raise RiffwrightError(
            f"--mix-fx needs the pedalboard package, which did not import ({e}): "
            "pip install 'riffwright[dataset]'") from None
    return pedalboard


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _r(x: float, nd: int = 2) -> float:
    return round(float(x), nd)


def draw_chain(rng: np.random.Generator, role: str, drum: bool, low: bool = False) -> dict:
    """A random channel strip for a stem of `role` (`low`: it plays in the low register).
    Every stage but the fader is optional; bass, low voices and drums keep their lows
    (gentler high-pass, less reverb), pads and leads get more reverb, bass/guitar/keys are
    driven more often."""
    low_end = drum or low or role == "bass"
    ambient = role in ("pad", "strings", "lead", "arp")
    chain: dict = {"gain_db": _r(rng.uniform(-3.0, 3.0))}
    if rng.random() < 0.8:
        chain["highpass_hz"] = _r(_log_uniform(rng, 20, 45) if low_end
                                  else _log_uniform(rng, 50, 220), 1)
    if rng.random() < 0.5:
        chain["low_shelf"] = {"hz": _r(_log_uniform(rng, 70, 250), 1),
                              "db": _r(rng.uniform(-4.0, 4.0))}
    if rng.random() < 0.7:
        chain["peak"] = {"hz": _r(_log_uniform(rng, 200, 5000), 1),
                         "db": _r(rng.uniform(-5.0, 4.0)), "q": _r(rng.uniform(0.7, 2.5))}
    if rng.random() < 0.5:
        chain["high_shelf"] = {"hz": _r(_log_uniform(rng, 4000, 12000), 1),
                               "db": _r(rng.uniform(-6.0, 4.0))}
    if rng.random() < 0.7:
        chain["compressor"] = {
            "threshold_db": _r(rng.uniform(-30.0, -12.0)),
            "ratio": _r(rng.uniform(1.5, 8.0 if drum else 6.0)),
            "attack_ms": _r(_log_uniform(rng, 1.0, 30.0)),
            "release_ms": _r(_log_uniform(rng, 40.0, 300.0), 1)}
    p_drive = 0.3 if role in ("bass", "guitar", "keys") else (0.2 if drum else 0.1)
    if rng.random() < p_drive:
        chain["saturation_db"] = _r(rng.uniform(2.0, 12.0))
    p_verb = 0.8 if ambient else (0.3 if low_end else 0.6)
    if rng.random() < p_verb:
        chain["reverb"] = {"room_size": _r(rng.uniform(0.1, 0.85)),
                           "damping": _r(rng.uniform(0.2, 0.8)),
                           "wet": _r(rng.uniform(0.03, 0.12 if low_end else 0.3), 3)}
    return chain


def build_board(chain: dict):
    """The pedalboard.Pedalboard for a chain (high-pass 12 dB/octave, EQ, compressor, drive,
    reverb send)."""
    pb = require_pedalboard()
    fx = []
    if "highpass_hz" in chain:  # two one-pole filters: the usual 12 dB/octave slope
        fx += [pb.HighpassFilter(cutoff_frequency_hz=chain["highpass_hz"]) for _ in range(2)]
    if "low_shelf" in chain:
        fx.append(pb.LowShelfFilter(cutoff_frequency_hz=chain["low_shelf"]["hz"],
                                    gain_db=chain["low_shelf"]["db"]))
    if "peak" in chain:
        p = chain["peak"]
        fx.append(pb.PeakFilter(cutoff_frequency_hz=p["hz"], gain_db=p["db"], q=p["q"]))
    if "high_shelf" in chain:
        fx.append(pb.HighShelfFilter(cutoff_frequency_hz=chain["high_shelf"]["hz"],
                                     gain_db=chain["high_shelf"]["db"]))
    if "compressor" in chain:
        c = chain["compressor"]
        fx.append(pb.Compressor(threshold_db=c["threshold_db"], ratio=c["ratio"],
                                attack_ms=c["attack_ms"], release_ms=c["release_ms"]))
    if "saturation_db" in chain:
        fx.append(pb.Distortion(drive_db=chain["saturation_db"]))
    if "reverb" in chain:  # a send: the dry signal stays at unity
        v = chain["reverb"]
        fx.append(pb.Reverb(room_size=v["room_size"], damping=v["damping"],
                            wet_level=v["wet"], dry_level=1.0, width=0.0))
    return pb.Pedalboard(fx)


def apply_chain(audio: np.ndarray, chain: dict) -> np.ndarray:
    """`audio` (mono float32) through the strip, same length; silence stays silence."""
    r = active_rms(audio)
    if r <= 0:
        return audio.astype(np.float32)
    x = (audio * (10 ** (STRIP_INPUT_DB / 20) / r)).astype(np.float32)
    y = build_board(chain)(x, SAMPLE_RATE)
    return np.ascontiguousarray(y, dtype=np.float32).reshape(-1)[: len(audio)]
