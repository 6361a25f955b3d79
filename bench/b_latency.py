"""Booking → Meet link latency under a steady booking rate, real time and real HTTP.

A writer thread books telemedicine appointments (as KiviCare's PHP does) at ``rate`` per second
for ``seconds``; the service's own scheduler (``sidecar.scheduler.SyncScheduler``: scan every
``poll`` seconds, which wakes the drain; reconcile, retry) runs the engine; a watcher reads new
mapping rows every 10 ms. Latency = first sight of the appointment's mapping row
(which carries the Meet link) − the booking's commit.
"""

from __future__ import annotations

import threading
import time as systime
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from typing import Any

import sqlalchemy as sa

from bench.env import EmulatorProcess, make_clinic, percentile, scratch_database
from sidecar.config import SyncSettings
from sidecar.scheduler import SyncScheduler


def run(*, rate: float, seconds: float, latency: float, doctors: int, poll: float,
        workers: int) -> dict[str, Any]:
    with scratch_database() as url, EmulatorProcess(latency=latency) as emu:
        clinic = make_clinic(url, emu.url, doctors=doctors, max_workers=workers,
                             pool_size=2 * workers + 4,
                             sync=SyncSettings(settle_seconds=0, poll_seconds=poll))
        try:
            ob = clinic.outbound
            ob.scan_new()
            booked: dict[int, float] = {}
            mapped: dict[int, float] = {}
            m = clinic.runtime.schema.meet_mappings
            stop_watch = threading.Event()

            def watch() -> None:
                # Rows commit out of id order (many workers): re-read a slack of ids below
                # the highest seen, wider than what can be in flight.
                last = 0
                with clinic.engine.connect() as conn:
                    while not stop_watch.is_set():
                        rows = conn.execute(sa.select(m.c.id, m.c.appointment_id, m.c.url)
                                            .where(m.c.id > last - 1000).order_by(m.c.id)
                                            ).all()
                        conn.commit()
                        now = systime.perf_counter()
                        for row_id, appt_id, link in rows:
                            last = max(last, int(row_id))
                            if link:
                                mapped.setdefault(int(appt_id), now)
                        stop_watch.wait(0.01)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            engine = SyncScheduler(clinic.runtime, outbound=ob, with_inbound=False)
            engine.start()
            day = datetime.now(UTC).date() + timedelta(days=3)
            total = int(rate * seconds)
            t0 = systime.perf_counter()
            with clinic.engine.connect() as conn:
                for n in range(total):
                    due = t0 + n / rate
                    wait = due - systime.perf_counter()
                    if wait > 0:
                        systime.sleep(wait)
                    doctor = clinic.doctors[n % len(clinic.doctors)]
                    slot = n // len(clinic.doctors)
                    start = dtime(8 + (slot // 2) % 10, 30 * (slot % 2))
                    appt_id = clinic.book(doctor, day + timedelta(days=slot // 20), start,
                                          conn=conn)
                    conn.commit()
                    booked[appt_id] = systime.perf_counter()
            arrival_s = systime.perf_counter() - t0
            deadline = systime.perf_counter() + 60
            while len(mapped) < len(booked) and systime.perf_counter() < deadline:
                systime.sleep(0.05)
            engine.stop()
            ob.close()
            stop_watch.set()
            watcher.join(timeout=5)
            lat = [mapped[a] - t for a, t in booked.items() if a in mapped]
            states = clinic.runtime.state.count_by_state()
            errors = sorted({str(i.last_error)[:160] for i in clinic.runtime.state.list_items(
                states=["pending", "creating", "awaiting_conference", "failed"], limit=50)
                if i.last_error})
            return {
                "bookings": len(booked), "linked": len(lat), "rate_per_s": rate,
                "arrival_s": round(arrival_s, 2),
                "achieved_rate": round(len(booked) / arrival_s, 1),
                "emulator_latency_s": latency, "poll_s": poll, "workers": workers,
                "doctors": doctors,
                "states": states, "errors": errors,
                "p50_s": round(percentile(lat, 50), 3), "p90_s": round(percentile(lat, 90), 3),
                "p99_s": round(percentile(lat, 99), 3),
                "max_s": round(max(lat), 3) if lat else None,
            }
        finally:
            clinic.close()
