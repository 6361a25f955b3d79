"""The emulator's whole state behind one lock, and the in-process control API for tests.

Every route handler and every control method runs under ``state.lock`` (an RLock). Only slow
things happen outside it: injected latency and HTTP delivery of push notifications.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from sidecar.clock import Clock, FakeClock
from sidecar.emulator.calendar import CalendarStore
from sidecar.emulator.config import EmulatorConfig
from sidecar.emulator.faults import Faults
from sidecar.emulator.oauth import OAuthStore
from sidecar.emulator.push import PushHub


class EmulatorState:
    """One emulated Google: accounts server, Calendar data, channels, faults, request log."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.clock: Clock = config.clock
        self.lock = threading.RLock()
        self.oauth = OAuthStore(config, self.clock)
        self.faults = Faults(config.seed, config.latency_seconds,
                             config.per_user_quota_per_minute)
        self.push = PushHub(config, self.clock, self.lock, self.faults.rng)
        self.calendar = CalendarStore(config, self.clock, self.push)
        self.push.on_tick = self.tick
        self.request_log: deque[dict[str, Any]] = deque(maxlen=config.request_log_limit)

    # --- request log ------------------------------------------------------------------------

    def log_request(self, entry: dict[str, Any]) -> None:
        with self.lock:
            entry.setdefault("time", self.clock.now().isoformat())
            self.request_log.append(entry)

    def requests(self, api_method: str | None = None, user: str | None = None
                 ) -> list[dict[str, Any]]:
        """Logged requests (oldest first), optionally filtered by discovery id and user."""
        with self.lock:
            return [
                dict(e) for e in self.request_log
                if (api_method is None or e.get("api_method") == api_method)
                and (user is None or e.get("user") == user)
            ]

    def clear_requests(self) -> None:
        with self.lock:
            self.request_log.clear()

    # --- time -------------------------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """Advance the injected FakeClock and apply what became due (conferences)."""
        if not isinstance(self.clock, FakeClock):
            raise TypeError("the emulator runs on a real clock; cannot advance it")
        self.clock.advance(seconds)
        self.tick()

    def tick(self) -> None:
        """Apply time-driven changes: pending conferences whose delay elapsed."""
        with self.lock:
            self.calendar.resolve_due_conferences()

    # --- OAuth control ----------------------------------------------------------------------

    def revoke_grant(self, client_id: str, email: str) -> bool:
        """The user removes the app's access: refresh then fails with invalid_grant."""
        with self.lock:
            return self.oauth.revoke_grant(client_id, email)

    # --- faults -----------------------------------------------------------------------------

    def inject_faults(self, method: str, kinds: list[str | None]) -> None:
        """The next calls of ``method`` (discovery id, ``oauth2.token`` or ``*``) fail in order."""
        with self.lock:
            self.faults.inject_sequence(method, kinds)

    def inject_fault_probability(self, method: str, kind: str, probability: float,
                                 count: int | None = None) -> None:
        with self.lock:
            self.faults.inject_probability(method, kind, probability, count)

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def set_latency(self, seconds: float, method: str = "*") -> None:
        with self.lock:
            self.faults.latency[method] = seconds

    def set_quota(self, per_user_per_minute: int) -> None:
        with self.lock:
            self.faults.quota_per_minute = per_user_per_minute

    # --- Calendar control: acting as the Google user ----------------------------------------

    def user_create_event(self, email: str, body: dict[str, Any],
                          calendar_id: str = "primary") -> dict[str, Any]:
        with self.lock:
            return self.calendar.user_create(email.lower(), calendar_id, body)

    def user_edit_event(self, email: str, event_id: str, changes: dict[str, Any],
                        calendar_id: str = "primary") -> dict[str, Any]:
        """The user edits the event in Google Calendar (a merge, like a patch)."""
        with self.lock:
            return self.calendar.user_edit(email.lower(), calendar_id, event_id, changes)

    def user_move_event(self, email: str, event_id: str, start: dict[str, Any],
                        end: dict[str, Any], calendar_id: str = "primary") -> dict[str, Any]:
        with self.lock:
            return self.calendar.user_edit(email.lower(), calendar_id, event_id,
                                           {"start": start, "end": end})

    def user_delete_event(self, email: str, event_id: str,
                          calendar_id: str = "primary") -> dict[str, Any]:
        with self.lock:
            return self.calendar.user_delete(email.lower(), calendar_id, event_id)

    def user_regenerate_meet(self, email: str, event_id: str,
                             calendar_id: str = "primary") -> dict[str, Any]:
        with self.lock:
            return self.calendar.user_regenerate_meet(email.lower(), calendar_id, event_id)

    def add_calendar(self, email: str, calendar_id: str) -> None:
        """Give the account a secondary calendar it owns."""
        with self.lock:
            self.calendar.add_calendar(email.lower(), calendar_id)

    def set_conference_mode(self, mode: str, count: int | None = None) -> None:
        """Next Meet create requests: "success" (normal), "failure" or "pending" (forever)."""
        with self.lock:
            self.calendar.set_conference_mode(mode, count)

    def resolve_conferences(self) -> int:
        """Resolve every pending conference now (success unless failure is injected)."""
        with self.lock:
            return self.calendar.resolve_all_pending()

    def invalidate_sync_tokens(self, email: str | None = None,
                               calendar_id: str | None = None) -> None:
        """Every sync token issued so far answers 410 fullSyncRequired."""
        with self.lock:
            self.calendar.invalidate_sync_tokens(email.lower() if email else None, calendar_id)

    def event(self, email: str, event_id: str, calendar_id: str = "primary"
              ) -> dict[str, Any] | None:
        with self.lock:
            return self.calendar.peek(email.lower(), calendar_id, event_id)

    # --- push -------------------------------------------------------------------------------

    def deliver_pending(self) -> int:
        """Deliver every due push notification now (in this thread); returns attempts made."""
        self.tick()
        return self.push.deliver_pending()

    def set_push_faults(self, drop: float = 0.0, duplicate: float = 0.0) -> None:
        with self.lock:
            self.push.drop_probability = drop
            self.push.duplicate_probability = duplicate

    # --- inspection -------------------------------------------------------------------------

    def dump(self) -> dict[str, Any]:
        """Accounts, calendars, events, channels and grants (no token values)."""
        with self.lock:
            return {
                "now": self.clock.now().isoformat(),
                **self.oauth.dump(),
                "calendars": self.calendar.dump(),
                "channels": self.push.dump(),
            }

    def close(self) -> None:
        self.push.close()
