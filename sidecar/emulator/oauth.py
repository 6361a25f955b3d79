"""Google's OAuth 2.0 web-server flow: clients, consents (grants), codes and tokens.

Not thread-safe by itself: :class:`~sidecar.emulator.state.EmulatorState` calls it under its lock.
Behaviour follows https://developers.google.com/identity/protocols/oauth2/web-server and the
reference notes (refresh token only on first consent or ``prompt=consent``; 100 refresh tokens per
client and user; revoking any token revokes the whole grant).
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlencode

from sidecar.clock import Clock
from sidecar.emulator import discovery
from sidecar.emulator.config import ClientRegistration, EmulatorConfig
from sidecar.emulator.errors import AuthPageError, OAuthError

EMAIL_RE = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")
PKCE_RE = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")
AUTH_PARAMS = (
    "client_id",
    "redirect_uri",
    "response_type",
    "scope",
    "state",
    "access_type",
    "prompt",
    "login_hint",
    "include_granted_scopes",
    "enable_granular_consent",
    "code_challenge",
    "code_challenge_method",
    "hd",
    "nonce",
)


@dataclass(frozen=True)
class AuthRequest:
    """A validated authorization request (what the consent page shows and approves)."""

    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    state: str | None
    access_type: str
    prompt: frozenset[str]
    login_hint: str | None
    include_granted_scopes: bool
    code_challenge: str | None

    def as_params(self) -> dict[str, str]:
        out = {
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "response_type": "code",
            "scope": " ".join(self.scopes),
            "access_type": self.access_type,
        }
        if self.state is not None:
            out["state"] = self.state
        if self.prompt:
            out["prompt"] = " ".join(sorted(self.prompt))
        if self.login_hint:
            out["login_hint"] = self.login_hint
        if self.include_granted_scopes:
            out["include_granted_scopes"] = "true"
        if self.code_challenge:
            out["code_challenge"] = self.code_challenge
            out["code_challenge_method"] = "S256"
        return out


@dataclass
class AuthCode:
    client_id: str
    email: str
    redirect_uri: str
    scopes: frozenset[str]
    code_challenge: str | None
    issue_refresh: bool
    expires_at: datetime
    used: bool = False


@dataclass
class RefreshToken:
    value: str
    client_id: str
    email: str
    scopes: frozenset[str]
    issued_at: datetime
    expires_at: datetime | None
    serial: int


@dataclass
class AccessToken:
    value: str
    client_id: str
    email: str
    scopes: frozenset[str]
    expires_at: datetime
    refresh: str | None


@dataclass
class Grant:
    """A user's consent to a client: granted scopes and the refresh tokens minted for it."""

    client_id: str
    email: str
    scopes: set[str] = field(default_factory=set)
    had_refresh: bool = False
    refresh_tokens: list[str] = field(default_factory=list)


def normalise_email(raw: str) -> str:
    email = raw.strip().lower()
    if not EMAIL_RE.match(email):
        raise AuthPageError("invalid_request", f"Not a valid e-mail address: {raw!r}")
    return email


