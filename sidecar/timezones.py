"""Which time zone an appointment's wall-clock columns are in, and how to turn them into instants.

KiviCare stores appointments as local wall-clock dates and times (``appointment_start_date`` /
``appointment_start_time``); the zone they are local to is resolved in this order, the first
usable value winning:

1. ``kc_appointments.appointment_timezone`` (v4, 2026+; default ``'UTC'``, which counts as an
   explicit choice): an IANA name, ``±HH:MM``, or KiviCare's ``UTC±H`` / ``UTC±H.frac`` /
   ``UTC±H:MM`` spellings (normalised like KiviCare's ``formatTimezoneString``);
2. the doctor's ``timezone`` user meta when it is a valid IANA name (``kcGetDoctorTimezone``);
3. the site's ``timezone_string`` option (IANA);
4. the site's ``gmt_offset`` option (float hours, ``5.5`` → ``+05:30``, as ``wp_timezone_string``);
5. UTC.

An unusable value at one step (garbage, an unknown name) falls through to the next step.

Local → instant conversion follows PHP's ``new DateTime($local, $zone)`` exactly (timelib as
shipped with PHP ≥ 8.1, checked against php-cli in the tests), so the instant we send to Google
is the one KiviCare computes for its ``*_utc`` columns:

* a wall time inside a spring-forward gap moves forward by the gap (Berlin 02:30 → 03:30 CEST);
* an ambiguous fall-back wall time resolves by looking up the offset in force at the wall time
  read as UTC: zones west of UTC get the first (summer-time) occurrence (New York 01:30 → EDT),
  zones east of UTC the second (standard-time) one (Berlin 02:30 → CET). That asymmetry is
  PHP's, not ours; matching it keeps Google and KiviCare's UTC columns in agreement.

Google's ``timeZone`` field wants an IANA name. Fixed offsets with whole hours map to
``Etc/GMT∓H`` (POSIX sign inversion: ``+05:00`` is ``Etc/GMT-5``) and ``±00:00`` to ``UTC``; an
offset with minutes (``+05:30``) has no IANA equivalent, so ``timeZone`` is omitted and Google
relies on the offset written into ``dateTime``, which is always present.
"""

from __future__ import annotations

import functools
import math
import re
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from typing import Literal

ZoneSource = Literal["appointment", "doctor", "site", "gmt_offset", "default"]

MAX_OFFSET_MINUTES = 14 * 60  # the widest offset in use (Pacific/Kiritimati, +14:00)

_OFFSET_RE = re.compile(r"([+-])(\d{1,2}):?(\d{2})")
_UTC_HOURS_RE = re.compile(r"(?:UTC|GMT)([+-])(\d{1,2})(?:\.(\d{1,6}))?", re.IGNORECASE)
_UTC_HHMM_RE = re.compile(r"(?:UTC|GMT)([+-])(\d{1,2}):(\d{2})", re.IGNORECASE)
_UTC_ALIASES = frozenset({"Z", "z"})


@dataclass(frozen=True)
class ResolvedZone:
    """The zone an appointment's wall clock is in.

    ``iana`` is the IANA name, or ``None`` for a fixed offset; ``label`` is what we store and
    fingerprint (the IANA name, or ``±HH:MM``); ``source`` says which rule picked it.
    """

    tzinfo: tzinfo
    iana: str | None
    label: str
    source: ZoneSource = "default"

    @property
    def google_time_zone(self) -> str | None:
        """Value for Google's ``timeZone`` field, or ``None`` when it must be omitted."""
        if self.iana is not None:
            return self.iana
        minutes = _fixed_offset_minutes(self.tzinfo)
        if minutes == 0:
            return "UTC"
        if minutes % 60:
            return None
        hours = minutes // 60
        # POSIX-style names invert the sign: UTC+5 is "Etc/GMT-5".
        return f"Etc/GMT{-hours:+d}"


UTC_ZONE = ResolvedZone(UTC, "UTC", "UTC", "default")


@functools.lru_cache(maxsize=1)
def _iana_names() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def is_iana(name: object) -> bool:
    """True for a known IANA zone name (case-sensitive, like PHP's identifier list)."""
    return isinstance(name, str) and name in _iana_names()


def format_offset(minutes: int) -> str:
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{mins:02d}"


def _offset_zone(minutes: int, source: ZoneSource) -> ResolvedZone | None:
    if abs(minutes) > MAX_OFFSET_MINUTES:
        return None
    label = format_offset(minutes)
    return ResolvedZone(timezone(timedelta(minutes=minutes)), None, label, source)


def _parse_offset_minutes(text: str) -> int | None:
    """Minutes east of UTC for ``±HH:MM``/``±HHMM``/``UTC±H``/``UTC±H.frac``/``UTC±H:MM``."""
    m = _OFFSET_RE.fullmatch(text) or _UTC_HHMM_RE.fullmatch(text)
    if m:
        sign, hours, mins = m.group(1), int(m.group(2)), int(m.group(3))
        if mins >= 60:
            return None
        total = hours * 60 + mins
        return -total if sign == "-" else total
    m = _UTC_HOURS_RE.fullmatch(text)
    if m:
        sign, hours, frac = m.group(1), int(m.group(2)), m.group(3)
        mins = round(float("0." + frac) * 60) if frac else 0
        total = hours * 60 + mins
        return -total if sign == "-" else total
    return None


