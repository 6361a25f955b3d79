"""sidecar.google_api against the Google emulator over real HTTP, with real doctor credentials
from sidecar.accounts on MariaDB: Calendar calls, the error taxonomy for every injected fault,
the one retry policy, the per-doctor rate limiter, 401 handling and log hygiene."""

from __future__ import annotations

import itertools
import json
import logging
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from google.oauth2.credentials import Credentials

from sidecar import oauth
from sidecar.accounts import (
    META_CONNECT,
    META_TOKEN,
    NOT_CONNECTED,
    AccountStore,
    CredentialsProvider,
    StoredToken,
)
from sidecar.clock import FakeClock
from sidecar.config import GoogleSettings, Settings, SidecarSettings
from sidecar.emulator import EmulatorConfig, create_emulator_app, run_in_thread
from sidecar.emulator.errors import FAULT_KINDS
from sidecar.emulator.testing import grant
from sidecar.google_api import (
    AuthRevoked,
    CalendarClient,
    Duplicate,
    FreshGrant,
    Gone,
    GoogleApi,
    NotFound,
    Permanent,
    QuotaExceeded,
    RateLimited,
    RetryPolicy,
    SyncTokenExpired,
    Transient,
    calendar_service,
    parse_retry_after,
    retry_reason,
)
from sidecar.ratelimit import RateLimiter
from sidecar.state import StateStore
from wp_schema.meta import UserMeta
from wp_schema.reflect import SiteSchema

CLIENT_ID = "kc-api-test.apps.googleusercontent.com"
CLIENT_SECRET = "api-test-secret"
PUBLIC_URL = "http://clinic.test/kc-sidecar"
CAL = "https://www.googleapis.com/auth/calendar"

_doctor_ids = itertools.count(500)
_event_ids = itertools.count(1)


def event_body(event_id: str | None = None, conference: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": event_id or f"kcsctest{next(_event_ids):06d}",
        "summary": "Consultation",
        "start": {"dateTime": "2026-12-01T10:00:00+01:00", "timeZone": "Europe/Berlin"},
        "end": {"dateTime": "2026-12-01T10:30:00+01:00", "timeZone": "Europe/Berlin"},
    }
    if conference:
        body["conferenceData"] = {"createRequest": {
            "requestId": body["id"] + "-1", "conferenceSolutionKey": {"type": "hangoutsMeet"}}}
    return body


