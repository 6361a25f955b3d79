"""The only module that speaks to the Google Calendar API, and the closed error taxonomy.

Owns:

* the error types every caller branches on (``GoogleError`` and its subclasses). ``HttpError``,
  httplib2/socket errors and google-auth exceptions are translated here and nowhere else, always
  ``raise ... from err``;
* ``RetryPolicy``: the one retry rule (exponential backoff with full jitter, Retry-After honoured,
  bounded attempts, injectable sleep) applied to ``RateLimited`` and ``Transient`` only;
* ``GoogleApi``: process-wide parts (the discovery-based service built once from the bundled
  document, the per-doctor rate limiter, the retry policy, the metrics hook, one ``httplib2.Http``
  per thread because httplib2 is not thread-safe);
* ``CalendarClient``: the Calendar calls for one doctor. Credentials come from an injected
  ``CredentialSource`` (``sidecar.accounts.DoctorAuth``), which alone reads, refreshes and stores
  tokens. The transport never refreshes by itself: a 401 asks the source for a fresh token once;
  a second 401 means the grant is gone (``AuthRevoked``). ``FreshGrant`` is the source for a token
  just obtained in the OAuth callback and not stored yet (it never refreshes).

Tokens and Authorization headers are never logged or put into error messages.
"""

from __future__ import annotations

import email.utils
import functools
import http.client
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import google.auth.exceptions
import google_auth_httplib2
import httplib2
from googleapiclient import discovery, discovery_cache
from googleapiclient.errors import HttpError

from sidecar.ratelimit import RateLimiter

if TYPE_CHECKING:
    from google.oauth2.credentials import Credentials

    from sidecar.clock import Clock
    from sidecar.config import Settings
    from sidecar.metrics import Metrics

log = logging.getLogger(__name__)

T = TypeVar("T")

CALENDAR_SCOPE = "https://www.googleapis.com/auth/calendar"
DEFAULT_TIMEOUT_SECONDS = 30.0


# --------------------------------------------------------------------------------------------
# Error taxonomy
# --------------------------------------------------------------------------------------------


class GoogleError(Exception):
    """Base of every error a Google call can end in. ``status`` is the HTTP status if any."""

    def __init__(self, message: str, *, status: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason


class AuthRevoked(GoogleError):
    """The doctor must reconnect: invalid_grant, 401 after a fresh refresh, scope missing,
    or no stored connection. No further calls should be made for this doctor."""


class RateLimited(GoogleError):
    """403 rateLimitExceeded/userRateLimitExceeded or 429: back off and retry."""

    def __init__(self, message: str, *, status: int | None = None, reason: str = "",
                 retry_after: float | None = None) -> None:
        super().__init__(message, status=status, reason=reason)
        self.retry_after = retry_after


class QuotaExceeded(GoogleError):
    """403 quotaExceeded (Calendar usage limits): slow down and alert; never loop on it."""


class Transient(GoogleError):
    """5xx, timeouts, connection errors, token endpoint 5xx: retry later."""

    def __init__(self, message: str, *, status: int | None = None, reason: str = "",
                 retry_after: float | None = None) -> None:
        super().__init__(message, status=status, reason=reason)
        self.retry_after = retry_after


class NotFound(GoogleError):
    """404: the event, calendar or channel does not exist."""


class Gone(GoogleError):
    """410 deleted: the resource existed and was deleted."""


class SyncTokenExpired(GoogleError):
    """410 fullSyncRequired: drop the sync token and do a full sync."""


class Duplicate(GoogleError):
    """409 duplicate: an event with this client-chosen id already exists (adopt it)."""


class Permanent(GoogleError):
    """Any other 4xx: retrying the same request cannot help. ``reason``/``message`` say why."""


class OAuthError(Permanent):
    """A token-endpoint error other than the ones mapped above, e.g. ``invalid_client`` or an
    ``invalid_grant`` during a code exchange. ``error`` is Google's error code, kept verbatim."""

    def __init__(self, error: str, description: str = "", *, status: int | None = None) -> None:
        super().__init__(f"{error}: {description}" if description else error,
                         status=status, reason=error)
        self.error = error
        self.description = description


RETRYABLE: tuple[type[GoogleError], ...] = (RateLimited, Transient)

_RATE_REASONS = {"rateLimitExceeded", "userRateLimitExceeded"}
_QUOTA_REASONS = {"quotaExceeded", "dailyLimitExceeded"}
_SCOPE_REASONS = {"insufficientPermissions", "ACCESS_TOKEN_SCOPE_INSUFFICIENT"}

#: exceptions raised by httplib2/sockets/google-auth transports for a failed exchange
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    httplib2.HttpLib2Error,
    http.client.HTTPException,
    OSError,  # socket timeouts, refused and reset connections
    google.auth.exceptions.TransportError,
)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    base = time.time() if now is None else now
    return max(0.0, when.timestamp() - base)


