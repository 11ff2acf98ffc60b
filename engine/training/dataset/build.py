"""Building a stem dataset folder: rendering or importing songs, splits, the manifest.

Each song is written into a staging folder and renamed into `songs/<id>/` when complete, with
its manifest entry in `songs/<id>/song.json`; a rerun skips every song whose folder exists.
`manifest.json` is rebuilt from those entries (atomically) every few songs and at the end, so
a dataset is usable while it is still being built.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from engine.errors import RiffwrightError
from engine.fsutil import atomic_write_json

from .gm import family_of, instrument_name, register_of
from .grooves import GrooveComposer
from .mixfx import apply_chain, draw_chain, require_pedalboard
from .multitrack import find_songs, import_song
from .render import (
    SAMPLE_RATE,
    balance_stems,
    check_training_source,
    fade_edges,
    find_fluidsynth,
    is_silent,
    write_wav,
)
from .scores import compose_from_corpus
from .songs import FAMILIES, commit_song_dir, make_caption, slug, split_for, staging_dir
from .sources import open_sources, pick_source, source_specs

MANIFEST_VERSION = 1
GENERATOR_VERSION = 3  # bump when the score renderer changes what a seed produces

Progress = Callable[[int, int, str], None]


# ------------------------------------------------------------------------- score songs

def score_song_id(index: int) -> str:
    return f"score-{index:05d}"


CORPUS_FRACTION = 0.35


def render_score_song(out_dir: Path, seed: int, index: int, seconds: float,
                      sources: list | None = None, mix_fx: bool = False) -> str:
    """Compose/arrange song `index` of the scores source, render it, write it. Returns
    'done', 'exists' or 'skipped: why'.

    `sources` are ("soundfont" | "drumkit", path) specs (default: the default SoundFont);
    each stem draws one that can play it. The draws and the mix-fx strips come from their
    own random streams, so the composition of a seed does not depend on them."""

    out_dir = Path(out_dir)
    timbres = open_sources(sources or source_specs())
    song_id = score_song_id(index)
    final = out_dir / "songs" / song_id
    if final.exists():
        return "exists"
    n = int(round(seconds * SAMPLE_RATE))
    last = "no stems"
    for attempt in range(4):
        rng = np.random.default_rng([GENERATOR_VERSION, seed, index, attempt])
        if rng.random() < CORPUS_FRACTION:
            try:
                song = compose_from_corpus(rng, seconds)
            except ValueError as e:
                last = str(e)
                continue
        else:
            song = GrooveComposer(rng, seconds).compose(piece=f"groove:{seed}:{index}")
        src_rng = np.random.default_rng([GENERATOR_VERSION, seed, index, attempt, 1])
        fx_rng = np.random.default_rng([GENERATOR_VERSION, seed, index, attempt, 2])
        rendered = []
        for part in song.parts:
            if not part.notes:
                continue
            src = pick_source(timbres, part.notes, part.drum, src_rng)
            audio = src.render(part.notes, part.program, n, drum=part.drum,
                               reverb=part.reverb, seed=int(src_rng.integers(2**31)))
            if is_silent(audio):
                continue
            low = not part.drum and register_of([x.pitch for x in part.notes]) == "low"
            chain = draw_chain(fx_rng, part.role, part.drum, low) if mix_fx else None
            if chain is not None:
                audio = apply_chain(audio, chain)
            rendered.append((part, audio, src, chain))
        if len(rendered) >= 2:
            break
        last = f"only {len(rendered)} audible stem(s)"
    else:
        _write_skip(out_dir, song_id, last)
        return f"skipped: {last}"

    levels = [p.level_db + (chain["gain_db"] if chain else 0.0)
              for p, _, _, chain in rendered]
    audios = balance_stems([a for _, a, _, _ in rendered], levels, mix_peak=0.95)
    staging = staging_dir(out_dir, song_id)
    stems = []
    used = set()
    for (part, _, src, chain), audio in zip(rendered, audios, strict=True):
        # a Hydrogen kit is not the GM kit the program names (808, brush...)
        name = "drum kit" if src.kind == "drumkit" else instrument_name(part.program, part.drum)
        fam = family_of(part.program, part.drum)
        reg = "full" if part.drum else register_of([x.pitch for x in part.notes])
        stem = f"{len(stems):02d}-{slug(name)}"
        while stem in used:
            stem += "x"
        used.add(stem)
        write_wav(staging / f"{stem}.wav", fade_edges(audio))
        stems.append({
            "path": f"songs/{song_id}/{stem}.wav", "instrument": name, "family": fam,
            "program": int(part.program), "register": reg, "role": part.role,
            "drum": bool(part.drum),
            "caption": make_caption(name, fam, None if part.drum else reg, song.style,
                                    song.tempo),
            "timbre": src.label(),
        })
        if chain is not None:
            stems[-1]["mix_fx"] = chain
    entry = {
        "id": song_id, "split": split_for(song.piece), "tempo": song.tempo, "key": song.key,
        "meter": song.meter, "style": song.style, "seconds": float(seconds),
        "piece": song.piece, "source": song.source, "stems": stems,
    }
    atomic_write_json(staging / "song.json", entry)
    commit_song_dir(staging, final)
    return "done"


def _write_skip(out_dir: Path, song_id: str, why: str) -> None:
    d = out_dir / "songs" / ".skipped"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{song_id}.txt").write_text(why + "\n")


# ------------------------------------------------------------------------- manifest

def collect_entries(out_dir: Path) -> list[dict]:
    songs = []
    root = Path(out_dir) / "songs"
    if not root.is_dir():
        return songs
    for d in sorted(root.iterdir()):
        if d.name.startswith(".") or not d.is_dir():
            continue
        f = d / "song.json"
        if f.is_file():
            try:
                songs.append(json.loads(f.read_text()))
            except (OSError, json.JSONDecodeError):
                continue
    return songs


def write_manifest(out_dir: Path, build_info: dict) -> dict:
    manifest = {
        "version": MANIFEST_VERSION,
        "sample_rate": SAMPLE_RATE,
        "build": build_info,
        "songs": collect_entries(out_dir),
    }
    atomic_write_json(Path(out_dir) / "manifest.json", manifest)
    return manifest


def load_manifest(path: str | os.PathLike) -> dict:
    """Read `manifest.json` (or the folder holding it) and check its version."""
    p = Path(path)
    if p.is_dir():
        p = p / "manifest.json"
    if not p.is_file():
        raise RiffwrightError(f"no dataset manifest at {p}: build one with 'riffwright dataset build'")
    try:
        m = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise RiffwrightError(f"{p} is not valid JSON ({e.msg})") from None
    if m.get("version") != MANIFEST_VERSION:
        raise RiffwrightError(f"{p} has manifest version {m.get('version')}, expected 1")
    m["_root"] = str(p.parent)
    return m


def summarize(manifest: dict) -> dict:
    """Songs per split, stems per family, hours of stem audio."""
    fam = {f: 0 for f in FAMILIES}
    fam["unknown"] = 0
    splits = {"train": 0, "valid": 0, "test": 0}
    seconds = 0.0
    n_stems = 0
    for s in manifest["songs"]:
        splits[s["split"]] = splits.get(s["split"], 0) + 1
        for st in s["stems"]:
            fam[st.get("family") or "unknown"] = fam.get(st.get("family") or "unknown", 0) + 1
            seconds += float(s["seconds"])
            n_stems += 1
    return {"songs": len(manifest["songs"]), "stems": n_stems, "splits": splits,
            "families": fam, "stem_hours": round(seconds / 3600, 2)}


# ------------------------------------------------------------------------- driver

def _run_task(args):
    kind, payload = args
    try:
        if kind == "score":
            out_dir, seed, index, seconds, sources, mix_fx = payload
            return index, render_score_song(Path(out_dir), seed, index, seconds, sources,
                                            mix_fx)

        out_dir, song_dir, seconds, layout, max_segments, name = payload
        return name, import_song(Path(out_dir), Path(song_dir), seconds, layout,
                                 max_segments, name)
    except RiffwrightError as e:
        if kind == "score":  # the renderer itself is broken: stop
            raise
        return payload[5], f"failed: {e}"
    except Exception as e:  # one bad song must not stop a long build
        return payload[5] if kind != "score" else payload[2], f"failed: {type(e).__name__}: {e}"


def build_dataset(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    songs: int | None = None,
    jobs: int = 2,
    seconds: float = 24.0,
    from_dir: str | os.PathLike | None = None,
    max_segments: int | None = None,
    manifest_every: int = 5,
    progress: Progress | None = None,
    sources: list[tuple[str, str]] | None = None,
    mix_fx: bool = False,
) -> Path:
    """Build (or resume) a dataset in `out_dir` and return the manifest path.

    `source` is "scores" (music21 corpus + composed grooves rendered with FluidSynth; `songs`
    songs, default 320) or a folder of multitrack songs (MUSDB18-HQ, MoisesDB, Slakh2100 or one
    folder per song with one audio file per stem; also accepted as `from_dir`), cut into
    segments of `seconds` (at most `max_segments` per song; `songs` limits how many songs).
    Deterministic for a seed; songs already in `out_dir` are skipped.

    Scores only: `sources` are timbre sources as ("soundfont" | "drumkit", path) pairs
    (`sources.source_specs` makes them from paths; default: the FluidR3 GM SoundFont), one
    drawn per stem; `mix_fx` runs every stem through a random channel strip (`mixfx`).
    """
    out = Path(out_dir)
    if seconds < 4:
        raise RiffwrightError("--seconds must be at least 4")
    src = str(source) if source is not None else ""
    if from_dir is not None and src in ("", "dir", "folder"):
        src = str(from_dir)

    if src == "scores":

        find_fluidsynth()
        specs = [tuple(x) for x in sources] if sources else source_specs()
        timbres = open_sources(specs)  # refuses evaluation sources and broken kits up front
        if mix_fx:
            require_pedalboard()
        try:
            import music21  # noqa: F401
        except ImportError:
            raise RiffwrightError(
                "the scores source needs music21: pip install 'riffwright[dataset]'"
            ) from None
        n_songs = 320 if songs is None else int(songs)
        info = {"source": "scores", "seed": int(seed), "seconds": float(seconds),
                "generator": GENERATOR_VERSION,
                "timbres": [f"{t.kind}:{t.name}" for t in timbres],
                "timbre_sources": [t.describe() for t in timbres], "mix_fx": bool(mix_fx)}
        tasks = [("score", (str(out), int(seed), i, float(seconds), specs, bool(mix_fx)))
                 for i in range(n_songs) if not (out / "songs" / score_song_id(i)).exists()]
        total = n_songs
    else:
        if sources or mix_fx:
            raise RiffwrightError("timbre sources and --mix-fx apply to --source scores only")
        root = Path(src)
        if not root.is_dir():
            raise RiffwrightError(f"dataset source {src!r} is neither 'scores' nor a folder")
        check_training_source(root)
        found = find_songs(root)
        if not found:
            raise RiffwrightError(f"no multitrack songs found under {root}")
        if songs is not None:
            found = found[: int(songs)]
        info = {"source": str(root.resolve()), "seed": int(seed), "seconds": float(seconds)}
        tasks = [("import", (str(out), str(d), float(seconds), layout, max_segments,
                             d.relative_to(root).as_posix() if d != root else d.name))
                 for d, layout in found]
        total = len(found)

    _check_build_info(out, info)
    (out / "songs").mkdir(parents=True, exist_ok=True)
    for stale in (out / "songs").glob(".tmp-*"):
        if not _pid_alive(stale.name.rsplit("-", 1)[-1]):  # left by a killed build
            shutil.rmtree(stale, ignore_errors=True)
    done = total - len(tasks)
    if progress:
        progress(done, total, f"{done} already built, {len(tasks)} to go")
    t0 = time.time()
    since = 0
    try:
        for key, status in _map(tasks, jobs):
            done += 1
            since += 1
            if progress:
                progress(done, total, f"{key}: {status}")
            if since >= manifest_every:
                write_manifest(out, info)
                since = 0
    finally:
        write_manifest(out, info)
    if progress:
        progress(done, total, f"finished in {time.time() - t0:.0f} s")
    return out / "manifest.json"


def _pid_alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _check_build_info(out: Path, info: dict) -> None:
    mpath = out / "manifest.json"
    if not mpath.is_file():
        return
    try:
        old = json.loads(mpath.read_text()).get("build", {})
    except (OSError, json.JSONDecodeError):
        return
    for k in ("source", "seed", "seconds", "generator", "timbres", "mix_fx"):
        if k in old and k in info and old[k] != info[k]:
            raise RiffwrightError(
                f"{out} holds a dataset built with {k}={old[k]!r}, not {info[k]!r}: "
                "use another --out folder"
            )


def _map(tasks, jobs: int):
    if not tasks:
        return
    if jobs <= 1 or len(tasks) == 1:
        for t in tasks:
            yield _run_task(t)
        return
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with ctx.Pool(processes=int(jobs), maxtasksperchild=50) as pool:
        yield from pool.imap_unordered(_run_task, tasks, chunksize=1)
