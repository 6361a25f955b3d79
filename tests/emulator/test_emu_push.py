"""events.watch / channels.stop and push delivery to a real local receiver (push guide, §7)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from googleapiclient.errors import HttpError

from tests.emulator.conftest import Emu

EVENT = {"id": "push00001", "summary": "x",
         "start": {"dateTime": "2026-12-01T10:00:00Z"}, "end": {"dateTime": "2026-12-01T10:30:00Z"}}


class Receiver:
    """A webhook endpoint: records every POST; answers with queued statuses, then 200."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self.got = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                outer.received.append({"headers": self.headers,
                                       "body": self.rfile.read(length)})
                status = outer.statuses.pop(0) if outer.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                outer.got.set()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/webhook/google"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def states(self) -> list[tuple[str, str]]:
        return [(r["headers"]["X-Goog-Message-Number"], r["headers"]["X-Goog-Resource-State"])
                for r in self.received]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.server.shutdown()
    rec.server.server_close()


def watch(svc: Any, receiver: Receiver, **over: Any) -> dict[str, Any]:
    body = {"id": "chan-1", "type": "web_hook", "address": receiver.url, "token": "tok-1"}
    body.update(over)
    body = {k: v for k, v in body.items() if v is not None}
    return svc.events().watch(calendarId="primary", body=body).execute()


def test_watch_response_and_sync_then_exists(emu: Emu, receiver: Receiver) -> None:
    """Response {kind api#channel, id, resourceId, resourceUri, token, expiration (ms, default
    ttl 604800 s)}; first message is "sync" number 1, then "exists" with increasing numbers;
    POST without body and the X-Goog-* headers."""
    svc = emu.calendar()
    ch = watch(svc, receiver)
    assert ch["kind"] == "api#channel" and ch["id"] == "chan-1" and ch["token"] == "tok-1"
    assert ch["resourceUri"].endswith("/calendar/v3/calendars/doc%40example.com/events?alt=json")
    assert int(ch["expiration"]) == int((emu.clock.time() + 604800) * 1000)
    svc.events().insert(calendarId="primary", body=EVENT).execute()
    emu.state.deliver_pending()
    assert receiver.states() == [("1", "sync"), ("2", "exists")]
    headers = receiver.received[1]["headers"]
    assert "X-Goog-Resource-State" in list(headers.keys())  # exact spelling, not re-cased
    assert headers["X-Goog-Channel-ID"] == "chan-1"
    assert headers["X-Goog-Channel-Token"] == "tok-1"
    assert headers["X-Goog-Resource-ID"] == ch["resourceId"]
    assert headers["X-Goog-Resource-URI"] == ch["resourceUri"]
    expiry = parsedate_to_datetime(headers["X-Goog-Channel-Expiration"])
    assert int(expiry.timestamp() * 1000) == int(ch["expiration"])
    assert receiver.received[1]["body"] == b""


def test_no_token_header_when_channel_has_no_token(emu: Emu, receiver: Receiver) -> None:
    svc = emu.calendar()
    ch = watch(svc, receiver, token=None)
    assert "token" not in ch
    emu.state.deliver_pending()
    assert receiver.received[0]["headers"].get("X-Goog-Channel-Token") is None


def test_ttl_param_honoured_and_clamped(emu: Emu, receiver: Receiver) -> None:
    """params.ttl is honoured; Google may grant less than asked (clamp, default 7 days)."""
    svc = emu.calendar()
    now_ms = int(emu.clock.time() * 1000)
    ch = watch(svc, receiver, params={"ttl": "3600"})
    assert int(ch["expiration"]) == now_ms + 3600 * 1000
    ch = watch(svc, receiver, id="chan-2", params={"ttl": str(30 * 86400)})
    assert int(ch["expiration"]) == now_ms + 604800 * 1000


@pytest.mark.parametrize(
    "over",
    [{"type": "email"}, {"id": "x" * 65}, {"address": None}, {"token": "t" * 257},
     {"params": {"ttl": "soon"}}, {"params": {"other": "1"}}],
)
def test_bad_watch_requests_are_400(emu: Emu, receiver: Receiver, over: dict[str, Any]) -> None:
    with pytest.raises(HttpError) as info:
        watch(emu.calendar(), receiver, **over)
    assert info.value.resp.status == 400
    assert emu.state.dump()["channels"] == []


def test_duplicate_channel_id_is_rejected(emu: Emu, receiver: Receiver) -> None:
    svc = emu.calendar()
    watch(svc, receiver)
    with pytest.raises(HttpError) as info:
        watch(svc, receiver)
    assert json.loads(info.value.content)["error"]["errors"][0]["reason"] == "channelIdNotUnique"


