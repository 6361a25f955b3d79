"""Per-doctor call budget for Google: a sliding one-minute window, kept below Google's limit.

Google counts Calendar requests per user per project over a sliding minute (600 at the time of
writing). The sidecar spends at most ``limit`` calls per ``window`` seconds for each doctor (default
500/min) so that the PHP add-on, which uses the same OAuth client and user, keeps some headroom.

``acquire(key)`` *reserves* the next free slot and returns how long the caller must wait before
using it (0.0 when a call may go now); it never sleeps, so tests with a fake clock see the wait.
``wait(key)`` is the blocking convenience used in production; its ``sleep`` is injectable.
Reservations mean concurrent callers get distinct slots and the budget is never overspent.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable

from sidecar.clock import Clock, SystemClock

DEFAULT_CALLS_PER_MINUTE = 500


class RateLimiter:
    """A sliding-window limiter with one window per key (a doctor id); thread-safe."""

    def __init__(
        self,
        limit: int = DEFAULT_CALLS_PER_MINUTE,
        window: float = 60.0,
        *,
        clock: Clock | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if window <= 0:
            raise ValueError("window must be positive")
        self.limit = limit
        self.window = float(window)
        self._clock = clock or SystemClock()
        self._sleep = sleep
        self._slots: dict[Hashable, deque[float]] = {}
        self._lock = threading.Lock()

    def acquire(self, key: Hashable) -> float:
        """Reserve one call for ``key``; return the seconds to wait before making it."""
        with self._lock:
            now = self._clock.time()
            slots = self._slots.setdefault(key, deque())
            while slots and slots[0] <= now - self.window:
                slots.popleft()
            # When full, the next slot frees as the call `limit` places back leaves the window.
            full = len(slots) >= self.limit
            at = max(now, slots[-self.limit] + self.window) if full else now
            slots.append(at)
            return max(0.0, at - now)

    def wait(self, key: Hashable) -> float:
        """Reserve one call and sleep until it may be made; return the time slept."""
        delay = self.acquire(key)
        if delay > 0:
            self._sleep(delay)
        return delay

    def in_window(self, key: Hashable) -> int:
        """Calls counted for ``key`` in the current window (reservations included)."""
        with self._lock:
            now = self._clock.time()
            return sum(1 for t in self._slots.get(key, ()) if t > now - self.window)

    def forget(self, key: Hashable) -> None:
        """Drop the window of ``key`` (a disconnected doctor)."""
        with self._lock:
            self._slots.pop(key, None)
