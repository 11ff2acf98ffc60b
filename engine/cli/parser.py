"""The `riffwright` argument parser, put together from one module per subcommand.

Each command module has `add_parser(sub, parser_class)`, which adds its subparser and sets
`handler` (the function that runs it) in its defaults. The modules stay light: torch and the
heavy modules are imported when a command runs, so `--help` answers at once.
"""

from __future__ import annotations

import argparse

from engine import __version__
from engine.cli import arrange, bench, dataset, evaluate, generate, models, train

# in the order `riffwright --help` lists them
COMMAND_MODULES = (generate, arrange, models, bench, dataset, train, evaluate)


class CliParser(argparse.ArgumentParser):
    def error(self, message):  # one line, status 2
        self.exit(2, f"riffwright: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    ap = CliParser(prog="riffwright", description="Riffwright: accompaniment stems that fit "
                   "your song. Without a subcommand, opens the app.")
    ap.add_argument("--version", action="version", version=f"riffwright {__version__}")
    sub = ap.add_subparsers(dest="command", parser_class=CliParser)
    for module in COMMAND_MODULES:
        module.add_parser(sub, CliParser)
    return ap