def test_user_actions_trigger_notifications(emu: Emu, receiver: Receiver) -> None:
    """Acting as the Google user (move, edit, regenerate Meet, delete) notifies watchers."""
    svc = emu.calendar()
    svc.events().insert(calendarId="primary", body=EVENT).execute()
    watch(svc, receiver)
    user = "doc@example.com"
    moved = emu.state.user_move_event(user, "push00001", {"dateTime": "2026-12-02T10:00:00Z"},
                                      {"dateTime": "2026-12-02T10:30:00Z"})
    assert moved["sequence"] == 1
    emu.state.user_edit_event(user, "push00001", {"summary": "edited"})
    link = emu.state.user_regenerate_meet(user, "push00001")["hangoutLink"]
    assert link.startswith("https://meet.google.com/")
    emu.state.user_delete_event(user, "push00001")
    emu.state.deliver_pending()
    assert [s for _, s in receiver.states()] == ["sync"] + ["exists"] * 4
    assert [int(n) for n, _ in receiver.states()] == [1, 2, 3, 4, 5]
    assert svc.events().get(calendarId="primary", eventId="push00001").execute()[
        "status"] == "cancelled"


def test_conference_success_is_a_change_that_notifies(emu: Emu, receiver: Receiver) -> None:
    svc = emu.calendar()
    watch(svc, receiver)
    meet = {"createRequest": {"requestId": "r1",
                              "conferenceSolutionKey": {"type": "hangoutsMeet"}}}
    svc.events().insert(calendarId="primary", body={**EVENT, "conferenceData": meet},
                        conferenceDataVersion=1).execute()
    emu.state.advance(1)
    emu.state.deliver_pending()
    assert receiver.states() == [("1", "sync"), ("2", "exists"), ("3", "exists")]


def test_retry_on_5xx_with_backoff_on_the_clock(emu: Emu, receiver: Receiver) -> None:
    """After 500/502/503/504 Google retries with exponential backoff; other codes are failures."""
    svc = emu.calendar()
    receiver.statuses = [503, 500]
    watch(svc, receiver)
    emu.state.deliver_pending()
    assert len(receiver.received) == 1
    emu.clock.advance(1)  # first backoff: 1 s
    emu.state.deliver_pending()
    assert len(receiver.received) == 2
    emu.clock.advance(1)
    emu.state.deliver_pending()
    assert len(receiver.received) == 2  # second backoff is 2 s
    emu.clock.advance(1)
    emu.state.deliver_pending()
    assert [r["headers"]["X-Goog-Message-Number"] for r in receiver.received] == ["1"] * 3


def test_no_retry_on_4xx(emu: Emu, receiver: Receiver) -> None:
    receiver.statuses = [404]
    watch(emu.calendar(), receiver)
    emu.state.deliver_pending()
    emu.clock.advance(100)
    emu.state.deliver_pending()
    assert len(receiver.received) == 1


def test_nothing_after_expiry(emu: Emu, receiver: Receiver) -> None:
    svc = emu.calendar()
    watch(svc, receiver, params={"ttl": "60"})
    emu.state.deliver_pending()
    emu.clock.advance(61)
    svc.events().insert(calendarId="primary", body=EVENT).execute()
    emu.state.deliver_pending()
    assert receiver.states() == [("1", "sync")]


def test_stop_requires_id_and_resource_id_and_ends_delivery(emu: Emu, receiver: Receiver) -> None:
    """channels.stop needs the matching id + resourceId (404 otherwise); queued and later
    changes are not delivered after a stop."""
    svc = emu.calendar()
    ch = watch(svc, receiver)
    with pytest.raises(HttpError) as info:
        svc.channels().stop(body={"id": "chan-1", "resourceId": "wrong"}).execute()
    assert info.value.resp.status == 404
    svc.channels().stop(body={"id": "chan-1", "resourceId": ch["resourceId"]}).execute()
    svc.events().insert(calendarId="primary", body=EVENT).execute()
    emu.state.deliver_pending()
    assert receiver.received == []
    with pytest.raises(HttpError) as info:
        svc.channels().stop(body={"id": "chan-1", "resourceId": ch["resourceId"]}).execute()
    assert info.value.resp.status == 404


def test_drop_and_duplicate_injection(emu: Emu, receiver: Receiver) -> None:
    """Delivery is not guaranteed: notifications may be lost or repeated."""
    svc = emu.calendar()
    watch(svc, receiver)
    emu.state.set_push_faults(duplicate=1.0)
    svc.events().insert(calendarId="primary", body=EVENT).execute()
    emu.state.set_push_faults(drop=1.0)
    svc.events().patch(calendarId="primary", eventId="push00001", body={"summary": "y"}).execute()
    emu.state.deliver_pending()
    assert receiver.states() == [("1", "sync"), ("2", "exists"), ("2", "exists")]


@pytest.mark.parametrize("emu_config", [{"push_mode": "auto"}])
def test_auto_mode_delivers_from_a_background_thread(emu: Emu, receiver: Receiver) -> None:
    watch(emu.calendar(), receiver)
    assert receiver.got.wait(timeout=5)
    assert receiver.states() == [("1", "sync")]
