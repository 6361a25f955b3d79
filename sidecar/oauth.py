"""Google's OAuth 2.0 web-server flow: authorization URL, PKCE, code exchange, refresh, revoke.

Owns the wire to Google's *OAuth* endpoints (``auth_uri``, ``token_uri``, ``revoke_uri`` from
``[google]``); the Calendar API is ``sidecar.google_api``. Token-endpoint failures are mapped to
the taxonomy of ``sidecar.google_api``: 5xx, 408, 429, ``temporarily_unavailable`` and
connection failures are ``Transient``; ``invalid_grant`` on a *refresh* is ``AuthRevoked``;
every other error is ``OAuthError(error, description)`` with Google's error code kept.

The request mirrors what the KiviCare Google Meet add-on sends (scope ``calendar`` only,
``access_type=offline``, ``prompt=consent`` so Google returns a refresh token every time) plus
PKCE S256; ``include_granted_scopes`` is deliberately not sent, so the grant holds exactly the
calendar scope. Nothing here logs a code, verifier or token.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import google_auth_httplib2
import httplib2

from sidecar.google_api import (
    CALENDAR_SCOPE,
    TRANSPORT_ERRORS,
    AuthRevoked,
    GoogleError,
    OAuthError,
    Transient,
    parse_retry_after,
    translate_transport_error,
)

if TYPE_CHECKING:
    from sidecar.config import Settings

log = logging.getLogger(__name__)

CALLBACK_PATH = "/oauth/callback"
_TRANSIENT_CODES = {"temporarily_unavailable", "server_error", "internal_failure"}


@dataclass(frozen=True)
class TokenResponse:
    """A successful token-endpoint answer; secrets are kept out of ``repr``."""

    access_token: str = field(repr=False)
    expires_in: int
    scope: str
    refresh_token: str | None = field(default=None, repr=False)
    token_type: str = "Bearer"  # noqa: S105 - a token type name, not a secret

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TokenResponse:
        access = data.get("access_token")
        if not isinstance(access, str) or not access:
            raise Transient("token endpoint answered without an access_token",
                            reason="malformed_response")
        try:
            expires_in = int(data.get("expires_in") or 3599)
        except (TypeError, ValueError):
            expires_in = 3599
        refresh = data.get("refresh_token")
        return cls(
            access_token=access,
            expires_in=expires_in,
            scope=str(data.get("scope") or ""),
            refresh_token=refresh if isinstance(refresh, str) and refresh else None,
            token_type=str(data.get("token_type") or "Bearer"),
        )


def redirect_uri(settings: Settings) -> str:
    """The callback Google redirects to: ``public_url + /oauth/callback``."""
    return settings.sidecar.public_url.rstrip("/") + CALLBACK_PATH


def new_pkce_pair() -> tuple[str, str]:
    """``(code_verifier, code_challenge)`` for PKCE S256 (RFC 7636): keep the verifier with the
    state until the callback; send the challenge in the authorization URL."""
    verifier = secrets.token_urlsafe(64)  # 86 characters of [A-Za-z0-9_-]
    return verifier, pkce_challenge(verifier)


def pkce_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def build_authorization_url(settings: Settings, state: str, code_challenge: str,
                            login_hint: str | None = None) -> str:
    """The URL a doctor's browser is sent to for consent."""
    params = {
        "client_id": settings.google.client_id,
        "redirect_uri": redirect_uri(settings),
        "response_type": "code",
        "scope": CALENDAR_SCOPE,
        "access_type": "offline",
        "prompt": "consent",
        "state": state,
        "code_challenge": code_challenge,
        "code_challenge_method": "S256",
    }
    if login_hint:
        params["login_hint"] = login_hint
    sep = "&" if "?" in settings.google.auth_uri else "?"
    return settings.google.auth_uri + sep + urlencode(params)


def granted_calendar_scope(scope: str | None) -> bool:
    """True when the space-delimited granted ``scope`` holds the full calendar scope."""
    return CALENDAR_SCOPE in (scope or "").split()


def exchange_code(settings: Settings, code: str, code_verifier: str) -> TokenResponse:
    """Trade an authorization code for tokens. A bad, reused or expired code or a wrong
    verifier is ``OAuthError("invalid_grant", ...)``; Google being down is ``Transient``."""
    data = _post_form(settings, settings.google.token_uri, {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": code_verifier,
        "redirect_uri": redirect_uri(settings),
        "client_id": settings.google.client_id,
        "client_secret": settings.google.client_secret,
    }, what="code exchange")
    return TokenResponse.from_json(data)


def refresh_access_token(settings: Settings, refresh_token: str) -> TokenResponse:
    """A new access token from a refresh token. ``invalid_grant`` (revoked, expired, unused for
    months, superseded) is ``AuthRevoked``: the doctor has to reconnect."""
    try:
        data = _post_form(settings, settings.google.token_uri, {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": settings.google.client_id,
            "client_secret": settings.google.client_secret,
        }, what="token refresh")
    except OAuthError as err:
        if err.error == "invalid_grant":
            raise AuthRevoked(f"refresh token rejected: {err.description or err.error}",
                              status=err.status, reason="invalid_grant") from err
        raise
    return TokenResponse.from_json(data)


def revoke(settings: Settings, token: str) -> bool:
    """Best-effort revocation of ``token`` (a refresh token revokes the whole grant).

    Returns True when Google confirmed; False (logged, never raised) when it could not, since a
    failed revoke must never block removing the connection locally.
    """
    try:
        _post_form(settings, settings.google.revoke_uri, {"token": token}, what="revoke")
    except GoogleError as err:
        log.warning("revoking the Google grant failed (%s: %s); local removal goes ahead",
                    type(err).__name__, err.reason or err.status)
        return False
    return True


def _post_form(settings: Settings, url: str, fields: dict[str, str], *, what: str
               ) -> dict[str, Any]:
    """POST a form with google-auth's httplib2 transport and map the answer to our taxonomy."""
    request = google_auth_httplib2.Request(httplib2.Http(timeout=settings.google.request_timeout))
    try:
        response = request(url, method="POST", body=urlencode(fields),
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    except TRANSPORT_ERRORS as err:
        log.warning("%s: connection to the token endpoint failed (%s)", what,
                    type(err).__name__)
        raise translate_transport_error(err) from err
    status = int(response.status)
    raw = response.data or b""
    try:
        data = json.loads(raw.decode("utf-8")) if raw else {}
    except (ValueError, UnicodeDecodeError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    if 200 <= status < 300:
        return data
    error = str(data.get("error") or "")
    description = str(data.get("error_description") or "")
    log.warning("%s failed: HTTP %s %s", what, status, error or "(no error code)")
    if status >= 500 or status in (408, 429) or error in _TRANSIENT_CODES:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        raise Transient(f"{what}: HTTP {status} {error}".strip(), status=status,
                        reason=error or "server_error", retry_after=retry_after)
    raise OAuthError(error or f"http_{status}", description, status=status)
