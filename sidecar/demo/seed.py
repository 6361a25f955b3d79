"""The demo clinic, written once into a fresh SQLite WordPress + KiviCare database.

Reference DDL (``wp_schema.ddl.create_site``, KiviCare v4 with the Meet add-on's mapping table)
and rows written as PHP writes them (``sidecar.kc_seed``): an administrator, a clinic, two
doctors (Europe/Berlin and America/New_York), patients, telemedicine and in-person services and
a week of appointments from tomorrow, plus one on the day of the next daylight-saving switch of
either zone (whichever comes first), in that zone. What was seeded is recorded in the
``kcsc_demo_seed`` option, so a second run finds it and seeds nothing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from sidecar.kc_seed import KiviCareWriter
from wp_schema.ddl import create_site
from wp_schema.meta import Options
from wp_schema.names import TableNames
from wp_schema.reflect import SiteSchema

SEED_OPTION = "kcsc_demo_seed"
SITE_URL = "http://clinic.localhost"
SITE_ZONE = "Europe/Berlin"
DST_ZONES = ("Europe/Berlin", "America/New_York")
DAYS = 7


@dataclass
class DemoSite:
    admin_id: int
    admin_login: str
    connected_doctor_id: int
    connected_doctor_name: str
    connected_email: str
    other_doctor_id: int
    other_doctor_name: str
    #: the connected doctor's telemedicine appointments (each must get a Meet link)
    telemed_appointments: list[int] = field(default_factory=list)
    other_appointments: list[int] = field(default_factory=list)
    in_person_appointments: list[int] = field(default_factory=list)
    dst_appointment: int = 0
    dst_day: str = ""
    dst_zone: str = ""


def next_dst_switch(after: datetime, zones: tuple[str, ...] = DST_ZONES) -> tuple[date, str]:
    """The first day after ``after`` on which one of ``zones`` changes its UTC offset
    (compared noon to noon, so the day of the switch itself is returned)."""
    best: tuple[date, str] | None = None
    for name in zones:
        tz = ZoneInfo(name)
        day = after.astimezone(tz).date()
        previous = datetime.combine(day, time(12), tz).utcoffset()
        for _ in range(400):
            day += timedelta(days=1)
            offset = datetime.combine(day, time(12), tz).utcoffset()
            if offset != previous:
                if best is None or day < best[0]:
                    best = (day, name)
                break
            previous = offset
    if best is None:  # pragma: no cover - both zones observe DST
        raise ValueError("no daylight-saving switch ahead")
    return best


def load_seed(engine: sa.Engine, schema: SiteSchema) -> DemoSite | None:
    with engine.connect() as conn:
        raw = Options(schema).get(conn, SEED_OPTION)
    if not raw:
        return None
    return DemoSite(**json.loads(raw))


def ensure_site(engine: sa.Engine, names: TableNames, now: datetime) -> tuple[DemoSite, bool]:
    """The demo site, seeding it first if this database has none; (site, newly seeded)."""
    create_site(engine, names, kivicare="v4", mapping_shape="c")
    schema = SiteSchema.load(engine, names)
    found = load_seed(engine, schema)
    if found is not None:
        return found, False
    with engine.begin() as conn:
        site = _seed(conn, schema, now)
        Options(schema).set(conn, SEED_OPTION, json.dumps(asdict(site)), autoload="no")
    return site, True


def _seed(conn: sa.Connection, schema: SiteSchema, now: datetime) -> DemoSite:
    kc = KiviCareWriter(schema)
    kc.site(conn, site_url=SITE_URL, timezone_string=SITE_ZONE)
    Options(schema).set(conn, "blogname", "Riverside Clinic (demo)")
    admin = kc.user(conn, "admin", "administrator", display_name="Clinic Admin")
    clinic = kc.clinic(conn, "Riverside Clinic")
    weber = kc.user(conn, "dr.weber", "kiviCare_doctor", display_name="Dr. Anna Weber",
                    email="anna.weber@example.com", timezone="Europe/Berlin")
    carter = kc.user(conn, "dr.carter", "kiviCare_doctor", display_name="Dr. Ben Carter",
                     email="ben.carter@example.com", timezone="America/New_York")
    patients = [kc.user(conn, login, "kiviCare_patient", display_name=name)
                for login, name in (("p.okafor", "Chidi Okafor"), ("p.lindqvist", "Sara Lindqvist"),
                                    ("p.moreau", "Luc Moreau"))]
    for doctor in (weber, carter):
        kc.doctor_in_clinic(conn, doctor, clinic)
    video_w = kc.service(conn, "Video consultation", doctor_id=weber, clinic_id=clinic)
    checkup_w = kc.service(conn, "Check-up", doctor_id=weber, clinic_id=clinic, telemed=False)
    video_c = kc.service(conn, "Video consultation", doctor_id=carter, clinic_id=clinic)

    site = DemoSite(admin_id=admin, admin_login="admin", connected_doctor_id=weber,
                    connected_doctor_name="Dr. Anna Weber",
                    connected_email="anna.weber@example.com", other_doctor_id=carter,
                    other_doctor_name="Dr. Ben Carter")
    today = now.astimezone(ZoneInfo(SITE_ZONE)).date()

    def book(doctor: int, service: int, day: date, start: time, n: int,
             zone: str | None = None) -> int:
        return kc.book(conn, doctor_id=doctor, patient_id=patients[n % len(patients)],
                       clinic_id=clinic, service_ids=[service], day=day, start=start,
                       zone=zone, now=now).id

    for d in range(1, DAYS + 1):
        day = today + timedelta(days=d)
        site.telemed_appointments.append(book(weber, video_w, day, time(9, 0), d))
        site.telemed_appointments.append(book(weber, video_w, day, time(14, 30), d + 1))
        site.other_appointments.append(book(carter, video_c, day, time(10, 0), d + 2,
                                            zone="America/New_York"))
        if d in (2, 5):
            site.in_person_appointments.append(book(weber, checkup_w, day, time(11, 0), d))
    dst_day, dst_zone = next_dst_switch(now)
    site.dst_appointment = book(weber, video_w, dst_day, time(10, 0), 0, zone=dst_zone)
    site.telemed_appointments.append(site.dst_appointment)
    site.dst_day, site.dst_zone = dst_day.isoformat(), dst_zone
    return site
