"""`riffwright dataset build`: render or import songs into a multitrack stem dataset
(`engine.training.dataset`; `python -m engine.training.dataset` runs the same build)."""

from __future__ import annotations

import argparse

from engine.training.dataset.command import add_build_arguments, run_build


def add_parser(sub, parser_class) -> None:
    d = sub.add_parser("dataset", help="build a multitrack stem dataset")
    dsub = d.add_subparsers(dest="dataset_cmd", parser_class=parser_class, required=True)
    build = dsub.add_parser("build", help="render or import songs into stems")
    add_build_arguments(build)
    build.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    run_build(args)
    return 0
