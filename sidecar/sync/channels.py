"""Push channels: one ``events.watch`` channel per connected doctor, renewed before it expires,
stopped on disconnect, and the check of every notification that claims to come from one.

Google never renews a channel by itself and may deliver for a while after a stop, so:

* :meth:`ChannelManager.run_once` (a scheduler job) opens a channel for each connected doctor
  that has no fresh one, renews a channel ``sync.channel_renew_margin_seconds`` before its
  expiration — the new channel is opened *first*, then the old one stopped, so no change falls
  into a gap — and stops channels of doctors that are no longer connected;
* the channel's secret token is random per channel and stored only as a SHA-256 digest
  (``StateStore.add_channel``); the row is written *before* ``events.watch`` so the ``sync``
  message, which may arrive before ``watch`` returns, is recognised;
* :func:`verify_notification` decides what a request to ``POST /webhook/google`` is (accepted,
  sync, forged, unknown, stopped…) from its headers alone, without calling Google;
* :meth:`ChannelManager.stop_doctor` is the ``runtime.stop_channels`` hook used on disconnect.

Google only delivers to HTTPS addresses with a publicly trusted certificate. An ``http://``
address is accepted only when it and the Google API endpoint are both on loopback (the local
emulator in tests and the demo); otherwise no channel is opened, the refusal is logged and
reported, and the inbound poll (``sync.inbound_poll_seconds``) is the only way changes arrive.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import logging
import secrets
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa

from sidecar import google_api as g
from sidecar.state import Channel, token_digest

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhook/google"
CALENDAR_ID = "primary"
TOKEN_BYTES = 32  # secrets.token_urlsafe(32): 43 characters, 256 bits

CalendarFactory = Callable[[int], g.CalendarClient]


# --------------------------------------------------------------------------------------------
# Who is connected
# --------------------------------------------------------------------------------------------


def connected_doctors(runtime: Any, *, conn: sa.Connection | None = None) -> list[int]:
    """Doctors whose Google connection works by the add-on's rule (token and flag ``on``).

    Candidates are the doctors the sidecar knows: rows of ``kcsc_doctors`` and doctors of
    tracked appointments (a doctor connected through the PHP add-on appears there once one of
    their appointments is tracked).
    """
    state = runtime.state
    items = state.tables.items
    doctors = state.tables.doctors

    def read(c: sa.Connection) -> list[int]:
        ids = {int(r[0]) for r in c.execute(sa.select(doctors.c.doctor_id))}
        ids |= {int(r[0]) for r in c.execute(sa.select(items.c.doctor_id).distinct())}
        if not ids:
            return []
        statuses = runtime.accounts.connection_statuses(c, ids)
        return sorted(d for d, s in statuses.items() if s == "connected")

    if conn is not None:
        return read(conn)
    with runtime.engine.connect() as own:
        return read(own)


# --------------------------------------------------------------------------------------------
# Checking a notification
# --------------------------------------------------------------------------------------------

H_CHANNEL_ID = "X-Goog-Channel-ID"
H_TOKEN = "X-Goog-Channel-Token"  # noqa: S105 - a header name
H_RESOURCE_ID = "X-Goog-Resource-ID"
H_RESOURCE_STATE = "X-Goog-Resource-State"
H_MESSAGE_NUMBER = "X-Goog-Message-Number"
CHANGE_STATES = frozenset({"exists", "not_exists"})


@dataclass(frozen=True)
class Verdict:
    """What a notification is. ``outcome`` is the ``webhook_notifications`` label; ``status``
    the HTTP status to answer; ``channel`` is set for ``accepted``, ``sync`` and ``stopped``."""

    outcome: str
    status: int
    message: str
    channel: Channel | None = None
    resource_state: str | None = None

    @property
    def wants_sync(self) -> bool:
        return self.outcome == "accepted"


def _bad(outcome: str, status: int, message: str) -> Verdict:
    return Verdict(outcome, status, message)


class ChannelCache:
    """This process's copy of channel records, so a notification costs no database read.

    Only channels found in the database are kept (an unknown id reads the database each time,
    so a flood of random ids cannot grow the cache), at most ``max_entries`` of them, each for
    ``ttl`` seconds; a channel whose ``watch`` has not returned (no resource id yet) is never
    kept. :class:`ChannelManager` drops a channel the moment this process stops, replaces or
    deletes it; a stop made by another replica is seen within ``ttl``.
    """

    def __init__(self, state: Any, *, ttl: float = 30.0, max_entries: int = 4096,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.state = weakref.proxy(state)  # the process-wide registry is keyed weakly on it
        self.ttl = ttl
        self.max_entries = max_entries
        self._monotonic = monotonic
        self._entries: OrderedDict[str, tuple[float, Channel]] = OrderedDict()
        self._lock = threading.Lock()
        self._generation = 0  # bumped by invalidate: a read that raced it is not stored

    def get(self, channel_id: str) -> Channel | None:
        """The channel's record (cached, else read from the database), or None if unknown."""
        now = self._monotonic()
        with self._lock:
            entry = self._entries.get(channel_id)
            if entry is not None and now - entry[0] < self.ttl:
                return entry[1]
            generation = self._generation
        channel: Channel | None = self.state.get_channel(channel_id)
        with self._lock:
            if channel is None or channel.resource_id is None or generation != self._generation:
                self._entries.pop(channel_id, None)
                return channel
            self._entries[channel_id] = (now, channel)
            self._entries.move_to_end(channel_id)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return channel

    def invalidate(self, channel_id: str) -> None:
        """Forget a channel (call after its row changed in the database)."""
        with self._lock:
            self._generation += 1
            self._entries.pop(channel_id, None)

    def __contains__(self, channel_id: object) -> bool:
        with self._lock:
            return channel_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)


