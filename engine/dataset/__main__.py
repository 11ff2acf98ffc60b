"""`python -m engine.dataset build --source scores --out DIR [...]` and `... stats DIR`.

The `riffwright dataset` command offers the same; this entry point needs nothing but the
engine, for long background builds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from engine.errors import RiffwrightError


def main(argv=None) -> int:
    from . import DESCRIPTION, build_dataset, load_manifest, summarize

    ap = argparse.ArgumentParser(prog="python -m engine.dataset")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", description=DESCRIPTION)
    b.add_argument("--source", required=True, help="'scores' or a folder of multitrack songs")
    b.add_argument("--out", required=True)
    b.add_argument("--songs", type=int, default=None)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--jobs", type=int, default=2)
    b.add_argument("--seconds", type=float, default=24.0)
    b.add_argument("--max-segments", type=int, default=None)
    s = sub.add_parser("stats")
    s.add_argument("dir")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "build":
            t0 = time.time()

            def progress(done, total, msg):
                print(f"[{time.time() - t0:7.1f}s] {done}/{total} {msg}", flush=True)

            path = build_dataset(args.source, args.out, seed=args.seed, songs=args.songs,
                                 jobs=args.jobs, seconds=args.seconds,
                                 max_segments=args.max_segments, progress=progress)
            print(json.dumps(summarize(load_manifest(path)), indent=1))
        else:
            print(json.dumps(summarize(load_manifest(args.dir)), indent=1))
    except RiffwrightError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
