"""Signed, expiring, single-use tokens: OAuth ``state``, CSRF tokens and doctor invite links.

Two halves with one job — "this token was issued by us, for this purpose, is still valid and is
used at most once":

* :class:`Signer` makes and checks compact HMAC-SHA256 tokens ``<payload>.<mac>`` (both
  base64url). The MAC key is derived from ``sidecar.secret_key`` *and the purpose*, so a CSRF
  token can never pass as an OAuth state or an invite. Every token carries an absolute expiry
  (``exp``, Unix seconds) checked against the injected clock.
* :class:`NonceStore` keeps the server-side half in the sidecar table ``{prefix}kcsc_oauth_states``:
  one row per issued nonce with the doctor and WordPress user it is bound to, the PKCE verifier
  (never sent to the browser) and the return URL. :meth:`NonceStore.consume` is one conditional
  ``UPDATE ... WHERE used_at IS NULL AND expires_at > now``, so two concurrent uses of the same
  token cannot both succeed, across threads, processes and replicas.

Tokens are opaque to the browser but not encrypted: they never hold anything secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from wp_schema.names import TableNames

#: Longest token we even try to parse; anything longer is rejected before decoding.
MAX_TOKEN_LENGTH = 1024
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{43}")
_PURPOSE_RE = re.compile(r"[a-z][a-z0-9_]{0,15}")

PURPOSE_OAUTH = "oauth"
PURPOSE_INVITE = "invite"
PURPOSE_CSRF = "csrf"


class TokenError(ValueError):
    """A token was rejected. ``reason`` is one of ``malformed``, ``signature``, ``expired``,
    ``used`` (replayed or unknown nonce); ``str(err)`` is a message fit for a user."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_nonce() -> str:
    """A 256-bit random nonce, URL safe (43 characters)."""
    return secrets.token_urlsafe(32)