class Recorder:
    """Collects what the injected hooks receive (sleep delays, metrics)."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.calls: list[tuple[str, int | str]] = []
        self.retries: list[str] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def metric(self, method: str, status: int | str) -> None:
        self.calls.append((method, status))


class World:
    def __init__(self, site: tuple[sa.Engine, SiteSchema, StateStore], url: str, app: Any,
                 clock: FakeClock) -> None:
        self.engine, self.schema, self.state = site
        self.url = url
        self.google = app.emulator
        self.clock = clock
        self.settings = Settings(
            google=GoogleSettings(
                client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
                auth_uri=url + "/o/oauth2/v2/auth", token_uri=url + "/token",
                revoke_uri=url + "/revoke", api_endpoint=url + "/", request_timeout=5.0),
            sidecar=SidecarSettings(public_url=PUBLIC_URL),
        )
        self.store = AccountStore(self.schema, self.state)
        self.provider = CredentialsProvider(self.engine, self.store, self.settings, clock=clock)
        self.rec = Recorder()

    def api(self, *, attempts: int = 5, limiter: RateLimiter | None = None) -> GoogleApi:
        retry = RetryPolicy(max_attempts=attempts, sleep=self.rec.sleep, random=lambda: 1.0,
                            on_retry=lambda err: self.rec.retries.append(retry_reason(err)))
        return GoogleApi.from_settings(
            self.settings, clock=self.clock, retry=retry, metrics=self.rec.metric,
            **({"limiter": limiter} if limiter else {}))

    def grant(self, email: str, scope: str = CAL) -> oauth.TokenResponse:
        return grant(self.settings, email, scope=scope, timeout=10)

    def doctor(self, email: str = "doc@example.com") -> int:
        doctor = next(_doctor_ids)
        with self.engine.begin() as conn:
            self.store.store_connection(conn, doctor, self.grant(email), self.clock.now(),
                                        google_email=email)
        return doctor

    def client(self, doctor: int, **api_kwargs: Any) -> CalendarClient:
        return self.api(**api_kwargs).calendar(self.provider.for_doctor(doctor))

    def log(self, method: str) -> list[dict[str, Any]]:
        return self.google.requests("calendar." + method)


@pytest.fixture
def world(accounts_site: tuple[sa.Engine, SiteSchema, StateStore],
          clock: FakeClock) -> Iterator[World]:
    app = create_emulator_app(EmulatorConfig(
        clients={CLIENT_ID: (CLIENT_SECRET, [PUBLIC_URL + "/oauth/callback"])},
        testing=True, clock=clock, push_mode="manual", conference_delay_seconds=0))
    running = run_in_thread(app)
    try:
        yield World(accounts_site, running.url, app, clock)
    finally:
        running.stop()


# --- calls -------------------------------------------------------------------------------------


def test_event_lifecycle_through_the_real_client(world: World) -> None:
    cal = world.client(world.doctor())
    body = event_body()
    created = cal.insert_event("primary", body, send_updates="none")
    assert created["id"] == body["id"]
    assert "createRequest" in created["conferenceData"]
    [insert] = world.log("events.insert")
    assert insert["params"]["conferenceDataVersion"] in (1, "1")
    assert insert["params"]["sendUpdates"] == "none"
    assert cal.get_event("primary", body["id"])["summary"] == "Consultation"
    patched = cal.patch_event("primary", body["id"], {"summary": "Follow-up"})
    assert patched["summary"] == "Follow-up" and patched["start"] == body["start"]
    cal.delete_event("primary", body["id"])
    assert cal.get_event("primary", body["id"])["status"] == "cancelled"
    with pytest.raises(Gone):
        cal.delete_event("primary", body["id"])
    assert world.rec.calls == [("events.insert", 200), ("events.get", 200),
                               ("events.patch", 200), ("events.delete", 200),
                               ("events.get", 200), ("events.delete", 410)]


def test_insert_without_conference_sends_version_0(world: World) -> None:
    cal = world.client(world.doctor())
    created = cal.insert_event("primary", event_body(), conference=False)
    assert "conferenceData" not in created
    assert world.log("events.insert")[0]["params"]["conferenceDataVersion"] in (0, "0")


def test_same_client_id_twice_is_duplicate(world: World) -> None:
    cal = world.client(world.doctor())
    body = event_body()
    cal.insert_event("primary", body)
    with pytest.raises(Duplicate) as info:
        cal.insert_event("primary", body)
    assert (info.value.status, info.value.reason) == (409, "duplicate")


def test_unknown_event_is_not_found_and_bad_request_is_permanent(world: World) -> None:
    cal = world.client(world.doctor())
    with pytest.raises(NotFound):
        cal.get_event("primary", "nosuchevent0")
    with pytest.raises(Permanent) as info:
        cal.insert_event("primary", event_body(event_id="UPPER-case-not-base32hex"))
    assert info.value.status == 400
    assert len(world.log("events.insert")) == 1  # never retried


def test_list_pages_then_sync_token_then_full_sync_required(world: World) -> None:
    cal = world.client(world.doctor("lister@example.com"))
    for _ in range(3):
        cal.insert_event("primary", event_body())
    first = cal.list_events("primary", max_results=2)
    assert len(first["items"]) == 2 and "nextPageToken" in first
    second = cal.list_events("primary", page_token=first["nextPageToken"], max_results=2)
    assert len(second["items"]) == 1 and "nextSyncToken" in second
    delta = cal.list_events("primary", sync_token=second["nextSyncToken"])
    assert delta["items"] == []
    world.google.invalidate_sync_tokens("lister@example.com")
    with pytest.raises(SyncTokenExpired) as info:
        cal.list_events("primary", sync_token=second["nextSyncToken"])
    assert info.value.status == 410


def test_watch_and_stop_channel(world: World) -> None:
    cal = world.client(world.doctor())
    channel = cal.watch("primary", "chan-1", "channel-secret", "https://clinic.test/hook",
                        ttl=3600)
    assert channel["id"] == "chan-1" and channel["resourceId"]
    assert int(channel["expiration"]) == int((world.clock.time() + 3600) * 1000)
    cal.stop_channel("chan-1", channel["resourceId"])
    with pytest.raises(NotFound):
        cal.stop_channel("chan-1", channel["resourceId"])


def test_the_discovery_service_is_built_once_per_endpoint(world: World) -> None:
    a, b = world.api(), world.api()
    assert a.service is b.service is calendar_service(world.settings.google.api_endpoint)
    # googleapiclient makes a new collection (all methods, docstrings) per service.events():
    # built once here, shared by every call
    assert a.service.events() is b.service.events()


# --- error taxonomy and retries ----------------------------------------------------------------

EXPECTED = {
    "rateLimitExceeded": (RateLimited, 403), "userRateLimitExceeded": (RateLimited, 403),
    "429": (RateLimited, 429), "quotaExceeded": (QuotaExceeded, 403),
    "500": (Transient, 500), "backendError": (Transient, 500), "503": (Transient, 503),
    "unavailable": (Transient, 503),
}


@pytest.mark.parametrize("fault", FAULT_KINDS)
def test_every_injected_fault_maps_to_its_type(world: World, fault: str) -> None:
    cal = world.client(world.doctor(), attempts=1)
    world.google.inject_faults("calendar.events.insert", [fault])
    kind, status = EXPECTED[fault]
    with pytest.raises(kind) as info:
        cal.insert_event("primary", event_body())
    assert type(info.value) is kind
    assert info.value.status == status
    assert world.rec.calls == [("events.insert", status)]


def test_full_sync_required_fault_is_sync_token_expired(world: World) -> None:
    cal = world.client(world.doctor())
    world.google.inject_faults("calendar.events.list", ["fullSyncRequired"])
    with pytest.raises(SyncTokenExpired):
        cal.list_events("primary")


def test_retry_backs_off_exponentially_then_succeeds_without_duplicates(world: World) -> None:
    cal = world.client(world.doctor("retry@example.com"))
    world.google.inject_faults("calendar.events.insert", ["503", "rateLimitExceeded", "429"])
    body = event_body()
    created = cal.insert_event("primary", body)
    assert created["id"] == body["id"]
    assert world.rec.sleeps == [1.0, 2.0, 4.0]  # random() pinned to 1: the jitter ceiling
    assert world.rec.retries == ["server_error", "rate_limited", "rate_limited"]
    assert [e["status"] for e in world.log("events.insert")] == [503, 403, 429, 200]
    listed = cal.list_events("primary")["items"]
    assert [e["id"] for e in listed] == [body["id"]]  # one event, however many tries


def test_retries_are_bounded(world: World) -> None:
    cal = world.client(world.doctor(), attempts=3)
    world.google.inject_faults("calendar.events.insert", ["500"] * 5)
    with pytest.raises(Transient):
        cal.insert_event("primary", event_body())
    assert len(world.log("events.insert")) == 3
    assert world.rec.sleeps == [1.0, 2.0]


def test_quota_exceeded_is_not_retried(world: World) -> None:
    cal = world.client(world.doctor())
    world.google.inject_faults("calendar.events.insert", ["quotaExceeded", None])
    with pytest.raises(QuotaExceeded):
        cal.insert_event("primary", event_body())
    assert len(world.log("events.insert")) == 1 and world.rec.sleeps == []


def test_full_jitter_and_retry_after() -> None:
    rec = Recorder()
    policy = RetryPolicy(base_delay=1.0, max_delay=8.0, random=lambda: 0.5, sleep=rec.sleep)
    assert [policy.delay(n, Transient("x")) for n in (1, 2, 3, 4, 5, 6)] == \
        [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert policy.delay(1, RateLimited("x", retry_after=7.0)) == 7.0  # Retry-After wins
    # a Retry-After beyond max_wait is left to the scheduler, not slept in-process
    outcomes = iter([RateLimited("slow down", retry_after=600.0)])

    def call() -> str:
        raise next(outcomes)

    with pytest.raises(RateLimited):
        policy.run(call)
    assert rec.sleeps == []


def test_retry_after_header_values() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("Sat, 28 Nov 2026 09:01:00 GMT",
                             now=FakeClock().time()) == pytest.approx(60.0)
    assert parse_retry_after("soon") is None


def test_connection_failure_is_transient_and_counted_as_network(world: World) -> None:
    doctor = world.doctor()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    api = GoogleApi(dead, retry=RetryPolicy(max_attempts=2, sleep=world.rec.sleep,
                                            random=lambda: 1.0), metrics=world.rec.metric)
    with pytest.raises(Transient) as info:
        api.calendar(world.provider.for_doctor(doctor)).get_event("primary", "x1234")
    assert info.value.reason == "transport"
    assert world.rec.calls == [("events.get", "network")] * 2
    assert world.rec.sleeps == [1.0]


# --- auth ------------------------------------------------------------------------------------


def _set_token(world: World, doctor: int, token: StoredToken) -> None:
    with world.engine.begin() as conn:
        UserMeta(world.schema).set(conn, doctor, META_TOKEN, token.to_json())


def test_rejected_access_token_is_refreshed_once_and_the_call_repeated(world: World) -> None:
    doctor = world.doctor()
    with world.engine.connect() as conn:
        stored = world.store.read_token(conn, doctor)
    assert stored is not None
    # the stored access token no longer works although it has not expired on our clock
    _set_token(world, doctor, StoredToken("ya29.revoked-elsewhere", stored.refresh_token,
                                          stored.expires_at, stored.scope))
    cal = world.client(doctor)
    cal.insert_event("primary", event_body())
    assert [e["status"] for e in world.log("events.insert")] == [401, 200]
    assert [e["params"]["grant_type"] for e in world.google.requests("oauth2.token")] == [
        "authorization_code", "refresh_token"]
    assert world.rec.sleeps == []


class _RejectedSource:
    """A CredentialSource whose fresh token Google still rejects."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.revocations: list[str] = []
        self.doctor_id = real.doctor_id

    def credentials(self) -> Credentials:
        return Credentials(token="ya29.bad-1")

    def refresh_after_unauthorized(self, rejected_token: str | None) -> Credentials:
        return Credentials(token="ya29.bad-2")

    def revoked(self, reason: str) -> None:
        self.revocations.append(reason)


