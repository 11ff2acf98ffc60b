"""`riffwright eval model`: how well generated stems fit their context, judged note by note.

Every figure is reported for four stems per context, so it can be read between bounds:
- `generated`: what the model makes for the context (each take analysed, averaged per context);
- `ground_truth`: the real stem of that piece (the upper bound);
- `mismatched`: a real stem of the same role from a *different* piece (the lower bound: right
  sound, wrong music);
- `naive`: a DSP baseline made from the context alone, with no model: for a bass, a saw on the
  context's strongest pitch class in each beat; otherwise a noise click on every beat.

Headline figures (engine/notes.py does the analysis, in plain numpy):
- `harm_beat`, `harm_bar` (bass only): share of the bass's transcribed note-time (YIN pitch
  track, segmented into notes) on the pitch classes the context plays in that beat / bar (its
  chroma classes at >= half the strongest); undefined for a stem with under 1 s of notes;
- `onset_f`: F-measure of the stem's onsets against the context's onsets (±50 ms);
- `grid_hit`: share of the stem's onsets within ±70 ms of a beat or half-beat, against
  `grid_chance`, what onsets at random times would score.
Beats come from the piece's tempo when the data knows it, else from the context's tempo
estimate; the phase is where the context's onsets are strongest. Each figure's mean comes with a
95 % bootstrap interval over contexts, as does `gap_closed` = (generated − mismatched) /
(ground_truth − mismatched): 0 is no better than a real part of another piece, 1 is as good as
the real one.

Secondary figures, kept in report.json under `secondary` and out of the headline table: the
chroma correlation (the feature loss optimises it directly, and any stem whose energy spreads
over the context's pitch classes scores well) and the beat onset strength. Prompt adherence,
family accuracy and the Fréchet distance use Riffwright's own encoder, so they are listed apart.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from engine import notes
from engine.audio import write_audio
from engine.bundles.bundle import load_bundle
from engine.errors import RiffwrightError
from engine.fsutil import atomic_write_json, atomic_write_text
from engine.models.conditioning import classify_family
from engine.training.dataset.build import load_manifest

N_FFT = 4096
HOP = 1024


def _stft_mag(x: np.ndarray) -> np.ndarray:
    win = np.hanning(N_FFT).astype(np.float32)
    n = 1 + max(0, (len(x) - N_FFT) // HOP)
    if len(x) < N_FFT:
        x = np.pad(x, (0, N_FFT - len(x)))
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n)[:, None]
    return np.abs(np.fft.rfft(x[idx] * win, axis=1)).T  # (bins, frames)


def chroma(x: np.ndarray, sr: int) -> np.ndarray:
    """(12, frames) pitch-class energy from 55 Hz to 4 kHz.

    Power per pitch class, counting only bins within 40 dB of the frame's peak, so leakage and
    noise do not spread energy over every class.
    """
    mag = _stft_mag(x)
    freqs = np.fft.rfftfreq(N_FFT, 1 / sr)
    ok = (freqs >= 55) & (freqs <= 4000)
    pcs = ((np.round(12 * np.log2(freqs[ok] / 440.0)) + 9) % 12).astype(int)
    power = mag[ok] ** 2
    power = np.where(power >= power.max(axis=0, keepdims=True) * 1e-4, power, 0.0)
    out = np.zeros((12, mag.shape[1]))
    np.add.at(out, pcs, power)
    # per bin of each class: the classes own unequal numbers of FFT bins, and white noise
    # must come out flat
    return np.sqrt(out / np.bincount(pcs, minlength=12)[:, None])


def onset_envelope(x: np.ndarray, sr: int) -> np.ndarray:
    """Half-wave rectified spectral flux of log magnitudes, one value per HOP."""
    logm = np.log1p(100 * _stft_mag(x))
    flux = np.maximum(0, np.diff(logm, axis=1)).sum(axis=0)
    return np.concatenate([[0.0], flux])


def harmonic_fit(stem: np.ndarray, context: np.ndarray, sr: int, bar_s: float) -> float:
    """Mean over bars of the correlation between the stem's and the context's chroma.

    Chroma vectors are centred before the cosine (a Pearson correlation over the 12 pitch
    classes), so a stem without pitch — a flat chroma — scores 0, not the high cosine any
    two non-negative vectors share. Bars where the context is silent are skipped; a silent
    or pitchless stem bar counts as 0.
    """
    a, b = chroma(stem, sr), chroma(context, sr)
    per = max(1, int(round(bar_s * sr / HOP)))
    sims = []
    for i in range(0, min(a.shape[1], b.shape[1]) - per + 1, per):
        u, v = a[:, i:i + per].sum(axis=1), b[:, i:i + per].sum(axis=1)
        u, v = u - u.mean(), v - v.mean()
        nu, nv = np.linalg.norm(u), np.linalg.norm(v)
        if nv <= 1e-9:
            continue
        sims.append(float(u @ v / (nu * nv)) if nu > 1e-9 * max(1.0, nv) else 0.0)
    return float(np.mean(sims)) if sims else float("nan")


def beat_frames(context: np.ndarray, sr: int, tempo: float) -> np.ndarray:
    """Beat positions (envelope frames) at `tempo`, phase chosen on the context's onsets."""
    env = onset_envelope(context, sr)
    period = 60.0 / tempo * sr / HOP
    best, best_phase = -1.0, 0.0
    for phase in np.linspace(0, period, 16, endpoint=False):
        pos = np.round(np.arange(phase, len(env), period)).astype(int)
        score = env[pos[pos < len(env)]].mean() if len(pos) else 0
        if score > best:
            best, best_phase = score, phase
    pos = np.round(np.arange(best_phase, len(env), period)).astype(int)
    return pos[pos < len(env)]


