"""Push notification channels (``events.watch`` / ``channels.stop``) and their delivery.

Google's push guide: a ``sync`` message (number 1) right after the watch, then ``exists`` per
change; POST with no body and the ``X-Goog-*`` headers; retries with exponential backoff after
500/502/503/504; nothing after expiry or stop. Delivery runs outside the state lock (the
receiver may call the emulator back), either from a background thread ("auto") or from
``deliver_pending()`` ("manual", deterministic for tests). Retry backoff is measured on the
injected clock.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import random
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import quote, urlsplit

from sidecar.clock import Clock
from sidecar.emulator import errors
from sidecar.emulator.config import EmulatorConfig

log = logging.getLogger(__name__)
CHANNEL_ID_RE = re.compile(r"^[A-Za-z0-9\-_+/=]{1,64}$")
RETRY_STATUSES = frozenset({500, 502, 503, 504})
OK_STATUSES = frozenset({102, 200, 201, 202, 204})


@dataclass
class Channel:
    id: str
    client_id: str
    owner: str
    calendar_id: str
    address: str
    token: str | None
    resource_id: str
    resource_uri: str
    expiration: datetime
    last_number: int = 0
    stopped: bool = False

    def live(self, now: datetime) -> bool:
        return not self.stopped and now < self.expiration


@dataclass
class Message:
    channel: Channel
    number: int
    state: str
    attempts: int = 0
    next_at: datetime | None = None
    in_flight: bool = False


class PushHub:
    def __init__(self, config: EmulatorConfig, clock: Clock, lock: threading.RLock,
                 rng: random.Random) -> None:
        self.config = config
        self.clock = clock
        self.lock = lock
        self.rng = rng
        self.channels: dict[tuple[str, str], Channel] = {}
        self.queue: list[Message] = []
        self.deliveries: list[dict[str, Any]] = []
        self.drop_probability = 0.0
        self.duplicate_probability = 0.0
        self.on_tick: Any = None
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None

    # --- channels -------------------------------------------------------------------------------

    def watch(self, client_id: str, owner: str, calendar_id: str, body: dict[str, Any],
              resource_uri: str) -> dict[str, Any]:
        cid = body.get("id")
        if not cid:
            raise errors.required("Required", "resource.id")
        if not CHANNEL_ID_RE.match(cid):
            raise errors.invalid("Channel id must match [A-Za-z0-9\\-_\\+/=]+ and be at most "
                                 "64 characters.", "resource.id")
        if body.get("type") not in ("web_hook", "webhook"):
            raise errors.invalid("Invalid value for: type", "resource.type") \
                if body.get("type") else errors.required("Required", "resource.type")
        address = body.get("address")
        if not address:
            raise errors.required("Required", "resource.address")
        if not re.match(r"^https?://[^/\s]+", address):
            raise errors.invalid("Invalid address.", "resource.address")
        token = body.get("token")
        if token is not None and len(token) > 256:
            raise errors.invalid("Channel token is longer than 256 characters.", "resource.token")
        params = body.get("params") or {}
        if set(params) - {"ttl"}:
            raise errors.invalid(f"Unknown channel parameter: {sorted(set(params) - {'ttl'})[0]}",
                                 "resource.params")
        now = self.clock.now()
        ttl = float(self.config.channel_ttl)
        if "ttl" in params:
            if not re.fullmatch(r"\d+", params["ttl"]) or int(params["ttl"]) <= 0:
                raise errors.invalid("Invalid ttl value.", "resource.params.ttl")
            ttl = float(params["ttl"])
        if body.get("expiration") is not None:
            wanted_ms = int(body["expiration"])
            ttl = min(ttl, wanted_ms / 1000.0 - now.timestamp())
            if ttl <= 0:
                raise errors.invalid("Channel expiration is in the past.", "resource.expiration")
        ttl = min(ttl, float(self.config.channel_max_ttl))
        key = (client_id, cid)
        if key in self.channels and not self.channels[key].stopped:
            raise errors.ApiError(400, "channelIdNotUnique", "Channel id not unique")
        digest = hashlib.sha256(f"{owner}|{calendar_id}|events".encode()).hexdigest()
        channel = Channel(
            id=cid,
            client_id=client_id,
            owner=owner,
            calendar_id=calendar_id,
            address=address,
            token=token,
            resource_id=digest[:27],
            resource_uri=resource_uri,
            expiration=now + timedelta(seconds=ttl),
        )
        self.channels[key] = channel
        self._enqueue(channel, "sync")
        out = {
            "kind": "api#channel",
            "id": cid,
            "resourceId": channel.resource_id,
            "resourceUri": resource_uri,
            "expiration": str(int(channel.expiration.timestamp() * 1000)),
        }
        if token is not None:
            out["token"] = token
        return out

    def stop(self, client_id: str, body: dict[str, Any]) -> None:
        channel = self.channels.get((client_id, body.get("id", "")))
        if (channel is None or not channel.live(self.clock.now())
                or channel.resource_id != body.get("resourceId")):
            raise errors.ApiError(404, "notFound",
                                  f"Channel '{body.get('id')}' not found for project.")
        channel.stopped = True
        self.queue = [m for m in self.queue if m.channel is not channel or m.in_flight]

    def notify(self, owner: str, calendar_id: str, state: str) -> None:
        now = self.clock.now()
        for channel in self.channels.values():
            if channel.owner == owner and channel.calendar_id == calendar_id and channel.live(now):
                self._enqueue(channel, state)

    def _enqueue(self, channel: Channel, state: str) -> None:
        channel.last_number += 1
        number = channel.last_number
        if state != "sync" and self.drop_probability and self.rng.random() < self.drop_probability:
            self.deliveries.append({"channel_id": channel.id, "number": number, "state": state,
                                    "status": "dropped"})
            return
        copies = 2 if (self.duplicate_probability
                       and self.rng.random() < self.duplicate_probability) else 1
        for _ in range(copies):
            self.queue.append(Message(channel, number, state))
        self._wake.set()
        if self.config.push_mode == "auto":
            self._start_thread()

    # --- delivery -------------------------------------------------------------------------------

    def deliver_pending(self) -> int:
        """Deliver every message that is due now; returns the number of POST attempts."""
        attempts = 0
        while True:
            with self.lock:
                now = self.clock.now()
                self.queue = [m for m in self.queue if m.in_flight or m.channel.live(now)]
                due = [m for m in self.queue
                       if not m.in_flight and (m.next_at is None or m.next_at <= now)]
                for m in due:
                    m.in_flight = True
            if not due:
                return attempts
            for message in due:
                status = self._post(message)
                attempts += 1
                with self.lock:
                    self._settle(message, status)

    def _post(self, message: Message) -> int | None:
        ch = message.channel
        headers = {
            "X-Goog-Channel-ID": ch.id,
            "X-Goog-Channel-Expiration": format_datetime(ch.expiration, usegmt=True),
            "X-Goog-Resource-ID": ch.resource_id,
            "X-Goog-Resource-URI": ch.resource_uri,
            "X-Goog-Resource-State": message.state,
            "X-Goog-Message-Number": str(message.number),
            "Content-Length": "0",
            "User-Agent": "APIs-Google; (+https://developers.google.com/webmasters/APIs-Google.html)",
        }
        if ch.token is not None:
            headers["X-Goog-Channel-Token"] = ch.token
        # http.client keeps Google's header spelling (urllib would re-case the names)
        url = urlsplit(ch.address)
        conn_cls = http.client.HTTPSConnection if url.scheme == "https" else \
            http.client.HTTPConnection
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        try:
            conn = conn_cls(url.netloc, timeout=self.config.push_timeout_seconds)
            try:
                conn.request("POST", path, body=b"", headers=headers)
                resp = conn.getresponse()
                resp.read()
                return int(resp.status)
            finally:
                conn.close()
        except (OSError, http.client.HTTPException) as err:
            log.info("push to channel %s failed: %s", ch.id, type(err).__name__)
            return None

    def _settle(self, message: Message, status: int | None) -> None:
        message.in_flight = False
        message.attempts += 1
        self.deliveries.append({"channel_id": message.channel.id, "number": message.number,
                                "state": message.state, "status": status,
                                "attempt": message.attempts,
                                "time": self.clock.now().isoformat()})
        retry = status is None or status in RETRY_STATUSES
        if status in OK_STATUSES or not retry or message.attempts >= self.config.push_max_attempts:
            if message in self.queue:
                self.queue.remove(message)
            return
        backoff = self.config.push_retry_base_seconds * 2 ** (message.attempts - 1)
        message.next_at = self.clock.now() + timedelta(seconds=backoff)

    def _start_thread(self) -> None:
        if self._thread is None and not self._closing.is_set():
            self._thread = threading.Thread(target=self._run, name="emulator-push", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._closing.is_set():
            self._wake.wait(timeout=0.05)
            self._wake.clear()
            if self._closing.is_set():
                return
            try:
                if self.on_tick is not None:
                    self.on_tick()
                self.deliver_pending()
            except Exception:  # pragma: no cover - keep the delivery thread alive
                log.exception("push delivery failed")

    def close(self) -> None:
        self._closing.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def dump(self) -> list[dict[str, Any]]:
        now = self.clock.now()
        return [
            {"id": c.id, "client_id": c.client_id, "owner": c.owner,
             "calendar_id": c.calendar_id, "address": c.address, "resourceId": c.resource_id,
             "expiration": c.expiration.isoformat(), "live": c.live(now), "stopped": c.stopped,
             "messages_sent": c.last_number}
            for c in self.channels.values()
        ]


def resource_uri(base: str, calendar_id: str) -> str:
    return f"{base.rstrip('/')}/calendar/v3/calendars/{quote(calendar_id, safe='')}/events?alt=json"
