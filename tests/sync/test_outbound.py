"""Outbound sync against MariaDB and the Google emulator over HTTP: the meeting lifecycle."""

from __future__ import annotations

from datetime import date, time

import sqlalchemy as sa

from sidecar.meetings import event_id_for


def live(events: list[dict]) -> list[dict]:
    return [e for e in events if e.get("status") != "cancelled"]


def test_booking_gets_one_event_with_meet_link_and_a_php_shaped_mapping_row(world):
    doctor, service, email = world.doctor()
    booking = world.book(doctor, service, date(2026, 12, 1), time(10, 0))
    world.settle()
    [event] = live(world.events(email))
    assert event["start"] == {"dateTime": "2026-12-01T10:00:00+01:00",
                              "timeZone": "Europe/Berlin"}
    assert event["summary"] == "Video consultation"
    [row] = world.mapping(booking.id)
    assert row["event_id"] == event["id"]
    assert row["url"] == event["hangoutLink"] and row["url"].startswith("https://meet.google.com/")
    assert row["event_url"] == event["htmlLink"]
    assert row["password"] == ""
    assert row["created_at"] is not None
    [insert] = world.calls("events.insert")
    assert insert["params"]["conferenceDataVersion"] in (1, "1")
    # Running more cycles changes nothing and calls Google no more.
    before = len(world.google.requests())
    world.settle(rounds=3)
    assert len(world.google.requests()) == before


def test_reschedule_patches_times_and_keeps_the_conference(world):
    doctor, service, email = world.doctor()
    booking = world.book(doctor, service)
    world.settle()
    [before] = live(world.events(email))
    with world.engine.begin() as conn:
        world.kc.reschedule(conn, booking.id, date(2026, 12, 3), time(15, 30))
    world.settle()
    [after] = live(world.events(email))
    assert after["id"] == before["id"]
    assert after["start"]["dateTime"] == "2026-12-03T15:30:00+01:00"
    assert after["hangoutLink"] == before["hangoutLink"]
    assert world.mapping(booking.id)[0]["url"] == before["hangoutLink"]


def test_cancel_deletes_event_and_mapping_and_rebooking_creates_a_new_event(world):
    doctor, service, email = world.doctor()
    booking = world.book(doctor, service)
    world.settle()
    with world.engine.begin() as conn:
        world.kc.set_status(conn, booking.id, 0)
    world.settle()
    assert live(world.events(email)) == []
    assert world.mapping(booking.id) == []
    with world.engine.begin() as conn:
        world.kc.set_status(conn, booking.id, 1)
    world.settle()
    [event] = live(world.events(email))
    assert event["id"] == event_id_for(world.outbound.site_key, booking.id, 1)
    assert world.mapping(booking.id)[0]["event_id"] == event["id"]


def test_pending_payment_waits_until_booked_and_checkout_changes_nothing(world):
    doctor, service, email = world.doctor()
    booking = world.book(doctor, service, status=2)
    world.settle()
    assert world.events(email) == []
    with world.engine.begin() as conn:
        world.kc.set_status(conn, booking.id, 1)
    world.settle()
    assert len(live(world.events(email))) == 1
    with world.engine.begin() as conn:
        world.kc.set_status(conn, booking.id, 3)
    world.settle()
    assert len(live(world.events(email))) == 1
    assert len(world.mapping(booking.id)) == 1


def test_deleted_appointment_removes_event_and_mapping(world):
    doctor, service, email = world.doctor()
    booking = world.book(doctor, service)
    world.settle()
    with world.engine.begin() as conn:
        world.kc.delete(conn, booking.id)
    world.settle()
    assert live(world.events(email)) == []
    assert world.mapping(booking.id) == []


def test_doctor_change_moves_the_event(world):
    doc_a, service_a, email_a = world.doctor()
    doc_b, _service_b, email_b = world.doctor()
    booking = world.book(doc_a, service_a)
    world.settle()
    with world.engine.begin() as conn:
        world.kc.set_doctor(conn, booking.id, doc_b)
        # the service is a telemed service of doctor B too
        sdm = world.runtime.schema.service_doctor_mapping
        conn.execute(sa.insert(sdm).values(service_id=service_a, doctor_id=doc_b,
                                           clinic_id=world.clinic_id, telemed_service="yes",
                                           created_at="2026-01-01 00:00:00"))
    world.settle()
    assert live(world.events(email_a)) == []
    [moved] = live(world.events(email_b))
    assert world.mapping(booking.id)[0]["event_id"] == moved["id"]


def test_not_telemed_and_unconnected_doctors_get_nothing_until_they_connect(world):
    plain, plain_service, plain_email = world.doctor(telemed=False)
    world.book(plain, plain_service)
    offline, offline_service, offline_email = world.doctor(connected=False)
    booking = world.book(offline, offline_service)
    world.settle()
    assert world.events(plain_email) == []
    assert world.google.requests("calendar.events.insert") == []
    item = world.runtime.state.get_item(booking.id)
    assert item.state == "waiting_reconnect"
    world.connect(offline, offline_email)
    world.settle()
    assert len(live(world.events(offline_email))) == 1
    assert len(world.mapping(booking.id)) == 1