def test_401_after_a_fresh_refresh_is_auth_revoked(world: World) -> None:
    source = _RejectedSource(world.provider.for_doctor(world.doctor()))
    with pytest.raises(AuthRevoked):
        world.api().calendar(source).insert_event("primary", event_body())
    assert [e["status"] for e in world.log("events.insert")] == [401, 401]
    assert len(source.revocations) == 1


def test_missing_calendar_scope_is_auth_revoked_and_marks_the_doctor(world: World) -> None:
    doctor = next(_doctor_ids)
    tokens = world.grant("readonly@example.com", scope=CAL + ".readonly")
    _set_token(world, doctor, StoredToken(tokens.access_token, tokens.refresh_token,
                                          int(world.clock.time()) + 3000, tokens.scope))
    with world.engine.begin() as conn:
        UserMeta(world.schema).set(conn, doctor, META_CONNECT, "on")
    with pytest.raises(AuthRevoked) as info:
        world.client(doctor).insert_event("primary", event_body())
    assert info.value.reason == "insufficientPermissions"
    with world.engine.connect() as conn:
        assert world.store.connection_status(conn, doctor) == NOT_CONNECTED
    row = world.state.get_doctor(doctor)
    assert row is not None and row.status == "needs_reconnect"


def test_disconnected_doctor_costs_no_google_call(world: World) -> None:
    doctor = world.doctor()
    with world.engine.connect() as conn:
        world.store.disconnect(conn, doctor)
    before = len(world.google.requests())
    with pytest.raises(AuthRevoked):
        world.client(doctor).insert_event("primary", event_body())
    assert len(world.google.requests()) == before and world.rec.calls == []


