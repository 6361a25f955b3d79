"""Writes KiviCare rows the way its PHP does: users with roles, clinics, telemed services, bookings.

Used by the demo, the benchmarks and the tests to stand in for the PHP site: appointments are
inserted, rescheduled, re-statused and deleted with the same columns KiviCare v4 writes (local
wall-clock columns, the UTC columns and ``appointment_timezone`` kept consistent, site-local
``created_at``), adapting to the columns the reflected schema actually has.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa

from sidecar.timezones import ResolvedZone, localize, parse_zone, resolve_site_zone
from wp_schema.meta import Options, UserMeta
from wp_schema.phpvalue import maybe_serialize
from wp_schema.reflect import SiteSchema


@dataclass(frozen=True)
class Booking:
    id: int
    doctor_id: int
    patient_id: int
    clinic_id: int


class KiviCareWriter:
    def __init__(self, schema: SiteSchema) -> None:
        self.schema = schema
        self.meta = UserMeta(schema)
        self.options = Options(schema)

    # -- WordPress ------------------------------------------------------------------------
    def site(self, conn: sa.Connection, *, site_url: str, timezone_string: str = "",
             gmt_offset: float | str = 0, active_plugins: Sequence[str] = ()) -> None:
        for name, value in (("siteurl", site_url), ("home", site_url),
                            ("timezone_string", timezone_string), ("gmt_offset", gmt_offset),
                            ("active_plugins", list(active_plugins))):
            self.options.set(conn, name, value)

    def user(self, conn: sa.Connection, login: str, role: str, *, email: str | None = None,
             display_name: str | None = None, timezone: str | None = None) -> int:
        users = self.schema.users
        assert users is not None
        values: dict[str, Any] = {
            "user_login": login, "user_pass": "$P$B" + hashlib.md5(login.encode()).hexdigest(),  # noqa: S324
            "user_nicename": login.lower()[:50], "user_email": email or f"{login}@clinic.test",
            "user_url": "", "user_registered": datetime(2026, 1, 1),
            "user_activation_key": "", "user_status": 0,
            "display_name": display_name or login,
        }
        values = {k: v for k, v in values.items() if k in users.c}
        user_id = int(conn.execute(sa.insert(users).values(**values)).inserted_primary_key[0])
        self.meta.set(conn, user_id, self.schema.names.capabilities_key, {role: True})
        if timezone:
            self.meta.set(conn, user_id, "timezone", timezone)
        return user_id

    # -- KiviCare ---------------------------------------------------------------------------
    def _insert(self, conn: sa.Connection, key: str, **values: Any) -> int:
        table = self.schema.tables[key]
        values = {k: v for k, v in values.items() if k in table.c}
        return int(conn.execute(sa.insert(table).values(**values)).inserted_primary_key[0])

    def clinic(self, conn: sa.Connection, name: str, *, admin_id: int = 0,
               address: str = "1 Health Street", city: str = "Berlin",
               country: str = "Germany") -> int:
        return self._insert(conn, "clinics", name=name, email=f"{name[:20]}@clinic.test",
                            address=address, city=city, country=country, status=1,
                            clinic_admin_id=admin_id, clinic_logo=0,
                            created_at=datetime(2026, 1, 1))

    def doctor_in_clinic(self, conn: sa.Connection, doctor_id: int, clinic_id: int) -> None:
        self._insert(conn, "doctor_clinic_mappings", doctor_id=doctor_id, clinic_id=clinic_id,
                     owner=0, created_at=datetime(2026, 1, 1))

    def service(self, conn: sa.Connection, name: str, *, doctor_id: int, clinic_id: int,
                telemed: bool = True, duration: int = 30) -> int:
        service_id = self._insert(conn, "services", type="general", name=name, price="0",
                                  status=1, created_at=datetime(2026, 1, 1))
        self._insert(conn, "service_doctor_mapping", service_id=service_id, doctor_id=doctor_id,
                     clinic_id=clinic_id, charges="0", telemed_service="yes" if telemed else "no",
                     service_name_alias=name, multiple="no", status=1, duration=duration,
                     created_at=datetime(2026, 1, 1))
        return service_id

    def _site_zone(self, conn: sa.Connection) -> ResolvedZone:
        return resolve_site_zone(self.options.get(conn, "timezone_string"),
                                 self.options.get(conn, "gmt_offset"))

    def _times(self, conn: sa.Connection, day: date, start: time, minutes: int,
               zone_name: str | None) -> dict[str, Any]:
        zone = parse_zone(zone_name) if zone_name else None
        zone = zone or self._site_zone(conn)
        begin = localize(day, start, zone)
        end_wall = datetime.combine(day, start) + timedelta(minutes=minutes)
        end = localize(end_wall.date(), end_wall.time(), zone)
        return {
            "appointment_start_date": day, "appointment_start_time": start,
            "appointment_end_date": end_wall.date(), "appointment_end_time": end_wall.time(),
            "appointment_start_utc": begin.astimezone(UTC).replace(tzinfo=None),
            "appointment_end_utc": end.astimezone(UTC).replace(tzinfo=None),
            "appointment_timezone": zone_name or zone.label,
        }

    def book(self, conn: sa.Connection, *, doctor_id: int, patient_id: int, clinic_id: int,
             service_ids: Sequence[int], day: date, start: time, minutes: int = 30,
             status: int = 1, zone: str | None = None, description: str = "",
             now: datetime | None = None) -> Booking:
        """Insert an appointment and its service rows as KiviCare v4's booking does."""
        now = now or datetime.now(UTC)
        created = now.astimezone(self._site_zone(conn).tzinfo).replace(tzinfo=None, microsecond=0)
        values = self._times(conn, day, start, minutes, zone)
        values.update(clinic_id=clinic_id, doctor_id=doctor_id, patient_id=patient_id,
                      description=description, status=status, created_at=created,
                      created_at_utc=now.astimezone(UTC).replace(tzinfo=None, microsecond=0),
                      visit_type=",".join(str(s) for s in service_ids))
        appt_id = self._insert(conn, "appointments", **values)
        for service_id in service_ids:
            self._insert(conn, "appointment_service_mapping", appointment_id=appt_id,
                         service_id=service_id, status=1, created_at=created)
        return Booking(appt_id, doctor_id, patient_id, clinic_id)

    def reschedule(self, conn: sa.Connection, appointment_id: int, day: date, start: time,
                   minutes: int = 30, zone: str | None = None) -> None:
        a = self.schema.appointments
        assert a is not None
        values = {k: v for k, v in self._times(conn, day, start, minutes, zone).items()
                  if k in a.c}
        conn.execute(sa.update(a).where(a.c.id == appointment_id).values(**values))

    def set_status(self, conn: sa.Connection, appointment_id: int, status: int) -> None:
        a = self.schema.appointments
        assert a is not None
        conn.execute(sa.update(a).where(a.c.id == appointment_id).values(status=status))

    def set_doctor(self, conn: sa.Connection, appointment_id: int, doctor_id: int) -> None:
        a = self.schema.appointments
        assert a is not None
        conn.execute(sa.update(a).where(a.c.id == appointment_id).values(doctor_id=doctor_id))

    def delete(self, conn: sa.Connection, appointment_id: int) -> None:
        """KiviCare's delete: the appointment and its service rows (mapping rows are left to
        the add-on, which deletes them by event id — or to the sidecar)."""
        a = self.schema.appointments
        asm = self.schema.appointment_service_mapping
        assert a is not None and asm is not None
        conn.execute(sa.delete(asm).where(asm.c.appointment_id == appointment_id))
        conn.execute(sa.delete(a).where(a.c.id == appointment_id))

    def php_mapping_row(self, conn: sa.Connection, appointment_id: int, event_id: str,
                        url: str, event_url: str | None = None) -> None:
        """A mapping row as the PHP add-on writes it (GM4 omits created_at: zero date)."""
        m = self.schema.meet_mappings
        assert m is not None
        values: dict[str, Any] = {"appointment_id": appointment_id, "event_id": event_id,
                                  "url": url, "password": "", "event_url": event_url}
        if "created_at" in m.c:
            values["created_at"] = datetime(2026, 1, 1)
        conn.execute(sa.insert(m).values(**values))


def serialized_roles(role: str) -> str:
    return maybe_serialize({role: True})