def _error_reason(content: bytes) -> tuple[str, str]:
    """(reason, message) from Google's envelope ``{error:{errors:[{reason,message}],message}}``."""
    try:
        data = json.loads(content.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return "", ""
    if isinstance(data, list) and data:
        data = data[0]
    if not isinstance(data, dict) or not isinstance(data.get("error"), dict):
        return "", ""
    err = data["error"]
    message = str(err.get("message") or "")
    errors = err.get("errors")
    reason = ""
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        reason = str(errors[0].get("reason") or "")
        message = message or str(errors[0].get("message") or "")
    if not reason:
        for detail in err.get("details") or []:
            if isinstance(detail, dict) and detail.get("reason"):
                reason = str(detail["reason"])
                break
    return reason, message


def translate_http_error(err: HttpError) -> GoogleError:
    """Map a Calendar API error response to our taxonomy (the caller raises it ``from err``)."""
    status = int(err.resp.status)
    reason, message = _error_reason(err.content or b"")
    text = f"{status} {reason or 'error'}: {message or err.resp.reason or ''}".rstrip(": ")
    retry_after = parse_retry_after(err.resp.get("retry-after"))
    kw: dict[str, Any] = {"status": status, "reason": reason}
    if status == 401:
        return AuthRevoked(text, **kw)
    if status == 403:
        if reason in _RATE_REASONS:
            return RateLimited(text, retry_after=retry_after, **kw)
        if reason in _QUOTA_REASONS:
            return QuotaExceeded(text, **kw)
        if reason in _SCOPE_REASONS:
            return AuthRevoked(text, **kw)
        return Permanent(text, **kw)
    if status == 429:
        return RateLimited(text, retry_after=retry_after, **kw)
    if status == 404:
        return NotFound(text, **kw)
    if status == 409:
        return Duplicate(text, **kw)
    if status == 410:
        if reason == "fullSyncRequired":
            return SyncTokenExpired(text, **kw)
        return Gone(text, **kw)
    if status == 408 or status >= 500:
        return Transient(text, retry_after=retry_after, **kw)
    return Permanent(text, **kw)


def translate_transport_error(err: BaseException) -> Transient:
    """A failed exchange (timeout, refused connection, broken response) is always transient."""
    return Transient(f"connection to Google failed: {type(err).__name__}", reason="transport")


# --------------------------------------------------------------------------------------------
# Retry policy (the only one)
# --------------------------------------------------------------------------------------------


def retry_reason(err: GoogleError) -> str:
    """A metrics label for a retried error: rate_limited, network or server_error."""
    if isinstance(err, RateLimited):
        return "rate_limited"
    if err.reason == "transport":
        return "network"
    return "server_error"


@dataclass
class RetryPolicy:
    """Exponential backoff with full jitter for ``RateLimited`` and ``Transient``.

    Attempt *n* (1-based) that fails waits ``random() * min(max_delay, base_delay * 2**(n-1))``
    seconds, or at least Retry-After when Google sent one. A Retry-After beyond ``max_wait`` is not
    waited for in-process: the error is raised so the caller can schedule ``next_attempt_at``.
    Every other error is raised at once.
    """

    max_attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 32.0
    max_wait: float = 120.0
    sleep: Callable[[float], None] = time.sleep
    random: Callable[[], float] = random.random
    #: called before each retry's wait (metrics: ``google_retries{reason=retry_reason(err)}``)
    on_retry: Callable[[GoogleError], None] | None = None

    def delay(self, attempt: int, err: GoogleError) -> float:
        backoff = self.random() * min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        retry_after = getattr(err, "retry_after", None)
        if retry_after is not None:
            return max(backoff, float(retry_after))
        return backoff

    def run(self, fn: Callable[[], T], what: str = "google call") -> T:
        attempt = 1
        while True:
            try:
                return fn()
            except RETRYABLE as err:
                if attempt >= self.max_attempts:
                    log.warning("%s failed after %d attempts: %s", what, attempt, err)
                    raise
                wait = self.delay(attempt, err)
                if wait > self.max_wait:
                    log.warning("%s: %s asks to wait %.0fs; not waiting in-process",
                                what, type(err).__name__, wait)
                    raise
                log.info("%s: %s (%s), retry %d/%d in %.2fs", what, type(err).__name__,
                         err.reason or err.status, attempt, self.max_attempts - 1, wait)
                if self.on_retry is not None:
                    self.on_retry(err)
                self.sleep(wait)
                attempt += 1


# --------------------------------------------------------------------------------------------
# Credentials, metrics and the process-wide service
# --------------------------------------------------------------------------------------------


class CredentialSource(Protocol):
    """What a CalendarClient needs from ``sidecar.accounts``: valid credentials for one doctor."""

    @property
    def doctor_id(self) -> int: ...

    def credentials(self) -> Credentials:
        """Valid credentials (refreshed when expired); raises AuthRevoked/Transient/OAuthError."""
        ...

    def refresh_after_unauthorized(self, rejected_token: str | None) -> Credentials:
        """Google rejected ``rejected_token`` with 401: return freshly refreshed credentials."""
        ...

    def revoked(self, reason: str) -> None:
        """Google says the grant no longer works: record that the doctor must reconnect."""
        ...


class FreshGrant:
    """A ``CredentialSource`` for an access token that was just obtained and is not stored yet
    (the OAuth callback reading the account's e-mail before saving the connection).

    It cannot refresh: a 401 is ``AuthRevoked`` at once. It records nothing on ``revoked``,
    since no stored connection exists to mark.
    """

    def __init__(self, doctor_id: int, access_token: str) -> None:
        self._doctor_id = doctor_id
        self._token = access_token

    def __repr__(self) -> str:
        return f"FreshGrant(doctor_id={self._doctor_id})"

    @property
    def doctor_id(self) -> int:
        return self._doctor_id

    def credentials(self) -> Credentials:
        from google.oauth2.credentials import Credentials

        return Credentials(token=self._token)

    def refresh_after_unauthorized(self, rejected_token: str | None) -> Credentials:
        raise AuthRevoked("Google rejected the access token it has just issued",
                          status=401, reason="authError")

    def revoked(self, reason: str) -> None:
        return None


#: called once per HTTP exchange with (API method, HTTP status or "network")
MetricsHook = Callable[[str, "int | str"], None]


def _no_metrics(method: str, status: int | str) -> None:
    return None


@functools.lru_cache(maxsize=1)
def _calendar_discovery_document() -> dict[str, Any]:
    """The bundled calendar v3 discovery document, read and parsed once per process."""
    text = discovery_cache.get_static_doc("calendar", "v3")
    if text is None:  # pragma: no cover - broken installation
        raise RuntimeError("google-api-python-client lacks the bundled calendar v3 document")
    return json.loads(text)


class CalendarResources:
    """The discovery-based Calendar service with its collections built once.

    googleapiclient builds a new ``Resource`` on every ``service.events()`` — every method of
    the collection, each with a docstring rendered from the schema. Per call that was about a
    quarter of the sync engine's CPU per meeting (py-spy, backfill benchmark). The collections
    are immutable once built (a method call makes a new ``HttpRequest``), so one set is shared
    by all doctors and threads; requests are executed with a per-call authorized ``http``.
    """

    def __init__(self, service: discovery.Resource) -> None:
        self.service = service
        self._events = service.events()
        self._calendars = service.calendars()
        self._channels = service.channels()

    def events(self) -> discovery.Resource:
        return self._events

    def calendars(self) -> discovery.Resource:
        return self._calendars

    def channels(self) -> discovery.Resource:
        return self._channels


@functools.lru_cache(maxsize=8)
def calendar_service(api_endpoint: str) -> CalendarResources:
    """The Calendar service for ``api_endpoint`` (root URL), built once per process.

    The service itself never carries credentials (its ``http`` is a placeholder).
    """
    root = api_endpoint if api_endpoint.endswith("/") else api_endpoint + "/"
    return CalendarResources(discovery.build_from_document(
        _calendar_discovery_document(),
        http=httplib2.Http(),  # placeholder, never used: every execute() passes its own http
        client_options={"api_endpoint": root + "calendar/v3/"},
    ))


class GoogleApi:
    """Process-wide Google wiring: one per process (the web app and scheduler share it)."""

    def __init__(
        self,
        api_endpoint: str = "https://www.googleapis.com/",
        *,
        limiter: RateLimiter | None = None,
        retry: RetryPolicy | None = None,
        metrics: MetricsHook | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        clock: Clock | None = None,
    ) -> None:
        self.api_endpoint = api_endpoint
        self.limiter = limiter or RateLimiter(clock=clock)
        self.retry = retry or RetryPolicy()
        self.metrics: MetricsHook = metrics or _no_metrics
        self.timeout = timeout
        self._local = threading.local()

    @classmethod
    def from_settings(cls, settings: Settings, *, clock: Clock | None = None,
                      app_metrics: Metrics | None = None, **kwargs: Any) -> GoogleApi:
        """Endpoint, timeout and per-doctor budget from ``[google]`` and ``[sync]``; with
        ``app_metrics``, calls and retries are counted in ``kcsc_google_calls`` /
        ``kcsc_google_retries``."""
        kwargs.setdefault("limiter", RateLimiter(settings.sync.per_doctor_calls_per_minute,
                                                 clock=clock))
        kwargs.setdefault("timeout", settings.google.request_timeout)
        if app_metrics is not None:
            kwargs.setdefault("metrics", app_metrics.google_call)
            kwargs.setdefault("retry", RetryPolicy(on_retry=lambda err: app_metrics.google_retries
                                                   .labels(reason=retry_reason(err)).inc()))
        return cls(settings.google.api_endpoint, clock=clock, **kwargs)

    @property
    def service(self) -> CalendarResources:
        return calendar_service(self.api_endpoint)

    def http(self) -> httplib2.Http:
        """This thread's plain ``httplib2.Http`` (kept per thread: httplib2 is not thread-safe)."""
        h = getattr(self._local, "http", None)
        if h is None:
            h = httplib2.Http(timeout=self.timeout)
            self._local.http = h
        return h

    def drop_http(self) -> None:
        """Forget this thread's ``Http`` (after a broken connection); the next call makes one."""
        self._local.http = None

    def calendar(self, auth: CredentialSource, *, retry: RetryPolicy | None = None
                 ) -> CalendarClient:
        """A client for one doctor; ``retry`` overrides the process-wide policy (e.g. a single
        attempt for a best-effort call made while a browser waits)."""
        return CalendarClient(self, auth, retry=retry)


# --------------------------------------------------------------------------------------------
# Calendar calls for one doctor
# --------------------------------------------------------------------------------------------

RequestFactory = Callable[[CalendarResources], Any]


class CalendarClient:
    """Calendar v3 calls on behalf of one doctor; every method returns Google's raw dicts."""

    def __init__(self, api: GoogleApi, auth: CredentialSource, *,
                 retry: RetryPolicy | None = None) -> None:
        self._api = api
        self._auth = auth
        self._retry = retry or api.retry

    @property
    def doctor_id(self) -> int:
        return self._auth.doctor_id

    # -- the one execution path --------------------------------------------------------------

    def _call(self, method: str, build: RequestFactory) -> Any:
        return self._retry.run(lambda: self._attempt(method, build),
                                   what=f"{method} (doctor {self.doctor_id})")

    def _attempt(self, method: str, build: RequestFactory) -> Any:
        creds = self._auth.credentials()
        try:
            return self._send(method, build, creds)
        except HttpError as err:
            if err.resp.status != 401:
                raise self._translated(err) from err
        # The access token was rejected although we thought it valid (revoked, or refreshed
        # elsewhere and invalidated): one forced refresh, then one more try.
        creds = self._auth.refresh_after_unauthorized(creds.token)
        try:
            return self._send(method, build, creds)
        except HttpError as err:
            if err.resp.status == 401:
                self._auth.revoked("Google rejected a freshly refreshed access token")
                raise AuthRevoked("401 authError: rejected right after a refresh",
                                  status=401, reason="authError") from err
            raise self._translated(err) from err

    def _translated(self, err: HttpError) -> GoogleError:
        mapped = translate_http_error(err)
        if isinstance(mapped, AuthRevoked):
            self._auth.revoked(f"calendar permission missing ({mapped.reason or mapped.status})")
        return mapped

    def _send(self, method: str, build: RequestFactory, creds: Credentials) -> Any:
        self._api.limiter.wait(self.doctor_id)
        authed = google_auth_httplib2.AuthorizedHttp(
            creds, http=self._api.http(), refresh_status_codes=())
        try:
            result = build(self._api.service).execute(http=authed, num_retries=0)
        except HttpError as err:
            self._api.metrics(method, int(err.resp.status))
            raise
        except TRANSPORT_ERRORS as err:
            self._api.metrics(method, "network")
            # A broken connection may leave the per-thread Http unusable: start a new one.
            self._api.drop_http()
            raise translate_transport_error(err) from err
        self._api.metrics(method, 200)
        return result

    # -- API methods ---------------------------------------------------------------------------

    def get_calendar(self, calendar_id: str = "primary") -> dict[str, Any]:
        """``calendars.get``: the calendar's metadata. For ``primary`` Google answers with the
        calendar's real id, which is the account's e-mail address."""
        return self._call("calendars.get", lambda s: s.calendars().get(calendarId=calendar_id))

    def insert_event(self, calendar_id: str, body: dict[str, Any], conference: bool = True,
                     send_updates: str | None = None) -> dict[str, Any]:
        """``events.insert``; ``conference`` sends conferenceDataVersion=1 (Meet requests)."""
        params: dict[str, Any] = {"calendarId": calendar_id, "body": body,
                                  "conferenceDataVersion": 1 if conference else 0}
        if send_updates is not None:
            params["sendUpdates"] = send_updates
        return self._call("events.insert", lambda s: s.events().insert(**params))

    def get_event(self, calendar_id: str, event_id: str) -> dict[str, Any]:
        return self._call("events.get",
                          lambda s: s.events().get(calendarId=calendar_id, eventId=event_id))

    def patch_event(self, calendar_id: str, event_id: str, body: dict[str, Any],
                    conference: bool = True, send_updates: str | None = None) -> dict[str, Any]:
        """``events.patch`` (merge); ``conference`` keeps conferenceData changes effective."""
        params: dict[str, Any] = {"calendarId": calendar_id, "eventId": event_id, "body": body,
                                  "conferenceDataVersion": 1 if conference else 0}
        if send_updates is not None:
            params["sendUpdates"] = send_updates
        return self._call("events.patch", lambda s: s.events().patch(**params))

    def delete_event(self, calendar_id: str, event_id: str,
                     send_updates: str | None = None) -> None:
        """``events.delete``; a second delete raises ``Gone``."""
        params: dict[str, Any] = {"calendarId": calendar_id, "eventId": event_id}
        if send_updates is not None:
            params["sendUpdates"] = send_updates
        self._call("events.delete", lambda s: s.events().delete(**params))

    def list_events(
        self,
        calendar_id: str,
        sync_token: str | None = None,
        page_token: str | None = None,
        *,
        time_min: str | None = None,
        time_max: str | None = None,
        max_results: int | None = None,
        show_deleted: bool | None = None,
        single_events: bool | None = None,
        private_extended_property: list[str] | None = None,
        updated_min: str | None = None,
    ) -> dict[str, Any]:
        """One page of ``events.list`` as Google's raw dict (``items``, ``nextPageToken``,
        ``nextSyncToken``). A stale ``sync_token`` raises ``SyncTokenExpired``."""
        params: dict[str, Any] = {"calendarId": calendar_id}
        optional = {
            "syncToken": sync_token, "pageToken": page_token, "timeMin": time_min,
            "timeMax": time_max, "maxResults": max_results, "showDeleted": show_deleted,
            "singleEvents": single_events, "privateExtendedProperty": private_extended_property,
            "updatedMin": updated_min,
        }
        params.update({k: v for k, v in optional.items() if v is not None})
        return self._call("events.list", lambda s: s.events().list(**params))

    def watch(self, calendar_id: str, channel_id: str, token: str, address: str,
              ttl: int | None = None) -> dict[str, Any]:
        """``events.watch``: open a push channel; returns id, resourceId, expiration (ms)."""
        body: dict[str, Any] = {"id": channel_id, "type": "web_hook", "address": address,
                                "token": token}
        if ttl is not None:
            body["params"] = {"ttl": str(int(ttl))}
        return self._call("events.watch",
                          lambda s: s.events().watch(calendarId=calendar_id, body=body))

    def stop_channel(self, channel_id: str, resource_id: str) -> None:
        """``channels.stop``; an unknown channel raises ``NotFound``."""
        body = {"id": channel_id, "resourceId": resource_id}
        self._call("channels.stop", lambda s: s.channels().stop(body=body))
