"""Run one subcommand: bad input exits with status 2 and one line naming the problem."""

from __future__ import annotations

import os
import sys

from engine.cli.parser import build_parser
from engine.errors import RiffwrightError
from engine.fsutil import os_error_text, write_error_types


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a usage error (already printed)
        return int(e.code or 0)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.handler(args)
    except RiffwrightError as e:
        print(f"riffwright: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("riffwright: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        return 0
    except write_error_types() as e:  # a full or read-only disk, a name too long...
        print(f"riffwright: error: {os_error_text(e)}", file=sys.stderr)
        return 2