def rhythmic_fit(stem: np.ndarray, context: np.ndarray, sr: int, tempo: float) -> float:
    env = onset_envelope(stem, sr)
    if env.mean() <= 1e-9:
        return float("nan")
    beats = beat_frames(context, sr, tempo)
    near = np.unique(np.clip(np.concatenate([beats - 1, beats, beats + 1]), 0, len(env) - 1))
    return float(env[near].mean() / env.mean())


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two sets of embeddings (rows)."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # tr(sqrtm(s1 s2)) = sum of the square roots of the (real, >= 0) eigenvalues of s1 s2
    eig = np.linalg.eigvals(s1 @ s2).real.clip(min=0)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(eig).sum())


def _bar_seconds(song: dict) -> float:
    tempo = float(song.get("tempo") or 0)
    if tempo <= 0:
        return 2.0
    beats = int(str(song.get("meter") or "4/4").split("/")[0])
    return beats * 60.0 / tempo


def _read(path: Path, frames: int) -> np.ndarray:
    import soundfile as sf

    x, _ = sf.read(str(path), dtype="float32", frames=frames, always_2d=True)
    x = x.mean(axis=1)
    return np.pad(x, (0, max(0, frames - len(x))))


# --- note-level figures -----------------------------------------------------------------------

STEMS = ("generated", "ground_truth", "mismatched", "naive")
FIGURES = (  # (key, label, roles it applies to: None = every role)
    ("harm_beat", "bass note-time on the context's pitch classes, per beat", {"bass"}),
    ("harm_bar", "bass note-time on the context's pitch classes, per bar", {"bass"}),
    ("onset_f", "onset F-measure vs the context's onsets (±50 ms)", None),
    ("grid_hit", "onsets within ±70 ms of a beat or half-beat", None),
)
MIN_NOTE_TIME_S = 1.0  # a bass with less transcribed note-time has no harmonic figure
BOOTSTRAP = 2000


class ContextAnalysis:
    """What every stem of one context is measured against: beats, bars, pitch classes, onsets."""

    def __init__(self, context: np.ndarray, sr: int, tempo: float | None = None,
                 beats_per_bar: int = 4):
        self.seconds = len(context) / sr
        self.tempo_known = bool(tempo)
        self.tempo = float(tempo) if tempo else notes.estimate_tempo(context, sr)
        self.beats = notes.beat_times(context, sr, self.tempo, self.seconds)
        period = 60.0 / self.tempo
        self.beat_bounds = np.append(self.beats, self.beats[-1] + period)
        self.bar_bounds = self.beat_bounds[::max(1, beats_per_bar)]
        if self.bar_bounds[-1] < self.beat_bounds[-1]:
            self.bar_bounds = np.append(self.bar_bounds, self.bar_bounds[-1]
                                        + beats_per_bar * period)
        ch, rate = notes.pitch_class_profile(context, sr)
        self.classes_beat = notes.pitch_classes_per_segment(ch, rate, self.beat_bounds)
        self.classes_bar = notes.pitch_classes_per_segment(ch, rate, self.bar_bounds)
        self.strongest = [notes.pitch_classes_per_segment(ch, rate, self.beat_bounds[i:i + 2],
                                                          rel=1.0)[0]
                          for i in range(len(self.beats))]
        self.onsets = notes.onsets(context, sr)
        self.grid_chance = notes.grid_chance(self.beats, self.seconds)