def fingerprint(value: str) -> str:
    """A short one-way digest, to bind a token to a cookie without putting the cookie in it."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:32]


class Signer:
    """Signs and verifies purpose-scoped expiring tokens with ``secret_key``."""

    def __init__(self, secret_key: str) -> None:
        if not secret_key or len(secret_key) < 16:
            raise ValueError("sidecar.secret_key must be at least 16 characters")
        self._secret = secret_key.encode("utf-8")

    def _key(self, purpose: str) -> bytes:
        if not _PURPOSE_RE.fullmatch(purpose):
            raise ValueError(f"invalid token purpose {purpose!r}")
        return hmac.new(self._secret, b"kc-sidecar/" + purpose.encode(), hashlib.sha256).digest()

    def sign(self, purpose: str, claims: Mapping[str, Any], *, expires_at: float) -> str:
        """A token for ``purpose`` carrying ``claims`` (JSON-able) until ``expires_at``."""
        body = dict(claims)
        body["exp"] = int(expires_at)
        payload = _b64e(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
        mac = hmac.new(self._key(purpose), payload.encode("ascii"), hashlib.sha256).digest()
        token = f"{payload}.{_b64e(mac)}"
        if len(token) > MAX_TOKEN_LENGTH:
            raise ValueError("token claims too large")
        return token

    def verify(self, purpose: str, token: str, *, now: float) -> dict[str, Any]:
        """The claims of a valid token; :class:`TokenError` otherwise."""
        if not isinstance(token, str) or not token:
            raise TokenError("malformed", "The link or form is missing its security token.")
        if len(token) > MAX_TOKEN_LENGTH or not _TOKEN_RE.fullmatch(token):
            raise TokenError("malformed", "The security token is malformed.")
        payload, _, mac_text = token.partition(".")
        expected = hmac.new(self._key(purpose), payload.encode("ascii"), hashlib.sha256).digest()
        # Compare the canonical text: base64's spare low bits would otherwise let several
        # spellings of one MAC pass (a malleable token).
        if not hmac.compare_digest(mac_text.encode("ascii"), _b64e(expected).encode("ascii")):
            raise TokenError("signature", "The security token is not valid (it was altered, "
                                          "or was issued for something else).")
        try:
            claims = json.loads(_b64d(payload))
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise TokenError("malformed", "The security token is malformed.") from None
        if not isinstance(claims, dict) or not isinstance(claims.get("exp"), int):
            raise TokenError("malformed", "The security token is malformed.")
        if now >= claims["exp"]:
            raise TokenError("expired", "The security token has expired; please start again.")
        return claims


@dataclass(frozen=True)
class NonceRecord:
    """The server-side half of one OAuth state or invite."""

    nonce: str
    purpose: str
    doctor_id: int
    wp_user_id: int
    expires_at: int
    used_at: int | None
    code_verifier: str | None
    return_to: str | None
    invite_nonce: str | None


def oauth_states_table(metadata: sa.MetaData, names: TableNames) -> sa.Table:
    """``{prefix}kcsc_oauth_states``: issued nonces (OAuth states and invites)."""
    return sa.Table(
        names.sidecar("oauth_states"),
        metadata,
        sa.Column("nonce", sa.String(64), primary_key=True),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("doctor_id", sa.BigInteger, nullable=False),
        sa.Column("wp_user_id", sa.BigInteger, nullable=False, default=0),
        sa.Column("code_verifier", sa.String(128), nullable=True),
        sa.Column("return_to", sa.String(2048), nullable=True),
        sa.Column("invite_nonce", sa.String(64), nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False, index=True),
        sa.Column("used_at", sa.BigInteger, nullable=True),
        mysql_charset="utf8mb4",
    )


class NonceStore:
    """Issue, read and atomically consume nonces in ``{prefix}kcsc_oauth_states``."""

    def __init__(self, names: TableNames) -> None:
        self.table = oauth_states_table(sa.MetaData(), names)

    def ensure_table(self, engine: sa.Engine) -> None:
        """Idempotent ``CREATE TABLE IF NOT EXISTS``."""
        self.table.create(engine, checkfirst=True)

    def issue(self, conn: sa.Connection, *, purpose: str, doctor_id: int, now: float,
              expires_at: float, wp_user_id: int = 0, code_verifier: str | None = None,
              return_to: str | None = None, invite_nonce: str | None = None) -> str:
        nonce = new_nonce()
        conn.execute(self.table.insert().values(
            nonce=nonce, purpose=purpose, doctor_id=int(doctor_id), wp_user_id=int(wp_user_id),
            code_verifier=code_verifier, return_to=return_to, invite_nonce=invite_nonce,
            created_at=int(now), expires_at=int(expires_at), used_at=None,
        ))
        return nonce

    def get(self, conn: sa.Connection, nonce: str, purpose: str) -> NonceRecord | None:
        row = conn.execute(sa.select(self.table).where(
            self.table.c.nonce == nonce, self.table.c.purpose == purpose)).mappings().first()
        return None if row is None else NonceRecord(
            nonce=row["nonce"], purpose=row["purpose"], doctor_id=int(row["doctor_id"]),
            wp_user_id=int(row["wp_user_id"]), expires_at=int(row["expires_at"]),
            used_at=None if row["used_at"] is None else int(row["used_at"]),
            code_verifier=row["code_verifier"], return_to=row["return_to"],
            invite_nonce=row["invite_nonce"])

    def check_unused(self, conn: sa.Connection, nonce: str, purpose: str,
                     now: float) -> NonceRecord:
        """The record when it exists, is unused and unexpired; :class:`TokenError` otherwise."""
        record = self.get(conn, nonce, purpose)
        if record is None:
            raise TokenError("used", "This link is not known here (it may have been revoked).")
        if record.used_at is not None:
            raise TokenError("used", "This link has already been used; please start again.")
        if now >= record.expires_at:
            raise TokenError("expired", "This link has expired; please start again.")
        return record

    def consume(self, conn: sa.Connection, nonce: str, purpose: str, now: float) -> NonceRecord:
        """Mark the nonce used, exactly once; :class:`TokenError` if used, expired or unknown."""
        record = self.check_unused(conn, nonce, purpose, now)
        t = self.table
        result = conn.execute(t.update().where(
            t.c.nonce == nonce, t.c.purpose == purpose, t.c.used_at.is_(None),
            t.c.expires_at > int(now)).values(used_at=int(now)))
        if result.rowcount != 1:
            raise TokenError("used", "This link has already been used; please start again.")
        return record

    def purge(self, conn: sa.Connection, now: float, keep_seconds: int = 86400) -> int:
        """Delete nonces that expired more than ``keep_seconds`` ago; returns the count."""
        t = self.table
        return conn.execute(t.delete().where(t.c.expires_at < int(now) - keep_seconds)).rowcount
