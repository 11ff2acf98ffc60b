"""`python -m engine.training.dataset build --source scores --out DIR [...]` and `... stats DIR`.

The `riffwright dataset` command offers the same; this entry point needs nothing but the
engine, for long background builds.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys

from engine.errors import RiffwrightError

from . import DESCRIPTION, load_manifest, summarize
from .command import add_build_arguments, run_build


def main(argv=None) -> int:

    ap = argparse.ArgumentParser(prog="python -m engine.training.dataset")
    sub = ap.add_subparsers(dest="cmd", required=True)
    add_build_arguments(sub.add_parser("build", description=DESCRIPTION))
    s = sub.add_parser("stats")
    s.add_argument("dir")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "build":
            run_build(args, echo=functools.partial(print, flush=True))
        else:
            print(json.dumps(summarize(load_manifest(args.dir)), indent=1))
    except RiffwrightError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
