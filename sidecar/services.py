"""Process-wide Google wiring on top of a :class:`~sidecar.runtime.Runtime`.

One :class:`~sidecar.google_api.GoogleApi` (discovery document, rate limiter, retry policy,
metrics) and one :class:`~sidecar.accounts.CredentialsProvider` per process; the runtime's
``google_factory`` then hands out a Calendar client bound to one doctor's credentials.
"""

from __future__ import annotations

from typing import Any

from sidecar.accounts import CredentialsProvider
from sidecar.google_api import CalendarClient, GoogleApi, RetryPolicy


def attach_google(runtime: Any, *, retry: RetryPolicy | None = None,
                  api: GoogleApi | None = None) -> GoogleApi:
    """Give ``runtime`` its Google client factory; returns the shared ``GoogleApi``."""
    kwargs: dict[str, Any] = {"clock": runtime.clock, "app_metrics": runtime.metrics}
    if retry is not None:
        kwargs["retry"] = retry
    google = api or GoogleApi.from_settings(runtime.settings, **kwargs)
    provider = CredentialsProvider(runtime.engine, runtime.accounts, runtime.settings,
                                   clock=runtime.clock)

    def calendar_for(doctor_id: int) -> CalendarClient:
        return google.calendar(provider.for_doctor(doctor_id))

    runtime.google_factory = calendar_for
    runtime.google_api = google
    runtime.credentials = provider
    return google
