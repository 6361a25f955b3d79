"""Resident memory of the sidecar process while it processes many appointments.

Rounds of ``per_round`` new telemedicine bookings (bulk-inserted, as PHP would over time) are
scanned and drained (one Google insert with Meet each, no injected latency); the process RSS is
sampled after every round. The first round is the warm-up (imports, pools, caches); "growth" is
the RSS change from the end of round 1 to the end of the last round.
"""

from __future__ import annotations

import gc
import multiprocessing
from datetime import UTC, date, datetime, timedelta
from typing import Any

from bench.data import bulk_book, spread
from bench.env import EmulatorProcess, make_clinic, rss_mb, scratch_database


def _book_elsewhere(url: str, doctors: list[tuple[int, int, str]], count: int, day: date,
                    clinic_id: int, patient_id: int) -> None:
    """Book in a child process, as PHP does in its own: the bench's bulk insert must not be
    counted in the sidecar's resident memory."""
    from sidecar.db import create_engine
    from wp_schema.names import TableNames
    from wp_schema.reflect import SiteSchema

    engine = create_engine(url)
    try:
        bulk_book(engine, SiteSchema.load(engine, TableNames()), spread(doctors, count, day, 1),
                  clinic_id=clinic_id, patient_id=patient_id)
    finally:
        engine.dispose()


def run(*, total: int, rounds: int, doctors: int, workers: int) -> dict[str, Any]:
    per_round = max(1, total // rounds)
    with scratch_database() as url, EmulatorProcess(latency=0.0, quota=10**9) as emu:
        clinic = make_clinic(url, emu.url, doctors=doctors, max_workers=workers,
                             pool_size=workers + 16)
        try:
            ob = clinic.outbound
            ob.scan_new()
            samples: list[float] = []
            processed = 0
            first_day = datetime.now(UTC).date() + timedelta(days=2)
            for r in range(rounds):
                child = multiprocessing.get_context("spawn").Process(
                    target=_book_elsewhere,
                    args=(url, clinic.doctors, per_round, first_day + timedelta(days=r),
                          clinic.clinic_id, clinic.patient_id))
                child.start()
                child.join()
                if child.exitcode != 0:
                    raise RuntimeError("booking process failed")
                while True:
                    ob.scan_new()
                    res = ob.process_due()
                    processed += res.created
                    if res.processed == 0:
                        break
                emu.clear_requests()  # the emulator's log is its memory, not ours
                gc.collect()
                samples.append(round(rss_mb(), 1))
            warm = samples[0]
            ob.close()
            return {
                "appointments": processed, "rounds": rounds, "rss_mb": samples,
                "rss_after_warmup_mb": warm, "rss_final_mb": samples[-1],
                "rss_max_mb": max(samples),
                "growth_after_warmup_mb": round(samples[-1] - warm, 1),
            }
        finally:
            clinic.close()


def run_isolated(**kwargs: Any) -> dict[str, Any]:
    """:func:`run` in a fresh interpreter: resident memory is per process, and benchmarks run
    before it in the same process (thread arenas, caches, the webhook bench's in-process
    emulator) would be counted."""
    import json
    import os
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "bench.b_memory", json.dumps(kwargs)], capture_output=True,
        text=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if proc.returncode != 0:
        raise RuntimeError("memory benchmark failed: " + proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(**json.loads(sys.argv[1]))))
