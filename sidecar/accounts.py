"""Doctors' Google connections: tokens in the Meet add-on's storage, refresh, connect/disconnect.

Storage is exactly the KiviCare Google Meet add-on's (GM4), so PHP keeps working:

* ``google_meet_access_token`` user meta: a plain JSON string (not PHP-serialized). Two shapes
  are read: GM1's (``expires_in`` relative to ``created``) and GM4's (``expires_in`` an absolute
  epoch already 300 s early). Only GM4's is written:
  ``{"access_token", "refresh_token", "expires_in": now + expires_in - 300, "scope"}``;
* ``kiviCare_google_meet_connect`` ``on``/``off``, ``telemed_type=googlemeet``,
  ``kiviCare_doctor_meet_id=primary``, ``kiviCare_zoom_telemed_connect=off``, set on connect and
  re-set on every refresh, as GM4 does;
* "connected" is computed, never stored: token present AND flag ``on``.

``DoctorAuth`` is the only code that reads, refreshes and writes a doctor's tokens (the
``CredentialSource`` of ``sidecar.google_api``). At most one refresh per doctor runs at a time
across threads and processes (``sidecar.db.named_lock``); after taking the lock it re-reads the
token, since PHP or another process may have refreshed meanwhile. ``invalid_grant`` marks the
doctor not connected (flag off, token removed, reason kept in the sidecar's doctor row); queued
work is left alone. Tokens never appear in logs, reprs or exception messages.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from google.oauth2.credentials import Credentials

from sidecar import oauth
from sidecar.db import LockTimeout, named_lock
from sidecar.google_api import AuthRevoked, Transient
from sidecar.oauth import TokenResponse, granted_calendar_scope
from wp_schema.meta import UserMeta

if TYPE_CHECKING:
    from sidecar.clock import Clock
    from sidecar.config import Settings
    from sidecar.state import StateStore
    from wp_schema.reflect import SiteSchema

log = logging.getLogger(__name__)

META_TOKEN = "google_meet_access_token"  # noqa: S105 - a meta key name
META_CONNECT = "kiviCare_google_meet_connect"
META_TELEMED_TYPE = "telemed_type"
META_MEET_ID = "kiviCare_doctor_meet_id"
META_ZOOM_CONNECT = "kiviCare_zoom_telemed_connect"

PROVIDER_ID = "googlemeet"
#: GM4 stores the expiry this many seconds early
EXPIRY_MARGIN = 300
#: refresh this many seconds before the stored expiry (covers GM1 tokens, which have no margin)
REFRESH_SKEW = 60

CONNECTED = "connected"
NOT_CONNECTED = "not_connected"

#: ``kcsc_doctors.status`` values written here (the add-on's status stays computed from meta)
STATUS_CONNECTED = "connected"
STATUS_NEEDS_RECONNECT = "needs_reconnect"
STATUS_DISCONNECTED = "disconnected"


class NeedsReconnect(Exception):
    """Google's answer cannot be stored as a working connection; the doctor must connect again
    (granting calendar access, with offline access). Nothing was stored."""


# --------------------------------------------------------------------------------------------
# Token shapes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredToken:
    """A doctor's token as stored by the add-on; ``expires_at`` is an absolute Unix time."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_at: int
    scope: str = ""

    def needs_refresh(self, now: float, skew: int = REFRESH_SKEW) -> bool:
        return now >= self.expires_at - skew

    def to_json(self) -> str:
        """GM4's shape, key order as GM4 writes it."""
        return json.dumps(
            {"access_token": self.access_token, "refresh_token": self.refresh_token or "",
             "expires_in": int(self.expires_at), "scope": self.scope},
            separators=(",", ":"),
        )


def parse_token(value: Any) -> StoredToken | None:
    """Read either stored shape (JSON text, or an already-decoded mapping); None if unusable.

    GM1 (Google PHP client array): ``created`` present → expiry = created + expires_in.
    GM4: no ``created`` → ``expires_in`` is the absolute expiry.
    """
    data: Any = value
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            data = json.loads(text)
        except ValueError:
            log.warning("stored Google token is not JSON; treating the doctor as not connected")
            return None
    if not isinstance(data, Mapping):
        return None
    access = data.get("access_token")
    if not isinstance(access, str) or not access:
        return None
    refresh = data.get("refresh_token")
    refresh = refresh if isinstance(refresh, str) and refresh else None
    try:
        expires_in = int(float(data.get("expires_in") or 0))
    except (TypeError, ValueError):
        expires_in = 0
    created = data.get("created")
    if created not in (None, ""):
        try:
            expires_at = int(float(created)) + expires_in
        except (TypeError, ValueError):
            expires_at = 0
    else:
        expires_at = expires_in
    scope = data.get("scope")
    return StoredToken(access, refresh, expires_at, scope if isinstance(scope, str) else "")


