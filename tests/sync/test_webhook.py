"""POST /webhook/google over real HTTP: verification, fast acknowledgement, coalescing."""

from __future__ import annotations

import http.client
import time as clock_time
from datetime import time, timedelta
from urllib.parse import urlsplit

import pytest


def live(events):
    return [e for e in events if e.get("status") != "cancelled"]


def lists(push, email):
    return push.world.google.requests("calendar.events.list", user=email)


def post(push, headers, method="POST"):
    url = urlsplit(push.webhook_url)
    conn = http.client.HTTPConnection(url.netloc, timeout=10)
    try:
        conn.request(method, url.path, body=b"", headers={"Content-Length": "0", **headers})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def metric(push, outcome):
    value = push.world.runtime.metrics.registry.get_sample_value(
        "kcsc_webhook_notifications_total", {"outcome": outcome})
    return value or 0.0


@pytest.fixture
def watched(push):
    """A doctor with a synced appointment, a channel, a first sync done and a fresh worker."""
    w = push.world
    doctor, service, email = w.doctor()
    day = (w.clock.now() + timedelta(days=20)).date()
    booking = w.book(doctor, service, day, time(10, 0))
    w.settle()
    push.channels.run_once()
    push.inbound.sync_doctor(doctor)
    push.deliver()
    [channel] = w.runtime.state.active_channels(doctor_id=doctor)
    token = w.google.push.channels[(w.runtime.settings.google.client_id,
                                    channel.channel_id)].token
    [event] = live(w.events(email))
    worker = push.new_worker()
    return doctor, email, booking, event, channel, token, worker


def forged(token: str) -> str:
    """The token with its first character changed (never equal to it)."""
    return ("y" if token[0] == "x" else "x") + token[1:]


def test_forged_unknown_and_malformed_notifications_are_rejected_and_do_no_work(push, watched):
    doctor, email, _booking, _event, channel, token, worker = watched
    good = {"X-Goog-Channel-ID": channel.channel_id, "X-Goog-Channel-Token": token,
            "X-Goog-Resource-ID": channel.resource_id, "X-Goog-Resource-State": "exists",
            "X-Goog-Message-Number": "7"}
    before = {o: metric(push, o) for o in ("bad_token", "bad_resource", "unknown_channel",
                                           "bad_request", "unsupported_state")}
    lists_before = len(lists(push, email))

    assert post(push, {**good, "X-Goog-Channel-Token": forged(token)}) == 403
    assert post(push, {k: v for k, v in good.items() if k != "X-Goog-Channel-Token"}) == 403
    assert post(push, {**good, "X-Goog-Resource-ID": "another-resource"}) == 403
    assert post(push, {**good, "X-Goog-Channel-ID": "0" * 36}) == 404
    assert post(push, {k: v for k, v in good.items() if k != "X-Goog-Resource-State"}) == 400
    assert post(push, {**good, "X-Goog-Resource-State": "add"}) == 400
    assert post(push, {**good, "X-Goog-Channel-ID": "c" * 65}) == 400
    assert post(push, good, method="GET") == 405

    assert worker.notified == 0
    assert doctor not in push.inbound.due_doctors()
    worker.run_pending()
    assert len(lists(push, email)) == lists_before
    assert metric(push, "bad_token") == before["bad_token"] + 2
    assert metric(push, "bad_resource") == before["bad_resource"] + 1
    assert metric(push, "unknown_channel") == before["unknown_channel"] + 1
    assert metric(push, "bad_request") == before["bad_request"] + 2
    assert metric(push, "unsupported_state") == before["unsupported_state"] + 1

    # The genuine headers are accepted, and only they mark the doctor due.
    assert post(push, good) == 200
    assert push.inbound.due_doctors().count(doctor) == 1


def test_change_notification_is_acknowledged_without_google_calls_then_synced(push, watched):
    doctor, email, booking, event, channel, _token, worker = watched
    new = push.world.google.user_regenerate_meet(email, event["id"])
    lists_before = len(lists(push, email))
    got = [(d["state"], d["status"]) for d in push.deliver()
           if d["channel_id"] == channel.channel_id]
    assert got == [("exists", 200)]
    assert len(lists(push, email)) == lists_before  # nothing asked of Google in the request
    assert doctor in push.inbound.due_doctors()
    assert push.world.mapping(booking.id)[0]["url"] == event["hangoutLink"]

    worker.run_pending()
    assert len(lists(push, email)) == lists_before + 1
    assert push.world.mapping(booking.id)[0]["url"] == new["hangoutLink"]
    assert doctor not in push.inbound.due_doctors()


def test_a_thousand_duplicate_notifications_cost_one_sync(push, watched):
    _doctor, email, booking, event, channel, _token, worker = watched
    google = push.world.google
    google.set_push_faults(duplicate=1.0)  # every message is delivered twice
    try:
        for n in range(499):
            google.user_edit_event(email, event["id"], {"description": f"note {n}"})
        new = google.user_regenerate_meet(email, event["id"])
        deliveries = [d for d in push.deliver() if d["channel_id"] == channel.channel_id]
    finally:
        google.set_push_faults()
    assert len(deliveries) == 1000
    assert {d["status"] for d in deliveries} == {200}
    assert worker.notified == 1000 and worker.coalesced == 999
    lists_before = len(lists(push, email))

    result = worker.run_pending()
    assert result.syncs == 1
    assert len(lists(push, email)) == lists_before + 1
    assert push.world.mapping(booking.id)[0]["url"] == new["hangoutLink"]


def test_running_worker_coalesces_a_storm_off_the_request_thread(push, watched):
    _doctor, email, booking, event, channel, _token, _ = watched
    worker = push.new_worker(start=True, min_interval=0.2)
    google = push.world.google
    lists_before = len(lists(push, email))
    started = clock_time.monotonic()
    for n in range(300):
        google.user_edit_event(email, event["id"], {"description": f"storm {n}"})
    new = google.user_regenerate_meet(email, event["id"])
    deliveries = [d for d in push.deliver() if d["channel_id"] == channel.channel_id]
    assert worker.wait_idle(timeout=20)
    elapsed = clock_time.monotonic() - started
    assert len(deliveries) == 301 and {d["status"] for d in deliveries} == {200}
    syncs = len(lists(push, email)) - lists_before
    # One round per coalescing window at most, however many notifications arrived.
    assert 1 <= syncs <= elapsed / 0.2 + 2
    assert syncs < 301
    assert push.world.mapping(booking.id)[0]["url"] == new["hangoutLink"]
    worker.close()


def test_stopped_channel_is_rejected_even_when_cached_before_the_stop(push, watched):
    from sidecar.sync.channels import channel_cache

    doctor, email, _booking, _event, channel, token, worker = watched
    good = {"X-Goog-Channel-ID": channel.channel_id, "X-Goog-Channel-Token": token,
            "X-Goog-Resource-ID": channel.resource_id, "X-Goog-Resource-State": "exists"}
    assert post(push, good) == 200
    assert channel.channel_id in channel_cache(push.world.runtime.state)  # served from memory
    worker.run_pending()
    lists_before = len(lists(push, email))

    assert push.channels.stop_doctor(doctor) == 1
    assert post(push, good) == 410
    assert post(push, {**good, "X-Goog-Channel-Token": forged(token)}) == 403
    assert worker.notified == 1  # only the notification before the stop
    worker.run_pending()
    assert doctor not in push.inbound.due_doctors()
    assert len(lists(push, email)) == lists_before
