"""sidecar.accounts on MariaDB with the Google emulator over real HTTP: the add-on's token shapes,
connect/refresh/disconnect storage, one refresh at a time, and reconnect-needed handling."""

from __future__ import annotations

import itertools
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from sidecar import oauth
from sidecar.accounts import (
    CONNECTED,
    META_CONNECT,
    META_MEET_ID,
    META_TELEMED_TYPE,
    META_TOKEN,
    META_ZOOM_CONNECT,
    NOT_CONNECTED,
    AccountStore,
    CredentialsProvider,
    NeedsReconnect,
    StoredToken,
    parse_token,
)
from sidecar.clock import FakeClock
from sidecar.config import GoogleSettings, Settings, SidecarSettings
from sidecar.db import create_engine
from sidecar.emulator import EmulatorConfig, create_emulator_app, run_in_thread
from sidecar.emulator.testing import grant
from sidecar.google_api import AuthRevoked, Transient
from sidecar.oauth import TokenResponse
from sidecar.state import StateStore
from wp_schema.meta import UserMeta
from wp_schema.reflect import SiteSchema

CLIENT_ID = "kc-accounts-test.apps.googleusercontent.com"
CLIENT_SECRET = "accounts-test-secret"
PUBLIC_URL = "http://clinic.test/kc-sidecar"
CAL = "https://www.googleapis.com/auth/calendar"

_doctor_ids = itertools.count(100)


class World:
    """One emulated Google on the test's clock, and the sidecar's account objects."""

    def __init__(self, engine: sa.Engine, schema: SiteSchema, state: StateStore, url: str,
                 app: Any, clock: FakeClock) -> None:
        self.engine = engine
        self.schema = schema
        self.state = state
        self.meta = UserMeta(schema)
        self.google = app.emulator
        self.clock = clock
        self.settings = Settings(
            google=GoogleSettings(
                client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
                auth_uri=url + "/o/oauth2/v2/auth", token_uri=url + "/token",
                revoke_uri=url + "/revoke", api_endpoint=url + "/", request_timeout=5.0),
            sidecar=SidecarSettings(public_url=PUBLIC_URL),
        )
        self.store = AccountStore(schema, state)
        self.provider = CredentialsProvider(engine, self.store, self.settings, clock=clock)

    def grant(self, email: str = "doc@example.com", scope: str | None = None) -> TokenResponse:
        """Consent + code exchange through our own oauth module."""
        extra = {"emulator_grant_scopes": scope} if scope else {}
        return grant(self.settings, email, timeout=10, **extra)

    def connect(self, email: str = "doc@example.com") -> tuple[int, TokenResponse]:
        doctor = next(_doctor_ids)
        tokens = self.grant(email)
        with self.engine.begin() as conn:
            self.store.store_connection(conn, doctor, tokens, self.clock.now(),
                                        google_email=email)
        return doctor, tokens

    def meta_of(self, doctor: int) -> dict[str, Any]:
        with self.engine.connect() as conn:
            return {k: v[0] for k, v in self.meta.all_keys(conn, doctor).items()}

    def raw_token(self, doctor: int) -> str | None:
        um = self.schema.usermeta
        with self.engine.connect() as conn:
            return conn.execute(sa.select(um.c.meta_value).where(
                um.c.user_id == doctor, um.c.meta_key == META_TOKEN)).scalar()

    def refreshes(self) -> list[dict[str, Any]]:
        return [e for e in self.google.requests("oauth2.token")
                if e["params"].get("grant_type") == "refresh_token"]

    def status(self, doctor: int) -> str:
        with self.engine.connect() as conn:
            return self.store.connection_status(conn, doctor)


@pytest.fixture
def world(accounts_site: tuple[sa.Engine, SiteSchema, StateStore], clock: FakeClock
          ) -> Iterator[World]:
    app = create_emulator_app(EmulatorConfig(
        clients={CLIENT_ID: (CLIENT_SECRET, [PUBLIC_URL + "/oauth/callback"])},
        testing=True, clock=clock, push_mode="manual"))
    running = run_in_thread(app)
    try:
        yield World(*accounts_site, running.url, app, clock)
    finally:
        running.stop()


# --- token shapes ------------------------------------------------------------------------------


def test_gm1_shape_expiry_is_created_plus_relative_expires_in() -> None:
    gm1 = json.dumps({"access_token": "ya29.a", "expires_in": 3599, "scope": CAL,
                      "token_type": "Bearer", "created": 1_700_000_000, "refresh_token": "1//r",
                      "id_token": "x.y.z"})
    assert parse_token(gm1) == StoredToken("ya29.a", "1//r", 1_700_003_599, CAL)