def stem_figures(x: np.ndarray, sr: int, ca: ContextAnalysis, role: str | None) -> dict:
    """The headline figures of one stem against its context's analysis (NaN = undefined)."""
    ons = notes.onsets(x, sr)
    out = {"onset_f": notes.onset_f(ons, ca.onsets), "grid_hit": notes.grid_hits(ons, ca.beats)}
    if role == "bass":
        line = notes.bass_notes(x, sr)
        for key, bounds, classes in (("harm_beat", ca.beat_bounds, ca.classes_beat),
                                     ("harm_bar", ca.bar_bounds, ca.classes_bar)):
            on, total = notes.note_time_on_classes(line, bounds, classes)
            out[key] = on / total if total >= MIN_NOTE_TIME_S else float("nan")
    return out


def naive_stem(ca: ContextAnalysis, sr: int, role: str | None, n: int) -> np.ndarray:
    """The no-model baseline: what plain DSP makes of the context alone.

    Bass: a band-limited saw (8 partials) on the context's strongest pitch class in each beat,
    in the octave from C2. Anything else: a 30 ms noise click on every beat.
    """
    out = np.zeros(n, np.float32)
    fade = int(0.01 * sr)
    rng = np.random.default_rng(0)
    for k, t0 in enumerate(ca.beats):
        a, b = int(t0 * sr), min(n, int(ca.beat_bounds[k + 1] * sr))
        if a >= b:
            continue
        if role == "bass":
            if not ca.strongest[k]:
                continue
            f = 440.0 * 2 ** ((36 + min(ca.strongest[k]) - 69) / 12)
            t = np.arange(b - a) / sr
            note = sum(np.sin(2 * np.pi * f * h * t) / h for h in range(1, 9)) * 0.25
            env = np.minimum(1.0, np.minimum(np.arange(b - a), np.arange(b - a)[::-1]) / fade)
            out[a:b] = note * env
        else:
            m = min(b - a, int(0.03 * sr))
            out[a:a + m] = rng.standard_normal(m) * np.exp(-np.arange(m) / (0.005 * sr)) * 0.5
    return out


def _bootstrap_draws(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(BOOTSTRAP, n))


def _interval(vals: np.ndarray, draws: np.ndarray) -> dict:
    means = vals[draws].mean(axis=1)
    return {"mean": float(vals.mean()), "lo": float(np.percentile(means, 2.5)),
            "hi": float(np.percentile(means, 97.5))}


def summarise_figure(rows: list[dict], key: str) -> dict | None:
    """Means with 95 % bootstrap intervals over contexts, and the gap closed with its interval.

    Like the judge: the means are over the contexts where generated, ground truth and
    mismatched are all defined (so the columns compare like with like); without ground truth
    and mismatched stems, over the contexts where the generated figure is defined. When no
    context has all three (`n` 0), each stem is averaged over its own contexts and there is no
    gap closed. None when no stem has a value.
    """
    def col(stem):
        return np.array([r.get(f"{key}_{stem}", np.nan) for r in rows], dtype=float)

    g, t, m, nv = (col(s) for s in STEMS)
    paired = not np.isnan(t).all() and not np.isnan(m).all()
    ok = ~np.isnan(g) & ~np.isnan(t) & ~np.isnan(m) if paired else ~np.isnan(g)
    out: dict = {"n": int(ok.sum()), "gen_undefined": int(np.isnan(g).sum())}
    if not ok.any():  # nothing to compare like with like: each stem over its own contexts
        ok = np.ones(len(rows), bool)
        paired = False
    draws = _bootstrap_draws(int(ok.sum()))
    for stem, v in zip(STEMS, (g, t, m, nv)):
        v = v[ok]
        if np.isnan(v).all():
            continue
        if np.isnan(v).any():  # the naive stem can be undefined where the others are not
            fin = ~np.isnan(v)
            out[stem] = _interval(v[fin], _bootstrap_draws(int(fin.sum())))
        else:
            out[stem] = _interval(v, draws)
    if len(out) == 2:
        return None
    if paired:
        gm, tm, mm = (v[ok][draws].mean(axis=1) for v in (g, t, m))
        den = tm - mm
        gaps = np.where(np.abs(den) > 1e-9, (gm - mm) / np.where(den == 0, 1, den), np.nan)
        gaps = gaps[~np.isnan(gaps)]
        d = t[ok].mean() - m[ok].mean()
        if abs(d) > 1e-9 and len(gaps):
            out["gap_closed"] = {"value": float((g[ok].mean() - m[ok].mean()) / d),
                                 "lo": float(np.percentile(gaps, 2.5)),
                                 "hi": float(np.percentile(gaps, 97.5)),
                                 # the truth does not clearly beat the mismatched stem: the
                                 # ratio divides by noise and means nothing
                                 "bounds_separated": bool(np.percentile(den, 2.5) > 0)}
        out["gen_above_mismatched"] = int((g[ok] > m[ok]).sum())
    return out


