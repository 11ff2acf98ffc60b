"""`riffwright` subcommands: the same engine as the app, headless.

One module per subcommand (`generate`, `arrange`, `models`, `bench`, `dataset`, `train`,
`evaluate`), each adding its parser and its handler; `parser.py` puts them together,
`entry.py` runs one and turns engine errors into one line and exit status 2. The generation
flags and the request they make are in `request.py`, the files a run writes in `output.py`.
"""

from engine.cli.entry import main
from engine.cli.parser import build_parser

__all__ = ["build_parser", "main"]
