"""``kc-sidecar sync-once``: one full sync cycle (outbound and inbound), then exit.

For cron-style deployments and for operators who want to see one cycle happen. The cycle is the
scheduler's own (same locks and leases), so it is safe while ``serve`` runs elsewhere. Prints one
summary line; exit 0 when nothing failed in this cycle, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time

from sidecar.config import Settings

EXIT_OK, EXIT_FAILED = 0, 1


def run(settings: Settings, args: argparse.Namespace) -> int:
    from sidecar.runtime import build_runtime
    from sidecar.scheduler import SyncScheduler

    started = time.monotonic()
    runtime = build_runtime(settings)
    try:
        scheduler = SyncScheduler(runtime)
        result = scheduler.run_cycle()
    finally:
        runtime.engine.dispose()
    inbound = sum(int(getattr(r, "syncs", 0) or 0) for r in scheduler.inbound_results.values())
    print(f"sync-once: inbound calendar syncs {inbound}, scanned {result.scanned}, "
          f"queued {result.queued}, created {result.created}, updated {result.updated}, "
          f"deleted {result.deleted}, failed {result.failed}, retrying {result.retried}, "
          f"waiting for reconnect {result.waiting} ({time.monotonic() - started:.1f} s)")
    for error in result.errors:
        print(f"  {error}", file=sys.stderr)
    return EXIT_FAILED if result.failed or result.errors else EXIT_OK
