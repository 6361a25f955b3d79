"""``kc-sidecar serve`` with some settings changed, for the webhook benchmark's comparisons:
``python -m bench.serve_variant '{"accesslog": null}'``. Configuration comes from the
environment as for ``serve``; the overrides (JSON object of gunicorn setting names) replace
entries of :func:`sidecar.commands.serve.gunicorn_options`, and nothing else changes. One
override is not gunicorn's: ``"_log_all": true`` gives every request an access line, accepted
push notifications included (``sidecar.gunicorn_logger.QUIET_SUFFIXES`` emptied)."""

from __future__ import annotations

import json
import sys
from typing import Any

from sidecar import cli
from sidecar.commands import serve


def main(argv: list[str]) -> int:
    overrides: dict[str, Any] = json.loads(argv[0]) if argv else {}
    if overrides.pop("_log_all", False):
        from sidecar import gunicorn_logger

        gunicorn_logger.QUIET_SUFFIXES = ()  # type: ignore[misc]
    production = serve.gunicorn_options

    def options(settings: Any) -> dict[str, Any]:
        return {**production(settings), **overrides}

    serve.gunicorn_options = options  # type: ignore[assignment]
    if "threads" in overrides:
        serve.THREADS = int(overrides["threads"])  # only for the startup log line
    return cli.main(["serve"])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
