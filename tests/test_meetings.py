"""Event bodies, ids, fingerprints, lifecycle table and mapping rows (pure, no I/O)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, time, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.meetings import (
    DESCRIPTION_MAX_BYTES,
    SUMMARY_MAX_CHARS,
    Appointment,
    AppointmentDataError,
    MeetInfo,
    build_event_body,
    classify,
    conference_request_id,
    event_id_for,
    extract_meet,
    fingerprint,
    is_valid_event_id,
    is_valid_mapping_row,
    is_valid_url,
    mapping_row_values,
    only_columns,
    site_key_for,
    time_patch,
)
from sidecar.timezones import parse_zone, resolve_site_zone, resolve_zone

SITE = site_key_for("https://clinic.example/", 1, "wp_")
BERLIN = parse_zone("Europe/Berlin")


def appt(**overrides) -> Appointment:
    base = dict(
        id=42,
        doctor_id=7,
        patient_id=9,
        clinic_id=1,
        start_date="2026-06-10",
        start_time="09:00:00",
        end_date="2026-06-10",
        end_time="09:30:00",
        status=1,
        description="Sore throat",
        service_names=["Video consult", "Follow-up"],
        patient_name="Ana Example",
        patient_email="ana@example.com",
        doctor_name="Dr. Bo",
        clinic_name="Clinic One",
        clinic_address="Main St 1\nBerlin",
    )
    base.update(overrides)
    return Appointment(**base)


def body(a: Appointment | None = None, zone=BERLIN, **kwargs) -> dict:
    a = a or appt()
    kwargs.setdefault("event_id", event_id_for(SITE, a.id))
    return build_event_body(a, zone, **kwargs)


# --- event body snapshots -------------------------------------------------------------------


def test_default_body_matches_the_add_on_shape():
    event_id = event_id_for(SITE, 42)
    assert body() == {
        "id": event_id,
        "summary": "Video consult, Follow-up",
        "description": "Video consult, Follow-up",
        "start": {"dateTime": "2026-06-10T09:00:00+02:00", "timeZone": "Europe/Berlin"},
        "end": {"dateTime": "2026-06-10T09:30:00+02:00", "timeZone": "Europe/Berlin"},
        "extendedProperties": {"private": {"kcsc_appointment_id": "42"}},
        "conferenceData": {
            "createRequest": {
                "requestId": f"{event_id}-meet-0",
                "conferenceSolutionKey": {"type": "hangoutsMeet"},
            }
        },
        "location": "Main St 1, Berlin",
    }


def test_body_with_templates_and_patient_attendee():
    result = body(
        summary_template="{services}: {patient} with {doctor} (#{appointment_id})",
        description_template="<p>{clinic}</p>\n{description} on {date} at {time}",
        attendees_policy="patient",
        conference_attempt=2,
    )
    assert result["summary"] == "Video consult, Follow-up: Ana Example with Dr. Bo (#42)"
    assert result["description"] == "<p>Clinic One</p>\nSore throat on 2026-06-10 at 09:00"
    assert result["attendees"] == [{"email": "ana@example.com", "displayName": "Ana Example"}]
    assert result["conferenceData"]["createRequest"]["requestId"].endswith("-meet-2")


def test_no_services_falls_back_to_telemedical_consultation():
    result = body(appt(service_names=[]))
    assert result["summary"] == result["description"] == "Telemedical Consultation"


def test_patient_attendee_skipped_without_a_usable_email():
    for email in ("", "not-an-email", "a@b", "x y@example.com"):
        assert "attendees" not in body(appt(patient_email=email), attendees_policy="patient")
    assert "attendees" not in body(attendees_policy="none")


def test_no_location_without_address():
    assert "location" not in body(appt(clinic_address="  \n "))


def test_offset_zone_omits_time_zone_unless_whole_hours():
    kolkata_offset = resolve_zone("UTC+5.5")
    result = body(zone=kolkata_offset)
    assert result["start"] == {"dateTime": "2026-06-10T09:00:00+05:30"}
    result = body(zone=resolve_zone("-03:00"))
    assert result["start"] == {"dateTime": "2026-06-10T09:00:00-03:00", "timeZone": "Etc/GMT+3"}


def test_body_rejects_bad_event_id_and_policy():
    with pytest.raises(ValueError, match="base32hex"):
        body(event_id="kcsc-wxyz")
    with pytest.raises(ValueError, match="attendees policy"):
        body(attendees_policy="everyone")


# --- times ----------------------------------------------------------------------------------


def test_time_patch_for_reschedule_across_dst():
    moved = appt(start_date="2026-10-25", start_time="02:30", end_date="2026-10-25",
                 end_time="03:30")
    assert time_patch(moved, BERLIN) == {
        "start": {"dateTime": "2026-10-25T02:30:00+01:00", "timeZone": "Europe/Berlin"},
        "end": {"dateTime": "2026-10-25T03:30:00+01:00", "timeZone": "Europe/Berlin"},
    }


def test_start_in_spring_gap_keeps_booked_duration():
    gap = appt(start_date="2026-03-29", start_time="02:30", end_date="2026-03-29",
               end_time="03:15")
    assert time_patch(gap, BERLIN) == {
        "start": {"dateTime": "2026-03-29T03:30:00+02:00", "timeZone": "Europe/Berlin"},
        "end": {"dateTime": "2026-03-29T04:15:00+02:00", "timeZone": "Europe/Berlin"},
    }


def test_pymysql_timedelta_times_and_date_objects():
    a = appt(start_date=date(2026, 6, 10), start_time=timedelta(hours=14, minutes=5),
             end_date=date(2026, 6, 10), end_time=timedelta(hours=14, minutes=35))
    assert a.start_time == time(14, 5)
    assert time_patch(a, BERLIN)["end"]["dateTime"] == "2026-06-10T14:35:00+02:00"


def test_missing_end_gets_default_duration_and_missing_local_uses_utc_columns():
    a = appt(end_date=None, end_time=None)
    assert time_patch(a, BERLIN)["end"]["dateTime"] == "2026-06-10T09:30:00+02:00"
    utc_only = appt(start_date=None, start_time=None, end_date=None, end_time=None,
                    start_utc="2026-06-10 07:00:00", end_utc=datetime(2026, 6, 10, 7, 45))
    patch = time_patch(utc_only, BERLIN)
    assert patch["start"]["dateTime"] == "2026-06-10T09:00:00+02:00"
    assert patch["end"]["dateTime"] == "2026-06-10T09:45:00+02:00"


def test_inverted_or_missing_times_are_precise_errors():
    with pytest.raises(AppointmentDataError, match=r"ends .* before it starts"):
        time_patch(appt(end_date="2026-06-09"), BERLIN)
    with pytest.raises(AppointmentDataError, match="no start"):
        time_patch(appt(start_date=None, start_time=None), BERLIN)
    with pytest.raises(AppointmentDataError, match="no start"):
        time_patch(appt(start_date="0000-00-00"), BERLIN)


def test_doctor_zone_not_site_zone_drives_the_instant():
    zone = resolve_zone(None, "America/New_York", "Europe/Berlin", None)
    assert body(zone=zone)["start"] == {
        "dateTime": "2026-06-10T09:00:00-04:00", "timeZone": "America/New_York"}


# --- hostile strings ------------------------------------------------------------------------


def test_braces_in_values_are_not_interpreted():
    hostile = appt(patient_name="{doctor} {0} {patient!r} {__class__}", description="{services}")
    result = body(hostile, summary_template="{patient}", description_template="{description}")
    assert result["summary"] == "{doctor} {0} {patient!r} {__class__}"
    assert result["description"] == "{services}"


def test_unknown_placeholders_and_format_syntax_in_templates_stay_literal():
    result = body(summary_template="{nope} {0} {services.__class__} {{services}}")
    assert result["summary"] == "{nope} {0} {services.__class__} {Video consult, Follow-up}"


def test_html_in_values_is_escaped_in_description_only():
    hostile = appt(patient_name='<script>alert("x")</script> & co')
    result = body(hostile, summary_template="{patient}", description_template="<b>{patient}</b>")
    assert result["summary"] == '<script>alert("x")</script> & co'
    assert result["description"] == '<b>&lt;script&gt;alert("x")&lt;/script&gt; &amp; co</b>'


def test_quotes_rtl_and_astral_characters_survive():
    name = "O'Brien \"Doc\" مريض שלום 🩺𝔘"
    result = body(appt(patient_name=name), summary_template="{patient}")
    assert result["summary"] == name


def test_controls_bidi_overrides_and_lone_surrogates_are_removed():
    name = "Ana\x00\x1b[31m\u202eevil\u2066\ud800x"
    result = body(appt(patient_name=name), summary_template="{patient}")
    assert result["summary"] == "Ana[31mevil\ufffdx"
    result["summary"].encode("utf-8")  # would raise on a lone surrogate


def test_newlines_in_summary_values_are_flattened():
    result = body(appt(patient_name="Ana\r\nEvil: header"), summary_template="{patient}")
    assert result["summary"] == "Ana Evil: header"


def test_64kb_description_is_truncated_to_8kb_with_ellipsis():
    huge = "ä" * 65536
    result = body(appt(description=huge), description_template="{description}")
    encoded = result["description"].encode("utf-8")
    assert len(encoded) <= DESCRIPTION_MAX_BYTES
    assert len(encoded) > DESCRIPTION_MAX_BYTES - 8
    assert result["description"].endswith("…")


def test_truncation_never_splits_an_html_entity_or_astral_char():
    for pad in range(8):
        text = "x" * (8 * 1024 - 3 - pad) + "&" * 40
        desc = body(appt(description=text), description_template="{description}")["description"]
        assert len(desc.encode("utf-8")) <= DESCRIPTION_MAX_BYTES
        stem = desc[:-1].rstrip("x")
        assert stem == "" or stem.endswith("&amp;"), stem[-12:]
    astral = body(appt(description="𝔘" * 5000), description_template="{description}")
    assert set(astral["description"][:-1]) == {"𝔘"}


def test_long_summary_is_capped():
    result = body(appt(service_names=["S" * 150] * 5))
    assert len(result["summary"]) == SUMMARY_MAX_CHARS
    assert result["summary"].endswith("…")


# --- ids ------------------------------------------------------------------------------------


@given(
    site=st.text(min_size=1, max_size=200),
    appointment_id=st.integers(min_value=1, max_value=2**63 - 1),
    version=st.integers(min_value=0, max_value=10_000),
)
def test_event_ids_are_always_valid_google_ids(site, appointment_id, version):
    event_id = event_id_for(site, appointment_id, version)
    assert is_valid_event_id(event_id)
    assert event_id == event_id_for(site, appointment_id, version)
    assert is_valid_event_id(event_id)
    assert len(conference_request_id(event_id, version)) < 64


def test_100k_ids_across_sites_and_versions_do_not_collide():
    other = site_key_for("https://other.example", 1, "wp_")
    ids = set()
    for n in range(1, 25_001):
        ids.update(
            (event_id_for(SITE, n), event_id_for(SITE, n, 1), event_id_for(other, n),
             event_id_for(other, n, 1))
        )
    assert len(ids) == 100_000


def test_event_id_shape():
    event_id = event_id_for(SITE, 1)
    assert event_id.startswith("kcsc") and len(event_id) == 36
    assert not set(event_id) & set("wxyz-_ABCDEFGHIJKLMNOPQRSTUVWXYZ")


@pytest.mark.parametrize(
    ("args", "message"),
    [(("", 1), "site_key"), ((SITE, 0), "positive"), ((SITE, 1, -1), "version")],
)
def test_event_id_rejects_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        event_id_for(*args)


def test_site_key_ignores_scheme_and_trailing_slash_but_not_blog_or_prefix():
    assert site_key_for("http://Clinic.Example") == site_key_for("https://clinic.example/")
    assert site_key_for("https://clinic.example:443/") == site_key_for("clinic.example")
    assert site_key_for("https://clinic.example", 2) != site_key_for("https://clinic.example")
    assert site_key_for("https://clinic.example", 1, "wp2_") != site_key_for(
        "https://clinic.example")
    assert site_key_for("https://clinic.example/a") != site_key_for("https://clinic.example/b")
    with pytest.raises(ValueError, match="host"):
        site_key_for("https://")


def test_conference_request_id_is_stable_per_attempt():
    event_id = event_id_for(SITE, 5)
    assert conference_request_id(event_id, 0) == conference_request_id(event_id, 0)
    assert conference_request_id(event_id, 0) != conference_request_id(event_id, 1)
    assert conference_request_id(event_id, 0) != conference_request_id(event_id_for(SITE, 6), 0)


# --- fingerprint ----------------------------------------------------------------------------


def test_fingerprint_changes_with_each_relevant_field():
    base = appt()
    reference = fingerprint(base, "Europe/Berlin", True)
    assert fingerprint(appt(), "Europe/Berlin", True) == reference
    changes = dict(
        start_time="10:00", end_time="10:30", start_date="2026-06-11", end_date="2026-06-11",
        doctor_id=8, status=4, service_names=["Other"], patient_name="Bea",
        doctor_name="Dr. Cy", clinic_name="Clinic Two", description="Cough",
        clinic_address="Elsewhere", patient_email="bea@example.com",
    )
    for key, value in changes.items():
        assert fingerprint(dataclasses.replace(base, **{key: value}), "Europe/Berlin",
                           True) != reference, key
    assert fingerprint(base, "Asia/Kolkata", True) != reference
    assert fingerprint(base, "Europe/Berlin", False) != reference
    assert fingerprint(base, "Europe/Berlin", True, extra="tpl2") != reference


def test_fingerprint_tolerates_v3_null_status():
    assert fingerprint(appt(status=None), "UTC", True) != fingerprint(appt(status=1), "UTC", True)


def test_fingerprint_ignores_representation_of_the_same_time():
    a = appt(start_time="09:00:00", start_date="2026-06-10")
    b = appt(start_time=timedelta(hours=9), start_date=date(2026, 6, 10))
    assert fingerprint(a, "UTC", True) == fingerprint(b, "UTC", True)


# --- lifecycle ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "past", "desired"),
    [
        (1, False, "present"), (4, False, "present"), (1, True, "present"),
        (2, False, "wait"), (2, True, "wait"),
        (0, False, "absent"), (0, True, "leave"),
        (3, False, "leave"), (3, True, "leave"),
        ("1", False, "present"), (None, False, "wait"), (9, False, "wait"), ("x", False, "wait"),
    ],
)
def test_classify(status, past, desired):
    assert classify(status, past) == desired


# --- Google's answer and the mapping row ---------------------------------------------------

MEET = "https://meet.google.com/abc-defg-hij"


def test_extract_meet_states():
    assert extract_meet({"id": "e"}) == MeetInfo("none", None, None, None)
    pending = {"conferenceData": {"createRequest": {"status": {"statusCode": "pending"}}}}
    assert extract_meet(pending).status == "pending"
    failure = {"conferenceData": {"createRequest": {"status": {"statusCode": "failure"}}}}
    assert extract_meet(failure).status == "failure"
    done = {
        "hangoutLink": MEET,
        "htmlLink": "https://www.google.com/calendar/event?eid=x",
        "conferenceData": {"conferenceId": "abc-defg-hij",
                           "createRequest": {"status": {"statusCode": "success"}}},
    }
    assert extract_meet(done) == MeetInfo(
        "success", MEET, "https://www.google.com/calendar/event?eid=x", "abc-defg-hij")


def test_extract_meet_falls_back_to_video_entry_point_and_rejects_junk():
    event = {"conferenceData": {"entryPoints": [
        {"entryPointType": "phone", "uri": "tel:+1-555"},
        {"entryPointType": "video", "uri": MEET},
    ]}}
    assert extract_meet(event).url == MEET
    junk = {"hangoutLink": "javascript:alert(1)",
            "conferenceData": {"createRequest": {"status": {"statusCode": "success"}}}}
    assert extract_meet(junk).status == "failure"


def test_mapping_row_is_what_php_reads():
    event = {"id": "kcscabc", "hangoutLink": MEET,
             "htmlLink": "https://www.google.com/calendar/event?eid=abc"}
    now = datetime(2026, 11, 28, 22, 15, 7, tzinfo=UTC)
    row = mapping_row_values(42, event, now=now, site_zone=resolve_site_zone("", "5.5"))
    assert row == {
        "event_id": "kcscabc",
        "appointment_id": 42,
        "url": MEET,
        "password": "",
        "event_url": "https://www.google.com/calendar/event?eid=abc",
        "created_at": "2026-11-29 03:45:07",
    }
    shape_a = only_columns(row, ["id", "appointment_id", "event_id", "url", "password",
                                 "event_url"])
    assert "created_at" not in shape_a and shape_a["url"] == MEET


def test_mapping_row_refuses_event_without_link():
    with pytest.raises(ValueError, match="no Meet link"):
        mapping_row_values(1, {"id": "e1"}, now=datetime.now(UTC),
                           site_zone=resolve_site_zone("UTC"))


@pytest.mark.parametrize(
    ("event_id", "url", "valid"),
    [
        ("abc", MEET, True),
        ("-1", MEET, False),
        (-1, "-1", False),
        ("abc", "-1", False),
        ("abc", "", False),
        ("", MEET, False),
        (None, MEET, False),
        ("abc", "meet.google.com/abc", False),
        ("abc", "ftp://meet.google.com/x", False),
        ("abc", "https://meet.google.com/a b", False),
        ("abc", "https://", False),
        ("abc", "http://localhost:8080/x", True),
        ("abc", "https://[::1]/x", True),
    ],
)
def test_valid_mapping_rows(event_id, url, valid):
    assert is_valid_mapping_row(event_id, url) is valid


def test_is_valid_url_rejects_bad_ports_and_controls():
    assert not is_valid_url("https://example.com:99999/")
    assert not is_valid_url("https://exa\x00mple.com/")
    assert not is_valid_url(None)
