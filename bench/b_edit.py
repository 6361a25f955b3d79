"""Google-side edit → mapping row updated: push notification, webhook, incremental sync.

The doctor regenerates an event's Meet link in Google (the emulator's user API); the emulator
delivers a real push notification over HTTP to the sidecar's webhook (its own thread, as Google
does); the webhook marks the doctor due and the :class:`~sidecar.sync.inbound.InboundWorker`
runs the incremental sync that rewrites the mapping row. The figure is the time from the edit to
the new link in ``kc_appointment_google_meet_mappings``, watched every 5 ms.
"""

from __future__ import annotations

import time
from datetime import date
from datetime import time as clock_time
from typing import Any

import sqlalchemy as sa

from bench.emulator_proc import CLIENT_ID, CLIENT_SECRET, REDIRECT
from bench.env import make_clinic, percentile, scratch_database
from sidecar.emulator import EmulatorConfig, create_emulator_app
from sidecar.emulator.server import run_in_thread


def _mapped_url(engine: sa.Engine, table: sa.Table, appointment_id: int) -> str | None:
    with engine.connect() as conn:
        return conn.execute(sa.select(table.c.url).where(
            table.c.appointment_id == appointment_id)).scalar()


def run(*, doctors: int, edits: int, timeout: float = 15.0) -> dict[str, Any]:
    from sidecar.sync import channels
    from sidecar.sync.inbound import InboundSync, InboundWorker
    from sidecar.web import create_app
    from sidecar.web.webhook import install_worker

    emu_app = create_emulator_app(EmulatorConfig(
        clients={CLIENT_ID: (CLIENT_SECRET, [REDIRECT])}, testing=True, push_mode="auto",
        conference_delay_seconds=0))
    emu = run_in_thread(emu_app)
    google = emu_app.emulator  # type: ignore[attr-defined]
    with scratch_database() as url:
        clinic = make_clinic(url, emu.url, doctors=doctors, max_workers=4, pool_size=20)
        web = worker = None
        try:
            rt = clinic.runtime
            clinic.outbound.scan_new()  # cursor at the end of (empty) history
            booked = [(doc, clinic.book(doc, date(2026, 12, 10), clock_time(9 + n % 8, 0)))
                      for n, doc in enumerate(clinic.doctors)]
            for _ in range(20):
                clinic.outbound.run_once()
                if not clinic.runtime.state.count_by_state().get("pending"):
                    break
            app = create_app(rt)
            web = run_in_thread(app)
            manager = channels.install(rt, address=web.url + "/webhook/google")
            manager.run_once()
            inbound = InboundSync(rt, channels=manager)
            for doc, _appt in booked:
                inbound.sync_doctor(doc[0])  # the first (full) sync; edits come as deltas
            worker = install_worker(app, InboundWorker(inbound, min_interval=0.0).start())
            table = rt.schema.meet_mappings
            assert table is not None
            latencies: list[float] = []
            for n in range(edits):
                (_doctor_id, _service, email), appt_id = booked[n % len(booked)]
                item = rt.state.get_item(appt_id)
                before = _mapped_url(clinic.engine, table, appt_id)
                started = time.perf_counter()
                google.user_regenerate_meet(email, item.event_id)
                while True:
                    now_url = _mapped_url(clinic.engine, table, appt_id)
                    if now_url and now_url != before:
                        latencies.append(time.perf_counter() - started)
                        break
                    if time.perf_counter() - started > timeout:
                        raise RuntimeError(f"mapping of appointment {appt_id} not updated "
                                           f"within {timeout} s of the Google edit")
                    time.sleep(0.005)
            return {
                "edits": edits, "doctors": doctors,
                "p50_ms": round(percentile(latencies, 50) * 1000, 1),
                "p90_ms": round(percentile(latencies, 90) * 1000, 1),
                "max_ms": round(max(latencies) * 1000, 1),
            }
        finally:
            if worker is not None:
                worker.close()
            if web is not None:
                web.stop()
            clinic.close()
            emu.stop()
