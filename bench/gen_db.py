"""A large KiviCare v4 database for the poll and reconcile benchmarks, generated fast and reused.

``ensure_big_database(total, upcoming)`` returns the URL of ``kcsc_bench_big`` holding
``total`` appointments of which ``upcoming`` start within the sync window (today … today+59
days), ~30 % of them telemedicine, over 100 doctors and 2,000 patients. The upcoming telemed
ones are tracked as ``synced`` with their real fingerprints, as after a finished backfill, so a
reconcile finds nothing to do (the steady state it runs in every minute).

Speed: the appointment and service-link tables are filled by ``LOAD DATA LOCAL INFILE`` with
their secondary indexes dropped, then the indexes of ``wp_schema.ddl.create_site`` are added
back in one ``ALTER TABLE`` each (a sorted index build). A marker option
(``kcsc_bench_marker``) records what was generated; a matching marker reuses the database.

``python -m bench.gen_db [--total N] [--upcoming M] [--force]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time as systime
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from bench.env import SITE_URL, database_url, server_engine
from sidecar.appointments import AppointmentReader
from sidecar.config import SyncSettings
from sidecar.db import create_engine
from sidecar.kc_seed import KiviCareWriter
from sidecar.meetings import fingerprint
from sidecar.state import StateStore
from wp_schema.ddl import create_site
from wp_schema.meta import Options
from wp_schema.names import TableNames
from wp_schema.reflect import SiteSchema

DB_NAME = os.environ.get("KC_BENCH_BIG_DB", "kcsc_bench_big")
MARKER = "kcsc_bench_marker"
VERSION = 1
DOCTORS = 100
PATIENTS = 2000
ZONE = "Europe/Berlin"


def marker_for(total: int, upcoming: int, today: date) -> str:
    return f"v{VERSION}|{total}|{upcoming}|{today.isoformat()}"


def _read_marker(url: str, db_name: str) -> str | None:
    server = server_engine()
    try:
        with server.connect() as conn:
            exists = conn.execute(sa.text(
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = :db "
                "AND table_name = 'wp_options'"), {"db": db_name}).scalar()
    finally:
        server.dispose()
    if not exists:
        return None
    engine = create_engine(url)
    try:
        schema = SiteSchema.load(engine, TableNames())
        with engine.connect() as conn:
            value = Options(schema).get(conn, MARKER)
        return None if value is None else str(value)
    finally:
        engine.dispose()


def ensure_big_database(total: int = 1_000_000, upcoming: int = 100_000, *,
                        force: bool = False, log: Any = print, db_name: str = DB_NAME,
                        ) -> tuple[str, float | None]:
    """URL of the big database, and the seconds spent generating it (None when reused)."""
    today = datetime.now(ZoneInfo(ZONE)).date()
    url = database_url(db_name)
    want = marker_for(total, upcoming, today)
    if not force and _read_marker(url, db_name) == want:
        return url, None
    started = systime.perf_counter()
    generate(url, total, upcoming, today, log=log, db_name=db_name)
    return url, systime.perf_counter() - started


def _secondary_keys(conn: sa.Connection, table: str) -> list[str]:
    rows = conn.execute(sa.text(
        "SELECT index_name, column_name, seq_in_index, non_unique FROM "
        "information_schema.statistics WHERE table_schema = DATABASE() AND table_name = :t "
        "AND index_name <> 'PRIMARY' ORDER BY index_name, seq_in_index"), {"t": table}).all()
    keys: dict[str, tuple[bool, list[str]]] = {}
    for name, column, _seq, non_unique in rows:
        keys.setdefault(name, (not non_unique, []))[1].append(column)
    return [f"ADD {'UNIQUE ' if unique else ''}KEY `{name}` ("
            + ", ".join(f"`{c}`" for c in cols) + ")" for name, (unique, cols) in keys.items()]


def _load_file(conn: sa.Connection, path: str, table: str, columns: list[str]) -> None:
    cols = ", ".join(f"`{c}`" for c in columns)
    conn.exec_driver_sql(
        f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE `{table}` CHARACTER SET utf8mb4 "
        f"FIELDS TERMINATED BY '\\t' LINES TERMINATED BY '\\n' ({cols})")


def generate(url: str, total: int, upcoming: int, today: date, *, log: Any = print,
             db_name: str = DB_NAME) -> None:
    names = TableNames()
    server = server_engine()
    with server.begin() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{db_name}`"))
        conn.execute(sa.text(f"CREATE DATABASE `{db_name}` CHARACTER SET utf8mb4 "
                             "COLLATE utf8mb4_unicode_520_ci"))
    server.dispose()
    engine = create_engine(url, connect_args={"local_infile": True})
    t0 = systime.perf_counter()
    create_site(engine, names, kivicare="v4", mapping_shape="c")
    schema = SiteSchema.load(engine, names)
    kc = KiviCareWriter(schema)
    users = schema.users
    usermeta = schema.usermeta
    assert users is not None and usermeta is not None
    doctors: list[tuple[int, int, int]] = []  # doctor, telemed service, in-person service
    with engine.begin() as conn:
        kc.site(conn, site_url=SITE_URL, timezone_string=ZONE)
        clinic_id = kc.clinic(conn, "Big Clinic")
        for n in range(DOCTORS):
            doctor_id = kc.user(conn, f"big-doctor-{n}", "kiviCare_doctor",
                                display_name=f"Dr. Big {n}")
            kc.doctor_in_clinic(conn, doctor_id, clinic_id)
            tele = kc.service(conn, "Video consultation", doctor_id=doctor_id,
                              clinic_id=clinic_id, telemed=True)
            office = kc.service(conn, "Check-up", doctor_id=doctor_id, clinic_id=clinic_id,
                                telemed=False)
            doctors.append((doctor_id, tele, office))
        first_patient = int(conn.execute(sa.select(sa.func.max(users.c.ID))).scalar() or 0) + 1
        conn.execute(sa.insert(users), [{
            "ID": first_patient + i, "user_login": f"big-patient-{i}", "user_pass": "",
            "user_nicename": f"big-patient-{i}", "user_email": f"p{i}@clinic.test",
            "user_url": "", "user_registered": datetime(2026, 1, 1), "user_activation_key": "",
            "user_status": 0, "display_name": f"Patient {i}"} for i in range(PATIENTS)])
        conn.execute(sa.insert(usermeta), [{
            "user_id": first_patient + i, "meta_key": names.capabilities_key,
            "meta_value": 'a:1:{s:16:"kiviCare_patient";b:1;}'} for i in range(PATIENTS)])
    log(f"  site, {DOCTORS} doctors, {PATIENTS} patients: {systime.perf_counter() - t0:.1f}s")

    appts = names.kc("appointments")
    asm = names.kc("appointment_service_mapping")
    zone = ZoneInfo(ZONE)
    offsets: dict[date, timedelta] = {}

    def utc(day: date, at: dtime) -> datetime:
        off = offsets.get(day)
        if off is None:
            off = offsets[day] = datetime.combine(day, dtime(12)).replace(
                tzinfo=zone).utcoffset() or timedelta(0)
        return datetime.combine(day, at) - off

    t1 = systime.perf_counter()
    past = total - upcoming
    created = datetime.now(UTC).replace(microsecond=0)
    created_local = created.astimezone(zone).replace(tzinfo=None).isoformat(" ")
    created_utc = created.replace(tzinfo=None).isoformat(" ")
    fd, appt_path = tempfile.mkstemp(prefix="kcsc-bench-appts-", suffix=".tsv")
    fd2, asm_path = tempfile.mkstemp(prefix="kcsc-bench-asm-", suffix=".tsv")
    try:
        with os.fdopen(fd, "w") as fa, os.fdopen(fd2, "w") as fs:
            out_a: list[str] = []
            out_s: list[str] = []
            for i in range(total):
                appt_id = i + 1
                doctor_id, tele, office = doctors[i % DOCTORS]
                service = tele if (i * 7919) % 10 < 3 else office
                slot = (i // DOCTORS) % 20
                minutes = 8 * 60 + 30 * slot
                start = dtime(minutes // 60, minutes % 60)
                end = dtime((minutes + 30) // 60, (minutes + 30) % 60)
                if i < past:
                    # history: the five years before yesterday, oldest first
                    day = today - timedelta(days=2 + (past - i) * 1826 // max(past, 1))
                    status = 0 if i % 17 == 0 else 3
                else:
                    k = i - past
                    day = today + timedelta(days=k * 60 // max(upcoming, 1))
                    status = 1
                patient = first_patient + (i * 31) % PATIENTS
                out_a.append("\t".join((
                    str(appt_id), day.isoformat(), start.isoformat(), day.isoformat(),
                    end.isoformat(), str(service), str(clinic_id), str(doctor_id), str(patient),
                    "", str(status), created_local, utc(day, start).isoformat(" "),
                    utc(day, end).isoformat(" "), ZONE, created_utc)))
                out_s.append(f"{appt_id}\t{service}\t1\t{created_local}")
                if len(out_a) >= 50_000:
                    fa.write("\n".join(out_a) + "\n")
                    fs.write("\n".join(out_s) + "\n")
                    out_a.clear()
                    out_s.clear()
            if out_a:
                fa.write("\n".join(out_a) + "\n")
                fs.write("\n".join(out_s) + "\n")
        log(f"  wrote {total:,} rows to files: {systime.perf_counter() - t1:.1f}s")
        t2 = systime.perf_counter()
        with engine.begin() as conn:
            conn.exec_driver_sql("SET SESSION unique_checks = 0")
            conn.exec_driver_sql("SET SESSION foreign_key_checks = 0")
            keys: dict[str, list[str]] = {}
            for table in (appts, asm):
                keys[table] = _secondary_keys(conn, table)
                drops = ", ".join("DROP KEY `" + k.split("`")[1] + "`" for k in keys[table])
                if drops:
                    conn.exec_driver_sql(f"ALTER TABLE `{table}` {drops}")
            _load_file(conn, appt_path, appts, [
                "id", "appointment_start_date", "appointment_start_time", "appointment_end_date",
                "appointment_end_time", "visit_type", "clinic_id", "doctor_id", "patient_id",
                "description", "status", "created_at", "appointment_start_utc",
                "appointment_end_utc", "appointment_timezone", "created_at_utc"])
            _load_file(conn, asm_path, asm, ["appointment_id", "service_id", "status",
                                             "created_at"])
        log(f"  LOAD DATA: {systime.perf_counter() - t2:.1f}s")
        t3 = systime.perf_counter()
        with engine.begin() as conn:
            for table in (appts, asm):
                if keys[table]:
                    conn.exec_driver_sql(f"ALTER TABLE `{table}` " + ", ".join(keys[table]))
            conn.exec_driver_sql(f"ANALYZE TABLE `{appts}`, `{asm}`")
        log(f"  indexes: {systime.perf_counter() - t3:.1f}s")
    finally:
        os.unlink(appt_path)
        os.unlink(asm_path)

    t4 = systime.perf_counter()
    _track_upcoming_telemed(engine, names, schema, past + 1, total)
    log(f"  tracked upcoming telemed items: {systime.perf_counter() - t4:.1f}s")
    with engine.begin() as conn:
        Options(schema).set(conn, MARKER, marker_for(total, upcoming, today), autoload="no")
    engine.dispose()


def _track_upcoming_telemed(engine: sa.Engine, names: TableNames, schema: SiteSchema,
                            first_id: int, last_id: int) -> None:
    """kcsc_items rows for every upcoming telemed appointment, ``synced`` with its fingerprint
    (what a finished backfill leaves), so reconcile runs in its steady state."""
    state = StateStore(engine, names)
    state.migrate()
    reader = AppointmentReader(schema)
    sync = SyncSettings()
    extra = "|".join((sync.summary_template, sync.description_template, sync.attendees))
    items = state.tables.items
    now = datetime.now(UTC).replace(tzinfo=None)
    for start in range(first_id, last_id + 1, 10_000):
        ids = list(range(start, min(start + 10_000, last_id + 1)))
        with engine.begin() as conn:
            facts = reader.load(conn, ids)
            rows = [{
                "appointment_id": f.appointment.id, "doctor_id": f.appointment.doctor_id,
                "calendar_doctor_id": f.appointment.doctor_id,
                "event_id": f"kcscbench{f.appointment.id}", "event_version": 0,
                "conference_attempt": 0, "state": "synced", "attempts": 0,
                "fingerprint": fingerprint(f.appointment, f.zone.label, f.telemed, extra=extra),
                "created_at": now, "updated_at": now,
            } for f in facts.values() if f.telemed]
            if rows:
                conn.execute(sa.insert(items), rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="generate (or reuse) the big benchmark database")
    p.add_argument("--total", type=int, default=1_000_000)
    p.add_argument("--upcoming", type=int, default=100_000)
    p.add_argument("--force", action="store_true")
    args = p.parse_args(argv)
    url, seconds = ensure_big_database(args.total, args.upcoming, force=args.force)
    print(url, "reused" if seconds is None else f"generated in {seconds:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
