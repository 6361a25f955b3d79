"""Push channels against the emulator, which delivers real HTTP notifications to the sidecar."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, time, timedelta

from sidecar.state import token_digest
from sidecar.sync.channels import ChannelManager
from sidecar.web.connect_flow import disconnect


def google_channels(push, email):
    return [c for c in push.world.google.dump()["channels"] if c["owner"] == email]


def calls(push, method, email):
    return push.world.google.requests("calendar." + method, user=email)


def live(events):
    return [e for e in events if e.get("status") != "cancelled"]


def booked(push, days_ahead=20):
    """A connected doctor with one synced telemedicine appointment; (doctor, email, event)."""
    w = push.world
    doctor, service, email = w.doctor()
    day = (w.clock.now() + timedelta(days=days_ahead)).date()
    booking = w.book(doctor, service, day, time(10, 0))
    w.settle()
    [event] = live(w.events(email))
    return doctor, email, booking, event


def test_connected_doctor_gets_one_channel_and_the_sync_message_is_only_acknowledged(push):
    w = push.world
    worker = push.new_worker()
    doctor, _, email = w.doctor()
    push.channels.run_once()
    [stored] = push.world.runtime.state.active_channels(doctor_id=doctor)
    [channel] = google_channels(push, email)
    [watch] = calls(push, "events.watch", email)
    assert channel["address"] == push.webhook_url and channel["live"]
    assert watch["body"]["params"] == {"ttl": "604800"}
    token = watch["body"]["token"]
    assert len(token) >= 43
    # Only the digest is stored; Google's resource id and expiration are kept.
    assert stored.token_hash == token_digest(token) != token
    assert stored.resource_id == channel["resourceId"]
    assert stored.expiration == datetime.fromisoformat(channel["expiration"]).astimezone(UTC)
    assert stored.expiration == w.clock.now() + timedelta(seconds=604800)

    deliveries = push.deliver()
    assert [(d["state"], d["status"]) for d in deliveries
            if d["channel_id"] == stored.channel_id] == [("sync", 200)]
    assert calls(push, "events.list", email) == []  # "sync" means ready, not changed
    assert worker.notified == 0

    push.channels.run_once()  # nothing more to do for this doctor
    assert len(calls(push, "events.watch", email)) == 1
    assert len(push.world.runtime.state.active_channels(doctor_id=doctor)) == 1


def test_channel_is_renewed_at_the_margin_new_first_then_old_stopped(push):
    w = push.world
    doctor, _, email = w.doctor()
    push.channels.run_once()
    [old] = w.runtime.state.active_channels(doctor_id=doctor)
    margin = timedelta(seconds=w.runtime.settings.sync.channel_renew_margin_seconds)

    w.clock.set(old.expiration - margin - timedelta(minutes=1))
    push.channels.run_once()
    assert [c.channel_id for c in w.runtime.state.active_channels(doctor_id=doctor)] == [
        old.channel_id]

    w.clock.advance(minutes=2)
    result = push.channels.run_once()
    assert result.renewed >= 1
    [new] = w.runtime.state.active_channels(doctor_id=doctor)
    assert new.channel_id != old.channel_id
    assert new.expiration > old.expiration
    log = [r["api_method"] for r in w.google.requests(user=email)
           if r["api_method"] in ("calendar.events.watch", "calendar.channels.stop")]
    assert log == ["calendar.events.watch", "calendar.events.watch", "calendar.channels.stop"]
    by_id = {c["id"]: c for c in google_channels(push, email)}
    assert by_id[old.channel_id]["stopped"] and by_id[new.channel_id]["live"]
    assert w.runtime.state.get_channel(old.channel_id).stopped_at is not None

    # Changes now arrive through the new channel only.
    push.deliver()
    w.google.user_create_event(email, {"summary": "Lunch",
                                       "start": {"dateTime": "2027-03-01T12:00:00Z"},
                                       "end": {"dateTime": "2027-03-01T13:00:00Z"}})
    got = [(d["channel_id"], d["state"], d["status"]) for d in push.deliver()]
    assert got == [(new.channel_id, "exists", 200)]


def test_expired_channel_without_renewal_is_caught_by_polling(push):
    w = push.world
    doctor, email, booking, event = booked(push)
    push.channels.run_once()
    push.inbound.sync_doctor(doctor)  # first sync: token obtained
    push.deliver()
    # Right after a sync, a doctor with a live channel is not polled.
    lists = len(calls(push, "events.list", email))
    push.inbound.run_once()
    assert len(calls(push, "events.list", email)) == lists

    [channel] = w.runtime.state.active_channels(doctor_id=doctor)
    w.clock.set(channel.expiration + timedelta(minutes=1))  # nobody renewed it
    assert not push.channels.has_live_channel(doctor)
    new = w.google.user_regenerate_meet(email, event["id"])
    assert [d for d in push.deliver() if d["channel_id"] == channel.channel_id] == []

    push.inbound.run_once()
    assert len(calls(push, "events.list", email)) == lists + 1
    [row] = w.mapping(booking.id)
    assert row["url"] == new["hangoutLink"] != event["hangoutLink"]


def test_disconnect_stops_the_doctors_channels_and_costs_no_more_calls(push):
    w = push.world
    doctor, _, email = w.doctor()
    push.channels.run_once()
    [channel] = w.runtime.state.active_channels(doctor_id=doctor)

    result = disconnect(w.runtime, doctor)
    assert result.channels_stopped
    assert google_channels(push, email)[0]["stopped"]
    assert w.runtime.state.get_channel(channel.channel_id).stopped_at is not None

    before = len(w.google.requests(user=email))
    push.channels.run_once()
    push.inbound.run_once()
    assert len(w.google.requests(user=email)) == before


def test_a_channel_we_stopped_that_still_notifies_is_stopped_at_google(push):
    w = push.world
    doctor, email, _booking, event = booked(push)
    push.channels.run_once()
    [channel] = w.runtime.state.active_channels(doctor_id=doctor)
    push.deliver()
    worker = push.new_worker()
    # Stopped here, but Google still has it (say the stop call failed during a renewal).
    w.runtime.state.mark_channel_stopped(channel.channel_id, now=w.clock.now())
    push.channels.cache.invalidate(channel.channel_id)  # as the manager does when it stops
    w.google.user_edit_event(email, event["id"], {"description": "changed in Google"})
    got = [(d["state"], d["status"]) for d in push.deliver()
           if d["channel_id"] == channel.channel_id]
    assert got == [("exists", 410)]
    assert worker.notified == 0  # no sync for a stopped channel
    worker.run_pending()
    assert google_channels(push, email)[0]["stopped"]
    [stop] = calls(push, "channels.stop", email)
    assert stop["body"] == {"id": channel.channel_id, "resourceId": channel.resource_id}


def test_plain_http_public_url_is_refused_and_the_doctor_is_polled(push, caplog):
    w = push.world
    _doctor, _, email = w.doctor()
    manager = ChannelManager(w.runtime)  # address from sidecar.public_url: http, not loopback
    with caplog.at_level(logging.WARNING, logger="sidecar.sync.channels"):
        result = manager.run_once()
    assert result.refused and "HTTPS" in result.refused
    assert "HTTPS" in caplog.text
    assert calls(push, "events.watch", email) == []
    assert manager.address_problem() is not None
    assert ChannelManager(w.runtime, address="https://clinic.example/hook").address_problem() \
        is None

    push.inbound.run_once()
    assert len(calls(push, "events.list", email)) == 1
