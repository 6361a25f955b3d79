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

import json
import os
import subprocess
import sys
import time as systime
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.data import bulk_book, spread
from bench.env import (
    EmulatorProcess,
    cpu_seconds,
    local_mariadb_pid,
    make_clinic,
    scratch_database,
)
from sidecar.sync.outbound import OutboundSync


def run(*, appointments: int, doctors: int, latency: float, quota: int, workers: int,
        baseline_sample: int, per_doctor: int = 1, processes: int = 1) -> dict[str, Any]:
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

            # Extra engine processes (replicas) start now and wait for the go.
            extra = [_start_replica(url, emu.url, workers, per_doctor)
                     for _ in range(processes - 1)]
            db_pid = local_mariadb_pid()
            others0 = (cpu_seconds(emu.proc.pid), cpu_seconds(db_pid))
            t2 = systime.perf_counter()
            cpu0 = systime.process_time()
            for proc in extra:
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
            res = ob.process_due()
            replicas = [_finish_replica(proc) for proc in extra]
            parallel_s = systime.perf_counter() - t2
            cpu_s = systime.process_time() - cpu0 + sum(r["cpu_s"] for r in replicas)
            others1 = (cpu_seconds(emu.proc.pid), cpu_seconds(db_pid))
            ob.close()
            rest = res.created + sum(int(r["created"]) for r in replicas)
            counts = clinic.runtime.state.count_by_state()
            calls = len([r for r in emu.requests() if str(r.get("api_method", ""))
                         .startswith("calendar.")])
            parallel_calls = calls - base.created  # baseline made one call per meeting
            rate = rest / parallel_s if parallel_s else float("nan")
            ideal_s = parallel_calls / (doctors * quota / 60.0)
            over_quota = len([r for r in emu.requests() if r.get("status") == 403])
            cpu_ms = _cpu_ms_per_meeting(rest, cpu_s, others0, others1)
            ceiling = (1000.0 * CORES / sum(cpu_ms.values())) if rest and all(
                v is not None for v in cpu_ms.values()) else None
            return {
                "appointments": appointments, "doctors": doctors, "latency_s": latency,
                "quota_per_min": quota, "workers": workers, "per_doctor": per_doctor,
                "processes": processes, "queued": queued,
                "reconcile_s": round(reconcile_s, 3),
                "baseline_meetings": base.created, "baseline_s": round(baseline_s, 3),
                "baseline_rate_per_s": round(baseline_rate, 2),
                "meetings": rest, "seconds": round(parallel_s, 3),
                "rate_per_s": round(rate, 2),
                "sidecar_cpu_ms_per_meeting": cpu_ms["sidecar"],
                "sidecar_cpu_share": round(cpu_s / parallel_s, 2) if parallel_s else None,
                "per_process_created": [res.created] + [int(r["created"]) for r in replicas],
                "cpu_ms_per_meeting": cpu_ms,
                "cores": CORES,
                "cpu_bound_rate_per_s": round(ceiling, 1) if ceiling else None,
                "ideal_rate_per_s": round(parallel_calls / ideal_s, 1) if ideal_s else None,
                "google_calls": calls, "rejected_403": over_quota,
                "ideal_s": round(ideal_s, 3),
                "ratio_to_ideal": round(ideal_s / parallel_s, 3) if parallel_s else None,
                "ratio_to_sequential": round(rate / baseline_rate, 1) if baseline_rate else None,
                "synced": counts.get("synced", 0), "states": counts,
            }
        finally:
            clinic.close()


CORES = os.cpu_count() or 1
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _start_replica(url: str, emulator_url: str, workers: int,
                   per_doctor: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.drain_proc", url, emulator_url, str(workers),
         str(per_doctor)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "ready":
        proc.kill()
        raise RuntimeError(f"backfill replica did not start (got {line!r})")
    return proc


def _finish_replica(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"backfill replica failed with exit code {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _cpu_ms_per_meeting(meetings: int, sidecar_s: float,
                        before: tuple[float | None, float | None],
                        after: tuple[float | None, float | None]) -> dict[str, float | None]:
    """CPU milliseconds per meeting of the three parties on this box: the sidecar (this
    process and its replicas), the emulator (Google's side) and MariaDB. Their sum bounds the
    rate the machine's cores can sustain whatever the concurrency: ``cores * 1000 / sum``."""
    def per(a: float | None, b: float | None) -> float | None:
        return round((b - a) * 1000 / meetings, 2) if a is not None and b is not None \
            and meetings else None
    return {"sidecar": round(sidecar_s * 1000 / meetings, 2) if meetings else None,
            "emulator": per(before[0], after[0]), "mariadb": per(before[1], after[1])}
