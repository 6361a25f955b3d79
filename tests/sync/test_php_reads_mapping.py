"""PHP reads what the outbound engine wrote: real WordPress on the same MariaDB database runs the
KiviCare free plugin's own kind of query for the Meet link (the mapping joined to the appointment,
``url`` as ``meeting_url``), GM1's first-row read, and GM4's model validators."""

from __future__ import annotations

from datetime import date, time

import pytest

from sidecar.db import create_engine
from tests.php_wp import WordPressPHP, require_php
from tests.sync.conftest import SITE_URL, make_world
from wp_schema.ddl import create_site
from wp_schema.names import TableNames

pytestmark = pytest.mark.php


def test_php_sees_our_meet_link_and_it_passes_the_add_on_validators(new_mysql_database, clock):
    require_php()
    url = new_mysql_database()
    wp = WordPressPHP(url, site_url=SITE_URL)
    try:
        wp.install()
        engine = create_engine(url)
        create_site(engine, TableNames(), core=False, kivicare="v4", mapping_shape="c")
        engine.dispose()
        for w in make_world(url, clock):
            doctor, service, _email = w.doctor()
            booking = w.book(doctor, service, date(2026, 12, 4), time(11, 0),
                             description="Follow-up \"quoted\" <b>bold</b>")
            w.settle()
            [row] = w.mapping(booking.id)
            seen = wp.call(f"""
                global $wpdb;
                $p = $wpdb->prefix;
                $list = $wpdb->get_row($wpdb->prepare(
                    "SELECT a.id, m.url AS meeting_url, m.event_url FROM {{$p}}kc_appointments a
                     LEFT JOIN {{$p}}kc_appointment_google_meet_mappings m
                       ON m.appointment_id = a.id WHERE a.id = %d", {booking.id}), ARRAY_A);
                $first = $wpdb->get_row($wpdb->prepare(
                    "SELECT * FROM {{$p}}kc_appointment_google_meet_mappings
                     WHERE appointment_id = %d", {booking.id}), ARRAY_A);
                return [
                    'meeting_url' => $list['meeting_url'],
                    'event_url' => $list['event_url'],
                    'first_event_id' => $first['event_id'],
                    'url_valid' => filter_var($first['url'], FILTER_VALIDATE_URL) !== false,
                    'event_url_valid' =>
                        filter_var($first['event_url'], FILTER_VALIDATE_URL) !== false,
                    'is_video' => !empty($first['url']),
                    'created_at' => $first['created_at'],
                ];
            """)
            assert seen["meeting_url"] == row["url"]
            assert seen["event_url"] == row["event_url"]
            assert seen["first_event_id"] == row["event_id"]
            assert seen["url_valid"] and seen["event_url_valid"] and seen["is_video"]
            # created_at is site-local (Europe/Berlin): 09:00 UTC on the fake clock → 10:00.
            assert seen["created_at"] == "2026-11-28 10:00:00"
    finally:
        wp.close()