def test_existing_php_mapping_row_is_adopted_not_duplicated(world):
    doctor, service, email = world.doctor()
    booking_id = None
    # PHP created the event itself (with the add-on's own id) and wrote its row.
    php_event = world.google.user_create_event(email, {
        "summary": "Video consultation",
        "start": {"dateTime": "2026-12-01T10:00:00Z"},  # GM4's shifted time
        "end": {"dateTime": "2026-12-01T10:30:00Z"},
    })
    booking = world.book(doctor, service)
    booking_id = booking.id
    with world.engine.begin() as conn:
        world.kc.php_mapping_row(conn, booking_id, php_event["id"],
                                 "https://meet.google.com/abc-defg-hij")
    world.settle()
    events = live(world.events(email))
    assert [e["id"] for e in events] == [php_event["id"]]
    assert world.google.requests("calendar.events.insert") == []
    # KiviCare's time wins over the add-on's shifted one.
    assert events[0]["start"]["dateTime"] == "2026-12-01T10:00:00+01:00"
    assert [r["event_id"] for r in world.mapping(booking_id)] == [php_event["id"]]


def test_sentinel_rows_are_repaired(world):
    doctor, service, _email = world.doctor()
    booking = world.book(doctor, service)
    with world.engine.begin() as conn:
        world.kc.php_mapping_row(conn, booking.id, "-1", "-1")
    world.settle()
    [row] = world.mapping(booking.id)
    assert row["event_id"] != "-1" and row["url"].startswith("https://meet.google.com/")


def test_crash_after_insert_adopts_the_event_on_retry(world):
    """The insert reached Google but the process died before writing the mapping row."""
    doctor, service, email = world.doctor()
    booking = world.book(doctor, service)
    world.outbound.scan_new()
    event_id = event_id_for(world.outbound.site_key, booking.id, 0)
    # Simulate the crash: the event exists in Google, our item says "creating".
    world.google.user_create_event(email, {
        "id": event_id, "summary": "x",
        "start": {"dateTime": "2026-12-01T10:00:00+01:00"},
        "end": {"dateTime": "2026-12-01T10:30:00+01:00"},
    })
    world.settle()
    events = live(world.events(email))
    assert [e["id"] for e in events] == [event_id]
    [row] = world.mapping(booking.id)
    assert row["event_id"] == event_id and row["url"].startswith("https://meet.google.com/")


def test_transient_errors_keep_the_item_and_retry(world):
    doctor, service, email = world.doctor()
    booking = world.book(doctor, service)
    world.google.inject_faults("calendar.events.insert", ["backendError"] * 4)
    world.outbound.run_once()
    item = world.runtime.state.get_item(booking.id)
    assert item.state in ("creating", "pending") and item.last_error
    assert world.mapping(booking.id) == []
    world.settle(rounds=10, step=60)
    assert len(live(world.events(email))) == 1
    assert len(world.mapping(booking.id)) == 1


def test_pending_conference_is_polled_until_the_link_exists(sync_db, clock):
    from tests.sync.conftest import make_world

    for w in make_world(sync_db, clock, emulator_kwargs={"conference_delay_seconds": 2}):
        doctor, service, _email = w.doctor()
        booking = w.book(doctor, service)
        w.outbound.run_once()
        assert w.mapping(booking.id) == []  # no link published before success
        assert w.runtime.state.get_item(booking.id).state == "awaiting_conference"
        w.settle(rounds=6, step=0.5)
        [row] = w.mapping(booking.id)
        assert row["url"].startswith("https://meet.google.com/")
        assert len(w.calls("events.insert")) == 1


def test_php_row_pointing_at_a_deleted_event_is_replaced_once(world):
    """A PHP-written row whose event was deleted in Google: one new event, one row, no loop."""
    doctor, service, email = world.doctor()
    dead = world.google.user_create_event(email, {
        "summary": "old", "start": {"dateTime": "2026-12-01T10:00:00+01:00"},
        "end": {"dateTime": "2026-12-01T10:30:00+01:00"}})
    world.google.user_delete_event(email, dead["id"])
    booking = world.book(doctor, service)
    with world.engine.begin() as conn:
        world.kc.php_mapping_row(conn, booking.id, dead["id"], "https://meet.google.com/old-link-abc")
    world.settle()
    [event] = live(world.events(email))
    [row] = world.mapping(booking.id)
    assert row["event_id"] == event["id"] != dead["id"]
    assert world.runtime.state.get_item(booking.id).event_version == 1


def test_a_doctor_busy_in_another_replica_is_left_to_it_others_are_worked(world):
    """per_doctor=1 across replicas: while another replica holds a lease on one of a doctor's
    items, this replica's claims skip that doctor's other items (and take other doctors')."""
    busy_doctor, busy_service, busy_email = world.doctor()
    free_doctor, free_service, free_email = world.doctor()
    held = world.book(busy_doctor, busy_service)
    waiting = world.book(busy_doctor, busy_service)
    other = world.book(free_doctor, free_service)
    world.outbound.scan_new()
    state = world.runtime.state
    [lease] = state.claim_due_items(world.clock.now(), 1, "other-replica:1", 120.0,
                                    doctor_ids=[busy_doctor])
    assert lease.appointment_id == held.id

    result = world.outbound.process_due()
    assert result.created == 1  # only the free doctor's appointment
    assert len(world.mapping(other.id)) == 1
    assert not live(world.events(busy_email))
    item = state.get_item(waiting.id)
    assert item.state == "pending" and item.claim_token is None

    state.release(lease, now=world.clock.now())  # the other replica stops (or its lease ends)
    world.settle()
    assert len(live(world.events(busy_email))) == 2
    assert len(live(world.events(free_email))) == 1
    assert len(world.mapping(waiting.id)) == 1
