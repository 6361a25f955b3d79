"""Mint a WordPress ``logged_in`` cookie in Python: the inverse of ``sidecar.wp_auth``'s check.

What ``wp_set_auth_cookie()`` does for a login: a fresh 43-character session token is stored in
the user's ``session_tokens`` meta under ``sha256(token)`` with its expiration (expired sessions
are pruned, as ``WP_Session_Tokens`` does), and the cookie value is
``login|expiration|token|hmac`` with ``key = HMAC-MD5(login|pass_frag|expiration|token,
LOGGED_IN_KEY . LOGGED_IN_SALT)`` and ``hmac = HMAC-SHA256(login|expiration|token, key)``.
Only the demo uses it (to log its seeded admin in); a real site's logins happen in PHP.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from typing import Any

import sqlalchemy as sa

from sidecar.wp_auth import LoggedInKeys
from wp_schema.meta import Options, UserMeta
from wp_schema.reflect import SiteSchema

TOKEN_ALPHABET = string.ascii_letters + string.digits  # wp_generate_password(43, false, false)
DEFAULT_TTL = 2 * 86400  # WordPress's default without "remember me"


class CookieError(Exception):
    """The cookie cannot be minted (unknown user, no logged_in key and salt)."""


def mint_logged_in_cookie(conn: sa.Connection, schema: SiteSchema, user_id: int,
                          keys: LoggedInKeys, *, now: float, ttl_seconds: int = DEFAULT_TTL,
                          user_agent: str = "kc-sidecar demo") -> str:
    """A new session for ``user_id`` and its ``logged_in`` cookie value (not URL-encoded).

    Writes ``session_tokens`` in ``conn``'s transaction; the caller commits.
    """
    users = schema.users
    row = conn.execute(sa.select(users.c.user_login, users.c.user_pass)
                       .where(users.c["ID"] == user_id)).first()
    if row is None:
        raise CookieError(f"there is no WordPress user {user_id}")
    login, user_pass = str(row[0]), str(row[1] or "")
    options = Options(schema)
    secret = keys.resolve({name: options.get(conn, name) or ""
                           for name in ("logged_in_key", "logged_in_salt")})
    if secret is None:
        raise CookieError("no logged_in key and salt are configured or stored")

    token = "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(43))
    expiration = int(now) + ttl_seconds
    meta = UserMeta(schema)
    sessions: Any = meta.get(conn, user_id, "session_tokens")
    live = {k: v for k, v in (sessions.items() if isinstance(sessions, dict) else ())
            if isinstance(v, dict) and int(v.get("expiration", 0) or 0) >= now}
    live[hashlib.sha256(token.encode()).hexdigest()] = {
        "expiration": expiration, "ip": "127.0.0.1", "ua": user_agent, "login": int(now)}
    meta.set(conn, user_id, "session_tokens", live)

    pass_frag = user_pass.encode("utf-8")[8:12]
    fields = [login.encode("utf-8"), str(expiration).encode(), token.encode()]
    key = hmac.new(secret, b"|".join([fields[0], pass_frag, fields[1], fields[2]]),
                   hashlib.md5).hexdigest()
    mac = hmac.new(key.encode("ascii"), b"|".join(fields), hashlib.sha256).hexdigest()
    return f"{login}|{expiration}|{token}|{mac}"
