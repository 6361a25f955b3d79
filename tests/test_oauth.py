"""sidecar.oauth against the Google emulator over real HTTP: authorization URL, PKCE, code
exchange, refresh, revoke, and the mapping of token-endpoint failures to our taxonomy."""

from __future__ import annotations

import logging
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from sidecar import oauth
from sidecar.clock import FakeClock
from sidecar.config import GoogleSettings, Settings, SidecarSettings
from sidecar.emulator import EmulatorConfig, create_emulator_app, run_in_thread
from sidecar.google_api import AuthRevoked, OAuthError, Transient

CLIENT_ID = "kc-oauth-test.apps.googleusercontent.com"
CLIENT_SECRET = "oauth-test-secret"
PUBLIC_URL = "http://clinic.test/kc-sidecar"
CAL = "https://www.googleapis.com/auth/calendar"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def get_no_redirect(url: str) -> tuple[int, dict[str, str]]:
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(url, timeout=10) as resp:
            return resp.status, dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers)


def settings_for(url: str, public_url: str = PUBLIC_URL) -> Settings:
    return Settings(
        google=GoogleSettings(
            client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
            auth_uri=url + "/o/oauth2/v2/auth", token_uri=url + "/token",
            revoke_uri=url + "/revoke", api_endpoint=url + "/", request_timeout=5.0),
        sidecar=SidecarSettings(public_url=public_url),
    )


class Google:
    def __init__(self, url: str, app: Any, clock: FakeClock) -> None:
        self.url = url
        self.state = app.emulator
        self.clock = clock
        self.settings = settings_for(url)

    def consent(self, email: str = "doc@example.com", grant: str | None = None
                ) -> tuple[str, str, dict[str, list[str]]]:
        """Run our authorization URL through the emulator's consent (auto-approve):
        returns (code, verifier, redirect query)."""
        verifier, challenge = oauth.new_pkce_pair()
        url = oauth.build_authorization_url(self.settings, "st-1", challenge)
        url += "&" + urllib.parse.urlencode({"emulator_auto_approve": email})
        if grant:
            url += "&" + urllib.parse.urlencode({"emulator_grant_scopes": grant})
        status, headers = get_no_redirect(url)
        assert status == 302, headers
        location = headers["Location"]
        assert location.startswith(PUBLIC_URL + "/oauth/callback?")
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
        return query.get("code", [""])[0], verifier, query


@pytest.fixture
def google() -> Iterator[Google]:
    clock = FakeClock()
    app = create_emulator_app(EmulatorConfig(
        clients={CLIENT_ID: (CLIENT_SECRET, [PUBLIC_URL + "/oauth/callback"])},
        testing=True, clock=clock, push_mode="manual"))
    running = run_in_thread(app)
    try:
        yield Google(running.url, app, clock)
    finally:
        running.stop()


def test_authorization_url_carries_exactly_the_add_on_parameters_plus_pkce() -> None:
    settings = settings_for("https://accounts.example")
    url = oauth.build_authorization_url(settings, "opaque-state", "c" * 43)
    parts = urllib.parse.urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "https://accounts.example/o/oauth2/v2/auth"
    query = urllib.parse.parse_qs(parts.query)
    assert {k: v[0] for k, v in query.items()} == {
        "client_id": CLIENT_ID,
        "redirect_uri": PUBLIC_URL + "/oauth/callback",
        "response_type": "code",
        "scope": CAL,
        "access_type": "offline",
        "prompt": "consent",
        "state": "opaque-state",
        "code_challenge": "c" * 43,
        "code_challenge_method": "S256",
    }


def test_redirect_uri_ignores_a_trailing_slash_on_public_url() -> None:
    settings = settings_for("https://accounts.example", public_url=PUBLIC_URL + "/")
    assert oauth.redirect_uri(settings) == PUBLIC_URL + "/oauth/callback"


def test_pkce_pairs_are_fresh_and_rfc7636_shaped() -> None:
    v1, c1 = oauth.new_pkce_pair()
    v2, _ = oauth.new_pkce_pair()
    assert v1 != v2
    assert 43 <= len(v1) <= 128 and set(v1) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
    # base64url(SHA-256) without padding; the emulator's own check of it is exercised by the
    # code-exchange tests below
    assert len(c1) == 43 and "=" not in c1
    assert c1 == oauth.pkce_challenge(v1)


@pytest.mark.parametrize(("scope", "ok"), [
    (CAL, True),
    (f"openid {CAL} email", True),
    (CAL + ".events", False),
    (CAL + ".readonly", False),
    ("", False),
    (None, False),
])
def test_granted_calendar_scope_needs_the_full_calendar_scope(scope: str | None, ok: bool) -> None:
    assert oauth.granted_calendar_scope(scope) is ok


