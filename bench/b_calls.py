"""Google calls per new meeting, with a share of Meet conferences pending for a while.

The emulator leaves ``pending_fraction`` of new conferences pending for ``pending_seconds``;
the others are ready in the insert's answer. The engine runs until every appointment is synced;
then every Calendar request in the emulator's log is attributed to its event id (the insert's
body id, the path of get/patch/delete).
"""

from __future__ import annotations

import time as systime
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.data import bulk_book, spread
from bench.env import EmulatorProcess, make_clinic, scratch_database


def _event_id(req: dict[str, Any]) -> str | None:
    method = str(req.get("api_method", ""))
    if method == "calendar.events.insert":
        return str((req.get("body") or {}).get("id") or "") or None
    if method in ("calendar.events.get", "calendar.events.patch", "calendar.events.update",
                  "calendar.events.delete"):
        return str(req.get("path", "")).rstrip("/").rsplit("/", 1)[-1]
    return None


def run(*, meetings: int, doctors: int, pending_fraction: float, pending_seconds: float,
        latency: float) -> dict[str, Any]:
    with scratch_database() as url, EmulatorProcess(
            latency=latency, pending_fraction=pending_fraction,
            pending_seconds=pending_seconds) as emu:
        clinic = make_clinic(url, emu.url, doctors=doctors, max_workers=16, pool_size=20)
        try:
            ob = clinic.outbound
            first_day = datetime.now(UTC).date() + timedelta(days=2)
            ob.scan_new()
            bulk_book(clinic.engine, clinic.runtime.schema,
                      spread(clinic.doctors, meetings, first_day, 30),
                      clinic_id=clinic.clinic_id, patient_id=clinic.patient_id)
            emu.clear_requests()
            t0 = systime.perf_counter()
            ob.scan_new()
            deadline = t0 + 120
            while systime.perf_counter() < deadline:
                ob.process_due()
                counts = clinic.runtime.state.count_by_state()
                if counts.get("synced", 0) >= meetings:
                    break
                systime.sleep(0.05)
            elapsed = systime.perf_counter() - t0
            pending = set(emu.get("/_bench/pending"))
            calls: Counter[str] = Counter()
            other = 0
            for req in emu.requests():
                if not str(req.get("api_method", "")).startswith("calendar."):
                    continue
                eid = _event_id(req)
                if eid:
                    calls[eid] += 1
                else:
                    other += 1
            normal = [n for e, n in calls.items() if e not in pending]
            slow = [n for e, n in calls.items() if e in pending]
            all_calls = sum(calls.values()) + other
            return {
                "meetings": meetings, "synced": counts.get("synced", 0),
                "pending_conferences": len(slow), "seconds": round(elapsed, 2),
                "calls_total": all_calls,
                "calls_per_meeting": round(all_calls / meetings, 3) if meetings else None,
                "calls_per_ready_meeting": round(sum(normal) / len(normal), 3) if normal else None,
                "calls_per_pending_meeting": round(sum(slow) / len(slow), 3) if slow else None,
                "calls_by_method": dict(Counter(str(r.get("api_method")) for r in emu.requests()
                                                if str(r.get("api_method", ""))
                                                .startswith("calendar."))),
            }
        finally:
            clinic.close()
