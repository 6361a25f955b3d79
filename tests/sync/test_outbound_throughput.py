"""Outbound engine economics: Google calls per meeting while a conference is pending, and the
streaming worker pool (several of one doctor's items at once, each appointment acted on once)."""

from __future__ import annotations

from datetime import date, time

from sidecar.sync.outbound import OutboundSync


def test_a_pending_conference_costs_reads_not_patches(world):
    doctor, service, _email = world.doctor()
    world.google.set_conference_mode("pending", count=1)
    booking = world.book(doctor, service, date(2026, 12, 1), time(10, 0))
    world.outbound.run_once()  # insert: conference pending
    world.clock.advance(0.5)
    world.outbound.run_once()  # first poll: still pending
    world.google.resolve_conferences()
    world.clock.advance(0.7)
    world.outbound.run_once()  # second poll: ready
    assert world.mapping(booking.id)[0]["url"].startswith("https://meet.google.com/")
    assert len(world.calls("events.insert")) == 1
    assert len(world.calls("events.get")) == 2
    assert world.calls("events.patch") == []


def test_one_doctors_items_in_parallel_each_appointment_once(world):
    doctor, service, email = world.doctor()
    bookings = [world.book(doctor, service, date(2026, 12, 2), time(8 + n // 2, 30 * (n % 2)))
                for n in range(12)]
    engine = OutboundSync(world.runtime, world.runtime.google_factory, max_workers=4,
                          per_doctor=4, batch_size=5)
    try:
        engine.scan_new()
        world.outbound.scan_new()
        done = engine.process_due()
    finally:
        engine.close()
    assert done.processed == 12 and done.created == 12
    events = [e for e in world.events(email) if e.get("status") != "cancelled"]
    assert len(events) == 12 == len(world.calls("events.insert"))
    assert {world.mapping(b.id)[0]["event_id"] for b in bookings} == {e["id"] for e in events}


def test_a_limit_caps_what_one_run_processes(world):
    doctor, service, _email = world.doctor()
    for n in range(6):
        world.book(doctor, service, date(2026, 12, 3), time(9 + n, 0))
    world.outbound.scan_new()
    assert world.outbound.process_due(limit=4).processed == 4
    assert world.outbound.process_due().processed == 2
