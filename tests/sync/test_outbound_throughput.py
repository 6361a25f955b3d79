"""Outbound engine economics: Google calls per meeting while a conference is pending, and the
streaming worker pool (several of one doctor's items at once, each appointment acted on once)."""

from __future__ import annotations

import threading
import time as systime
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


def test_a_drain_round_starts_what_became_due_while_it_was_busy(world):
    """process_due with a limit (the scheduler's drain rounds) looks again for due items while
    others are in flight, so a booking noticed meanwhile starts in the same round instead of
    waiting for the next one."""
    doctor, service, _ = world.doctor()
    other, other_service, _ = world.doctor()
    first = world.book(doctor, service, date(2026, 12, 3), time(9, 0))
    world.outbound.scan_new()
    world.google.set_latency(0.6, "calendar.events.insert")
    results = []
    drain = threading.Thread(target=lambda: results.append(world.outbound.process_due(limit=10)))
    drain.start()
    deadline = systime.monotonic() + 10
    while (world.runtime.state.get_item(first.id).state != "creating"
           and systime.monotonic() < deadline):
        systime.sleep(0.01)  # the first insert is now in flight for 0.6 s
    second = world.book(other, other_service, date(2026, 12, 3), time(10, 0))
    assert world.outbound.scan_new().queued == 1
    drain.join(timeout=30)
    world.google.set_latency(0.0, "calendar.events.insert")
    assert results and results[0].created == 2
    assert world.mapping(first.id) and world.mapping(second.id)