def token_from_response(resp: TokenResponse, now: float,
                        previous: StoredToken | None = None) -> StoredToken:
    """GM4's rule: absolute expiry ``now + expires_in - 300``; keep the old refresh token (and
    scope) when Google omits them."""
    refresh = resp.refresh_token or (previous.refresh_token if previous else None)
    scope = resp.scope or (previous.scope if previous else "")
    return StoredToken(resp.access_token, refresh,
                       int(now) + int(resp.expires_in) - EXPIRY_MARGIN, scope)


def _epoch(now: datetime | float) -> float:
    return now.timestamp() if isinstance(now, datetime) else float(now)


def _as_datetime(now: datetime | float) -> datetime:
    return now if isinstance(now, datetime) else datetime.fromtimestamp(now, UTC)


# --------------------------------------------------------------------------------------------
# Storage
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DisconnectResult:
    had_token: bool
    revoked: bool
    channels_stopped: bool


@contextlib.contextmanager
def _atomic(conn: sa.Connection) -> Iterator[None]:
    """Our writes in one transaction: the caller's if one is open, else our own (committed)."""
    if conn.in_transaction():
        yield
    else:
        with conn.begin():
            yield


class AccountStore:
    """Reads and writes the add-on's user meta for doctors' Google connections, and the
    doctor's row in ``kcsc_doctors`` (status, reason, e-mail, last refresh) when a
    ``StateStore`` is given — in the same transaction."""

    def __init__(self, schema: SiteSchema, state: StateStore | None = None) -> None:
        self.schema = schema
        self.meta = UserMeta(schema)
        self.state = state

    def _record(self, conn: sa.Connection, doctor_id: int, **fields: Any) -> None:
        if self.state is not None:
            self.state.upsert_doctor(doctor_id, conn=conn, **fields)

    # -- reading -------------------------------------------------------------------------------

    def read_token(self, conn: sa.Connection, doctor_id: int) -> StoredToken | None:
        return parse_token(self.meta.get(conn, doctor_id, META_TOKEN))

    def connect_flag(self, conn: sa.Connection, doctor_id: int) -> str:
        value = self.meta.get(conn, doctor_id, META_CONNECT)
        return value if isinstance(value, str) else ""

    def connection_status(self, conn: sa.Connection, doctor_id: int) -> str:
        """``connected`` | ``not_connected`` by the add-on's rule: token AND flag ``on``."""
        return self.connection_statuses(conn, [doctor_id])[doctor_id]

    def connection_statuses(self, conn: sa.Connection, doctor_ids: Iterable[int]
                            ) -> dict[int, str]:
        """The status of many doctors with one query per 500 doctors (admin page)."""
        ids = sorted({int(d) for d in doctor_ids})
        found = self.meta.get_many(conn, ids, [META_TOKEN, META_CONNECT])
        out = dict.fromkeys(ids, NOT_CONNECTED)
        for doctor_id in ids:
            values = found.get(doctor_id, {})
            if parse_token(values.get(META_TOKEN)) is not None and \
                    values.get(META_CONNECT) == "on":
                out[doctor_id] = CONNECTED
        return out

    def read_connection(self, conn: sa.Connection, doctor_id: int
                        ) -> tuple[StoredToken | None, str]:
        """(token, connect flag) with one query."""
        values = self.meta.get_many(conn, [doctor_id], [META_TOKEN, META_CONNECT]).get(
            int(doctor_id), {})
        flag = values.get(META_CONNECT)
        return parse_token(values.get(META_TOKEN)), flag if isinstance(flag, str) else ""

    # -- writing -------------------------------------------------------------------------------

    def _write_token_and_flags(self, conn: sa.Connection, doctor_id: int,
                               token: StoredToken) -> None:
        self.meta.set(conn, doctor_id, META_TOKEN, token.to_json())
        self.meta.set(conn, doctor_id, META_TELEMED_TYPE, PROVIDER_ID)
        self.meta.set(conn, doctor_id, META_CONNECT, "on")
        self.meta.set(conn, doctor_id, META_ZOOM_CONNECT, "off")
        self.meta.set(conn, doctor_id, META_MEET_ID, "primary")

    def store_connection(self, conn: sa.Connection, doctor_id: int, token_response: TokenResponse,
                         now: datetime | float, google_email: str | None = None) -> StoredToken:
        """Save a fresh grant (OAuth callback) as GM4 does, all in one transaction.

        Keeps the stored refresh token when Google omits it. Without any refresh token, or when
        the calendar scope was not granted, raises ``NeedsReconnect`` and stores nothing. With a
        ``StateStore``, the doctor's items parked as ``waiting_reconnect`` become due again.
        """
        if not granted_calendar_scope(token_response.scope):
            raise NeedsReconnect(
                "Google did not grant access to the calendar; please reconnect and allow "
                "calendar access")
        with _atomic(conn):
            previous = self.read_token(conn, doctor_id)
            token = token_from_response(token_response, _epoch(now), previous)
            if not token.refresh_token:
                raise NeedsReconnect(
                    "Google returned no refresh token; please reconnect (remove the app's access "
                    "in your Google account first if this repeats)")
            self._write_token_and_flags(conn, doctor_id, token)
            fields: dict[str, Any] = {"status": STATUS_CONNECTED, "status_reason": None,
                                      "last_error": None}
            if google_email:
                fields["google_email"] = google_email
            self._record(conn, doctor_id, **fields)
            if self.state is not None:  # work parked while disconnected resumes now
                self.state.requeue_doctor(doctor_id, now=_as_datetime(now), conn=conn)
        log.info("doctor %s connected Google Calendar", doctor_id)
        return token

    def save_refreshed(self, conn: sa.Connection, doctor_id: int, token: StoredToken,
                       now: datetime | float) -> None:
        """Persist a refreshed token in GM4's shape and re-set the four meta values."""
        with _atomic(conn):
            self._write_token_and_flags(conn, doctor_id, token)
            self._record(conn, doctor_id, last_refresh_at=_as_datetime(now))

    def mark_not_connected(self, conn: sa.Connection, doctor_id: int, reason: str) -> None:
        """Google no longer accepts the grant: flag off, token removed, reason recorded.
        Queued work for the doctor is kept so a reconnect resumes it."""
        with _atomic(conn):
            self.meta.delete(conn, doctor_id, META_TOKEN)
            self.meta.set(conn, doctor_id, META_CONNECT, "off")
            self._record(conn, doctor_id, status=STATUS_NEEDS_RECONNECT,
                         status_reason=reason[:255])
        log.warning("doctor %s must reconnect Google Calendar: %s", doctor_id, reason)

    def disconnect(
        self,
        conn: sa.Connection,
        doctor_id: int,
        revoke: Callable[[str], bool] | None = None,
        stop_channels: Callable[[int], None] | None = None,
        reason: str = "disconnected",
    ) -> DisconnectResult:
        """Remove the connection: stop push channels (while the token still works), delete the
        token meta and set the flag off, then revoke the grant at Google. Channel stopping and
        revocation are best effort: their failure never blocks the local removal.

        When ``conn`` has no open transaction the removal is committed before revoking.
        """
        channels_stopped = stop_channels is None
        if stop_channels is not None:
            try:
                stop_channels(doctor_id)
                channels_stopped = True
            except Exception as err:  # best effort by contract; reported in the result
                log.warning("doctor %s: stopping push channels failed (%s)", doctor_id,
                            type(err).__name__)
        with _atomic(conn):
            token = self.read_token(conn, doctor_id)
            self.meta.delete(conn, doctor_id, META_TOKEN)
            self.meta.set(conn, doctor_id, META_CONNECT, "off")
            self._record(conn, doctor_id, status=STATUS_DISCONNECTED, status_reason=reason[:255])
        revoked = False
        if token is not None and revoke is not None:
            try:
                revoked = bool(revoke(token.refresh_token or token.access_token))
            except Exception as err:  # best effort by contract; reported in the result
                log.warning("doctor %s: revoking at Google failed (%s)", doctor_id,
                            type(err).__name__)
        log.info("doctor %s disconnected Google Calendar (revoked=%s)", doctor_id, revoked)
        return DisconnectResult(had_token=token is not None, revoked=revoked,
                                channels_stopped=channels_stopped)