def parse_zone(value: object, source: ZoneSource = "appointment") -> ResolvedZone | None:
    """One explicit zone value → ``ResolvedZone``, or ``None`` when empty or unusable."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text:
        return None
    if text in _UTC_ALIASES:
        return ResolvedZone(UTC, "UTC", "UTC", source)
    if is_iana(text):
        return ResolvedZone(zoneinfo.ZoneInfo(text), text, text, source)
    minutes = _parse_offset_minutes(text)
    if minutes is None:
        return None
    return _offset_zone(minutes, source)


def parse_gmt_offset(value: object) -> ResolvedZone | None:
    """WordPress ``gmt_offset`` (float hours, maybe a string) → fixed-offset zone."""
    if value is None or isinstance(value, bool):
        return None
    try:
        hours = float(str(value).strip()) if not isinstance(value, int | float) else float(value)
    except ValueError:
        return None
    if not math.isfinite(hours):
        return None
    return _offset_zone(round(hours * 60), "gmt_offset")


def resolve_zone(
    appointment_timezone: str | None = None,
    doctor_timezone: object = None,
    timezone_string: object = None,
    gmt_offset: object = None,
) -> ResolvedZone:
    """Apply the resolution order of the module docstring.

    Pass ``appointment_timezone=None`` when the column does not exist (v3, older v4).
    ``doctor_timezone`` counts only when it is a valid IANA name, as in ``kcGetDoctorTimezone``.
    """
    zone = parse_zone(appointment_timezone, "appointment")
    if zone is not None:
        return zone
    if is_iana(doctor_timezone):
        name = str(doctor_timezone)
        return ResolvedZone(zoneinfo.ZoneInfo(name), name, name, "doctor")
    if is_iana(timezone_string):
        name = str(timezone_string)
        return ResolvedZone(zoneinfo.ZoneInfo(name), name, name, "site")
    zone = parse_gmt_offset(gmt_offset)
    if zone is not None:
        return zone
    return UTC_ZONE


def resolve_site_zone(timezone_string: object = None, gmt_offset: object = None) -> ResolvedZone:
    """The WordPress site zone (``wp_timezone()``): used for ``created_at``-style local stamps."""
    return resolve_zone(None, None, timezone_string, gmt_offset)


# --- wall clock → instant -------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1)
_TRANSITION_WINDOW = 2 * 86400  # look-behind for the start of an offset period (seconds)


def _fixed_offset_minutes(tz: tzinfo) -> int:
    offset = tz.utcoffset(None)
    if offset is None:  # a zone with rules has no single offset
        raise ValueError("not a fixed-offset zone")
    return int(offset.total_seconds()) // 60


def _offset_at(tz: tzinfo, ts: int) -> int:
    offset = datetime.fromtimestamp(ts, tz).utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0


def _period_start(tz: tzinfo, ts: int) -> int | None:
    """The UTC second at which the offset in force at ``ts`` began, if within the window."""
    offset = _offset_at(tz, ts)
    lo = ts - _TRANSITION_WINDOW
    if _offset_at(tz, lo) == offset:
        return None
    hi = ts
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset_at(tz, mid) == offset:
            hi = mid
        else:
            lo = mid
    return hi


def _php_utc_seconds(wall: datetime, tz: tzinfo) -> int:
    """timelib's ``do_adjust_timezone`` for a zone with rules: wall clock → Unix seconds."""
    sse = int((wall - _EPOCH).total_seconds())  # the wall clock read as if it were UTC
    current = _offset_at(tz, sse)
    actual = _offset_at(tz, sse - current)
    if current == actual:
        return sse - current
    transition = _period_start(tz, sse - current)
    in_transition = (
        transition is not None
        and sse - actual >= transition + (current - actual)
        and sse - actual < transition
    )
    return sse - (current if in_transition else actual)


def localize(day: date, clock: time, zone: ResolvedZone) -> datetime:
    """Wall-clock ``day`` + ``clock`` in ``zone`` → aware datetime, PHP ``DateTime`` semantics.

    The result carries ``zone.tzinfo`` so ``isoformat`` shows the offset of that instant.
    Python subtracts two datetimes sharing a tzinfo as wall clocks, so compute durations and
    comparisons on ``.astimezone(UTC)`` values.
    """
    wall = datetime.combine(day, clock.replace(tzinfo=None, fold=0))
    if zone.iana is None and isinstance(zone.tzinfo, timezone):
        return wall.replace(tzinfo=zone.tzinfo)
    seconds = _php_utc_seconds(wall.replace(microsecond=0), zone.tzinfo)
    instant = datetime.fromtimestamp(seconds, UTC) + timedelta(microseconds=wall.microsecond)
    return instant.astimezone(zone.tzinfo)


def rfc3339(moment: datetime) -> str:
    """``2026-03-29T03:30:00+02:00``: seconds precision, numeric offset (PHP ``Y-m-d\\TH:i:sP``)."""
    if moment.tzinfo is None:
        raise ValueError("rfc3339 needs an aware datetime")
    text = moment.replace(microsecond=0).isoformat(timespec="seconds")
    return text


def site_local_stamp(moment: datetime, site_zone: ResolvedZone) -> str:
    """``current_time('mysql')`` for ``moment``: naive ``YYYY-MM-DD HH:MM:SS`` in the site zone."""
    if moment.tzinfo is None:
        raise ValueError("site_local_stamp needs an aware datetime")
    return moment.astimezone(site_zone.tzinfo).strftime("%Y-%m-%d %H:%M:%S")
