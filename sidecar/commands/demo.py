"""``kc-sidecar demo``: the embedded demo (SQLite site + Google emulator + sidecar).

Options (``add_arguments``): ``--dir`` (default ``./demo-data``), ``--host``, ``--port`` (8090),
``--emulator-port`` (8091; ``0`` picks a free port; a taken default port falls back to a free
one), ``--verbose``. The demo ignores the configuration file: it builds its own settings from
the demo folder. ``python -m sidecar.demo`` takes the same options.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from sidecar.config import Settings

EXIT_USAGE = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", type=Path, default=Path("demo-data"),
                        help="demo folder: database and secrets (default ./demo-data)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8090,
                        help="sidecar port (default 8090, 0 = any free port)")
    parser.add_argument("--emulator-port", type=int, default=8091,
                        help="Google emulator port (default 8091, 0 = any free port)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")


def run(settings: Settings | None, args: argparse.Namespace) -> int:
    from sidecar.demo import DemoOptions, run_demo

    options = DemoOptions(
        directory=Path(getattr(args, "dir", None) or "demo-data"),
        host=getattr(args, "host", None) or "127.0.0.1",
        port=_port(getattr(args, "port", None), 8090),
        emulator_port=_port(getattr(args, "emulator_port", None), 8091),
    )
    try:
        return run_demo(options, verbose=bool(getattr(args, "verbose", False)))
    except ValueError as err:
        print(f"kc-sidecar demo: {err}")
        return EXIT_USAGE


def _port(value: int | None, default: int) -> int:
    return default if value is None else int(value)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kc-sidecar demo",
                                     description="The embedded demo: SQLite site, Google "
                                     "emulator and sidecar in one process.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run(None, args)
