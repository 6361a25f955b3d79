"""``kc-sidecar retry [--doctor ID]``: failed items become due now and are processed at once.

The same items the scheduler would retry later (with backoff); this does it now and reports what
happened. Exit 0 when every retried item went through, 1 when some failed again.
"""

from __future__ import annotations

import argparse
import sys

from sidecar.config import Settings

EXIT_OK, EXIT_FAILED = 0, 1


def run(settings: Settings, args: argparse.Namespace) -> int:
    from sidecar.runtime import build_runtime
    from sidecar.scheduler import SyncScheduler
    from sidecar.web.connect_flow import user_exists

    runtime = build_runtime(settings)
    doctor_id = args.doctor
    try:
        if doctor_id is not None and not user_exists(runtime, int(doctor_id)):
            print(f"kc-sidecar retry: there is no WordPress user {doctor_id} on this site",
                  file=sys.stderr)
            return EXIT_FAILED
        queued = runtime.state.retry_failed(now=runtime.clock.now(), doctor_id=doctor_id)
        if not queued:
            who = f" for doctor {doctor_id}" if doctor_id is not None else ""
            print(f"retry: no failed items{who}")
            return EXIT_OK
        result = SyncScheduler(runtime, with_inbound=False).drain()
        left = runtime.state.list_items(states=["failed"], doctor_id=doctor_id, limit=1000)
    finally:
        runtime.engine.dispose()
    print(f"retry: {queued} failed items queued again; created {result.created}, "
          f"updated {result.updated}, deleted {result.deleted}, failed again {len(left)}, "
          f"retrying later {result.retried}, waiting for reconnect {result.waiting}")
    for item in left:
        print(f"  appointment {item.appointment_id} (doctor {item.doctor_id}): {item.last_error}",
              file=sys.stderr)
    return EXIT_FAILED if left else EXIT_OK