_caches: weakref.WeakKeyDictionary[Any, ChannelCache] = weakref.WeakKeyDictionary()
_caches_guard = threading.Lock()


def channel_cache(state: Any) -> ChannelCache:
    """The process-wide :class:`ChannelCache` of ``state`` (a ``StateStore``)."""
    with _caches_guard:
        cache = _caches.get(state)
        if cache is None:
            cache = _caches[state] = ChannelCache(state)
        return cache


_NO_CHANNEL_DIGEST = token_digest(secrets.token_hex(16))


def verify_notification(state: Any, headers: Mapping[str, str], *,
                        cache: ChannelCache | None = None) -> Verdict:
    """Classify a push notification by its ``X-Goog-*`` headers (no Google call).

    * missing or oversized headers → 400 ``bad_request``; an unknown resource state → 400
      ``unsupported_state``;
    * an unknown channel id → 404 ``unknown_channel`` (without its token we cannot stop it);
    * a wrong token → 403 ``bad_token``; a resource id that is not the channel's → 403
      ``bad_resource``;
    * a channel we stopped (or replaced) that still notifies → 410 ``stopped_channel``: the
      caller stops it at Google, best effort;
    * ``sync`` → 200 ``sync`` (the channel is ready; nothing changed);
    * ``exists`` / ``not_exists`` → 200 ``accepted``: the doctor's changes should be fetched.

    The token is compared in constant time against the stored digest. With ``cache`` the
    channel record comes from this process's :class:`ChannelCache` (no database read while it
    is fresh); without, from the database.
    """
    channel_id = (headers.get(H_CHANNEL_ID) or "").strip()
    resource_id = (headers.get(H_RESOURCE_ID) or "").strip()
    resource_state = (headers.get(H_RESOURCE_STATE) or "").strip()
    token = headers.get(H_TOKEN) or ""
    if not channel_id or not resource_id or not resource_state:
        return _bad("bad_request", 400, "missing X-Goog-Channel-ID, X-Goog-Resource-ID or "
                                         "X-Goog-Resource-State")
    if len(channel_id) > 64 or len(resource_id) > 255 or len(token) > 256:
        return _bad("bad_request", 400, "oversized X-Goog-* header")
    if resource_state != "sync" and resource_state not in CHANGE_STATES:
        return _bad("unsupported_state", 400, "unsupported X-Goog-Resource-State")
    known = cache.get(channel_id) if cache is not None else state.get_channel(channel_id)
    expected = known.token_hash if known is not None else _NO_CHANNEL_DIGEST
    token_ok = hmac.compare_digest(expected, token_digest(token)) and bool(token)
    if known is None:
        return _bad("unknown_channel", 404, "unknown channel")
    if not token_ok:
        return _bad("bad_token", 403, "channel token does not match")
    if known.stopped_at is not None:
        if known.resource_id is not None and not hmac.compare_digest(
                known.resource_id.encode(), resource_id.encode()):
            return _bad("bad_resource", 403, "resource id does not match the channel")
        return Verdict("stopped_channel", 410, "channel stopped", known, resource_state)
    channel = known
    # A channel whose watch call has not returned yet has no resource id: its token alone
    # (256 random bits) identifies it.
    if channel.resource_id is not None and not hmac.compare_digest(
            channel.resource_id.encode(), resource_id.encode()):
        return _bad("bad_resource", 403, "resource id does not match the channel")
    if resource_state == "sync":
        return Verdict("sync", 200, "ok", channel, resource_state)
    return Verdict("accepted", 200, "ok", channel, resource_state)


