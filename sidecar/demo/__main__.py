"""``python -m sidecar.demo [--dir DIR] [--port N] [--emulator-port N] [--host H] [-v]``."""

from __future__ import annotations

import sys

from sidecar.commands.demo import main

if __name__ == "__main__":
    sys.exit(main())