def _tempo_source(known: list[bool]) -> str:
    if all(known):
        return "on the known tempo (manifest or MIDI)"
    if not any(known):
        return "on a tempo estimated from the context"
    return f"on the data's tempo for {sum(known)} of {len(known)}, else an estimate"


def summarise_note_level(rows: list[dict]) -> dict:
    """Per role: every headline figure's summary, and the grid's chance level."""
    out = {}
    for role in sorted({r["role"] for r in rows}):
        rr = [r for r in rows if r["role"] == role]
        figs = {}
        for key, _, roles in FIGURES:
            if roles is None or role in roles:
                s = summarise_figure(rr, key)
                if s:
                    figs[key] = s
        chance = np.array([r["grid_chance"] for r in rr], dtype=float)
        chance = chance[~np.isnan(chance)]
        out[role] = {"contexts": len(rr), "figures": figs,
                     "grid_chance": float(chance.mean()) if len(chance) else float("nan"),
                     "tempo": _tempo_source([r["tempo_known"] for r in rr])}
    return out


# --- the evaluation run -----------------------------------------------------------------------

def _role_of(family: str | None) -> str:
    return family if family in ("bass", "drums") else (family or "other")


def _is_case_folder(d: Path) -> bool:
    return d.is_dir() and any(d.glob("context.*"))


def _case_sources(root: Path) -> dict:
    """Each case's source piece from the optional cases.json (empty when absent or unreadable)."""

    meta = root / "cases.json"
    if not meta.is_file():
        return {}
    try:
        return {c["case"]: c.get("source") for c in json.loads(meta.read_text())["cases"]}
    except (ValueError, KeyError, TypeError):
        return {}


def _read_case(d: Path, sources: dict) -> dict:
    """One case folder's role, target file, source piece and (from context.mid) tempo."""

    role_file = d / "role.txt"
    role = role_file.read_text().strip() if role_file.is_file() else "other"
    target = next(iter(sorted(d.glob("target.*"))), None)
    src = sources.get(d.name) or d.name.split(f"_{role}_")[0]
    tempo, beats_per_bar = (notes.midi_tempo((d / "context.mid").read_bytes())
                            if (d / "context.mid").is_file() else (None, None))
    return {"dir": d, "role": role, "target": target, "source": src,
            "tempo": tempo, "beats_per_bar": beats_per_bar or 4}


def _case_item(cases: list[dict], k: int, n: int) -> dict:
    """The evaluation item of case `k`, its mismatched stem the next case (in name order,
    wrapping) of the same role from another piece."""

    c = cases[k]
    others = [o for o in cases[k + 1:] + cases[:k]
              if o["role"] == c["role"] and o["source"] != c["source"] and o["target"]]
    return {
        "id": c["dir"].name, "context": _read(next(iter(sorted(c["dir"].glob("context.*")))), n),
        "truth": _read(c["target"], n) if c["target"] else None,
        "mismatched": _read(others[0]["target"], n) if others else None,
        "prompt": c["role"] if c["role"] != "other" else None, "family": None,
        "role": c["role"], "tempo": c["tempo"], "beats_per_bar": c["beats_per_bar"],
        "bar_s": c["beats_per_bar"] * 60.0 / c["tempo"] if c["tempo"] else 2.0,
        # cases start on a bar line; MIDI's numerator taken as quarter-note beats
        "grid": _grid(c["tempo"], f"{c['beats_per_bar']}/4")}


def _case_items(root: Path, n: int, limit: int, only=None) -> list[dict]:
    """Items from the judge's case layout: <case>/context.*, target.*, role.txt, and an
    optional cases.json naming each case's source piece (for the mismatched stem). `only`: a
    test on the case name (the audio of other cases is not read, but they can still lend the
    mismatched stem)."""
    sources = _case_sources(root)
    cases = [_read_case(d, sources) for d in sorted(d for d in root.iterdir()
                                                    if _is_case_folder(d))]
    chosen = [k for k, c in enumerate(cases) if only is None or only(c["dir"].name)][:limit]
    return [_case_item(cases, k, n) for k in chosen]