# --------------------------------------------------------------------------------------------
# Credentials for the Google client, with the one refresh path
# --------------------------------------------------------------------------------------------

Refresher = Callable[["Settings", str], TokenResponse]


class CredentialsProvider:
    """Hands out a ``DoctorAuth`` per doctor; one per process."""

    def __init__(
        self,
        engine: sa.Engine,
        store: AccountStore,
        settings: Settings,
        *,
        clock: Clock,
        refresher: Refresher = oauth.refresh_access_token,
        lock_timeout: float = 15.0,
    ) -> None:
        self.engine = engine
        self.store = store
        self.settings = settings
        self.clock = clock
        self.refresher = refresher
        self.lock_timeout = lock_timeout
        self._locks: dict[int, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def for_doctor(self, doctor_id: int) -> DoctorAuth:
        return DoctorAuth(self, int(doctor_id))

    def _thread_lock(self, doctor_id: int) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(doctor_id, threading.Lock())


class DoctorAuth:
    """Valid ``google.oauth2.credentials.Credentials`` for one doctor (a ``CredentialSource``).

    The stored token is read on every call (one indexed user-meta query), so a disconnect made
    in PHP or by another process stops Google calls at once. Expiry is judged here with the
    injected clock; the Credentials handed out carry no expiry, so google-auth never refreshes
    behind our back (that would skip persistence and locking).
    """

    def __init__(self, provider: CredentialsProvider, doctor_id: int) -> None:
        self._p = provider
        self._doctor_id = doctor_id

    @property
    def doctor_id(self) -> int:
        return self._doctor_id

    def credentials(self) -> Credentials:
        token = self._load()
        if token.needs_refresh(self._p.clock.time()):
            token = self._refresh(stale=token.access_token, force=False)
        return self._credentials(token)

    def refresh_after_unauthorized(self, rejected_token: str | None) -> Credentials:
        return self._credentials(self._refresh(stale=rejected_token, force=True))

    def revoked(self, reason: str) -> None:
        self._mark(reason)

    # -- internals ---------------------------------------------------------------------------

    def _credentials(self, token: StoredToken) -> Credentials:
        g = self._p.settings.google
        return Credentials(
            token=token.access_token,
            refresh_token=token.refresh_token,
            token_uri=g.token_uri,
            client_id=g.client_id,
            client_secret=g.client_secret,
            scopes=token.scope.split() or None,
        )

    def _load(self) -> StoredToken:
        with self._p.engine.connect() as conn:
            token, flag = self._p.store.read_connection(conn, self._doctor_id)
        if token is None or flag != "on":
            raise AuthRevoked(f"doctor {self._doctor_id} has no Google connection",
                              reason="not_connected")
        return token

    def _refresh(self, stale: str | None, force: bool) -> StoredToken:
        doctor = self._doctor_id
        with self._p._thread_lock(doctor):
            try:
                with named_lock(self._p.engine, f"kcsc_refresh_{doctor}",
                                timeout=self._p.lock_timeout):
                    return self._refresh_locked(stale, force)
            except LockTimeout as err:
                raise Transient(f"doctor {doctor}: another process holds the token refresh",
                                reason="refresh_lock_busy") from err

    def _refresh_locked(self, stale: str | None, force: bool) -> StoredToken:
        doctor = self._doctor_id
        now = self._p.clock.time()
        token = self._load()  # another process (or PHP) may have refreshed meanwhile
        if not token.needs_refresh(now) and (not force or token.access_token != stale):
            return token
        if not token.refresh_token:
            self._mark("no refresh token stored; reconnect needed")
            raise AuthRevoked(f"doctor {doctor} has no refresh token", reason="no_refresh_token")
        try:
            resp = self._p.refresher(self._p.settings, token.refresh_token)
        except AuthRevoked as err:
            self._mark(f"Google rejected the refresh token ({err.reason or 'invalid_grant'})")
            raise
        if resp.scope and not granted_calendar_scope(resp.scope):
            self._mark("calendar access is no longer granted")
            raise AuthRevoked(f"doctor {doctor}: calendar scope missing",
                              reason="insufficient_scope")
        new = token_from_response(resp, now, token)
        with self._p.engine.begin() as conn:
            # A disconnect may have happened while we talked to Google: do not resurrect it.
            current, flag = self._p.store.read_connection(conn, doctor)
            if current is None or flag != "on":
                raise AuthRevoked(f"doctor {doctor} disconnected during refresh",
                                  reason="not_connected")
            self._p.store.save_refreshed(conn, doctor, new, now)
        log.info("doctor %s: Google access token refreshed (expires at %s)", doctor,
                 new.expires_at)
        return new

    def _mark(self, reason: str) -> None:
        with self._p.engine.begin() as conn:
            self._p.store.mark_not_connected(conn, self._doctor_id, reason)
