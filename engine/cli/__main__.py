"""`python -m engine.cli`: the `riffwright` subcommands without the app's launcher."""

import sys

from engine.cli.entry import main

sys.exit(main())
