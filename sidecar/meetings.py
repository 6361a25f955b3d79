"""Appointment → Google event: pure functions, no I/O.

Owns what the sidecar *sends* to Google for one KiviCare appointment and how it reads the answer
back: the event body (summary, description, times with zone, Meet conference request), the
deterministic event and conference-request ids that make retries idempotent, the fingerprint that
says "Google needs an update", the status → desired-state table, and the mapping-table row in the
exact shape the PHP add-on reads.

Event ids (Google allows base32hex ``0-9a-v``, 5–1024 chars, unique per calendar)::

    event_id = "kcsc" + base32hex(sha256("kcsc-event\\0" + site_key + "\\0" + appointment_id
                                          + "\\0" + version))[:32], lower case

``site_key`` (see :func:`site_key_for`) hashes the site's host and path, blog id and table
prefix, so two sites sharing a doctor's Google calendar never collide; ``version`` moves on only
when an event deleted on Google's side must be recreated (a deleted id stays taken: 409). The
``kcsc`` prefix is inside the alphabet and marks our events for humans; 160 hash bits follow.

Templates use ``{services}``, ``{patient}``, ``{doctor}``, ``{clinic}``, ``{appointment_id}``,
``{description}``, ``{date}`` and ``{time}``. Substitution is one explicit pass over the template:
values are never re-scanned, so a patient called ``{doctor}`` stays ``{doctor}``; ``str.format``
is never used on anything. The summary is plain text; in the description (which Google renders
as HTML) substituted values are HTML-escaped while the operator's template is kept as written.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

from sidecar.timezones import ResolvedZone, localize, rfc3339, site_local_stamp

DEFAULT_SUMMARY_TEMPLATE = "{services}"
DEFAULT_DESCRIPTION_TEMPLATE = "{services}"
FALLBACK_TOPIC = "Telemedical Consultation"  # the add-on's topic when no service names exist
DEFAULT_DURATION = timedelta(minutes=30)  # only when KiviCare left the end empty

SUMMARY_MAX_CHARS = 300
DESCRIPTION_MAX_BYTES = 8 * 1024
LOCATION_MAX_CHARS = 1024
VALUE_MAX_CHARS = 8 * 1024  # any one placeholder value, before rendering
ELLIPSIS = "…"

EVENT_ID_PREFIX = "kcsc"
EVENT_ID_HASH_CHARS = 32
FINGERPRINT_VERSION = 1

AttendeesPolicy = Literal["none", "patient"]
Desired = Literal["present", "wait", "absent", "leave"]
MeetStatus = Literal["pending", "success", "failure", "none"]

STATUS_CANCELLED, STATUS_BOOKED, STATUS_PENDING, STATUS_CHECK_OUT, STATUS_CHECK_IN = 0, 1, 2, 3, 4


class AppointmentDataError(ValueError):
    """The appointment row cannot be turned into an event (missing or inverted times)."""


# --- the appointment ------------------------------------------------------------------------


def _as_date(value: object) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        if value.startswith("0000-00-00"):
            return None
        return date.fromisoformat(value.strip()[:10])
    raise TypeError(f"not a date: {value!r}")


def _as_time(value: object) -> time | None:
    if value is None or value == "":
        return None
    if isinstance(value, time):
        return value.replace(tzinfo=None)
    if isinstance(value, timedelta):  # PyMySQL returns TIME columns as timedelta
        seconds = int(value.total_seconds())
        if not 0 <= seconds < 86400:
            raise ValueError(f"time of day out of range: {value!r}")
        return time(seconds // 3600, seconds % 3600 // 60, seconds % 60)
    if isinstance(value, str):
        return time.fromisoformat(value.strip())
    raise TypeError(f"not a time: {value!r}")


def _as_utc(value: object) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        if value.startswith("0000-00-00"):
            return None
        value = datetime.fromisoformat(value.strip())
    if not isinstance(value, datetime):
        raise TypeError(f"not a datetime: {value!r}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True)
class Appointment:
    """One ``kc_appointments`` row plus the names the event text needs.

    Dates and times may be given as ``date``/``time`` objects, ISO strings, or (times) the
    ``timedelta`` PyMySQL returns for TIME columns; they are normalised on construction.
    ``start_utc``/``end_utc`` (v4 ``appointment_*_utc``, naive = UTC) are used only when the
    local columns are empty, because query-builder updates in KiviCare can leave them stale.
    """

    id: int
    doctor_id: int
    patient_id: int
    clinic_id: int
    start_date: date | None
    start_time: time | None
    end_date: date | None
    end_time: time | None
    status: int
    description: str = ""
    appointment_timezone: str | None = None
    start_utc: datetime | None = None
    end_utc: datetime | None = None
    service_names: Sequence[str] = field(default_factory=tuple)
    patient_name: str = ""
    patient_email: str = ""
    doctor_name: str = ""
    clinic_name: str = ""
    clinic_address: str = ""

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "start_date", _as_date(self.start_date))
        put(self, "end_date", _as_date(self.end_date))
        put(self, "start_time", _as_time(self.start_time))
        put(self, "end_time", _as_time(self.end_time))
        put(self, "start_utc", _as_utc(self.start_utc))
        put(self, "end_utc", _as_utc(self.end_utc))
        put(self, "service_names", tuple(str(s) for s in self.service_names if s))
        for name in ("description", "patient_name", "patient_email", "doctor_name",
                     "clinic_name", "clinic_address"):
            value = getattr(self, name)
            put(self, name, "" if value is None else str(value))


def _wall_duration(appt: Appointment) -> timedelta | None:
    if None in (appt.start_date, appt.start_time, appt.end_time):
        return None
    assert appt.start_date is not None and appt.start_time is not None
    assert appt.end_time is not None
    wall_start = datetime.combine(appt.start_date, appt.start_time)
    wall_end = datetime.combine(appt.end_date or appt.start_date, appt.end_time)
    return wall_end - wall_start


def appointment_window(appt: Appointment, zone: ResolvedZone) -> tuple[datetime, datetime]:
    """Start and end as aware datetimes in ``zone`` (PHP DST rules, see ``timezones``)."""
    if appt.start_date is not None and appt.start_time is not None:
        start = localize(appt.start_date, appt.start_time, zone)
    elif appt.start_utc is not None:
        start = appt.start_utc.astimezone(zone.tzinfo)
    else:
        raise AppointmentDataError(f"appointment {appt.id} has no start date and time")
    if appt.end_time is not None:
        end = localize(appt.end_date or appt.start_date or start.date(), appt.end_time, zone)
    elif appt.end_utc is not None:
        end = appt.end_utc.astimezone(zone.tzinfo)
    else:
        end = (start.astimezone(UTC) + DEFAULT_DURATION).astimezone(zone.tzinfo)
    if end.astimezone(UTC) < start.astimezone(UTC):
        # A start inside a spring-forward gap moves forward (PHP rule) and may pass a wall-clock
        # end within the gap: keep the booked wall-clock duration instead of inverting the event.
        booked = _wall_duration(appt)
        if booked is not None and booked >= timedelta(0):
            end = (start.astimezone(UTC) + booked).astimezone(zone.tzinfo)
            return start, end
        raise AppointmentDataError(
            f"appointment {appt.id} ends ({rfc3339(end)}) before it starts ({rfc3339(start)})"
        )
    return start, end


# --- ids -----------------------------------------------------------------------------------


def site_key_for(site_url: str, blog_id: int = 1, table_prefix: str = "wp_") -> str:
    """A stable key for one WordPress site (one blog of a network).

    The scheme is ignored (an http → https move keeps the key); host is lower-cased, default
    ports and a trailing slash dropped.
    """
    parts = urlsplit(site_url.strip() if "//" in site_url else "//" + site_url.strip())
    host = (parts.hostname or "").lower()
    if not host:
        raise ValueError(f"site URL without a host: {site_url!r}")
    port = parts.port
    netloc = host if port in (None, 80, 443) else f"{host}:{port}"
    path = parts.path.rstrip("/")
    raw = f"{netloc}{path}\0{int(blog_id)}\0{table_prefix}"
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32]


def event_id_for(site_key: str, appointment_id: int, version: int = 0) -> str:
    """Deterministic Google event id (base32hex, 36 chars) for one appointment of one site."""
    if not site_key:
        raise ValueError("site_key must not be empty")
    if isinstance(appointment_id, bool) or int(appointment_id) < 1:
        raise ValueError(f"appointment id must be a positive integer: {appointment_id!r}")
    if isinstance(version, bool) or int(version) < 0:
        raise ValueError(f"event version must be >= 0: {version!r}")
    raw = f"kcsc-event\0{site_key}\0{int(appointment_id)}\0{int(version)}".encode()
    digest = base64.b32hexencode(hashlib.sha256(raw).digest()).decode("ascii").lower()
    return EVENT_ID_PREFIX + digest[:EVENT_ID_HASH_CHARS]


_EVENT_ID_RE = re.compile(r"[0-9a-v]{5,1024}")


def is_valid_event_id(value: object) -> bool:
    """True when Google accepts ``value`` as a client-chosen event id."""
    return isinstance(value, str) and _EVENT_ID_RE.fullmatch(value) is not None


def conference_request_id(event_id: str, attempt: int = 0) -> str:
    """Same (event, attempt) → same id, so Google ignores a repeated create request; a new
    attempt (after ``failure``) gets a new one."""
    if isinstance(attempt, bool) or int(attempt) < 0:
        raise ValueError(f"conference attempt must be >= 0: {attempt!r}")
    return f"{event_id}-meet-{int(attempt)}"


# --- text ----------------------------------------------------------------------------------

# C0/C1 controls except tab and newline; bidi embeddings/overrides/isolates (display spoofing);
# lone surrogates (cannot be encoded as UTF-8, would break the HTTP request).
_UNSAFE_RE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
_PLACEHOLDER_RE = re.compile(r"\{([a-z_]+)\}")
_SPACES_RE = re.compile(r"\s+")


def clean_text(value: object, max_chars: int = VALUE_MAX_CHARS) -> str:
    """Drop characters that must not reach Google; ``\\r\\n`` → ``\\n``; cap the length."""
    text = "" if value is None else str(value)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _UNSAFE_RE.sub(lambda m: "" if m.group() < "\ud800" else "\ufffd", text)
    return text[:max_chars]


def render_template(template: str, values: Mapping[str, str]) -> str:
    """Replace ``{name}`` for known names in one pass; unknown placeholders stay as written."""

    def swap(match: re.Match[str]) -> str:
        name = match.group(1)
        return values[name] if name in values else match.group(0)

    return _PLACEHOLDER_RE.sub(swap, template)


def truncate_chars(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    return text[: max_chars - len(ELLIPSIS)].rstrip() + ELLIPSIS


def truncate_bytes(text: str, max_bytes: int) -> str:
    """Cut to at most ``max_bytes`` UTF-8 bytes on a character boundary, ellipsis included,
    without splitting an HTML character reference."""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    budget = max_bytes - len(ELLIPSIS.encode("utf-8"))
    cut = data[:budget].decode("utf-8", errors="ignore")
    amp = cut.rfind("&", max(0, len(cut) - 12))
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut.rstrip() + ELLIPSIS


def topic(appt: Appointment) -> str:
    """Service names joined with ``', '`` (the add-on's topic), or the add-on's fallback."""
    names = [clean_text(n, 200).strip() for n in appt.service_names]
    names = [n for n in names if n]
    return ", ".join(names) if names else FALLBACK_TOPIC


def _template_values(appt: Appointment, start: datetime) -> dict[str, str]:
    return {
        "services": topic(appt),
        "patient": clean_text(appt.patient_name),
        "doctor": clean_text(appt.doctor_name),
        "clinic": clean_text(appt.clinic_name),
        "appointment_id": str(int(appt.id)),
        "description": clean_text(appt.description),
        "date": start.strftime("%Y-%m-%d"),
        "time": start.strftime("%H:%M"),
    }


def render_summary(template: str, values: Mapping[str, str]) -> str:
    flat = {k: _SPACES_RE.sub(" ", v) for k, v in values.items()}
    text = _SPACES_RE.sub(" ", clean_text(render_template(template, flat), 64 * 1024)).strip()
    return truncate_chars(text, SUMMARY_MAX_CHARS) or FALLBACK_TOPIC


def render_description(template: str, values: Mapping[str, str]) -> str:
    escaped = {k: html.escape(v, quote=False) for k, v in values.items()}
    text = clean_text(render_template(template, escaped), 64 * 1024).strip()
    return truncate_bytes(text, DESCRIPTION_MAX_BYTES)


_EMAIL_RE = re.compile(r"[^@\s<>,;:\"()\[\]\\]+@[^@\s<>,;:\"()\[\]\\]+\.[^@\s<>,;:\"()\[\]\\]+")


def is_plausible_email(value: str) -> bool:
    return len(value) <= 254 and _EMAIL_RE.fullmatch(value) is not None


# --- event body ----------------------------------------------------------------------------


def _when(moment: datetime, zone: ResolvedZone) -> dict[str, str]:
    when = {"dateTime": rfc3339(moment)}
    google_zone = zone.google_time_zone
    if google_zone is not None:
        when["timeZone"] = google_zone
    return when


def time_patch(appt: Appointment, zone: ResolvedZone) -> dict[str, Any]:
    """The ``start``/``end`` part of a reschedule PATCH."""
    start, end = appointment_window(appt, zone)
    return {"start": _when(start, zone), "end": _when(end, zone)}


def build_event_body(
    appt: Appointment,
    zone: ResolvedZone,
    *,
    event_id: str,
    summary_template: str = DEFAULT_SUMMARY_TEMPLATE,
    description_template: str = DEFAULT_DESCRIPTION_TEMPLATE,
    attendees_policy: AttendeesPolicy = "none",
    conference_attempt: int = 0,
    with_conference: bool = True,
) -> dict[str, Any]:
    """Body for ``events.insert`` (send with ``conferenceDataVersion=1``).

    Raises :class:`AppointmentDataError` when the times are unusable and ``ValueError`` for an
    invalid ``event_id`` or ``attendees_policy``.
    """
    if not is_valid_event_id(event_id):
        raise ValueError(f"invalid Google event id {event_id!r}: base32hex (0-9a-v), 5-1024 chars")
    if attendees_policy not in ("none", "patient"):
        raise ValueError(f"attendees policy must be 'none' or 'patient', not {attendees_policy!r}")
    start, end = appointment_window(appt, zone)
    values = _template_values(appt, start)
    body: dict[str, Any] = {
        "id": event_id,
        "summary": render_summary(summary_template, values),
        "description": render_description(description_template, values),
        "start": _when(start, zone),
        "end": _when(end, zone),
        "extendedProperties": {"private": {"kcsc_appointment_id": str(int(appt.id))}},
    }
    if with_conference:
        body["conferenceData"] = {
            "createRequest": {
                "requestId": conference_request_id(event_id, conference_attempt),
                "conferenceSolutionKey": {"type": "hangoutsMeet"},
            }
        }
    lines = clean_text(appt.clinic_address, 64 * 1024).split("\n")
    location = ", ".join(_SPACES_RE.sub(" ", line).strip() for line in lines if line.strip())
    if location:
        body["location"] = truncate_chars(location, LOCATION_MAX_CHARS)
    email = appt.patient_email.strip()
    if attendees_policy == "patient" and is_plausible_email(email):
        attendee = {"email": email}
        name = _SPACES_RE.sub(" ", clean_text(appt.patient_name, 200)).strip()
        if name:
            attendee["displayName"] = name
        body["attendees"] = [attendee]
    return body


# --- change detection and lifecycle ---------------------------------------------------------


def fingerprint(appt: Appointment, zone_label: str, telemed: bool, *, extra: str = "") -> str:
    """Stable hash of everything whose change means the Google event must be updated.

    ``extra`` lets callers fold in settings that shape the body (templates, attendee policy).
    """
    payload = [
        FINGERPRINT_VERSION,
        appt.start_date.isoformat() if appt.start_date else None,
        appt.start_time.isoformat() if appt.start_time else None,
        appt.end_date.isoformat() if appt.end_date else None,
        appt.end_time.isoformat() if appt.end_time else None,
        appt.start_utc.isoformat() if appt.start_utc else None,
        appt.end_utc.isoformat() if appt.end_utc else None,
        zone_label,
        int(appt.doctor_id),
        None if appt.status is None else str(appt.status).strip(),
        list(appt.service_names),
        appt.patient_name,
        appt.patient_email,
        appt.doctor_name,
        appt.clinic_name,
        appt.clinic_address,
        appt.description,
        bool(telemed),
        extra,
    ]
    raw = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(raw.encode("utf-8", errors="surrogatepass")).hexdigest()


def classify(status: object, is_past: bool) -> Desired:
    """KiviCare status → what the Google side should look like.

    ``present``: the event must exist (1 booked, 4 checked in). ``wait``: not yet (2 pending
    payment) — and any unknown code, so nothing is created or deleted on a guess. ``absent``:
    delete the event (0 cancelled, still upcoming). ``leave``: touch nothing (3 checked out, or
    0 in the past — KiviCare's nightly auto-close cancels finished appointments, which must not
    delete their history).
    """
    try:
        code = int(str(status).strip())
    except ValueError:
        return "wait"
    if code in (STATUS_BOOKED, STATUS_CHECK_IN):
        return "present"
    if code == STATUS_CANCELLED:
        return "leave" if is_past else "absent"
    if code == STATUS_CHECK_OUT:
        return "leave"
    return "wait"


# --- reading Google's answer ----------------------------------------------------------------


@dataclass(frozen=True)
class MeetInfo:
    status: MeetStatus
    url: str | None
    html_link: str | None
    conference_id: str | None


def _video_uri(conference: Mapping[str, Any]) -> str | None:
    for entry in conference.get("entryPoints") or ():
        if isinstance(entry, Mapping) and entry.get("entryPointType") == "video":
            uri = entry.get("uri")
            if isinstance(uri, str):
                return uri
    return None


def extract_meet(event: Mapping[str, Any]) -> MeetInfo:
    """Meet state of an event resource.

    A usable Meet link means ``success`` whatever the status says. Google's ``success`` without
    any link is reported as ``failure`` (nothing a patient could join; retry with a new request
    id). A create request without a status yet is ``pending``.
    """
    conference = event.get("conferenceData")
    conference = conference if isinstance(conference, Mapping) else {}
    link = event.get("hangoutLink")
    url = link if isinstance(link, str) and is_valid_url(link) else None
    if url is None:
        uri = _video_uri(conference)
        url = uri if uri and is_valid_url(uri) else None
    html_link = event.get("htmlLink") if isinstance(event.get("htmlLink"), str) else None
    conference_id = conference.get("conferenceId")
    conference_id = conference_id if isinstance(conference_id, str) else None
    request = conference.get("createRequest")
    code = None
    if isinstance(request, Mapping):
        status = request.get("status")
        if isinstance(status, Mapping):
            code = status.get("statusCode")
    if url is not None:
        return MeetInfo("success", url, html_link, conference_id)
    if code in ("failure", "success"):
        return MeetInfo("failure", None, html_link, conference_id)
    if code == "pending" or isinstance(request, Mapping):
        return MeetInfo("pending", None, html_link, conference_id)
    return MeetInfo("none", None, html_link, conference_id)


# --- the PHP-side mapping row --------------------------------------------------------------

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


def is_valid_url(value: object) -> bool:
    """A loose PHP ``FILTER_VALIDATE_URL``: http(s), a host, no whitespace or controls."""
    if not isinstance(value, str) or not value or len(value) > 2048:
        return False
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        return False
    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        return False
    if parts.scheme.lower() not in ("http", "https") or not host:
        return False
    return bool(_HOST_RE.fullmatch(host)) or (host.count(":") >= 2 and "[" in parts.netloc)


def is_valid_mapping_row(event_id: object, url: object) -> bool:
    """Whether a ``kc_appointment_google_meet_mappings`` row describes a real meeting.

    GM4 writes error sentinels (``event_id = -1``, ``url = -1``); those and rows whose ``url``
    is not a URL are ignored, like PRO4 and ``kc_is_video_consultation`` do.
    """
    text = "" if event_id is None else str(event_id).strip()
    return bool(text) and text != "-1" and is_valid_url(url)


def mapping_row_values(
    appointment_id: int,
    event: Mapping[str, Any],
    *,
    now: datetime,
    site_zone: ResolvedZone,
) -> dict[str, Any]:
    """The mapping row as the PHP add-on writes and reads it (``save_google_meet_record``).

    ``created_at`` is explicit and site-local (``current_time('mysql')``): shape (b)/(c) tables
    declare it NOT NULL without default. Drop keys the table lacks (shape (a) has no
    ``created_at``). Raises ``ValueError`` when the event has no Meet link yet: PHP validates
    ``url`` as a URL, so a row without one must not be written.
    """
    meet = extract_meet(event)
    event_id = event.get("id")
    if not isinstance(event_id, str) or not event_id:
        raise ValueError("event without an id")
    if meet.url is None:
        raise ValueError(f"event {event_id} has no Meet link yet (conference {meet.status})")
    return {
        "event_id": event_id,
        "appointment_id": int(appointment_id),
        "url": meet.url,
        "password": "",
        "event_url": meet.html_link if is_valid_url(meet.html_link) else None,
        "created_at": site_local_stamp(now, site_zone),
    }


def only_columns(values: Mapping[str, Any], columns: Iterable[str]) -> dict[str, Any]:
    """Keep the keys a concrete mapping-table shape has."""
    wanted = set(columns)
    return {k: v for k, v in values.items() if k in wanted}
