"""A sidecar worker process for the crash and replica tests: ``python -m tests.reliability.runner``.

It builds the runtime from the environment exactly as the real commands do (``KCSC_*`` keys,
``load_settings``), logs through ``sidecar.logs`` with the configured secrets registered, and runs
the outbound loop (scan → reconcile → process) until no work is left, then exits 0. Its worker id
carries the pid, so a restarted process never reuses a dead one's leases.

Runner-only knobs: ``KCSC_RUNNER_LEASE_SECONDS`` (default 2: a killed worker's items come back
quickly), ``KCSC_RUNNER_MAX_WORKERS`` (4), ``KCSC_RUNNER_BATCH`` (20), ``KCSC_RUNNER_IDLE_EXIT``
("1": exit once idle; "0": keep polling until killed).
"""

from __future__ import annotations

import logging
import os
import sys
import time

import sqlalchemy as sa

log = logging.getLogger("tests.reliability.runner")

BUSY_STATES = ("pending", "creating", "awaiting_conference", "deleting")


def busy_items(runtime: object) -> int:
    """Items still in a working state (due now or later, leased or not)."""
    state = runtime.state  # type: ignore[attr-defined]
    t = state.tables.items
    with runtime.engine.connect() as conn:  # type: ignore[attr-defined]
        return int(conn.execute(sa.select(sa.func.count()).select_from(t)
                                .where(t.c.state.in_(BUSY_STATES))).scalar() or 0)


def main() -> int:
    from sidecar import logs
    from sidecar.config import load_settings
    from sidecar.google_api import RetryPolicy
    from sidecar.runtime import build_runtime
    from sidecar.services import attach_google
    from sidecar.sync.outbound import OutboundSync

    settings = load_settings()
    for secret in (settings.sidecar.secret_key, settings.google.client_secret):
        logs.register_secret(secret)
    logs.configure_logging("INFO", "text")
    runtime = build_runtime(settings)
    attach_google(runtime, retry=RetryPolicy(
        max_attempts=3, base_delay=0.05, max_delay=0.5,
        on_retry=lambda err: runtime.metrics.google_retries.labels(reason="in_process").inc()))
    outbound = OutboundSync(
        runtime, runtime.google_factory,
        worker_id=f"runner:{os.getpid()}",
        lease_seconds=float(os.environ.get("KCSC_RUNNER_LEASE_SECONDS", "2")),
        max_workers=int(os.environ.get("KCSC_RUNNER_MAX_WORKERS", "4")),
        batch_size=int(os.environ.get("KCSC_RUNNER_BATCH", "20")),
    )
    idle_exit = os.environ.get("KCSC_RUNNER_IDLE_EXIT", "1") == "1"
    print("ready", flush=True)
    while True:
        try:
            result = outbound.run_once()
        except sa.exc.SQLAlchemyError as err:  # database away: keep trying, like the scheduler
            log.warning("cycle failed: database error %s", type(err).__name__)
            time.sleep(0.2)
            continue
        if result.processed:
            log.info("cycle: processed %d created %d retried %d", result.processed,
                     result.created, result.retried)
        if idle_exit and busy_items(runtime) == 0:
            print("idle", flush=True)
            return 0
        time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main())