def test_code_exchange_with_pkce_returns_offline_tokens(google: Google) -> None:
    code, verifier, query = google.consent()
    assert query["state"] == ["st-1"]
    tokens = oauth.exchange_code(google.settings, code, verifier)
    assert tokens.access_token and tokens.refresh_token
    assert oauth.granted_calendar_scope(tokens.scope)
    assert 3000 < tokens.expires_in <= 3600
    # secrets stay out of repr (and so out of tracebacks and log lines)
    assert tokens.access_token not in repr(tokens)
    assert tokens.refresh_token not in repr(tokens)


def test_wrong_verifier_is_invalid_grant(google: Google) -> None:
    code, _verifier, _ = google.consent()
    other_verifier, _ = oauth.new_pkce_pair()
    with pytest.raises(OAuthError) as info:
        oauth.exchange_code(google.settings, code, other_verifier)
    assert info.value.error == "invalid_grant"
    assert info.value.status == 400


def test_a_code_is_single_use(google: Google) -> None:
    code, verifier, _ = google.consent()
    oauth.exchange_code(google.settings, code, verifier)
    with pytest.raises(OAuthError) as info:
        oauth.exchange_code(google.settings, code, verifier)
    assert info.value.error == "invalid_grant"


def test_wrong_client_secret_is_invalid_client(google: Google) -> None:
    code, verifier, _ = google.consent()
    bad = replace(google.settings, google=replace(google.settings.google, client_secret="nope"))
    with pytest.raises(OAuthError) as info:
        oauth.exchange_code(bad, code, verifier)
    assert (info.value.error, info.value.status) == ("invalid_client", 401)


def test_consent_without_the_calendar_scope_comes_back_without_a_code(google: Google) -> None:
    # We request exactly the calendar scope; granting anything else grants nothing requested.
    code, _verifier, query = google.consent(grant=CAL + ".events")
    assert code == ""
    assert query["error"] == ["access_denied"]


@pytest.mark.parametrize("fault", ["503", "500", "429"])
def test_token_endpoint_outage_is_transient(google: Google, fault: str) -> None:
    code, verifier, _ = google.consent()
    google.state.inject_faults("oauth2.token", [fault])
    with pytest.raises(Transient) as info:
        oauth.exchange_code(google.settings, code, verifier)
    assert info.value.status == int(fault)


def test_unreachable_token_endpoint_is_transient() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # nothing listens on `port` any more: connection refused
    settings = settings_for(f"http://127.0.0.1:{port}")
    with pytest.raises(Transient) as info:
        oauth.refresh_access_token(settings, "1//whatever")
    assert info.value.reason == "transport"


def test_refresh_then_revoke_then_refresh_is_auth_revoked(google: Google) -> None:
    code, verifier, _ = google.consent()
    tokens = oauth.exchange_code(google.settings, code, verifier)
    refreshed = oauth.refresh_access_token(google.settings, tokens.refresh_token or "")
    assert refreshed.access_token != tokens.access_token
    assert refreshed.refresh_token is None  # Google omits it on refresh
    assert oauth.revoke(google.settings, tokens.refresh_token or "") is True
    assert [e["status"] for e in google.state.requests("oauth2.revoke")] == [200]
    with pytest.raises(AuthRevoked) as info:
        oauth.refresh_access_token(google.settings, tokens.refresh_token or "")
    assert info.value.reason == "invalid_grant"


def test_revoke_is_best_effort(google: Google) -> None:
    assert oauth.revoke(google.settings, "1//not-a-token") is False
    google.state.inject_faults("oauth2.revoke", ["503"])
    code, verifier, _ = google.consent()
    tokens = oauth.exchange_code(google.settings, code, verifier)
    assert oauth.revoke(google.settings, tokens.refresh_token or "") is False


def test_nothing_logged_contains_a_code_verifier_or_token(
        google: Google, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    code, verifier, _ = google.consent()
    google.state.inject_faults("oauth2.token", ["503"])
    with pytest.raises(Transient):
        oauth.exchange_code(google.settings, code, verifier)
    code, verifier, _ = google.consent()
    tokens = oauth.exchange_code(google.settings, code, verifier)
    refreshed = oauth.refresh_access_token(google.settings, tokens.refresh_token or "")
    oauth.revoke(google.settings, tokens.refresh_token or "")
    with pytest.raises(AuthRevoked):
        oauth.refresh_access_token(google.settings, tokens.refresh_token or "")
    oauth.revoke(google.settings, refreshed.access_token)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "token refresh failed" in text  # something was logged, and it is clean
    for secret in (code, verifier, tokens.access_token, tokens.refresh_token,
                   refreshed.access_token, CLIENT_SECRET):
        assert secret and secret not in text
