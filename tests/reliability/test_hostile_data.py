"""Hostile appointment data through the outbound engine into Google: quotes, SQL fragments, HTML,
right-to-left and astral unicode, bidi overrides and a 64 KB description.

The summary is plain text (kept as typed, bidi overrides removed, bounded); the description —
which Google renders as HTML — carries every substituted value HTML-escaped, stays within Google's
size budget without cutting a character or an entity, and the operator's own markup is kept.
The SQL fragments stay data: every table is still there, the mapping row is written.
"""

from __future__ import annotations

import html
from datetime import timedelta

import sqlalchemy as sa

from sidecar.config import SyncSettings
from sidecar.meetings import DESCRIPTION_MAX_BYTES, SUMMARY_MAX_CHARS

PATIENT = "O'Brien \"Bobby\" <b>Tables</b>'); DROP TABLE wp_users; -- שלום مرحبا 👩‍⚕️𝄞 \u202eevil"
SERVICE = "<script>alert('x')</script> & Video \\ consult %s {doctor}"
CHUNK = "<img src=x onerror=alert(1)> ' OR '1'='1' -- ; \" & 🦄 עברית\u2067 "
# as long as KiviCare's TEXT column takes: 64 KB of UTF-8
DESCRIPTION = CHUNK * (65535 // len(CHUNK.encode("utf-8")))


def test_hostile_values_are_escaped_in_the_event_and_stay_data(world_factory):
    world = world_factory(sync=SyncSettings(
        settle_seconds=0, summary_template="{services} with {patient}",
        description_template="<b>Notes</b><br>{description}<br>{patient}"))
    doctor, _service, email = world.doctor()
    with world.engine.begin() as conn:
        service = world.kc.service(conn, SERVICE, doctor_id=doctor, clinic_id=world.clinic_id)
        patient = world.kc.user(conn, "hostile", "kiviCare_patient", display_name=PATIENT)
        booking = world.kc.book(conn, doctor_id=doctor, patient_id=patient,
                                clinic_id=world.clinic_id, service_ids=[service],
                                day=world.clock.now().date() + timedelta(days=3),
                                start=world.clock.now().time().replace(hour=10, minute=0),
                                description=DESCRIPTION, now=world.clock.now())
    world.settle()
    [event] = [e for e in world.events(email) if e.get("status") != "cancelled"]
    [row] = world.mapping(booking.id)
    assert row["event_id"] == event["id"] and row["url"] == event["hangoutLink"]

    clean_patient = PATIENT.replace("\u202e", "")
    summary = event["summary"]
    assert len(summary) <= SUMMARY_MAX_CHARS
    assert summary.startswith(SERVICE + " with ")  # no template re-scan: {doctor} stays
    assert "\u202e" not in summary and "\u2067" not in summary
    assert clean_patient[:40] in summary

    description = event["description"]
    assert description.startswith("<b>Notes</b><br>")  # the operator's markup is kept
    assert len(description.encode("utf-8")) <= DESCRIPTION_MAX_BYTES
    assert "<img" not in description and "<script" not in description
    assert html.escape(CHUNK.replace("\u2067", ""), quote=False) in description
    assert "🦄" in description and "\ufffd" not in description
    tail = description[-12:]
    assert "&" not in tail or ";" in tail[tail.rindex("&"):]  # no entity cut in half
    description.encode("utf-8")  # whole characters only (no lone surrogate)

    with world.engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
        users = conn.execute(sa.text("SELECT COUNT(*) FROM wp_users")).scalar()
        stored = conn.execute(sa.text("SELECT display_name FROM wp_users WHERE ID = :i"),
                              {"i": patient}).scalar()
    assert {"wp_users", "wp_usermeta"} <= tables and users >= 3
    assert stored == PATIENT
