"""The lifecycle on every schema KiviCare sites carry, and times across zones and DST switches."""

from __future__ import annotations

from datetime import date, time

import pytest
import sqlalchemy as sa

from sidecar.db import create_engine
from tests.sync.conftest import make_world
from wp_schema.ddl import create_site
from wp_schema.names import TableNames


def _db(new_mysql_database, **shape) -> str:
    url = new_mysql_database()
    engine = create_engine(url)
    create_site(engine, TableNames(), **shape)
    engine.dispose()
    return url


@pytest.mark.parametrize("shape", [
    {"kivicare": "v3", "mapping_shape": "a"},
    {"kivicare": "v4", "mapping_shape": "b", "utc_columns": False},
    {"kivicare": "v4", "mapping_shape": "c"},
], ids=["v3-legacy-mapping", "v4-no-utc-created-at", "v4-optimized"])
def test_lifecycle_on_each_schema_and_mapping_shape(new_mysql_database, clock, shape):
    for w in make_world(_db(new_mysql_database, **shape), clock):
        doctor, service, email = w.doctor()
        booking = w.book(doctor, service, date(2026, 12, 2), time(9, 15))
        w.settle()
        [row] = w.mapping(booking.id)
        assert row["url"].startswith("https://meet.google.com/")
        if shape["mapping_shape"] == "a":
            assert "created_at" not in row
        else:
            assert row["created_at"] is not None
        [event] = [e for e in w.events(email) if e["status"] != "cancelled"]
        assert event["start"]["dateTime"] == "2026-12-02T09:15:00+01:00"
        with w.engine.begin() as conn:
            w.kc.set_status(conn, booking.id, 0)
        w.settle()
        assert w.mapping(booking.id) == []


@pytest.mark.parametrize(("zone", "day", "start", "expected_start", "expected_end", "tz_field"), [
    # Europe/Berlin: 2026-03-29 spring forward (02:00 → 03:00), 2026-10-25 fall back.
    ("Europe/Berlin", date(2027, 3, 28), time(1, 30), "2027-03-28T01:30:00+01:00",
     "2027-03-28T03:00:00+02:00", "Europe/Berlin"),
    ("Europe/Berlin", date(2027, 10, 30), time(23, 45), "2027-10-30T23:45:00+02:00",
     "2027-10-31T00:15:00+02:00", "Europe/Berlin"),
    # America/New_York: 2027-03-14 spring forward, 2026-11-01 fell back already; 2027-11-07 next.
    ("America/New_York", date(2027, 11, 7), time(0, 45), "2027-11-07T00:45:00-04:00",
     "2027-11-07T01:15:00-04:00", "America/New_York"),
    ("America/New_York", date(2027, 3, 14), time(1, 45), "2027-03-14T01:45:00-05:00",
     "2027-03-14T03:15:00-04:00", "America/New_York"),
    # An offset zone as KiviCare stores it for UTC-offset sites.
    ("+05:30", date(2026, 12, 1), time(10, 0), "2026-12-01T10:00:00+05:30",
     "2026-12-01T10:30:00+05:30", None),
])
def test_event_times_follow_the_appointment_zone_across_dst(
        world, zone, day, start, expected_start, expected_end, tz_field):
    doctor, service, email = world.doctor()
    world.book(doctor, service, day, start, zone=zone)
    world.settle()
    [event] = world.events(email)
    assert event["start"]["dateTime"] == expected_start
    assert event["end"]["dateTime"] == expected_end
    assert event["start"].get("timeZone") == tz_field


def test_doctor_zone_applies_when_the_appointment_has_none_and_gmt_offset_site(
        new_mysql_database, clock):
    # A v4 site from before the 2026 time-zone migration: no appointment_timezone column.
    url = _db(new_mysql_database, kivicare="v4", mapping_shape="c", utc_columns=False)
    for w in make_world(url, clock):
        with w.engine.begin() as conn:
            w.kc.options.set(conn, "timezone_string", "")
            w.kc.options.set(conn, "gmt_offset", "-3.5")
        doctor, service, email = w.doctor(timezone="Asia/Tokyo")
        plain_doctor, plain_service, plain_email = w.doctor()
        w.book(doctor, service, date(2026, 12, 1), time(10, 0))
        w.book(plain_doctor, plain_service, date(2026, 12, 1), time(10, 0))
        w.settle()
        [tokyo] = w.events(email)
        assert tokyo["start"] == {"dateTime": "2026-12-01T10:00:00+09:00",
                                  "timeZone": "Asia/Tokyo"}
        [site] = w.events(plain_email)
        assert site["start"]["dateTime"] == "2026-12-01T10:00:00-03:30"
        assert "timeZone" not in site["start"]
        a = w.runtime.schema.appointments
        with w.engine.connect() as conn:
            assert "appointment_timezone" not in a.c
            assert conn.execute(sa.select(sa.func.count()).select_from(a)).scalar() == 2