def test_gm4_shape_expires_in_is_absolute() -> None:
    gm4 = json.dumps({"access_token": "ya29.b", "refresh_token": "1//s",
                      "expires_in": 1_800_000_000, "scope": CAL})
    assert parse_token(gm4) == StoredToken("ya29.b", "1//s", 1_800_000_000, CAL)
    # PHP may have escaped slashes; a PHP array (unserialized to a dict) is accepted too
    assert parse_token(gm4.replace("/", "\\/")) == parse_token(gm4)
    assert parse_token(json.loads(gm4)) == parse_token(gm4)


@pytest.mark.parametrize("value", [None, "", "not json", "[]", '{"refresh_token":"1//x"}',
                                   '{"access_token":""}', 42])
def test_unusable_token_values_read_as_no_token(value: Any) -> None:
    assert parse_token(value) is None


def test_written_shape_is_gm4_json_with_expiry_300s_early(world: World) -> None:
    doctor, tokens = world.connect()
    raw = world.raw_token(doctor)
    assert raw is not None and raw.startswith("{")  # plain JSON, not PHP-serialized
    stored = json.loads(raw)
    assert list(stored) == ["access_token", "refresh_token", "expires_in", "scope"]
    assert stored["access_token"] == tokens.access_token
    assert stored["refresh_token"] == tokens.refresh_token
    assert stored["expires_in"] == int(world.clock.time()) + tokens.expires_in - 300
    assert stored["scope"] == tokens.scope


# --- connect -----------------------------------------------------------------------------------


def test_store_connection_sets_the_add_on_meta(world: World) -> None:
    doctor = next(_doctor_ids)
    with world.engine.begin() as conn:
        world.meta.set(conn, doctor, META_ZOOM_CONNECT, "on")
        world.meta.set(conn, doctor, META_TELEMED_TYPE, "zoom")
    tokens = world.grant()
    with world.engine.begin() as conn:
        world.store.store_connection(conn, doctor, tokens, world.clock.now())
    meta = world.meta_of(doctor)
    assert {k: meta[k] for k in (META_CONNECT, META_TELEMED_TYPE, META_MEET_ID,
                                 META_ZOOM_CONNECT)} == {
        META_CONNECT: "on", META_TELEMED_TYPE: "googlemeet", META_MEET_ID: "primary",
        META_ZOOM_CONNECT: "off"}
    assert world.status(doctor) == CONNECTED
    row = world.state.get_doctor(doctor)
    assert row is not None and (row.status, row.status_reason) == ("connected", None)


def test_reconnect_resumes_work_parked_while_disconnected(world: World) -> None:
    doctor, _ = world.connect("again@example.com")
    appointment = 9000 + doctor
    world.state.upsert_item(appointment, doctor_id=doctor, state="waiting_reconnect",
                            last_error="Google access revoked", next_attempt_at=None)
    with world.engine.begin() as conn:
        world.store.store_connection(conn, doctor, world.grant("again@example.com"),
                                     world.clock.now())
    item = world.state.get_item(appointment)
    assert item is not None and item.state == "pending"
    assert item.next_attempt_at == world.clock.now()


def test_reconnect_without_refresh_token_keeps_the_stored_one(world: World) -> None:
    doctor, first = world.connect()
    again = TokenResponse(access_token="ya29.second", expires_in=3599, scope=CAL)
    with world.engine.begin() as conn:
        world.store.store_connection(conn, doctor, again, world.clock.now())
    stored = json.loads(world.raw_token(doctor) or "")
    assert stored["access_token"] == "ya29.second"
    assert stored["refresh_token"] == first.refresh_token


def test_no_refresh_token_at_all_needs_reconnect_and_stores_nothing(world: World) -> None:
    doctor = next(_doctor_ids)
    tokens = TokenResponse(access_token="ya29.only", expires_in=3599, scope=CAL)
    with world.engine.begin() as conn, pytest.raises(NeedsReconnect, match="reconnect"):
        world.store.store_connection(conn, doctor, tokens, world.clock.now())
    assert world.meta_of(doctor) == {}
    assert world.status(doctor) == NOT_CONNECTED


def test_grant_without_calendar_scope_needs_reconnect_and_stores_nothing(world: World) -> None:
    doctor = next(_doctor_ids)
    tokens = TokenResponse(access_token="ya29.x", expires_in=3599, refresh_token="1//y",
                           scope=CAL + ".readonly")
    with world.engine.begin() as conn, pytest.raises(NeedsReconnect, match="calendar"):
        world.store.store_connection(conn, doctor, tokens, world.clock.now())
    assert world.meta_of(doctor) == {}


