"""The outbound engine as the service runs it: every poll interval, scan for new bookings and
drain what is due; on its own thread, on the system clock, until stopped."""

from __future__ import annotations

import logging
import threading
import time

from sidecar.sync.outbound import OutboundSync

log = logging.getLogger(__name__)


class EngineLoop:
    def __init__(self, outbound: OutboundSync, poll_seconds: float) -> None:
        self.outbound = outbound
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-engine", daemon=True)
        self.cycles = 0

    def start(self) -> EngineLoop:
        self._thread.start()
        return self

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self.outbound.scan_new()
                self.outbound.process_due()
            except Exception:  # keep looping, as the scheduler would
                log.exception("engine cycle failed")
            self.cycles += 1
            next_at += self.poll_seconds
            delay = next_at - time.monotonic()
            if delay < 0:
                next_at = time.monotonic()
                delay = 0
            self._stop.wait(delay)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
