"""Command-line glue for `riffwright dataset ...` (and `python -m engine.training.dataset`).

`add_build_arguments(parser)` adds --source/--out/--songs/--seed/--jobs/--seconds/
--max-segments; `run_build(args)` builds, printing progress, and returns the summary dict.
Errors are `RiffwrightError`s for the caller to print.
"""

from __future__ import annotations

import argparse
import json
import time

from . import build_dataset, load_manifest, summarize


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
    return p


def run_build(args: argparse.Namespace, echo=print) -> dict:
    t0 = time.time()

    def progress(done, total, msg):
        echo(f"[{time.time() - t0:7.1f}s] {done}/{total} {msg}")

    path = build_dataset(args.source, args.out, seed=args.seed, songs=args.songs,
                         jobs=args.jobs, seconds=args.seconds,
                         max_segments=getattr(args, "max_segments", None), progress=progress)
    summary = summarize(load_manifest(path))
    echo(json.dumps(summary, indent=1))
    return summary