def _file_items(root: Path, targets, n: int, limit: int) -> list[dict]:
    """Items from a folder of context files (targets: same names in another folder)."""
    files = sorted(p for p in root.iterdir() if p.is_file())[:limit]
    truths = [Path(targets) / f.name if targets else None for f in files]
    have = [t if t is not None and t.exists() else None for t in truths]
    items = []
    for k, f in enumerate(files):
        mis = next((t for t in have[k + 1:] + have[:k] if t is not None), None)
        items.append({"id": f.stem, "context": _read(f, n),
                      "truth": _read(have[k], n) if have[k] else None,
                      "mismatched": _read(mis, n) if mis and have[k] else None,
                      "prompt": None, "family": None, "role": "other", "tempo": None,
                      "beats_per_bar": 4, "bar_s": 2.0})
    return items


def _mismatched_stem(songs: list[dict], song: dict, target: dict, k: int) -> dict | None:
    """A stem of another song to measure against (same family when there is one): what a
    take that ignored the context would match as well."""
    others = [st for s2 in songs if s2["id"] != song["id"] for st in s2["stems"]]
    same = [st for st in others if st.get("family") == target.get("family")] or others
    return same[k % len(same)] if same else None


def _grid(tempo, meter: str) -> tuple[float, float, float] | None:
    """The beat grid a generation gets for an item whose audio starts on a bar line (None
    without a usable tempo)."""
    from engine.diffusion.context_features import BeatGrid

    try:
        g = BeatGrid.from_meter(float(tempo), meter) if tempo else None
    except (TypeError, ValueError):
        return None
    return None if g is None else (g.bpm, g.bar_beats, 0.0)


def _song_item(root: Path, song: dict, ti: int, mis: dict | None, n: int) -> dict:
    """A test song's item: stem `ti` is the truth, the sum of the others the context."""
    target = song["stems"][ti]
    ctx = sum(_read(root / st["path"], n) for i, st in enumerate(song["stems"]) if i != ti)
    return {
        "id": song["id"], "context": ctx, "truth": _read(root / target["path"], n),
        "mismatched": _read(root / mis["path"], n) if mis else None,
        "prompt": target.get("caption") or target.get("instrument"),
        "family": target.get("family"), "role": _role_of(target.get("family")),
        "tempo": float(song.get("tempo") or 0) or None,
        "beats_per_bar": int(str(song.get("meter") or "4/4").split("/")[0]),
        "bar_s": _bar_seconds(song),
        "grid": _grid(song.get("tempo"), str(song.get("meter") or "4/4"))}  # songs start on a bar


def _dataset_items(data, n: int, limit: int) -> list[dict]:
    """Items from a dataset's test songs of two or more stems: song k's target is its stem
    k (cycling)."""
    from engine.errors import RiffwrightError

    m = load_manifest(data)
    root = Path(m["_root"])
    songs = [s for s in m["songs"] if s["split"] == "test" and len(s["stems"]) >= 2]
    if not songs:
        raise RiffwrightError(f"{data} has no test songs with two or more stems")
    items = []
    for k, song in enumerate(songs[:limit]):
        ti = k % len(song["stems"])
        mis = _mismatched_stem(songs, song, song["stems"][ti], k)
        items.append(_song_item(root, song, ti, mis, n))
    return items


def _generated_takes(folder: Path, sr: int, n: int) -> list[np.ndarray]:
    from engine.audio import load_audio

    return [np.pad(a := load_audio(p, sample_rate=sr)[0].mean(axis=0)[:n],
                   (0, max(0, n - len(a))))
            for p in sorted(folder.glob("*.wav"))]


def _gather_items(data, contexts, targets, n: int, limit: int,
                  gen_dir: Path | None) -> list[dict]:
    """The contexts to evaluate, from a dataset's test split, a case layout or a folder of
    context files; with `gen_dir`, only those that have takes there."""

    if data:
        items = _dataset_items(data, n, limit)
    elif contexts:
        items = _context_items(Path(contexts), targets, n, limit, gen_dir)
    else:
        raise RiffwrightError("eval model needs --data DIR or --contexts DIR")
    if not items:
        raise RiffwrightError("nothing to evaluate: no contexts"
                              + (f" with takes in {gen_dir}" if gen_dir else ""))
    return items


