"""Fixtures for the emulator contract tests: a live emulator on a real port, driven over HTTP.

``emu`` starts an emulator on a FakeClock with one registered client; its helpers run the OAuth
flow over raw HTTP (the consent page and code exchange are not reachable through google-auth
without oauthlib) and hand out google-auth credentials and googleapiclient services.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import google_auth_httplib2
import httplib2
import pytest
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build

from sidecar.clock import FakeClock
from sidecar.emulator import EmulatorConfig, create_emulator_app, run_in_thread

CLIENT_ID = "kc-test-client.apps.googleusercontent.com"
CLIENT_SECRET = "test-secret"
REDIRECT = "http://clinic.test/kc-sidecar/oauth/callback"
CAL = "https://www.googleapis.com/auth/calendar"
CAL_EVENTS = "https://www.googleapis.com/auth/calendar.events"
CAL_READONLY = "https://www.googleapis.com/auth/calendar.readonly"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def http(method: str, url: str, data: dict[str, Any] | None = None,
         headers: dict[str, str] | None = None, json_body: Any = None
         ) -> tuple[int, dict[str, str], bytes]:
    """One raw HTTP request without following redirects: (status, headers, body)."""
    body = None
    hdrs = dict(headers or {})
    if data is not None:
        body = urllib.parse.urlencode(data, doseq=True).encode()
        hdrs.setdefault("Content-Type", "application/x-www-form-urlencoded")
    if json_body is not None:
        body = json.dumps(json_body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=body, method=method, headers=hdrs)
    try:
        with _opener.open(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


class Emu:
    def __init__(self, url: str, app: Any, clock: FakeClock) -> None:
        self.url = url
        self.app = app
        self.state = app.emulator
        self.clock = clock

    def auth_params(self, **over: Any) -> dict[str, str]:
        params = {
            "client_id": CLIENT_ID,
            "redirect_uri": REDIRECT,
            "response_type": "code",
            "scope": CAL_EVENTS,
            "state": "st-" + secrets.token_hex(4),
            "access_type": "offline",
        }
        params.update(over)
        return {k: v for k, v in params.items() if v is not None}

    def approve(self, email: str = "doc@example.com", granted: list[str] | None = None,
                decision: str = "approve", **params: Any) -> tuple[int, dict[str, list[str]]]:
        """POST the consent form non-interactively; returns (status, redirect query)."""
        form: dict[str, Any] = {**self.auth_params(**params), "email": email,
                                "decision": decision}
        if granted is not None:
            form["granted_scope"] = granted
            form["scopes_selected"] = "1"
        status, headers, _ = http("POST", self.url + "/o/oauth2/v2/auth/approve", form)
        return status, self._redirect_query(headers)

    @staticmethod
    def _redirect_query(headers: dict[str, str]) -> dict[str, list[str]]:
        location = headers.get("Location", "")
        return urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)

    def exchange(self, code: str, **over: Any) -> tuple[int, dict[str, Any]]:
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
        form.update(over)
        status, _, body = http("POST", self.url + "/token",
                               {k: v for k, v in form.items() if v is not None})
        return status, json.loads(body)

    def connect(self, email: str = "doc@example.com", scope: str = CAL_EVENTS,
                **params: Any) -> dict[str, Any]:
        """Full consent + code exchange; the token response."""
        status, query = self.approve(email, scope=scope, **params)
        assert status == 302, query
        status, tokens = self.exchange(query["code"][0])
        assert status == 200, tokens
        return tokens

    def credentials(self, tokens: dict[str, Any]) -> Credentials:
        return Credentials(
            token=tokens["access_token"],
            refresh_token=tokens.get("refresh_token"),
            token_uri=self.url + "/token",
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
        )

    def service(self, creds: Credentials) -> Any:
        return build(
            "calendar",
            "v3",
            credentials=creds,
            client_options={"api_endpoint": self.url + "/calendar/v3/"},
            static_discovery=True,
            cache_discovery=False,
        )

    def calendar(self, email: str = "doc@example.com", scope: str = CAL_EVENTS) -> Any:
        return self.service(self.credentials(self.connect(email, scope=scope)))

    def auth_request(self) -> google_auth_httplib2.Request:
        return google_auth_httplib2.Request(httplib2.Http())


@pytest.fixture
def emu_config() -> dict[str, Any]:
    """Overridable keyword arguments for EmulatorConfig."""
    return {}


@pytest.fixture
def emu(emu_config: dict[str, Any]) -> Iterator[Emu]:
    clock = FakeClock()
    options: dict[str, Any] = {"push_mode": "manual", **emu_config}
    config = EmulatorConfig(
        clients={CLIENT_ID: (CLIENT_SECRET, [REDIRECT])}, testing=True, clock=clock, **options
    )
    app = create_emulator_app(config)
    running = run_in_thread(app)
    try:
        yield Emu(running.url, app, clock)
    finally:
        running.stop()