# --- rate limiting -----------------------------------------------------------------------------


def test_rate_limiter_sliding_window_with_fake_clock() -> None:
    clock = FakeClock()
    limiter = RateLimiter(500, 60.0, clock=clock)
    assert [limiter.acquire(7) for _ in range(500)] == [0.0] * 500
    assert limiter.acquire(7) == 60.0  # the 501st call in a minute waits for the first to age
    assert limiter.acquire(8) == 0.0  # budgets are per doctor
    clock.advance(30)
    assert limiter.acquire(7) == 30.0  # reserved slots are never handed out twice
    clock.advance(30)
    assert limiter.in_window(7) == 2  # the two reservations falling in the new window
    assert limiter.acquire(7) == 0.0


def test_rate_limiter_spreads_a_burst_over_the_window() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2, 60.0, clock=clock)
    assert [limiter.acquire("d") for _ in range(6)] == [0.0, 0.0, 60.0, 60.0, 120.0, 120.0]


def test_client_waits_for_the_per_doctor_budget(world: World) -> None:
    limiter = RateLimiter(2, 60.0, clock=world.clock, sleep=world.rec.sleep)
    cal = world.client(world.doctor(), limiter=limiter)
    for _ in range(3):
        cal.insert_event("primary", event_body())
    assert world.rec.sleeps == [60.0]
    assert len(world.log("events.insert")) == 3


