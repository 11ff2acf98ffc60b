"""The `riffwright` console command: no arguments opens the app, subcommands run headless."""

from __future__ import annotations

import json
import os
import sys


def _gui_bench(argv: list[str]) -> int:
    """`riffwright bench --gui [--model DIR] [--json]`: event-loop stalls and redraw times."""
    import argparse

    ap = argparse.ArgumentParser(prog="riffwright bench --gui")
    ap.add_argument("--gui", action="store_true")
    ap.add_argument("--model", metavar="DIR")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--json", action="store_true")
    args, _ = ap.parse_known_args(argv)
    from app.bench import run_gui_bench

    report = run_gui_bench(args.model, steps=args.steps)
    if args.json:
        print(json.dumps(report))
    else:
        for k, v in report.items():
            print(f"{k:<32} {v}")
    return 0


GENERATING_COMMANDS = ("generate", "arrange", "eval", "bench")


def main(argv: list[str] | None = None) -> int:
    import multiprocessing

    # the app runs the engine in a spawned process; a frozen (PyInstaller) build must let
    # that child through here instead of opening a second window
    multiprocessing.freeze_support()
    # must be set before torch is imported anywhere (Apple MPS falls back to the CPU for
    # operators it lacks instead of failing)
    os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")
    # idle OpenMP threads sleep instead of spinning: on a busy laptop (a DAW, a browser)
    # spinning threads made every op up to 20x slower in our measurements (docs/cae.md)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    argv = sys.argv[1:] if argv is None else argv
    opens_files = bool(argv) and not argv[0].startswith("-") and os.path.isfile(argv[0])
    if not argv or argv[0] in {"app", "gui"} or argv[0].startswith("--session") or opens_files:
        from app.main import run_app

        return run_app(argv[1:] if argv and argv[0] in {"app", "gui"} else argv)
    if argv[0] == "bench" and "--gui" in argv:
        return _gui_bench(argv[1:])
    if argv[0] in GENERATING_COMMANDS and "OMP_NUM_THREADS" not in os.environ:
        # the threads the app's engine uses, set before torch is imported (a command's own
        # --threads still wins); training and data commands keep their own settings
        from engine.service import engine_threads

        threads = engine_threads()
        if threads is not None:
            os.environ["OMP_NUM_THREADS"] = str(threads)
    from engine.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
