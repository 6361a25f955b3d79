"""Fault injection, quota, latency, control routes and thread safety (reference §9, §11)."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from typing import Any

import pytest
from googleapiclient.errors import HttpError
from googleapiclient.http import _should_retry_response

from sidecar.clock import FakeClock
from sidecar.emulator import EmulatorConfig, create_emulator_app, run_in_thread
from tests.emulator.conftest import CLIENT_ID, CLIENT_SECRET, REDIRECT, Emu, http

EVENT = {"summary": "x", "start": {"dateTime": "2026-12-01T10:00:00Z"},
         "end": {"dateTime": "2026-12-01T10:30:00Z"}}


def error_of(err: HttpError) -> dict[str, Any]:
    return json.loads(err.content)["error"]


@pytest.mark.parametrize(
    ("kind", "status", "reason", "domain", "retried"),
    [
        ("rateLimitExceeded", 403, "rateLimitExceeded", "usageLimits", True),
        ("userRateLimitExceeded", 403, "userRateLimitExceeded", "usageLimits", True),
        ("quotaExceeded", 403, "quotaExceeded", "usageLimits", False),
        ("429", 429, "rateLimitExceeded", "usageLimits", True),
        ("500", 500, "backendError", "global", True),
        ("503", 503, "backendError", "global", True),
    ],
)
def test_injected_faults_use_googles_envelope(
    emu: Emu, kind: str, status: int, reason: str, domain: str, retried: bool
) -> None:
    """googleapiclient's _should_retry_response reads error.errors[0].reason: 403 is retried only
    for (user)rateLimitExceeded, 429 and 5xx always; quotaExceeded is not retried."""
    svc = emu.calendar()
    emu.state.inject_faults("calendar.events.insert", [kind])
    with pytest.raises(HttpError) as info:
        svc.events().insert(calendarId="primary", body=EVENT).execute()
    err = error_of(info.value)
    assert (info.value.resp.status, err["code"]) == (status, status)
    assert (err["errors"][0]["reason"], err["errors"][0]["domain"]) == (reason, domain)
    assert _should_retry_response(status, info.value.content) is retried
    # the failed call had no side effect
    assert svc.events().list(calendarId="primary").execute()["items"] == []


def test_googleapiclient_retries_through_an_injected_429(emu: Emu) -> None:
    svc = emu.calendar()
    emu.state.inject_faults("calendar.events.insert", ["429"])
    ev = svc.events().insert(calendarId="primary", body={**EVENT, "id": "rtr000001"}).execute(
        num_retries=2)
    assert ev["id"] == "rtr000001"
    assert [e["status"] for e in emu.state.requests("calendar.events.insert")] == [429, 200]


def test_fault_sequence_with_pass_through(emu: Emu) -> None:
    svc = emu.calendar()
    emu.state.inject_faults("*", [None, "503"])
    svc.events().list(calendarId="primary").execute()
    with pytest.raises(HttpError):
        svc.events().list(calendarId="primary").execute()
    svc.events().list(calendarId="primary").execute()


def _pattern(seed: int) -> list[int]:
    clock = FakeClock()
    app = create_emulator_app(EmulatorConfig(clients={CLIENT_ID: (CLIENT_SECRET, [REDIRECT])},
                                             clock=clock, seed=seed, push_mode="manual"))
    running = run_in_thread(app)
    try:
        emu = Emu(running.url, app, clock)
        svc = emu.calendar()
        emu.state.inject_fault_probability("calendar.events.list", "500", 0.5)
        out = []
        for _ in range(12):
            try:
                svc.events().list(calendarId="primary").execute()
                out.append(200)
            except HttpError as err:
                out.append(err.resp.status)
        return out
    finally:
        running.stop()


def test_probability_faults_are_repeatable_with_a_seed() -> None:
    first = _pattern(7)
    assert first == _pattern(7)
    assert set(first) == {200, 500}


@pytest.mark.parametrize("emu_config", [{"per_user_quota_per_minute": 5}])
def test_per_user_sliding_window_quota(emu: Emu) -> None:
    """"Per minute per user per project 600 requests" over a sliding window → 403
    userRateLimitExceeded (lowered to 5 here)."""
    svc = emu.calendar()
    other = emu.calendar("other@example.com")
    for _ in range(5):
        svc.events().list(calendarId="primary").execute()
    with pytest.raises(HttpError) as info:
        svc.events().list(calendarId="primary").execute()
    assert error_of(info.value)["errors"][0]["reason"] == "userRateLimitExceeded"
    other.events().list(calendarId="primary").execute()  # per user
    emu.clock.advance(60)
    svc.events().list(calendarId="primary").execute()


def test_latency_per_method(emu: Emu) -> None:
    svc = emu.calendar()
    emu.state.set_latency(0.2, "calendar.events.list")
    started = time.monotonic()
    svc.events().list(calendarId="primary").execute()
    assert time.monotonic() - started >= 0.2


def test_concurrent_inserts_are_all_kept(emu: Emu) -> None:
    """One lock: parallel writers neither lose events nor share change numbers."""
    tokens = emu.connect()

    def insert(n: int) -> None:
        svc = emu.service(emu.credentials(tokens))
        svc.events().insert(calendarId="primary", body={**EVENT, "id": f"par{n:05d}"}).execute()

    threads = [threading.Thread(target=insert, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events = emu.state.dump()["calendars"][0]["events"]
    assert len(events) == 16
    assert len({e["etag"] for e in events}) == 16


def test_control_routes_over_http(emu: Emu) -> None:
    svc = emu.calendar()
    svc.events().insert(calendarId="primary", body={**EVENT, "id": "ctl000001"}).execute()
    base = emu.url + "/_emulator"
    status, _, raw = http("POST", base + "/users/doc@example.com/events/ctl000001/move", json_body={
        "start": {"dateTime": "2026-12-03T10:00:00Z"}, "end": {"dateTime": "2026-12-03T11:00:00Z"}})
    assert status == 200 and json.loads(raw)["sequence"] == 1
    assert http("POST", base + "/clock/advance", json_body={"seconds": 30})[0] == 200
    assert emu.clock.now().second == 30
    assert http("POST", base + "/faults",
                json_body={"method": "calendar.events.get", "kinds": ["500"]})[0] == 200
    with pytest.raises(HttpError):
        svc.events().get(calendarId="primary", eventId="ctl000001").execute()
    status, _, raw = http("GET", base + "/requests?api_method=calendar.events.get")
    assert [e["status"] for e in json.loads(raw)] == [500]
    state = json.loads(http("GET", base + "/state")[2])
    assert state["calendars"][0]["events"][0]["start"]["dateTime"] == "2026-12-03T10:00:00Z"
    status, _, raw = http("POST", base + "/faults", json_body={"method": "*", "kinds": ["nope"]})
    assert status == 400


def test_control_routes_and_auto_approve_need_testing_mode() -> None:
    app = create_emulator_app(EmulatorConfig(clients={CLIENT_ID: (CLIENT_SECRET, [REDIRECT])}))
    running = run_in_thread(app)
    try:
        assert running.url == f"http://127.0.0.1:{running.port}"
        assert http("GET", running.url + "/_emulator/state")[0] == 404
        params = urllib.parse.urlencode({
            "client_id": CLIENT_ID, "redirect_uri": REDIRECT, "response_type": "code",
            "scope": "https://www.googleapis.com/auth/calendar.events",
            "emulator_auto_approve": "x@example.com"})
        status, _, body = http("GET", running.url + "/o/oauth2/v2/auth?" + params)
        assert status == 200 and b"<form" in body  # the consent page, no redirect
    finally:
        running.stop()


def test_redirect_prefix_registration() -> None:
    """Clients registered with a prefix ("...*") accept any redirect under it (emulator
    convenience for `kc-sidecar emulator`); exact entries stay exact."""
    config = EmulatorConfig(clients={"c": ("s", ["https://clinic.example/kc-sidecar/*"])})
    reg = config.client_registrations()["c"]
    assert reg.allows_redirect("https://clinic.example/kc-sidecar/oauth/callback")
    assert not reg.allows_redirect("https://clinic.example/other")
