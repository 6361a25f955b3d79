"""One more sidecar engine process for the backfill benchmark: ``python -m bench.drain_proc
DB_URL EMULATOR_URL WORKERS PER_DOCTOR``.

It builds its own runtime on the same database and emulator (as a second replica of the service
would), prints ``ready``, waits for a line on stdin, drains due items with ``process_due`` until
none is left to claim, then prints ``{"created": n, "cpu_s": s}``. Claims are leased, so
several such processes share the queue without doing any item twice.
"""

from __future__ import annotations

import json
import sys
import time

from bench.env import bench_settings
from sidecar.clock import SystemClock
from sidecar.db import create_engine
from sidecar.runtime import build_runtime
from sidecar.services import attach_google
from sidecar.sync.outbound import OutboundSync


def main() -> int:
    url, emulator_url, workers, per_doctor = (sys.argv[1], sys.argv[2], int(sys.argv[3]),
                                              int(sys.argv[4]))
    settings = bench_settings(url, emulator_url)
    engine = create_engine(url, pool_size=workers + 16, max_overflow=16)
    runtime = build_runtime(settings, SystemClock(), engine=engine)
    attach_google(runtime)
    outbound = OutboundSync(runtime, runtime.google_factory, max_workers=workers,
                            per_doctor=per_doctor)
    print("ready", flush=True)
    sys.stdin.readline()
    cpu0 = time.process_time()
    created = outbound.process_due().created
    cpu_s = time.process_time() - cpu0
    outbound.close()
    engine.dispose()
    print(json.dumps({"created": created, "cpu_s": cpu_s}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
