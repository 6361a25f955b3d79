"""What a Prometheus scrape of /metrics shows, parsed with prometheus-client's own parser."""

from __future__ import annotations

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families

from sidecar.metrics import Metrics


def scrape(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_all_series_exist_with_prefix_and_start_at_zero() -> None:
    samples = scrape(Metrics())
    names = {name for name, _ in samples}
    for name in (
        "kcsc_meetings_created_total",
        "kcsc_meetings_updated_total",
        "kcsc_meetings_deleted_total",
        "kcsc_sync_queue_depth",
        "kcsc_sync_oldest_pending_seconds",
        "kcsc_token_refresh_failures_total",
        "kcsc_token_refreshes_total",
        "kcsc_items_failed_total",
    ):
        assert samples[(name, ())] == 0.0
    assert all(name.startswith("kcsc_") for name in names)


def test_counts_and_gauges_show_in_the_scrape() -> None:
    m = Metrics()
    m.meetings_created.inc()
    m.meetings_created.inc()
    m.meetings_deleted.inc()
    m.google_call("events.insert", 200)
    m.google_call("events.insert", 200)
    m.google_call("events.insert", 409)
    m.google_call("token", "network")
    m.google_retries.labels(reason="rate_limited").inc(3)
    m.webhook_notifications.labels(outcome="unknown_channel").inc()
    m.token_refresh_failures.inc()
    m.items_failed.inc(2)
    m.set_queue(5, 42.5)
    m.set_sync_lag(7, 3.25)
    m.set_sync_lag("8", -1)  # clock skew never shows a negative lag

    s = scrape(m)
    assert s[("kcsc_meetings_created_total", ())] == 2
    assert s[("kcsc_meetings_deleted_total", ())] == 1
    insert_200 = ("kcsc_google_calls_total", (("method", "events.insert"), ("status", "200")))
    assert s[insert_200] == 2
    insert_409 = ("kcsc_google_calls_total", (("method", "events.insert"), ("status", "409")))
    assert s[insert_409] == 1
    assert s[("kcsc_google_calls_total", (("method", "token"), ("status", "network")))] == 1
    assert s[("kcsc_google_retries_total", (("reason", "rate_limited"),))] == 3
    unknown = ("kcsc_webhook_notifications_total", (("outcome", "unknown_channel"),))
    assert s[unknown] == 1
    assert s[("kcsc_token_refresh_failures_total", ())] == 1
    assert s[("kcsc_items_failed_total", ())] == 2
    assert s[("kcsc_sync_queue_depth", ())] == 5
    assert s[("kcsc_sync_oldest_pending_seconds", ())] == 42.5
    assert s[("kcsc_sync_lag_seconds", (("doctor", "7"),))] == 3.25
    assert s[("kcsc_sync_lag_seconds", (("doctor", "8"),))] == 0


def test_forgotten_doctor_disappears_from_the_scrape() -> None:
    m = Metrics()
    m.set_sync_lag(7, 10)
    m.forget_doctor(7)
    m.forget_doctor(99)  # never seen: no error
    assert not any(name == "kcsc_sync_lag_seconds" for name, _ in scrape(m))


def test_queue_measured_at_scrape_time() -> None:
    depth = [3]
    m = Metrics()
    m.track_queue(lambda: depth[0], lambda: 12.0)
    assert scrape(m)[("kcsc_sync_queue_depth", ())] == 3
    depth[0] = 0
    assert scrape(m)[("kcsc_sync_queue_depth", ())] == 0


def test_two_apps_in_one_process_do_not_share_values() -> None:
    a, b = Metrics(), Metrics()  # a shared registry would raise "Duplicated timeseries" here
    a.meetings_created.inc()
    assert scrape(a)[("kcsc_meetings_created_total", ())] == 1
    assert scrape(b)[("kcsc_meetings_created_total", ())] == 0


def test_openmetrics_when_asked() -> None:
    m = Metrics()
    m.meetings_updated.inc()
    body, content_type = m.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    families = {f.name: f for f in parse_om(body.decode())}
    assert families["kcsc_meetings_updated"].samples[0].value == 1


def test_oauth_outcomes_and_disconnections() -> None:
    m = Metrics()
    before = scrape(m)
    for outcome in ("connected", "denied", "bad_state", "scope_missing", "error"):
        assert before[("kcsc_oauth_connections_total", (("outcome", outcome),))] == 0
    assert before[("kcsc_disconnections_total", ())] == 0
    m.oauth_connection("connected")
    m.oauth_connection("scope_missing")
    m.oauth_connection("something new")  # never a new label value from a caller's typo
    m.disconnections.inc()
    s = scrape(m)
    assert s[("kcsc_oauth_connections_total", (("outcome", "connected"),))] == 1
    assert s[("kcsc_oauth_connections_total", (("outcome", "scope_missing"),))] == 1
    assert s[("kcsc_oauth_connections_total", (("outcome", "error"),))] == 1
    assert len([k for k in s if k[0] == "kcsc_oauth_connections_total"]) == 5
    assert s[("kcsc_disconnections_total", ())] == 1
