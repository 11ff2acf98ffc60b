"""Command-line glue for `riffwright dataset ...` (and `python -m engine.training.dataset`).

`add_build_arguments(parser)` adds --source/--out/--songs/--seed/--jobs/--seconds/
--max-segments and, for the scores source, the timbre sources (--soundfont, --drumkit,
--timbres) and --mix-fx; `run_build(args)` builds, printing progress, and returns the summary dict.
Errors are `RiffwrightError`s for the caller to print.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from . import build_dataset, load_manifest, summarize
from .sources import source_specs


def add_build_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--source", required=True,
                   help="'scores' (render the music21 corpus and composed grooves) or a folder "
                        "of multitrack songs (MUSDB18-HQ, MoisesDB, Slakh2100, one folder per song)")
    p.add_argument("--out", required=True, help="dataset folder to create or resume")
    p.add_argument("--songs", type=int, default=None,
                   help="scores: number of songs (default 320); folder: import at most N songs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2, help="worker processes")
    p.add_argument("--seconds", type=float, default=24.0, help="length of each song/segment")
    p.add_argument("--max-segments", type=int, default=None,
                   help="folder source: at most N segments per song")
    p.add_argument("--soundfont", action="append", default=[], metavar="PATH",
                   help="scores: a General MIDI SoundFont (.sf2/.sf3) to render with; "
                        "repeatable (default: FluidR3 GM)")
    p.add_argument("--drumkit", action="append", default=[], metavar="DIR",
                   help="scores: a Hydrogen drumkit folder (with drumkit.xml) for drum stems; "
                        "repeatable")
    p.add_argument("--timbres", action="append", default=[], metavar="DIR",
                   help="scores: a folder of SoundFonts and Hydrogen drumkits, all used; "
                        "repeatable. Each stem draws one source that can play it")
    p.add_argument("--mix-fx", action="store_true",
                   help="scores: run each stem through a random channel strip (EQ, "
                        "compression, drive, reverb send; needs pedalboard)")
    return p


def run_build(args: argparse.Namespace, echo=print) -> dict:
    t0 = time.time()

    def progress(done, total, msg):
        echo(f"[{time.time() - t0:7.1f}s] {done}/{total} {msg}")

    sources = None
    named = [getattr(args, k, None) or [] for k in ("soundfont", "drumkit", "timbres")]
    if any(named):
        sources = source_specs(*named)
        echo("timbre sources: " + ", ".join(f"{k}:{Path(p).name}" for k, p in sources))
    path = build_dataset(args.source, args.out, seed=args.seed, songs=args.songs,
                         jobs=args.jobs, seconds=args.seconds,
                         max_segments=getattr(args, "max_segments", None), progress=progress,
                         sources=sources, mix_fx=bool(getattr(args, "mix_fx", False)))
    summary = summarize(load_manifest(path))
    echo(json.dumps(summary, indent=1))
    return summary
