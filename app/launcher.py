"""The `riffwright` console command: no arguments opens the app, subcommands run headless."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in {"app", "gui"} or argv[0].startswith("--session"):
        from app.main import run_app

        return run_app(argv[1:] if argv and argv[0] in {"app", "gui"} else argv)
    from engine.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