# --------------------------------------------------------------------------------------------
# Opening, renewing and stopping channels
# --------------------------------------------------------------------------------------------


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def expiration_from_ms(value: object) -> datetime | None:
    """Google's ``expiration`` (epoch milliseconds, usually a string) → aware UTC datetime."""
    if value is None or value == "":
        return None
    try:
        millis = int(str(value))
    except ValueError:
        return None
    return datetime.fromtimestamp(millis / 1000.0, UTC)


@dataclass
class ChannelResult:
    """What one channel job run did. ``refused`` explains why no channel can be opened."""

    opened: int = 0
    renewed: int = 0
    stopped: int = 0
    failed: int = 0
    refused: str | None = None
    errors: list[str] = field(default_factory=list)


class ChannelError(Exception):
    """Some channels could not be stopped at Google (they were still marked stopped here)."""


class ChannelManager:
    """Channels of every connected doctor. ``address`` overrides the receiver URL (default
    ``sidecar.public_url`` + ``/webhook/google``) for setups where Google reaches the sidecar
    under another name."""

    def __init__(self, runtime: Any, calendar_for: CalendarFactory | None = None, *,
                 address: str | None = None) -> None:
        self.rt = runtime
        self.state = runtime.state
        self.clock = runtime.clock
        self._calendar_for = calendar_for
        self._address = address
        self._refusal_logged = False
        self.cache = channel_cache(self.state)

    def calendar_for(self, doctor_id: int) -> g.CalendarClient:
        factory = self._calendar_for or self.rt.google_factory
        return factory(doctor_id)  # type: ignore[no-any-return]

    @property
    def address(self) -> str:
        return self._address or self.rt.public_url + WEBHOOK_PATH

    def address_problem(self) -> str | None:
        """Why Google could not deliver to :attr:`address`, or None when it can."""
        parts = urlsplit(self.address)
        if parts.scheme == "https" and parts.hostname:
            return None
        if parts.scheme == "http" and _is_loopback(parts.hostname):
            api_host = urlsplit(self.rt.settings.google.api_endpoint).hostname
            if _is_loopback(api_host):
                return None  # the local emulator delivers to loopback over plain HTTP
        return (f"push notifications need an HTTPS webhook address; {self.address} is not "
                "(set sidecar.public_url to the https:// address Google reaches); changes made "
                "in Google arrive through the inbound poll instead")

    @property
    def ttl_seconds(self) -> int:
        return int(self.rt.settings.sync.channel_ttl_seconds)

    @property
    def renew_margin(self) -> timedelta:
        return timedelta(seconds=self.rt.settings.sync.channel_renew_margin_seconds)

    # -- queries ---------------------------------------------------------------------------

    def live_channels(self, doctor_id: int, now: datetime | None = None) -> list[Channel]:
        """Active channels Google still delivers on (watch answered, not expired)."""
        now = now or self.clock.now()
        return [c for c in self.state.active_channels(doctor_id=doctor_id)
                if c.resource_id is not None and c.expiration is not None
                and c.expiration > now]

    def has_live_channel(self, doctor_id: int, now: datetime | None = None) -> bool:
        return bool(self.live_channels(doctor_id, now))

    # -- the job -----------------------------------------------------------------------------

    def run_once(self) -> ChannelResult:
        """Open, renew and retire channels so each connected doctor has exactly one fresh one."""
        result = ChannelResult()
        now = self.clock.now()
        problem = self.address_problem()
        connected = set(connected_doctors(self.rt))
        active = self.state.active_channels()
        by_doctor: dict[int, list[Channel]] = {}
        for channel in active:
            by_doctor.setdefault(channel.doctor_id, []).append(channel)
        if problem is not None:
            result.refused = problem
            if not self._refusal_logged:
                log.warning("not opening push channels: %s", problem)
                self._refusal_logged = True
        for doctor_id in sorted(connected | set(by_doctor)):
            channels = by_doctor.get(doctor_id, [])
            if doctor_id not in connected or problem is not None:
                for channel in channels:
                    self._retire(channel, now, result, call_google=doctor_id in connected)
                continue
            self._ensure_doctor(doctor_id, channels, now, result)
        return result

    def _ensure_doctor(self, doctor_id: int, channels: list[Channel], now: datetime,
                       result: ChannelResult) -> None:
        fresh_until = now + self.renew_margin
        fresh = [c for c in channels if c.resource_id is not None and c.expiration is not None
                 and c.expiration > fresh_until]
        keep: Channel | None = max(fresh, key=lambda c: c.expiration or now) if fresh else None
        if keep is None:
            renewing = any(c.expiration is not None and c.expiration > now for c in channels)
            try:
                keep = self.open_channel(doctor_id)
            except g.GoogleError as err:
                result.failed += 1
                result.errors.append(f"doctor {doctor_id}: {type(err).__name__}: {err}")
                log.warning("doctor %s: opening a push channel failed: %s", doctor_id,
                            type(err).__name__)
                return  # the old channel (if any) keeps delivering until it expires
            if renewing:
                result.renewed += 1
            else:
                result.opened += 1
        for channel in channels:
            if channel.channel_id != keep.channel_id:
                self._retire(channel, now, result, call_google=True)

    def _retire(self, channel: Channel, now: datetime, result: ChannelResult, *,
                call_google: bool) -> None:
        expired = channel.expiration is not None and channel.expiration <= now
        if call_google and not expired and channel.resource_id is not None:
            try:
                self.stop_at_google(channel)
            except g.GoogleError as err:
                result.errors.append(f"channel {channel.channel_id}: {type(err).__name__}")
        stopped = self.state.mark_channel_stopped(channel.channel_id, now=now)
        self.cache.invalidate(channel.channel_id)
        if stopped:
            result.stopped += 1

    def open_channel(self, doctor_id: int) -> Channel:
        """``events.watch`` on the doctor's primary calendar; the stored row carries the token's
        digest, Google's resource id and the granted expiration."""
        now = self.clock.now()
        channel_id = str(uuid.uuid4())
        token = secrets.token_urlsafe(TOKEN_BYTES)
        self.state.add_channel(channel_id, doctor_id, token, now=now)
        try:
            answer = self.calendar_for(doctor_id).watch(
                CALENDAR_ID, channel_id, token, self.address, ttl=self.ttl_seconds)
        except BaseException:
            self.state.delete_channel(channel_id)
            self.cache.invalidate(channel_id)
            raise
        resource_id = str(answer.get("resourceId") or "")
        expiration = expiration_from_ms(answer.get("expiration"))
        if not resource_id:
            self.state.delete_channel(channel_id)
            self.cache.invalidate(channel_id)
            raise g.Permanent("events.watch answered without a resourceId")
        self.state.set_channel_watch(channel_id, resource_id=resource_id, expiration=expiration)
        self.cache.invalidate(channel_id)
        log.info("doctor %s: push channel %s open until %s", doctor_id, channel_id,
                 expiration.isoformat() if expiration else "unknown")
        stored = self.state.get_channel(channel_id)
        assert stored is not None
        return stored  # type: ignore[no-any-return]

    def stop_at_google(self, channel: Channel) -> None:
        """``channels.stop``; a channel Google no longer knows (404) counts as stopped."""
        if channel.resource_id is None:
            return
        with contextlib.suppress(g.NotFound):
            self.calendar_for(channel.doctor_id).stop_channel(channel.channel_id,
                                                              channel.resource_id)

    def stop_doctor(self, doctor_id: int) -> int:
        """Stop every channel of a doctor (the ``runtime.stop_channels`` hook: called on
        disconnect while the token still works). Each channel is marked stopped here whatever
        Google answers; raises :class:`ChannelError` afterwards if Google refused some."""
        now = self.clock.now()
        failures: list[str] = []
        stopped = 0
        for channel in self.state.active_channels(doctor_id=doctor_id):
            expired = channel.expiration is not None and channel.expiration <= now
            if not expired:
                try:
                    self.stop_at_google(channel)
                except g.GoogleError as err:
                    failures.append(f"{channel.channel_id}: {type(err).__name__}")
            marked = self.state.mark_channel_stopped(channel.channel_id, now=now)
            self.cache.invalidate(channel.channel_id)
            if marked:
                stopped += 1
        if failures:
            raise ChannelError("channels.stop failed for " + ", ".join(failures))
        return stopped

    def stop_stale(self, channel: Channel) -> bool:
        """Best effort stop of a channel we consider stopped but that still notifies."""
        try:
            self.stop_at_google(channel)
        except g.GoogleError as err:
            log.info("stale channel %s: channels.stop failed (%s)", channel.channel_id,
                     type(err).__name__)
            return False
        return True


def install(runtime: Any, calendar_for: CalendarFactory | None = None, *,
            address: str | None = None) -> ChannelManager:
    """A :class:`ChannelManager` for ``runtime``, registered as ``runtime.stop_channels``."""
    manager = ChannelManager(runtime, calendar_for, address=address)
    runtime.stop_channels = manager.stop_doctor
    return manager