def _context_items(root: Path, targets, n: int, limit: int, gen_dir: Path | None) -> list[dict]:
    """Items from `--contexts`: the judge's case layout or plain context files."""

    if not root.is_dir():
        raise RiffwrightError(f"--contexts {root} is not a folder")
    only = (lambda name: (gen_dir / name).is_dir()) if gen_dir is not None else None
    if any(_is_case_folder(d) for d in root.iterdir()):
        return _case_items(root, n, limit, only)
    return [it for it in _file_items(root, targets, n, limit if only is None else 1 << 30)
            if only is None or only(it["id"])][:limit]


def _takes(k: int, it: dict, gen_dir: Path | None, gen, out: Path, sr: int, n: int,
           request: dict, beat_grid: bool = True) -> list[np.ndarray]:
    """The takes measured for item `k`: read from `gen_dir`, or generated (seed `k`) with the
    first written to `out` for listening."""

    from engine.generation.driver import run_to_end
    from engine.generation.request import GenerationRequest

    if gen_dir is not None:
        stems = _generated_takes(gen_dir / it["id"], sr, n)
        if not stems:
            raise RiffwrightError(f"{gen_dir / it['id']} has no .wav takes")
        return stems
    req = GenerationRequest(context=it["context"][None], sample_rate=sr, prompt=it["prompt"],
                            seed=k, beat_grid=it.get("grid") if beat_grid else None, **request)
    stems = [s.audio[0] for s in run_to_end(gen.run(req))]
    write_audio(out / f"{it['id']}_generated.wav", stems[0], sr)
    return stems


def _encoder_figures(x: np.ndarray, it: dict, cond, sr: int, text, per: dict) -> np.ndarray:
    """Add the figures judged by Riffwright's own encoder (prompt adherence, family accuracy)
    of one stem to `per`; returns its audio embedding (for the Fréchet distance)."""
    import torch

    with torch.inference_mode():
        e = cond.embed_audio(x, sr).float().cpu().numpy()[0]
    if text is not None:
        per.setdefault("prompt", []).append(float(e @ text))
    if it["family"]:
        per.setdefault("family_ok", []).append(
            float(classify_family(cond, x, sr) == it["family"]))
    return e


def _stem_row_figures(name: str, xs: list[np.ndarray], it: dict, ca: ContextAnalysis, sr: int,
                      cond, text, embs: dict) -> dict:
    """Every figure of one kind of stem (`generated`, `ground_truth`, ...) for one context,
    as row entries `<figure>_<name>`: several takes are averaged per context."""

    per: dict[str, list] = {}
    for x in xs:
        for key, v in stem_figures(x, sr, ca, it["role"]).items():
            per.setdefault(key, []).append(v)
        per.setdefault("chroma_correlation", []).append(
            harmonic_fit(x, it["context"], sr, it["bar_s"]))
        per.setdefault("beat_onset_strength", []).append(
            rhythmic_fit(x, it["context"], sr, ca.tempo))
        if name != "naive":
            embs[name].append(_encoder_figures(x, it, cond, sr, text, per))
    return {f"{metric}_{name}": (float(np.nanmean(vals))
                                 if not all(math.isnan(v) for v in vals) else float("nan"))
            for metric, vals in per.items()}


def _item_row(it: dict, stems: list[np.ndarray], sr: int, n: int, cond, embs: dict) -> dict:
    """One context's row of the report: the generated, ground-truth, mismatched and naive
    stems' figures against the context's analysis."""
    import torch

    ca = ContextAnalysis(it["context"], sr, it["tempo"], it["beats_per_bar"])
    row = {"id": it["id"], "prompt": it["prompt"], "family": it["family"],
           "role": it["role"], "tempo": ca.tempo, "tempo_known": ca.tempo_known,
           "grid_chance": ca.grid_chance}
    text = None
    if it["prompt"]:
        with torch.inference_mode():
            text = cond.embed_text([it["prompt"]]).float().cpu().numpy()[0]
    naive = naive_stem(ca, sr, it["role"], n)
    for name, xs in (("generated", stems), ("ground_truth", [it["truth"]]),
                     ("mismatched", [it["mismatched"]]), ("naive", [naive])):
        if xs[0] is not None:
            row.update(_stem_row_figures(name, xs, it, ca, sr, cond, text, embs))
    return row


def _encoder_summary(summary: dict, rows: list[dict], embs: dict) -> dict:
    """Means over contexts of the encoder-judged figures (into `summary`) and of the
    secondary ones (returned), each with its gap closed where the bounds differ."""

    secondary: dict = {}
    for metric in ("prompt", "family_ok", "chroma_correlation", "beat_onset_strength"):
        dest = secondary if metric in ("chroma_correlation", "beat_onset_strength") else summary
        for name in embs:
            vals = [float(r[f"{metric}_{name}"]) for r in rows if f"{metric}_{name}" in r
                    and not math.isnan(float(r[f"{metric}_{name}"]))]
            if vals:
                dest[f"{metric}_{name}"] = float(np.mean(vals))
        g, t, mm = (dest.get(f"{metric}_{x}") for x in embs)
        if None not in (g, t, mm) and abs(t - mm) > 1e-9:
            dest[f"{metric}_gap_closed"] = (g - mm) / (t - mm)
    return secondary