def test_connection_status_follows_the_add_on_rule_in_batch(world: World) -> None:
    connected, _ = world.connect()
    flag_only, token_only, nothing = next(_doctor_ids), next(_doctor_ids), next(_doctor_ids)
    with world.engine.begin() as conn:
        world.meta.set(conn, flag_only, META_CONNECT, "on")
        world.meta.set(conn, token_only, META_TOKEN, world.raw_token(connected))
        world.meta.set(conn, token_only, META_CONNECT, "off")
    with world.engine.connect() as conn:
        statuses = world.store.connection_statuses(
            conn, [connected, flag_only, token_only, nothing])
    assert statuses == {connected: CONNECTED, flag_only: NOT_CONNECTED,
                        token_only: NOT_CONNECTED, nothing: NOT_CONNECTED}


# --- credentials and refresh -------------------------------------------------------------------


def test_valid_token_is_used_without_refresh(world: World) -> None:
    doctor, tokens = world.connect()
    creds = world.provider.for_doctor(doctor).credentials()
    assert creds.token == tokens.access_token
    assert creds.token_uri == world.settings.google.token_uri  # not Google's default
    assert creds.expiry is None  # google-auth must never refresh behind our back
    assert world.refreshes() == []


def test_expired_token_is_refreshed_and_persisted_in_gm4_shape(world: World) -> None:
    doctor, tokens = world.connect()
    with world.engine.begin() as conn:  # PHP/Zoom touched the flags meanwhile
        world.meta.set(conn, doctor, META_ZOOM_CONNECT, "on")
        world.meta.set(conn, doctor, META_MEET_ID, "other@example.com")
    world.clock.advance(3600)
    creds = world.provider.for_doctor(doctor).credentials()
    assert creds.token != tokens.access_token
    assert len(world.refreshes()) == 1
    stored = json.loads(world.raw_token(doctor) or "")
    assert stored == {"access_token": creds.token, "refresh_token": tokens.refresh_token,
                      "expires_in": int(world.clock.time()) + 3599 - 300, "scope": tokens.scope}
    meta = world.meta_of(doctor)
    assert (meta[META_ZOOM_CONNECT], meta[META_MEET_ID], meta[META_CONNECT],
            meta[META_TELEMED_TYPE]) == ("off", "primary", "on", "googlemeet")
    row = world.state.get_doctor(doctor)
    assert row is not None and row.last_refresh_at == world.clock.now()
    # the new token is good until its own expiry: no second refresh
    world.provider.for_doctor(doctor).credentials()
    assert len(world.refreshes()) == 1


def test_gm1_token_is_refreshed_and_rewritten_in_gm4_shape(world: World) -> None:
    doctor = next(_doctor_ids)
    tokens = world.grant()
    created = int(world.clock.time()) - 7200
    gm1 = json.dumps({"access_token": tokens.access_token, "expires_in": 3599,
                      "scope": tokens.scope, "token_type": "Bearer", "created": created,
                      "refresh_token": tokens.refresh_token})
    with world.engine.begin() as conn:
        world.meta.set(conn, doctor, META_TOKEN, gm1)
        world.meta.set(conn, doctor, META_CONNECT, "on")
    creds = world.provider.for_doctor(doctor).credentials()
    stored = json.loads(world.raw_token(doctor) or "")
    assert set(stored) == {"access_token", "refresh_token", "expires_in", "scope"}
    assert stored["access_token"] == creds.token != tokens.access_token
    assert stored["expires_in"] > world.clock.time()


def test_invalid_grant_marks_not_connected_and_stops_calls(world: World) -> None:
    doctor, _ = world.connect("revoked@example.com")
    world.google.revoke_grant(CLIENT_ID, "revoked@example.com")
    world.clock.advance(3600)
    auth = world.provider.for_doctor(doctor)
    with pytest.raises(AuthRevoked) as info:
        auth.credentials()
    assert info.value.reason == "invalid_grant"
    assert world.status(doctor) == NOT_CONNECTED
    meta = world.meta_of(doctor)
    assert META_TOKEN not in meta and meta[META_CONNECT] == "off"
    row = world.state.get_doctor(doctor)
    assert row is not None and row.status == "needs_reconnect"
    assert "invalid_grant" in (row.status_reason or "")
    assert row.google_email == "revoked@example.com"
    calls = len(world.google.requests())
    with pytest.raises(AuthRevoked):
        auth.credentials()
    assert len(world.google.requests()) == calls  # a disconnected doctor costs no Google call


def test_token_endpoint_outage_is_transient_and_keeps_the_connection(world: World) -> None:
    doctor, tokens = world.connect()
    world.clock.advance(3600)
    world.google.inject_faults("oauth2.token", ["503"])
    with pytest.raises(Transient):
        world.provider.for_doctor(doctor).credentials()
    assert world.status(doctor) == CONNECTED
    assert json.loads(world.raw_token(doctor) or "")["refresh_token"] == tokens.refresh_token
    assert world.provider.for_doctor(doctor).credentials().token  # next try works


