"""Entry point of the frozen app: the same dispatch as the `riffwright` console command.

No arguments (or `app`/`gui`, or `--session`) opens the window; anything else runs a CLI
subcommand headless (`Riffwright generate ...`, `Riffwright models list`).
"""

import multiprocessing
import sys

if __name__ == "__main__":
    # torch.multiprocessing / DataLoader workers re-run this executable in frozen apps
    multiprocessing.freeze_support()
    from app.launcher import main

    sys.exit(main())
