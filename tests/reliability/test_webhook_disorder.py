"""Push notifications out of order, twice, mixed with forgeries, and late — over real HTTP.

``tests/sync/test_webhook.py`` pins each rejection and the coalescing of duplicates; here they all
arrive together, around two changes made in Google, and Google's own (late) deliveries come after
the sync they would have triggered. The end state is the newest one, reached with one sync per
worker run and no Google call from the request thread; forgeries cost nothing; the outbound engine
running afterwards creates no second event.
"""

from __future__ import annotations

import http.client
import random
from datetime import time, timedelta
from urllib.parse import urlsplit

from tests.reliability.clinic import report
from tests.sync.conftest import push

__all__ = ["push"]


def post(url: str, headers: dict[str, str]) -> int:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.netloc, timeout=10)
    try:
        conn.request("POST", parts.path, body=b"", headers={"Content-Length": "0", **headers})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def live(events):
    return [e for e in events if e.get("status") != "cancelled"]


def test_reordered_duplicated_forged_and_late_notifications(push) -> None:
    w, google = push.world, push.world.google
    doctor, service, email = w.doctor()
    booking = w.book(doctor, service, (w.clock.now() + timedelta(days=9)).date(), time(11, 0))
    w.settle()
    push.channels.run_once()
    push.inbound.sync_doctor(doctor)
    push.deliver()
    [channel] = w.runtime.state.active_channels(doctor_id=doctor)
    token = google.push.channels[(w.runtime.settings.google.client_id,
                                  channel.channel_id)].token
    [event] = live(w.events(email))
    worker = push.new_worker()

    google.user_regenerate_meet(email, event["id"])
    newest = google.user_regenerate_meet(email, event["id"])
    good = {"X-Goog-Channel-ID": channel.channel_id, "X-Goog-Channel-Token": token,
            "X-Goog-Resource-ID": channel.resource_id, "X-Goog-Resource-State": "exists"}
    forged = [
        {**good, "X-Goog-Channel-Token": token[::-1]},
        {**good, "X-Goog-Resource-ID": "not-" + str(channel.resource_id)},
        {**good, "X-Goog-Channel-ID": "f" * 36},
        {k: v for k, v in good.items() if k != "X-Goog-Channel-Token"},
    ]
    messages = [({**good, "X-Goog-Message-Number": str(n)}, True) for n in (9, 4, 9, 7, 4, 12)]
    messages += [(h, False) for h in forged for _ in range(3)]
    random.Random(4).shuffle(messages)
    lists_before = len(google.requests("calendar.events.list", user=email))
    statuses = [(post(push.webhook_url, h), genuine) for h, genuine in messages]
    assert all(s == 200 for s, genuine in statuses if genuine)
    assert all(s in (403, 404) for s, genuine in statuses if not genuine)
    assert len(google.requests("calendar.events.list", user=email)) == lists_before

    assert worker.run_pending().syncs == 1
    assert w.mapping(booking.id)[0]["url"] == newest["hangoutLink"]

    late = [d for d in push.deliver() if d["channel_id"] == channel.channel_id]
    assert late and {d["status"] for d in late} == {200}
    worker.run_pending()
    w.settle(rounds=3)
    [row] = w.mapping(booking.id)
    assert row["url"] == newest["hangoutLink"] and row["event_id"] == event["id"]
    assert [e["id"] for e in live(w.events(email))] == [event["id"]]
    assert len([c for c in w.calls("events.insert") if c.get("user") == email]) == 1
    report("webhooks", genuine=sum(1 for _, g in messages if g),
           forged=sum(1 for _, g in messages if not g), late_deliveries=len(late),
           syncs_for_the_burst=1, duplicates=0, lost=0)
