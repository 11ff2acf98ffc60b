"""`riffwright generate`: stems over a context, variations, inpainting, loops,
continuations and transitions; and the run helpers `arrange` shares.

Files are named after the prompt (or the mode), the seed and the take, and never overwrite
an existing file; nothing is written to --out unless generation succeeded.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from engine.bundles.bundle import load_bundle
from engine.cli import output
from engine.cli.request import (
    add_generation_arguments,
    loop,
    param_flag,
    region,
    request_from_args,
)
from engine.params import pick


def add_parser(sub, parser_class) -> None:
    g = sub.add_parser("generate", help="generate stems",
                       description="Generate stems. Files are named after the prompt (or the "
                                   "mode), the seed and the take, and never overwrite an "
                                   "existing file.")
    add_generation_arguments(g)
    g.add_argument("--variation-of", metavar="FILE",
                   help="make a variation of this stem (default: none)")
    param_flag(g, "strength", "S")
    g.add_argument("--inpaint", type=region, metavar="START:END",
                   help="redraw START-END seconds of --source; outside it the file is "
                        "unchanged (default: none)")
    g.add_argument("--regenerate", type=region, metavar="START:END",
                   help="re-roll a region of --source, keeping it as close as --strength says "
                        "(default: none)")
    g.add_argument("--source", metavar="FILE",
                   help="the stem to inpaint or regenerate (default: none)")
    g.add_argument("--loop", type=loop, metavar="N:FRACTION",
                   help="a loop that repeats N times; FRACTION of the steps are forced "
                        "periodic, e.g. 4:0.8 (default: no loop)")
    g.add_argument("--continue", dest="continue_from", metavar="FILE",
                   help="extend this clip past its end by --duration seconds (default: none)")
    g.add_argument("--transition", nargs=2, metavar=("FILE_A", "FILE_B"),
                   help="bridge FILE_A into FILE_B (default: none)")
    param_flag(g, "gap", "SEC", filled=True)
    g.set_defaults(handler=run)


def progress_printer(quiet: bool):
    """Show each new (stage, step) on one stderr line, overwritten in place."""
    last = [None]

    def show(ev):
        if quiet:
            return
        key = (ev.stage, ev.step)
        if key == last[0]:
            return
        last[0] = key
        eta = f", ~{ev.eta_s:.0f} s left" if ev.eta_s else ""
        print(f"\r[{ev.stage}] {ev.message}{eta}        ", end="", file=sys.stderr, flush=True)
        if ev.stage == "done":
            print(file=sys.stderr)

    return show


def drive(gen, show):
    """Run a progress generator to its end, showing each event; its return value."""
    while True:
        try:
            show(next(gen))
        except StopIteration as stop:
            return stop.value


def load_model(args):
    """The device and the bundle --device and --model name (loaded there)."""
    from engine.generation.driver import pick_device

    device = pick_device(args.device)
    return device, load_bundle(args.model, device=device)


def with_bundle_defaults(req, args, bundle):
    """The request with what the bundle decides: the stereo width (stereo, like the app,
    unless the bundle says otherwise or --stereo-width 0)."""
    if args.stereo_width is not None:
        return req
    return replace(req, stereo_width=pick("stereo_width", None, bundle.defaults))


def run(args) -> int:
    from engine.generation.driver import Generator

    output.check_out(Path(args.out))
    req = request_from_args(args)
    device, bundle = load_model(args)
    gen = Generator(bundle)
    req = with_bundle_defaults(req, args, bundle)
    gen.resolve(req)  # validate before any work
    stems = drive(gen.run(req), progress_printer(args.quiet or args.json))
    with output.staged(Path(args.out)) as stage:
        rows = output.save_stems(stems, Path(args.out), req.mode, output.stem_label(req),
                                 stage=stage)
    output.report(args, rows, bundle, device)
    return 0
