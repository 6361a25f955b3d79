"""Zone resolution order, offset spellings, Google timeZone mapping, and PHP-exact DST handling."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, date, datetime, time, timedelta

import pytest

from sidecar.timezones import (
    localize,
    parse_gmt_offset,
    parse_zone,
    resolve_site_zone,
    resolve_zone,
    rfc3339,
    site_local_stamp,
)


def at(zone_value: str, day: str, clock: str) -> str:
    zone = parse_zone(zone_value)
    assert zone is not None
    return rfc3339(localize(date.fromisoformat(day), time.fromisoformat(clock), zone))


# --- resolution order ---------------------------------------------------------------------


def test_appointment_zone_wins_over_doctor_and_site():
    zone = resolve_zone("Asia/Kolkata", "Europe/Berlin", "America/New_York", 2)
    assert (zone.label, zone.source) == ("Asia/Kolkata", "appointment")


def test_explicit_utc_in_appointment_column_is_respected():
    # v4's column default is 'UTC'; it is an explicit value, not "unset".
    zone = resolve_zone("UTC", "Europe/Berlin", "America/New_York", None)
    assert (zone.label, zone.source, zone.google_time_zone) == ("UTC", "appointment", "UTC")


@pytest.mark.parametrize("empty", [None, "", "   ", "Not/AZone", "+25:00", "UTC+5:75"])
def test_unusable_appointment_zone_falls_back_to_doctor(empty):
    zone = resolve_zone(empty, "Europe/Berlin", "America/New_York", None)
    assert (zone.label, zone.source) == ("Europe/Berlin", "doctor")


def test_doctor_zone_differs_from_site_zone():
    zone = resolve_zone(None, "America/New_York", "Europe/Berlin", None)
    start = localize(date(2026, 6, 1), time(9, 0), zone)
    assert rfc3339(start) == "2026-06-01T09:00:00-04:00"
    assert zone.source == "doctor"


@pytest.mark.parametrize("doctor", ["+05:30", "UTC+2", "europe/berlin", 7, ""])
def test_doctor_meta_counts_only_when_valid_iana(doctor):
    zone = resolve_zone(None, doctor, "Europe/Berlin", None)
    assert (zone.label, zone.source) == ("Europe/Berlin", "site")


def test_gmt_offset_only_site():
    zone = resolve_zone(None, None, "", "5.5")
    assert (zone.label, zone.source, zone.iana) == ("+05:30", "gmt_offset", None)
    assert rfc3339(localize(date(2026, 3, 29), time(2, 30), zone)) == "2026-03-29T02:30:00+05:30"
    assert resolve_zone(None, None, "", -3.5).label == "-03:30"
    assert resolve_zone(None, None, None, "0").label == "+00:00"


@pytest.mark.parametrize("bad", ["", "abc", "nan", "inf", None, True, "99"])
def test_unusable_gmt_offset_means_utc(bad):
    zone = resolve_zone(None, None, None, bad)
    assert (zone.label, zone.source) == ("UTC", "default")


def test_site_zone_for_local_stamps():
    site = resolve_site_zone("Asia/Kolkata", None)
    moment = datetime(2026, 11, 28, 20, 0, tzinfo=UTC)
    assert site_local_stamp(moment, site) == "2026-11-29 01:30:00"
    assert site_local_stamp(moment, resolve_site_zone("", -3.5)) == "2026-11-28 16:30:00"


# --- offset spellings and Google timeZone -------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "label", "google"),
    [
        ("+05:30", "+05:30", None),
        ("+0530", "+05:30", None),
        ("-03:00", "-03:00", "Etc/GMT+3"),
        ("+05:00", "+05:00", "Etc/GMT-5"),
        ("UTC+5", "+05:00", "Etc/GMT-5"),
        ("UTC-4", "-04:00", "Etc/GMT+4"),
        ("UTC+5.5", "+05:30", None),
        ("UTC+5.75", "+05:45", None),
        ("UTC-9.5", "-09:30", None),
        ("UTC+5:45", "+05:45", None),
        ("UTC+0", "+00:00", "UTC"),
        ("+14:00", "+14:00", "Etc/GMT-14"),
        ("Asia/Kolkata", "Asia/Kolkata", "Asia/Kolkata"),
    ],
)
def test_offset_spellings_normalise(raw, label, google):
    zone = parse_zone(raw)
    assert zone is not None
    assert zone.label == label
    assert zone.google_time_zone == google


def test_kolkata_iana_and_offset_agree_on_the_instant():
    assert at("Asia/Kolkata", "2026-07-01", "10:15:00") == "2026-07-01T10:15:00+05:30"
    assert at("UTC+5.5", "2026-07-01", "10:15:00") == "2026-07-01T10:15:00+05:30"


def test_etc_gmt_names_really_mean_the_offset():
    # Guard against the inverted POSIX sign: Etc/GMT-5 must be UTC+5.
    zone = parse_zone("+05:00")
    iana = parse_zone(zone.google_time_zone)
    moment = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert iana.tzinfo.utcoffset(moment) == timedelta(hours=5)


# --- DST: the four 2026 switch dates --------------------------------------------------------


def test_berlin_spring_forward_gap_moves_forward():
    assert at("Europe/Berlin", "2026-03-29", "02:30:00") == "2026-03-29T03:30:00+02:00"
    assert at("Europe/Berlin", "2026-03-29", "01:59:00") == "2026-03-29T01:59:00+01:00"
    assert at("Europe/Berlin", "2026-03-29", "03:00:00") == "2026-03-29T03:00:00+02:00"


def test_berlin_fall_back_ambiguous_takes_standard_time_like_php():
    assert at("Europe/Berlin", "2026-10-25", "02:30:00") == "2026-10-25T02:30:00+01:00"
    assert at("Europe/Berlin", "2026-10-25", "01:59:00") == "2026-10-25T01:59:00+02:00"


def test_new_york_spring_forward_gap_moves_forward():
    assert at("America/New_York", "2026-03-08", "02:30:00") == "2026-03-08T03:30:00-04:00"
    assert at("America/New_York", "2026-03-08", "01:30:00") == "2026-03-08T01:30:00-05:00"


def test_new_york_fall_back_ambiguous_takes_daylight_time_like_php():
    assert at("America/New_York", "2026-11-01", "01:30:00") == "2026-11-01T01:30:00-04:00"
    assert at("America/New_York", "2026-11-01", "02:00:00") == "2026-11-01T02:00:00-05:00"


def test_hour_after_switch_is_one_hour_of_real_time():
    zone = parse_zone("Europe/Berlin")
    before = localize(date(2026, 3, 29), time(1, 0), zone)
    after = localize(date(2026, 3, 29), time(3, 0), zone)
    # Same-tzinfo subtraction in Python is wall-clock arithmetic; compare real instants.
    assert after.astimezone(UTC) - before.astimezone(UTC) == timedelta(hours=1)


def test_rfc3339_refuses_naive_datetimes():
    with pytest.raises(ValueError, match="aware"):
        rfc3339(datetime(2026, 1, 1))


def test_parse_gmt_offset_accepts_numbers_and_strings():
    assert parse_gmt_offset(5.75).label == "+05:45"
    assert parse_gmt_offset("-9.5").label == "-09:30"
    assert parse_gmt_offset(-15) is None


# --- against real PHP ------------------------------------------------------------------------

_PHP_SCRIPT = r"""
$cases = json_decode(stream_get_contents(STDIN), true);
$out = [];
foreach ($cases as [$z, $t]) {
    $d = new DateTime($t, new DateTimeZone($z));
    $out[] = $d->format('Y-m-d\TH:i:sP');
}
echo json_encode($out);
"""


def _switch_cases() -> list[tuple[str, str]]:
    switches = {
        "Europe/Berlin": ["2026-03-29", "2026-10-25"],
        "America/New_York": ["2026-03-08", "2026-11-01"],
        "Europe/London": ["2026-03-29", "2026-10-25"],
        "Australia/Sydney": ["2026-04-05", "2026-10-04"],
        "Australia/Lord_Howe": ["2026-04-05", "2026-10-04"],
        "America/Santiago": ["2026-04-04", "2026-04-05", "2026-09-06"],
        "Pacific/Chatham": ["2026-04-05", "2026-09-27"],
    }
    cases = []
    for zone, days in switches.items():
        for day in days:
            for minute in range(0, 24 * 60, 15):
                cases.append((zone, f"{day} {minute // 60:02d}:{minute % 60:02d}:00"))
    return cases


@pytest.mark.php
def test_localize_matches_php_datetime_around_every_switch():
    php = shutil.which("php")
    assert php, "php-cli is required for this test"
    cases = _switch_cases()
    result = subprocess.run(
        [php, "-r", _PHP_SCRIPT],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    expected = json.loads(result.stdout)
    ours = []
    for zone, stamp in cases:
        day, clock = stamp.split(" ")
        ours.append(at(zone, day, clock))
    mismatches = [(c, e, o) for c, e, o in zip(cases, expected, ours, strict=True) if e != o]
    assert mismatches == []