def _frechet_summary(summary: dict, embs: dict) -> None:
    """Fréchet distances of the generated and mismatched stems' embeddings to the real ones
    (with at least three of each)."""

    if len(embs["ground_truth"]) < 3:
        return
    real = np.stack(embs["ground_truth"])
    for name in ("generated", "mismatched"):
        if len(embs[name]) >= 3:
            summary[f"frechet_{name}"] = frechet_distance(np.stack(embs[name]), real)


def _summary(b, gen, items: list[dict], rows: list[dict], embs: dict, seconds: float,
             takes: int, gen_dir: Path | None, request: dict) -> dict:
    """The report's summary: the settings actually used, the note-level figures per role,
    the encoder-judged and secondary figures."""

    from engine.generation.request import GenerationRequest

    prompted = any(it["prompt"] for it in items)
    used = gen.resolve(GenerationRequest(steps=request["steps"],
                                         cfg_context=request["cfg_context"],
                                         cfg_clap=request["cfg_clap"],
                                         harmony=request["harmony"],
                                         rhythm=request["rhythm"],
                                         # a context, so that the harmony resolves as
                                         # the items' did (it is off without one)
                                         context=np.zeros((1, b.sample_rate), np.float32),
                                         prompt="-" if prompted else None,
                                         text_prior=request["text_prior"]))
    summary: dict = {"bundle": str(b.path), "model_hash": b.hash, "items": len(rows),
                     "seconds": seconds, "takes": takes,
                     "generated_from": str(gen_dir) if gen_dir else None,
                     **{k: getattr(used, k) for k in ("steps", "cfg_context", "cfg_clap",
                                                        "harmony", "rhythm",
                                                        "text_prior")}}
    summary["note_level"] = summarise_note_level(rows)
    summary["secondary"] = _encoder_summary(summary, rows, embs)
    _frechet_summary(summary, embs)
    return summary


def _write_report(out: Path, summary: dict, rows: list[dict]) -> None:
    """report.json (summary and every row) and report.md, each written atomically."""

    atomic_write_json(out / "report.json", json.loads(json.dumps(
        {"summary": summary, "rows": rows}, default=float)))
    atomic_write_text(out / "report.md", _markdown(summary))


def evaluate_model(bundle_dir=None, data=None, out="eval-model", limit: int = 16,
                   steps: int | None = None, seconds: float = 10.0, contexts=None,
                   targets=None, device: str = "cpu", progress=print, takes: int = 1,
                   cfg_context: float | None = None, cfg_clap: float | None = None,
                   harmony: float | None = None, rhythm: float | None = None,
                   text_prior: bool | None = None, generated=None,
                   beat_grid: bool = True) -> dict:
    """Evaluate a bundle on a dataset's test split, a folder of cases, or a folder of contexts.

    `contexts` is either the judge's case layout (one folder per case with context.*, target.*,
    role.txt; cases.json for the source pieces) or plain context files (`targets`: the ground
    truths, same names). `takes` generations per context (figures averaged per context);
    `generated`: a folder of takes already made (<id>/*.wav, as the judge reads them) to
    measure instead of generating; contexts without one are skipped. `cfg_context`/`cfg_clap`
    (and `harmony`, `rhythm`: harmony and rhythm guidance) override the bundle's defaults;
    `text_prior=False` prompts with the raw text embedding even when the bundle has a text
    prior; `beat_grid` gives a model that takes a
    beat grid the tempo the data knows (as a session's tempo would be)."""
    from engine.generation.driver import Generator

    b = load_bundle(bundle_dir, device=device)
    gen = Generator(b)
    sr = b.sample_rate
    n = int(seconds * sr)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    gen_dir = Path(generated) if generated else None
    items = _gather_items(data, contexts, targets, n, limit, gen_dir)
    request = {"steps": steps, "takes": takes, "cfg_context": cfg_context,
               "cfg_clap": cfg_clap, "harmony": harmony, "rhythm": rhythm,
               "text_prior": text_prior}
    rows = []
    embs = {"generated": [], "ground_truth": [], "mismatched": []}
    for k, it in enumerate(items):
        stems = _takes(k, it, gen_dir, gen, out, sr, n, request, beat_grid)
        rows.append(_item_row(it, stems, sr, n, b.conditioner, embs))
        progress(f"eval {k + 1}/{len(items)}: {it['id']}")
    summary = _summary(b, gen, items, rows, embs, seconds, len(stems) if gen_dir else takes,
                       gen_dir, request)
    summary["beat_grid"] = bool(beat_grid and b.takes_beat_grid and not gen_dir
                                and any(it.get("grid") for it in items))
    _write_report(out, summary, rows)
    return summary


