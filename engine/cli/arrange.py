"""`riffwright arrange`: iterative arrangement, one stem per --prompt/--reference, each
generated over the context and the parts before it (part i with seed + i)."""

from __future__ import annotations

import os
from pathlib import Path

from engine.audio import write_audio
from engine.cli import output
from engine.cli.generate import drive, load_model, progress_printer, with_bundle_defaults
from engine.cli.request import OUT_RATE, add_generation_arguments, load, request_from_args
from engine.errors import RiffwrightError


def add_parser(sub, parser_class) -> None:
    a = sub.add_parser("arrange", help="iterative arrangement: one stem per prompt/reference, "
                       "each summed into the context of the next")
    add_generation_arguments(a, arrange=True)
    a.add_argument("--prompt", action="append", dest="parts", type=lambda s: ("prompt", s),
                   default=[], help="one part per --prompt, in order (repeat it)")
    a.add_argument("--reference", action="append", dest="parts",
                   type=lambda s: ("reference", s),
                   help="a part that sounds like this audio file (repeat it)")
    a.set_defaults(handler=run)


def _part_label(part) -> str:
    """A part's file-name label: its prompt, else its reference's file name."""
    if part.kind == "prompt":
        return output.slug(part.value)
    return output.slug(Path(part.value).stem) or "reference"


def run(args) -> int:
    from engine.arrange import Part, arrange, arrangement_mix
    from engine.generation.driver import Generator

    if not args.parts:
        raise RiffwrightError("arrange needs at least one --prompt or --reference")
    out = Path(args.out)
    output.check_out(out)
    base = request_from_args(args)
    parts = [Part(kind, value, load(value, "reference") if kind == "reference" else None)
             for kind, value in args.parts]
    device, bundle = load_model(args)
    base = with_bundle_defaults(base, args, bundle)
    stems = drive(arrange(Generator(bundle), base, parts),
                  progress_printer(args.quiet or args.json))
    mix = arrangement_mix(stems, base.context, OUT_RATE)
    rows = []
    with output.staged(out) as stage:
        for i, (s, part) in enumerate(zip(stems, parts)):
            rows += output.save_stems([s], out, "arrange", _part_label(part), index=i,
                                      stage=stage)
        mix_path = output.unique_path(out, f"arrangement_mix_seed{base.seed}")
        write_audio(stage / mix_path.name, mix, OUT_RATE)
        os.chmod(stage / mix_path.name, output.file_mode())
    output.report(args, rows, bundle, device)
    return 0
