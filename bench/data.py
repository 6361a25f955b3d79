"""Fast bulk writes of KiviCare rows for benchmarks: multi-row INSERTs, columns as KiviCare v4.

``KiviCareWriter.book`` is the faithful one-booking path (several queries per booking); these
helpers write thousands of bookings per statement with the same column values (local wall-clock
columns, UTC columns, ``appointment_timezone``, site-local ``created_at``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from wp_schema.reflect import SiteSchema

SITE_ZONE = "Europe/Berlin"
CHUNK = 2000


@dataclass(frozen=True)
class Slot:
    doctor_id: int
    service_id: int
    day: date
    start: time
    status: int = 1
    minutes: int = 30


def appointment_values(slot: Slot, clinic_id: int, patient_id: int, now: datetime,
                       zone: ZoneInfo) -> dict[str, object]:
    begin = datetime.combine(slot.day, slot.start)
    end = begin + timedelta(minutes=slot.minutes)
    created = now.astimezone(zone).replace(tzinfo=None, microsecond=0)
    return {
        "appointment_start_date": slot.day, "appointment_start_time": slot.start,
        "appointment_end_date": end.date(), "appointment_end_time": end.time(),
        "appointment_start_utc": begin.replace(tzinfo=zone).astimezone(UTC).replace(tzinfo=None),
        "appointment_end_utc": end.replace(tzinfo=zone).astimezone(UTC).replace(tzinfo=None),
        "appointment_timezone": SITE_ZONE,
        "clinic_id": clinic_id, "doctor_id": slot.doctor_id, "patient_id": patient_id,
        "description": "", "status": slot.status, "created_at": created,
        "created_at_utc": now.astimezone(UTC).replace(tzinfo=None, microsecond=0),
        "visit_type": str(slot.service_id),
    }


def bulk_book(engine: sa.Engine, schema: SiteSchema, slots: Sequence[Slot], *, clinic_id: int,
              patient_id: int, now: datetime | None = None) -> list[int]:
    """Insert appointments and their service rows; returns the new ids in slot order."""
    a = schema.appointments
    asm = schema.appointment_service_mapping
    assert a is not None and asm is not None
    zone = ZoneInfo(SITE_ZONE)
    now = now or datetime.now(UTC)
    ids: list[int] = []
    for start in range(0, len(slots), CHUNK):
        chunk = slots[start : start + CHUNK]
        rows = [{k: v for k, v in appointment_values(s, clinic_id, patient_id, now, zone).items()
                 if k in a.c} for s in chunk]
        with engine.begin() as conn:
            first = int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(a.c.id), 0)))
                        .scalar() or 0)
            conn.execute(sa.insert(a), rows)
            new = [int(r[0]) for r in conn.execute(
                sa.select(a.c.id).where(a.c.id > first).order_by(a.c.id))]
            if len(new) != len(chunk):
                raise RuntimeError("concurrent appointment inserts during a bulk booking")
            conn.execute(sa.insert(asm), [
                {"appointment_id": i, "service_id": s.service_id, "status": 1,
                 "created_at": rows[0]["created_at"]} for i, s in zip(new, chunk, strict=True)])
        ids.extend(new)
    return ids


def spread(doctors: Sequence[tuple[int, int, str]], count: int, first_day: date,
           days: int) -> list[Slot]:
    """``count`` slots round-robin over doctors, one per half hour from 08:00 on each day."""
    slots: list[Slot] = []
    per_doctor_day = 20
    for n in range(count):
        doctor = doctors[n % len(doctors)]
        k = n // len(doctors)
        day = first_day + timedelta(days=(k // per_doctor_day) % days)
        minutes = 8 * 60 + 30 * (k % per_doctor_day)
        slots.append(Slot(doctor[0], doctor[1], day, time(minutes // 60, minutes % 60)))
    return slots


def ids_in(values: Iterable[int]) -> list[int]:
    return sorted(set(values))
