"""Backfill: telemedicine appointments that exist before the sidecar starts, many doctors.

The reconcile of the upcoming window queues them all; ``process_due`` drains the queue. The
emulator answers every call after ``latency`` seconds and enforces ``quota`` calls per minute
per Google user.

*Quota-bound ideal*: each doctor's calls spread at the quota's steady rate, all doctors in
parallel: ``calls / (doctors * quota / 60)`` seconds. The sequential baseline is the add-on's
way — one call at a time, one appointment after another — measured on a sample in the same
run (``max_workers=1``) and reported as a rate.
"""

from __future__ import annotations

import time as systime
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.data import bulk_book, spread
from bench.env import EmulatorProcess, make_clinic, scratch_database
from sidecar.sync.outbound import OutboundSync


def run(*, appointments: int, doctors: int, latency: float, quota: int, workers: int,
        baseline_sample: int, per_doctor: int = 1) -> dict[str, Any]:
    with scratch_database() as url, EmulatorProcess(latency=latency, quota=quota) as emu:
        clinic = make_clinic(url, emu.url, doctors=doctors, max_workers=workers,
                             per_doctor=per_doctor, pool_size=workers + 16)
        try:
            first_day = datetime.now(UTC).date() + timedelta(days=2)
            bulk_book(clinic.engine, clinic.runtime.schema,
                      spread(clinic.doctors, appointments, first_day, 40),
                      clinic_id=clinic.clinic_id, patient_id=clinic.patient_id)
            ob = clinic.outbound
            ob.scan_new()  # first start: cursor at the end of history
            emu.clear_requests()

            t0 = systime.perf_counter()
            queued = ob.reconcile().queued
            reconcile_s = systime.perf_counter() - t0

            # Sequential baseline on a sample: one worker, one call at a time.
            seq = OutboundSync(clinic.runtime, clinic.runtime.google_factory, max_workers=1,
                               batch_size=baseline_sample)
            t1 = systime.perf_counter()
            base = seq.process_due(limit=baseline_sample)
            baseline_s = systime.perf_counter() - t1
            baseline_rate = base.created / baseline_s if baseline_s else float("nan")

            t2 = systime.perf_counter()
            cpu0 = systime.process_time()
            res = ob.process_due()
            parallel_s = systime.perf_counter() - t2
            cpu_s = systime.process_time() - cpu0
            ob.close()
            rest = res.created
            counts = clinic.runtime.state.count_by_state()
            calls = len([r for r in emu.requests() if str(r.get("api_method", ""))
                         .startswith("calendar.")])
            parallel_calls = calls - base.created  # baseline made one call per meeting
            rate = rest / parallel_s if parallel_s else float("nan")
            ideal_s = parallel_calls / (doctors * quota / 60.0)
            over_quota = len([r for r in emu.requests() if r.get("status") == 403])
            return {
                "appointments": appointments, "doctors": doctors, "latency_s": latency,
                "quota_per_min": quota, "workers": workers, "per_doctor": per_doctor, "queued": queued,
                "reconcile_s": round(reconcile_s, 3),
                "baseline_meetings": base.created, "baseline_s": round(baseline_s, 3),
                "baseline_rate_per_s": round(baseline_rate, 2),
                "meetings": rest, "seconds": round(parallel_s, 3),
                "rate_per_s": round(rate, 2),
                "sidecar_cpu_ms_per_meeting": round(cpu_s * 1000 / rest, 2) if rest else None,
                "sidecar_cpu_share": round(cpu_s / parallel_s, 2) if parallel_s else None,
                "google_calls": calls, "rejected_403": over_quota,
                "ideal_s": round(ideal_s, 3),
                "ratio_to_ideal": round(ideal_s / parallel_s, 3) if parallel_s else None,
                "ratio_to_sequential": round(rate / baseline_rate, 1) if baseline_rate else None,
                "synced": counts.get("synced", 0), "states": counts,
            }
        finally:
            clinic.close()
