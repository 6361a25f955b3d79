"""``kc-sidecar serve`` with some gunicorn settings changed, for the webhook benchmark's
comparisons: ``python -m bench.serve_variant '{"accesslog": null}'``. Configuration comes from
the environment as for ``serve``; the overrides (JSON object of gunicorn setting names) replace
entries of :func:`sidecar.commands.serve.gunicorn_options`, and nothing else changes."""

from __future__ import annotations

import json
import sys
from typing import Any

from sidecar import cli
from sidecar.commands import serve


def main(argv: list[str]) -> int:
    overrides: dict[str, Any] = json.loads(argv[0]) if argv else {}
    production = serve.gunicorn_options

    def options(settings: Any) -> dict[str, Any]:
        return {**production(settings), **overrides}

    serve.gunicorn_options = options  # type: ignore[assignment]
    if "threads" in overrides:
        serve.THREADS = int(overrides["threads"])  # only for the startup log line
    return cli.main(["serve"])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