def _cell(d: dict | None) -> str:
    if not d:
        return "–"
    return f"{d['mean']:.3f} [{d['lo']:.2f}, {d['hi']:.2f}]"


def _gap_text(gap: dict | None) -> str:
    if not gap:
        return "–"
    if not gap["bounds_separated"]:
        return "n/a (truth ≯ mismatched)"
    return f"{gap['value']:.2f} [{gap['lo']:.2f}, {gap['hi']:.2f}]"


def _role_section(role: str, r: dict) -> list[str]:
    """The report's table of one role's note-level figures."""
    labels = {key: label for key, label, _ in FIGURES}
    lines = ["", f"## {role} ({r['contexts']} contexts; beats {r['tempo']})", "",
             "| figure | generated | ground truth | mismatched | naive DSP | gap closed "
             "| n (gen. undefined) |", "|---|---|---|---|---|---|---|"]
    for key, f in r["figures"].items():
        lines.append(f"| {labels[key]} | {' | '.join(_cell(f.get(x)) for x in STEMS)} | "
                     f"{_gap_text(f.get('gap_closed'))} | {f['n']} ({f['gen_undefined']}) |")
    if "grid_hit" in r["figures"]:
        lines += ["", f"Chance level of the grid hits (onsets at random times): "
                  f"{r['grid_chance']:.3f}."]
    return lines


def _encoder_rows(s: dict) -> list[str]:
    """The rows of the figures judged by the bundle's own encoder (none without them)."""
    rows = []
    for metric, label in (("prompt", "prompt adherence"), ("family_ok", "family accuracy")):
        if f"{metric}_generated" in s:
            cells = [f"{s[k]:.3f}" if (k := f'{metric}_{n}') in s else "–"
                     for n in ("generated", "ground_truth", "mismatched")]
            gap = s.get(f"{metric}_gap_closed")
            rows.append(f"| {label} | {' | '.join(cells)} | "
                        f"{'–' if gap is None else f'{gap:.2f}'} |")
    if "frechet_generated" in s:
        rows.append(f"| Fréchet distance to real stems | {s['frechet_generated']:.3f} | 0 | "
                    f"{s.get('frechet_mismatched', float('nan')):.3f} | |")
    return rows


def _markdown(s: dict) -> str:
    if s.get("generated_from"):
        how = f"takes read from `{s['generated_from']}`"
    else:
        how = (f"{s['steps']} steps, guidance {s['cfg_context']:g} context / "
               f"{s['cfg_clap']:g} CLAP / {s.get('harmony', 0):g} harmony / "
               f"{s.get('rhythm', 0):g} rhythm, text prior {'on' if s.get('text_prior') else 'off'}, "
               f"beat grid {'from the known tempo' if s.get('beat_grid') else 'none'}")
    lines = ["# Evaluation", "", f"Bundle `{s['bundle']}` ({s['items']} contexts, "
             f"{s['seconds']:g} s each, {s['takes']} take(s) per context, {how})", "",
             "Means over contexts with 95 % bootstrap intervals. `gap closed` = (generated − "
             "mismatched) / (ground truth − mismatched): 0 is no better than a real part of "
             "another piece, 1 is as good as the real part; an interval that includes 0 is no "
             "evidence of fit. Where the ground truth does not clearly beat the mismatched stem "
             "(its bootstrap interval of the difference includes 0) the gap is n/a."]
    for role, r in s.get("note_level", {}).items():
        lines += _role_section(role, r)
    extra = _encoder_rows(s)
    if extra:
        lines += ["", "## Judged by Riffwright's own encoder", "",
                  "Optimistic: the encoder was trained on the same data as the model.", "",
                  "| figure | generated | ground truth | mismatched | gap closed |",
                  "|---|---|---|---|---|", *extra]
    lines += ["", "The chroma correlation (which the training's feature loss optimises) and the "
              "beat onset strength are in report.json under `secondary`; they are not "
              "measures of fit."]
    return "\n".join(lines) + "\n"