def test_two_threads_refreshing_make_one_refresh(world: World) -> None:
    doctor, _ = world.connect()
    world.clock.advance(3600)
    world.google.set_latency(0.2, "oauth2.token")  # keep the first refresh in flight
    barrier = threading.Barrier(2)
    seen: list[str] = []

    def worker() -> None:
        barrier.wait()
        seen.append(world.provider.for_doctor(doctor).credentials().token)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(seen) == 2 and seen[0] == seen[1]
    assert len(world.refreshes()) == 1


def test_two_processes_refreshing_make_one_refresh(world: World) -> None:
    """Two replicas (own engines and providers) share the database lock and re-read."""
    doctor, _ = world.connect()
    world.clock.advance(3600)
    world.google.set_latency(0.2, "oauth2.token")
    other_engine = create_engine(world.engine.url.render_as_string(hide_password=False))
    other = CredentialsProvider(other_engine, AccountStore(world.schema), world.settings,
                                clock=world.clock)
    barrier = threading.Barrier(2)
    seen: list[str] = []

    def worker(provider: CredentialsProvider) -> None:
        barrier.wait()
        seen.append(provider.for_doctor(doctor).credentials().token)

    threads = [threading.Thread(target=worker, args=(p,)) for p in (world.provider, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    other_engine.dispose()
    assert len(seen) == 2 and seen[0] == seen[1]
    assert len(world.refreshes()) == 1


def test_unauthorized_refreshes_unless_someone_else_already_did(world: World) -> None:
    doctor, tokens = world.connect()
    auth = world.provider.for_doctor(doctor)
    fresh = auth.refresh_after_unauthorized(tokens.access_token)
    assert fresh.token != tokens.access_token
    assert len(world.refreshes()) == 1
    # a second caller that still holds the old token gets the stored new one, no new refresh
    assert auth.refresh_after_unauthorized(tokens.access_token).token == fresh.token
    assert len(world.refreshes()) == 1


# --- disconnect --------------------------------------------------------------------------------


def test_disconnect_removes_token_sets_flag_off_and_revokes(world: World) -> None:
    doctor, tokens = world.connect("leaving@example.com")
    stopped: list[str] = []

    def stop_channels(doctor_id: int) -> None:
        # runs while the token is still usable
        stopped.append(world.provider.for_doctor(doctor_id).credentials().token)

    with world.engine.connect() as conn:
        result = world.store.disconnect(
            conn, doctor, revoke=lambda t: oauth.revoke(world.settings, t),
            stop_channels=stop_channels)
    assert result.revoked and result.had_token and result.channels_stopped
    assert stopped == [tokens.access_token]
    meta = world.meta_of(doctor)
    assert META_TOKEN not in meta and meta[META_CONNECT] == "off"
    assert world.status(doctor) == NOT_CONNECTED
    row = world.state.get_doctor(doctor)
    assert row is not None and row.status == "disconnected"
    assert [e["status"] for e in world.google.requests("oauth2.revoke")] == [200]
    with pytest.raises(AuthRevoked):  # the grant is gone at Google
        oauth.refresh_access_token(world.settings, tokens.refresh_token or "")


def test_failed_revoke_and_channel_stop_never_block_local_removal(world: World) -> None:
    doctor, _ = world.connect()
    world.google.inject_faults("oauth2.revoke", ["503"])

    def broken_stop(doctor_id: int) -> None:
        raise Transient("push channel endpoint down")

    with world.engine.connect() as conn:
        result = world.store.disconnect(
            conn, doctor, revoke=lambda t: oauth.revoke(world.settings, t),
            stop_channels=broken_stop)
    assert (result.revoked, result.channels_stopped) == (False, False)
    assert world.status(doctor) == NOT_CONNECTED
    assert META_TOKEN not in world.meta_of(doctor)


# --- secrets -----------------------------------------------------------------------------------


def test_nothing_logged_contains_a_token(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    doctor, tokens = world.connect("logs@example.com")
    world.clock.advance(3600)
    refreshed = world.provider.for_doctor(doctor).credentials().token
    world.google.revoke_grant(CLIENT_ID, "logs@example.com")
    world.clock.advance(3600)
    with pytest.raises(AuthRevoked):
        world.provider.for_doctor(doctor).credentials()
    other, other_tokens = world.connect("logs2@example.com")
    with world.engine.connect() as conn:
        world.store.disconnect(conn, other, revoke=lambda t: oauth.revoke(world.settings, t))
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "must reconnect" in text and "refreshed" in text
    for secret in (tokens.access_token, tokens.refresh_token, refreshed,
                   other_tokens.access_token, other_tokens.refresh_token, CLIENT_SECRET):
        assert secret and secret not in text
