"""Prometheus metrics of one sidecar app, on a registry of its own.

Owns the metric names (all prefixed ``kcsc_``) and the exposition for ``GET /metrics``. Each
``Metrics`` object has its own ``CollectorRegistry`` instead of prometheus-client's global one, so
several apps in one process (tests, the demo) never clash over a name and each scrape shows only
its own app. Callers increment the public attributes directly (they are plain prometheus-client
metrics) or use the few helpers below that keep label values consistent.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import choose_encoder

PREFIX = "kcsc"

#: ``oauth_connections{outcome}``: stored; refused at Google; invalid, expired, replayed or
#: foreign state (or a used invite); calendar scope left unticked; anything else.
OAUTH_OUTCOMES = ("connected", "denied", "bad_state", "scope_missing", "error")


class Metrics:
    """All metrics of one app. Counter names get ``_total`` in the exposition.

    - ``meetings_created`` / ``meetings_updated`` / ``meetings_deleted``: Google events written.
    - ``google_calls{method,status}``: Google API calls by method name (``events.insert``,
      ``token``) and outcome (HTTP status as text, or ``network`` when no response came).
    - ``google_retries{reason}``: retries scheduled (``rate_limited``, ``server_error``, ...).
    - ``sync_queue_depth``, ``sync_oldest_pending_seconds``: outbound work waiting now.
    - ``sync_lag_seconds{doctor}``: age of the newest change not yet reflected, per doctor.
    - ``webhook_notifications{outcome}``: push notifications (``accepted``, ``unknown_channel``,
      ``bad_token``, ``sync``...).
    - ``token_refreshes`` / ``token_refresh_failures``: access-token refreshes and failures.
    - ``items_failed``: appointments whose sync failed and were parked with an error.
    - ``oauth_connections{outcome}``: OAuth callbacks by outcome (``OAUTH_OUTCOMES``).
    - ``disconnections``: Google connections removed (page, CLI).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True) if registry is None else registry
        r = self.registry

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, namespace=PREFIX, registry=r)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, doc, labels, namespace=PREFIX, registry=r)

        self.meetings_created = counter("meetings_created", "Google Meet events created.")
        self.meetings_updated = counter("meetings_updated", "Google Meet events updated.")
        self.meetings_deleted = counter("meetings_deleted", "Google Meet events deleted.")
        self.google_calls = counter(
            "google_calls", "Google API calls by method and HTTP status.", ("method", "status")
        )
        self.google_retries = counter(
            "google_retries", "Google API calls retried, by reason.", ("reason",)
        )
        self.sync_queue_depth = gauge("sync_queue_depth", "Appointments waiting for outbound sync.")
        self.sync_oldest_pending_seconds = gauge(
            "sync_oldest_pending_seconds", "Age of the oldest appointment waiting for sync."
        )
        self.sync_lag_seconds = gauge(
            "sync_lag_seconds", "Seconds since the oldest unsynced change, per doctor.", ("doctor",)
        )
        self.webhook_notifications = counter(
            "webhook_notifications", "Google push notifications received, by outcome.", ("outcome",)
        )
        self.token_refreshes = counter("token_refreshes", "Access-token refreshes that succeeded.")
        self.token_refresh_failures = counter(
            "token_refresh_failures", "Access-token refreshes that failed."
        )
        self.items_failed = counter("items_failed", "Sync items parked as failed.")
        self.oauth_connections = counter(
            "oauth_connections", "OAuth callbacks by outcome.", ("outcome",)
        )
        for outcome in OAUTH_OUTCOMES:  # every outcome shows (at 0) from the first scrape
            self.oauth_connections.labels(outcome=outcome)
        self.disconnections = counter("disconnections", "Google connections removed.")

    # Helpers that keep label values uniform across call sites.

    def google_call(self, method: str, status: int | str) -> None:
        """Count one Google API call; ``status`` is the HTTP status or ``"network"``."""
        self.google_calls.labels(method=method, status=str(status)).inc()

    def oauth_connection(self, outcome: str) -> None:
        """Count one OAuth callback; an unknown ``outcome`` is counted as ``error``."""
        self.oauth_connections.labels(
            outcome=outcome if outcome in OAUTH_OUTCOMES else "error").inc()

    def set_queue(self, depth: int, oldest_pending_seconds: float) -> None:
        """Record the outbound queue as last measured."""
        self.sync_queue_depth.set(depth)
        self.sync_oldest_pending_seconds.set(max(0.0, oldest_pending_seconds))

    def track_queue(self, depth: Callable[[], float], oldest: Callable[[], float]) -> None:
        """Measure the queue at scrape time instead (each callable runs once per scrape)."""
        self.sync_queue_depth.set_function(depth)
        self.sync_oldest_pending_seconds.set_function(oldest)

    def set_sync_lag(self, doctor_id: int | str, seconds: float) -> None:
        self.sync_lag_seconds.labels(doctor=str(doctor_id)).set(max(0.0, seconds))

    def forget_doctor(self, doctor_id: int | str) -> None:
        """Drop a doctor's lag series (disconnected doctors should not show a stale value)."""
        with contextlib.suppress(KeyError):
            self.sync_lag_seconds.remove(str(doctor_id))

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition for ``GET /metrics`` and its content type; Prometheus text format
        unless the ``Accept`` header asks for OpenMetrics."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
