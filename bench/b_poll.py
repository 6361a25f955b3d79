"""Cost of the two database jobs on a big site: the new-booking poll and the window reconcile.

* poll: ``OutboundSync.scan_new`` with nothing new (the common case: runs every poll interval)
  and with one new booking (found, loaded, tracked); median milliseconds, plus MariaDB's
  ``EXPLAIN`` of the scan query (a primary-key range, rows ≈ the batch size at most);
* reconcile: ``OutboundSync.reconcile`` over the upcoming window in its steady state (every
  telemed appointment already synced with a matching fingerprint): a full compare of every
  appointment, the first of a restarted process (from the stored day digests) and the
  following ones (database day digests; the figure).
"""

from __future__ import annotations

import time as systime
from datetime import date, time
from typing import Any

import sqlalchemy as sa

from bench.env import make_clinic, median
from sidecar.sync.outbound import CURSOR_LAST_ID, OutboundSync


def _explain(conn: sa.Connection, stmt: Any) -> list[dict[str, Any]]:
    sql = str(stmt.compile(conn.engine, compile_kwargs={"literal_binds": True}))
    rows = conn.exec_driver_sql("EXPLAIN " + sql).mappings().all()
    keep = ("table", "type", "possible_keys", "key", "rows", "Extra")
    return [{k: r.get(k) for k in keep} for r in rows]


def run(url: str, *, polls: int, booked_polls: int, reconciles: int) -> dict[str, Any]:
    clinic = make_clinic(url, "http://127.0.0.1:9", doctors=0, seed_site=False, connect=False,
                         existing_doctors=[])
    try:
        ob = clinic.outbound
        reader = ob.reader
        state = clinic.runtime.state
        a = reader.appts
        with clinic.engine.connect() as conn:
            top = reader.max_id(conn)
            upcoming_rows = len(reader.ids_starting_between(conn, *ob.window(
                ob.now().astimezone(reader.site_zone(conn).tzinfo).date())))
            total_rows = int(conn.execute(sa.select(sa.func.count()).select_from(a)).scalar()
                             or 0)
        state.set_cursor(CURSOR_LAST_ID, str(top))
        ob.scan_new()  # warm the pool and caches
        empty: list[float] = []
        for _ in range(polls):
            t = systime.perf_counter()
            ob.scan_new()
            empty.append((systime.perf_counter() - t) * 1000)

        booked: list[float] = []
        tele = _a_telemed_service(clinic)
        new_ids: list[int] = []
        try:
            for n in range(booked_polls):
                new_ids.append(clinic.book(tele, date(2030, 1, 2), time(8 + n % 10, 0)))
                t = systime.perf_counter()
                res = ob.scan_new()
                booked.append((systime.perf_counter() - t) * 1000)
                assert res.scanned == 1, res
        finally:
            _remove(clinic, new_ids)
            state.set_cursor(CURSOR_LAST_ID, str(top))

        with clinic.engine.connect() as conn:
            explain_poll = _explain(conn, sa.select(a.c.id).where(a.c.id > top)
                                    .order_by(a.c.id).limit(ob.batch_size))
            first, last = ob.window(ob.now().astimezone(reader.site_zone(conn).tzinfo).date())
            explain_window = _explain(conn, sa.select(a.c.id).where(
                a.c.appointment_start_date >= first, a.c.appointment_start_date <= last))

        # A full reconcile compares the whole window (every 60th, or without usable stored
        # digests); a restarted process starts from the digests the last one stored; the
        # following ones (every reconcile_seconds) load only days whose digest changed.
        recon: list[float] = []
        queued = 0
        scanned: list[int] = []
        t = systime.perf_counter()
        res = ob.reconcile(full=True)
        full_s = systime.perf_counter() - t
        restarted = OutboundSync(clinic.runtime, clinic.runtime.google_factory, max_workers=2)
        t = systime.perf_counter()
        res_restart = restarted.reconcile()
        restart_s = systime.perf_counter() - t
        restarted.close()
        for _ in range(max(1, reconciles)):
            t = systime.perf_counter()
            res = ob.reconcile()
            recon.append(systime.perf_counter() - t)
            queued = max(queued, res.queued, res_restart.queued)
            scanned.append(res.scanned)
        return {
            "appointments": total_rows, "upcoming": upcoming_rows,
            "poll_empty_ms_median": round(median(empty), 2),
            "poll_empty_ms_all": [round(x, 2) for x in empty[:10]],
            "poll_one_new_ms_median": round(median(booked), 2) if booked else None,
            "explain_poll": explain_poll, "explain_window": explain_window,
            "reconcile_full_s": round(full_s, 3),
            "reconcile_after_restart_s": round(restart_s, 3),
            "reconcile_after_restart_scanned": res_restart.scanned,
            "reconcile_s_median": round(median(recon), 3),
            "reconcile_s_all": [round(x, 3) for x in recon],
            "reconcile_scanned": scanned,
            "reconcile_queued": queued,
        }
    finally:
        clinic.close()


def _a_telemed_service(clinic: Any) -> tuple[int, int, str]:
    sdm = clinic.runtime.schema.service_doctor_mapping
    with clinic.engine.connect() as conn:
        row = conn.execute(sa.select(sdm.c.doctor_id, sdm.c.service_id)
                           .where(sdm.c.telemed_service == "yes").limit(1)).first()
    assert row is not None, "the big database has no telemed service"
    return int(row[0]), int(row[1]), ""


def _remove(clinic: Any, ids: list[int]) -> None:
    """Leave the reused database as generated: delete the bench's bookings and their items."""
    if not ids:
        return
    items = clinic.runtime.state.tables.items
    with clinic.engine.begin() as conn:
        for appt_id in ids:
            clinic.kc.delete(conn, appt_id)
        conn.execute(sa.delete(items).where(items.c.appointment_id.in_(ids)))