class OAuthStore:
    """Clients, grants, codes and tokens of the emulated Google account server."""

    def __init__(self, config: EmulatorConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self.clients: dict[str, ClientRegistration] = config.client_registrations()
        self.grants: dict[tuple[str, str], Grant] = {}
        self.codes: dict[str, AuthCode] = {}
        self.refresh_tokens: dict[str, RefreshToken] = {}
        self.access_tokens: dict[str, AccessToken] = {}
        self._serial = 0

    # --- authorization endpoint -------------------------------------------------------------

    def validate_auth_request(self, params: dict[str, str]) -> AuthRequest:
        """Check an authorization request; any problem is an error page (never a redirect)."""
        client_id = params.get("client_id", "")
        if not client_id:
            raise AuthPageError("invalid_request", "Missing required parameter: client_id")
        client = self.clients.get(client_id)
        if client is None:
            raise AuthPageError("invalid_client", "The OAuth client was not found.")
        redirect_uri = params.get("redirect_uri", "")
        if not redirect_uri:
            raise AuthPageError("invalid_request", "Missing required parameter: redirect_uri")
        if not client.allows_redirect(redirect_uri):
            raise AuthPageError(
                "redirect_uri_mismatch",
                "The redirect URI in the request does not match the ones authorized for the "
                "OAuth client.",
            )
        response_type = params.get("response_type", "")
        if not response_type:
            raise AuthPageError("invalid_request", "Missing required parameter: response_type")
        if response_type != "code":
            raise AuthPageError("unsupported_response_type",
                                f"Invalid response_type: {response_type}")
        scope = params.get("scope", "").split()
        if not scope:
            raise AuthPageError("invalid_request", "Missing required parameter: scope")
        unknown = [s for s in scope if s not in discovery.known_scopes()]
        if unknown:
            raise AuthPageError("invalid_scope", f"Some requested scopes were invalid: {unknown}")
        access_type = params.get("access_type", "online")
        if access_type not in ("online", "offline"):
            raise AuthPageError("invalid_request", f"Invalid access_type: {access_type}")
        prompt = frozenset(params.get("prompt", "").split())
        if not prompt <= {"none", "consent", "select_account"} or (
            "none" in prompt and len(prompt) > 1
        ):
            raise AuthPageError("invalid_request", f"Invalid prompt: {params.get('prompt')}")
        challenge = params.get("code_challenge") or None
        method = params.get("code_challenge_method")
        if challenge is None and method:
            raise AuthPageError("invalid_request", "Missing code_challenge.")
        if challenge is not None:
            # Stricter than Google, which also accepts "plain": only S256 is allowed.
            if method != "S256":
                raise AuthPageError("invalid_request",
                                    "Invalid code_challenge_method: only S256 is accepted.")
            if not PKCE_RE.match(challenge):
                raise AuthPageError("invalid_request", "Invalid code_challenge.")
        igs = params.get("include_granted_scopes", "false")
        if igs not in ("true", "false"):
            raise AuthPageError("invalid_request", "Invalid include_granted_scopes.")
        login_hint = params.get("login_hint") or None
        return AuthRequest(
            client_id=client_id,
            redirect_uri=redirect_uri,
            scopes=tuple(dict.fromkeys(scope)),
            state=params.get("state"),
            access_type=access_type,
            prompt=prompt,
            login_hint=login_hint,
            include_granted_scopes=igs == "true",
            code_challenge=challenge,
        )

    def redirect(self, req: AuthRequest, **params: str) -> str:
        if req.state is not None:
            params["state"] = req.state
        sep = "&" if "?" in req.redirect_uri else "?"
        return req.redirect_uri + sep + urlencode(params)

    def deny(self, req: AuthRequest) -> str:
        return self.redirect(req, error="access_denied")

    def silent(self, req: AuthRequest) -> str:
        """``prompt=none``: a code only when the hinted user already granted every scope."""
        if not req.login_hint:
            return self.redirect(req, error="login_required")
        email = normalise_email(req.login_hint)
        grant = self.grants.get((req.client_id, email))
        if grant is None or not set(req.scopes) <= grant.scopes:
            return self.redirect(req, error="consent_required")
        return self.approve(req, email, req.scopes)

    def approve(self, req: AuthRequest, email: str, granted: tuple[str, ...] | list[str]) -> str:
        """The user approves (possibly only some scopes): a redirect URL carrying a new code."""
        email = normalise_email(email)
        granted_set = {s for s in granted if s in req.scopes}
        if not granted_set:
            return self.deny(req)
        key = (req.client_id, email)
        grant = self.grants.get(key)
        if grant is None:
            grant = self.grants[key] = Grant(req.client_id, email)
        scopes = set(granted_set)
        if req.include_granted_scopes:
            scopes |= grant.scopes
        grant.scopes |= granted_set
        issue_refresh = req.access_type == "offline" and (
            not grant.had_refresh or "consent" in req.prompt
        )
        code = "4/emu-" + secrets.token_urlsafe(32)
        self.codes[code] = AuthCode(
            client_id=req.client_id,
            email=email,
            redirect_uri=req.redirect_uri,
            scopes=frozenset(scopes),
            code_challenge=req.code_challenge,
            issue_refresh=issue_refresh,
            expires_at=self.clock.now() + timedelta(seconds=self.config.auth_code_lifetime),
        )
        return self.redirect(req, code=code, scope=" ".join(sorted(scopes)))

    # --- token endpoint ---------------------------------------------------------------------

    def authenticate_client(self, form: dict[str, str], basic: tuple[str, str] | None) -> str:
        form_id, form_secret = form.get("client_id"), form.get("client_secret")
        if basic is not None and (form_id or form_secret):
            raise OAuthError(400, "invalid_request",
                             "Client authentication must use one method only.")
        client_id, secret = basic if basic is not None else (form_id, form_secret)
        if not client_id:
            raise OAuthError(400, "invalid_request", "Could not determine client ID from request.")
        client = self.clients.get(client_id)
        if client is None:
            raise OAuthError(401, "invalid_client", "The OAuth client was not found.")
        if not secret or not secrets.compare_digest(secret, client.secret):
            raise OAuthError(401, "invalid_client", "Unauthorized")
        return client_id

    def token(self, form: dict[str, str], basic: tuple[str, str] | None) -> dict[str, object]:
        """The token endpoint; returns Google's JSON body or raises :class:`OAuthError`."""
        grant_type = form.get("grant_type")
        if not grant_type:
            raise OAuthError(400, "invalid_request", "Missing required parameter: grant_type")
        client_id = self.authenticate_client(form, basic)
        if grant_type == "authorization_code":
            return self._exchange_code(client_id, form)
        if grant_type == "refresh_token":
            return self._refresh(client_id, form)
        raise OAuthError(400, "unsupported_grant_type", f"Invalid grant_type: {grant_type}")

    def _exchange_code(self, client_id: str, form: dict[str, str]) -> dict[str, object]:
        value = form.get("code")
        if not value:
            raise OAuthError(400, "invalid_request", "Missing required parameter: code")
        redirect_uri = form.get("redirect_uri")
        if not redirect_uri:
            raise OAuthError(400, "invalid_request", "Missing required parameter: redirect_uri")
        code = self.codes.get(value)
        if code is None:
            raise OAuthError(400, "invalid_grant", "Malformed auth code.")
        if code.client_id != client_id:
            raise OAuthError(400, "unauthorized_client", "Unauthorized")
        # single use: consumed on first presentation by its client, whatever the outcome
        if code.used or self.clock.now() >= code.expires_at:
            code.used = True
            raise OAuthError(400, "invalid_grant", "Bad Request")
        code.used = True
        if redirect_uri != code.redirect_uri:
            raise OAuthError(400, "redirect_uri_mismatch", "Bad Request")
        verifier = form.get("code_verifier")
        if code.code_challenge is None and verifier:
            raise OAuthError(400, "invalid_request", "code_verifier or verifier is not needed.")
        if code.code_challenge is not None:
            if not verifier:
                raise OAuthError(400, "invalid_grant", "Missing code verifier.")
            digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
            expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
            if not secrets.compare_digest(expected, code.code_challenge):
                raise OAuthError(400, "invalid_grant", "Invalid code verifier.")
        grant = self.grants.get((client_id, code.email))
        if grant is None:  # revoked between consent and exchange
            raise OAuthError(400, "invalid_grant", "Token has been expired or revoked.")
        refresh = self._mint_refresh(grant, code.scopes) if code.issue_refresh else None
        access = self._mint_access(client_id, code.email, code.scopes, refresh)
        body: dict[str, object] = {
            "access_token": access.value,
            "expires_in": self.config.access_token_lifetime,
            "scope": " ".join(sorted(code.scopes)),
            "token_type": "Bearer",
        }
        if refresh is not None:
            body["refresh_token"] = refresh.value
        return body

    def _refresh(self, client_id: str, form: dict[str, str]) -> dict[str, object]:
        value = form.get("refresh_token")
        if not value:
            raise OAuthError(400, "invalid_request", "Missing required parameter: refresh_token")
        token = self.refresh_tokens.get(value)
        if token is None or (token.expires_at is not None and self.clock.now() >= token.expires_at):
            raise OAuthError(400, "invalid_grant", "Token has been expired or revoked.")
        if token.client_id != client_id:
            raise OAuthError(400, "unauthorized_client", "Unauthorized")
        scopes = token.scopes
        if form.get("scope"):
            wanted = frozenset(form["scope"].split())
            if not wanted <= token.scopes:
                raise OAuthError(400, "invalid_scope",
                                 "Some requested scopes were not granted by the user.")
            scopes = wanted
        access = self._mint_access(client_id, token.email, scopes, token.value)
        return {
            "access_token": access.value,
            "expires_in": self.config.access_token_lifetime,
            "scope": " ".join(sorted(scopes)),
            "token_type": "Bearer",
        }

    def _mint_refresh(self, grant: Grant, scopes: frozenset[str]) -> RefreshToken:
        now = self.clock.now()
        live = [t for t in grant.refresh_tokens if t in self.refresh_tokens]
        while len(live) >= self.config.refresh_tokens_per_client_user:
            self._drop_refresh(live.pop(0))  # the oldest is silently invalidated
        self._serial += 1
        lifetime = self.config.refresh_token_lifetime
        token = RefreshToken(
            value="1//emu-" + secrets.token_urlsafe(40),
            client_id=grant.client_id,
            email=grant.email,
            scopes=scopes,
            issued_at=now,
            expires_at=now + timedelta(seconds=lifetime) if lifetime is not None else None,
            serial=self._serial,
        )
        self.refresh_tokens[token.value] = token
        live.append(token.value)
        grant.refresh_tokens = live
        grant.had_refresh = True
        return token

    def _drop_refresh(self, value: str) -> None:
        self.refresh_tokens.pop(value, None)
        for key in [k for k, a in self.access_tokens.items() if a.refresh == value]:
            del self.access_tokens[key]

    def _mint_access(self, client_id: str, email: str, scopes: frozenset[str],
                     refresh: RefreshToken | str | None) -> AccessToken:
        refresh_value = refresh.value if isinstance(refresh, RefreshToken) else refresh
        token = AccessToken(
            value="ya29.emu-" + secrets.token_urlsafe(40),
            client_id=client_id,
            email=email,
            scopes=scopes,
            expires_at=self.clock.now() + timedelta(seconds=self.config.access_token_lifetime),
            refresh=refresh_value,
        )
        self.access_tokens[token.value] = token
        return token

    # --- revocation and use -----------------------------------------------------------------

    def revoke(self, value: str | None) -> None:
        """Revoke the whole grant a (live) access or refresh token belongs to."""
        if not value:
            raise OAuthError(400, "invalid_request", "Missing required parameter: token")
        refresh = self.refresh_tokens.get(value)
        if refresh is not None:
            self.revoke_grant(refresh.client_id, refresh.email)
            return
        access = self.access_tokens.get(value)
        if access is not None and self.clock.now() < access.expires_at:
            self.revoke_grant(access.client_id, access.email)
            return
        raise OAuthError(400, "invalid_token", "Token expired or revoked")

    def revoke_grant(self, client_id: str, email: str) -> bool:
        grant = self.grants.pop((client_id, email.lower()), None)
        for key in [k for k, t in self.refresh_tokens.items()
                    if (t.client_id, t.email) == (client_id, email.lower())]:
            del self.refresh_tokens[key]
        for key in [k for k, t in self.access_tokens.items()
                    if (t.client_id, t.email) == (client_id, email.lower())]:
            del self.access_tokens[key]
        return grant is not None

    def access(self, value: str | None) -> AccessToken | None:
        """The live access token, or None if it is unknown, expired or revoked."""
        if not value:
            return None
        token = self.access_tokens.get(value)
        if token is None or self.clock.now() >= token.expires_at:
            return None
        return token

    def dump(self) -> dict[str, object]:
        """Grants and token counts, never token values."""
        return {
            "grants": [
                {
                    "client_id": g.client_id,
                    "email": g.email,
                    "scopes": sorted(g.scopes),
                    "refresh_tokens": len([t for t in g.refresh_tokens
                                           if t in self.refresh_tokens]),
                    "access_tokens": len([a for a in self.access_tokens.values()
                                          if (a.client_id, a.email) == (g.client_id, g.email)]),
                }
                for g in self.grants.values()
            ]
        }