def test_concurrent_calls_from_threads(world: World) -> None:
    cal = world.client(world.doctor())
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(5):
                cal.insert_event("primary", event_body())
        except BaseException as err:  # collected for the assertion below
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert errors == []
    assert [e["status"] for e in world.log("events.insert")] == [200] * 20


# --- secrets -----------------------------------------------------------------------------------


def test_nothing_logged_contains_a_token(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    doctor = world.doctor("quiet@example.com")
    with world.engine.connect() as conn:
        first = world.store.read_token(conn, doctor)
    assert first is not None
    cal = world.client(doctor)
    world.google.inject_faults("calendar.events.insert", ["503"])
    cal.insert_event("primary", event_body())
    world.clock.advance(timedelta(hours=2).total_seconds())
    channel = cal.watch("primary", "chan-log", "channel-secret-value", "https://clinic.test/h")
    with world.engine.connect() as conn:
        second = world.store.read_token(conn, doctor)
    assert second is not None and second.access_token != first.access_token
    world.google.revoke_grant(CLIENT_ID, "quiet@example.com")
    world.clock.advance(timedelta(hours=2).total_seconds())
    with pytest.raises(AuthRevoked):
        cal.stop_channel("chan-log", channel["resourceId"])
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "retry" in text and "must reconnect" in text
    for secret in (first.access_token, first.refresh_token, second.access_token,
                   "channel-secret-value", CLIENT_SECRET):
        assert secret and secret not in text
    assert "Bearer" not in text and json.dumps(first.access_token) not in text


# --- calendars.get and a not-yet-stored grant --------------------------------------------------


def test_primary_calendar_id_is_the_account_email(world: World) -> None:
    cal = world.client(world.doctor("Primary.Owner@example.com"))
    primary = cal.get_calendar()
    assert primary["id"] == "primary.owner@example.com"
    assert primary["kind"] == "calendar#calendar"
    assert world.rec.calls == [("calendars.get", 200)]


def test_a_fresh_grant_reads_its_calendar_and_never_marks_anyone(world: World) -> None:
    """The OAuth callback asks for the account e-mail with the token it has just received;
    a failure there must not touch any stored connection."""
    tokens = world.grant("fresh@example.com")
    doctor = world.doctor("stored@example.com")  # an existing connection for the same doctor
    fresh = world.api(attempts=1).calendar(FreshGrant(doctor, tokens.access_token))
    assert fresh.get_calendar("primary")["id"] == "fresh@example.com"
    assert "ya29" not in repr(FreshGrant(doctor, tokens.access_token))

    world.google.revoke_grant(CLIENT_ID, "fresh@example.com")
    with pytest.raises(AuthRevoked):
        fresh.get_calendar("primary")
    assert [e["status"] for e in world.log("calendars.get")] == [200, 401]  # no refresh, no retry
    with world.engine.connect() as conn:
        assert world.store.connection_status(conn, doctor) == "connected"


def test_a_single_attempt_policy_is_not_retried(world: World) -> None:
    tokens = world.grant("once@example.com")
    world.google.inject_faults("calendar.calendars.get", ["backendError"])
    with pytest.raises(Transient):
        world.api(attempts=1).calendar(FreshGrant(1, tokens.access_token)).get_calendar()
    assert len(world.log("calendars.get")) == 1 and world.rec.sleeps == []
