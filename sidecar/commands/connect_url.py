"""``kc-sidecar connect-url --doctor ID [--ttl 24h]``: print a signed single-use invite URL.

The link lets that doctor connect their Google account without a WordPress login; it works once
(it is spent when the connection it started is stored) and expires after ``--ttl`` (at most 30
days). The URL is the only thing printed on stdout, so scripts can capture it.
"""

from __future__ import annotations

import argparse
import sys

from sidecar.config import Settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def run(settings: Settings, args: argparse.Namespace) -> int:
    from sidecar.runtime import build_runtime
    from sidecar.web.connect_flow import FlowError, create_invite

    runtime = build_runtime(settings)
    try:
        url = create_invite(runtime, int(args.doctor), args.ttl.total_seconds())
    except FlowError as err:
        print(f"kc-sidecar connect-url: {err.message}", file=sys.stderr)
        return EXIT_USAGE if err.status == 400 else EXIT_FAILED
    finally:
        runtime.engine.dispose()
    print(url)
    return EXIT_OK
