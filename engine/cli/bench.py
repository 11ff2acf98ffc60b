"""`riffwright bench`: time generation, encode and decode (`engine.bench`)."""

from __future__ import annotations

import json

from engine.bench import print_report, run_bench


def add_parser(sub, parser_class) -> None:
    b = sub.add_parser("bench", help="time generation, encode and decode")
    b.add_argument("--arch", choices=["tiny", "small", "base"])
    b.add_argument("--model", metavar="DIR")
    b.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    b.add_argument("--steps", type=int, default=30)
    b.add_argument("--repeat", type=int, default=1)
    b.add_argument("--threads", type=int,
                   help="CPU threads for torch (default through the `riffwright` command: as "
                        "the app generates, one fewer than the cores on up to 4 cores)")
    b.add_argument("--json", action="store_true")
    b.add_argument("--gui", action="store_true",
                   help="measure the app instead: event-loop stalls and lane redraw time")
    b.set_defaults(handler=run)


def run(args) -> int:

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    report = run_bench(arch=args.arch, model=args.model, device=args.device, steps=args.steps,
                       repeat=args.repeat)
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report)
    return 0
