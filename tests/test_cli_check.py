"""`kc-sidecar` via `main()`: exit codes, one-line config errors, `check` against MariaDB."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from sidecar.cli import duration, main
from wp_schema.ddl import create_site
from wp_schema.meta import Options
from wp_schema.names import TableNames
from wp_schema.reflect import SiteSchema

# sidecar.cli.main configures process logging (tests/conftest.py restores it)
pytestmark = pytest.mark.usefixtures("restore_root_logger")

SECRET_KEY = "check-test-secret-key-0123456789"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Start from an environment without any KCSC_ configuration; set what a test needs."""
    import os

    for name in list(os.environ):
        if name.startswith("KCSC_") and (name == "KCSC_CONFIG" or "__" in name):
            monkeypatch.delenv(name)

    def set_env(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return set_env




def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- usage and configuration errors ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("variables", "toml", "expected"),
    [
        ({"KCSC_SYNC__POLL_SECONDS": "abc"}, None, "sync.poll_seconds"),
        ({"KCSC_SYNC__POLL_SECOND": "2"}, None, "KCSC_SYNC__POLL_SECOND"),
        ({}, "[sink]\n", "is not a section"),
        ({}, "[sync]\npoll_secs = 2\n", "sync.poll_secs"),
        ({}, "not toml at all = = =\n", "is not valid TOML"),
        ({"KCSC_SIDECAR__PUBLIC_URL": "ftp://x"}, None, "sidecar.public_url"),
        ({"KCSC_DATABASE__URL": "oracle://u:pw@h/db"}, None, "database.url"),
        ({"KCSC_GOOGLE__CLIENT_SECRET_FILE": "/nonexistent"}, None, "cannot be read"),
        ({"KCSC_WORDPRESS__CONFIG_PATH": "/nonexistent/wp-config.php"}, None, "config_path"),
        ({"KCSC_CONFIG": "/nonexistent.toml"}, None, "KCSC_CONFIG"),
        ({}, None, "database.url: is not set"),  # check needs the database
    ],
)
def test_configuration_errors_are_one_line_and_exit_2(
    env: Callable[..., None],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    variables: dict[str, str],
    toml: str | None,
    expected: str,
) -> None:
    env(**variables)
    argv = ["check"]
    if toml is not None:
        path = tmp_path / "bad.toml"
        path.write_text(toml)
        argv = ["--config", str(path), "check"]
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert "Traceback" not in err
    assert err.count("\n") == 1, err  # exactly one line
    assert expected in err
    assert " — " in err
    assert out == ""


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["no-such-command"],
        ["connect-url"],  # --doctor is required
        ["connect-url", "--doctor", "abc"],
        ["connect-url", "--doctor", "5", "--ttl", "soon"],
        ["backfill", "--from", "yesterday"],
        ["emulator", "--port", "70000"],
    ],
)
def test_bad_usage_exits_2_without_traceback(
    env: Callable[..., None], capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert "Traceback" not in err
    assert "usage:" in err or "error" in err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for command in ("check", "serve", "sync-once", "backfill", "status", "connect-url",
                    "disconnect", "retry", "emulator", "demo"):
        assert command in out


def test_durations() -> None:
    assert duration("24h").total_seconds() == 86400
    assert duration("30m").total_seconds() == 1800
    assert duration("7d").total_seconds() == 604800
    assert duration("90").total_seconds() == 90


# --- check against MariaDB ------------------------------------------------------------------------

ACTIVE_PLUGINS = [
    "kivicare-clinic-management-system/kivicare-clinic-management-system.php",
    "kivicare-google-meet/kivicare-googlemeet.php",
    "classic-editor/classic-editor.php",
]


def make_site(
    url: str,
    *,
    prefix: str = "wp_",
    kivicare: str | None = "v4",
    mapping_shape: str | None = "c",
    options: dict[str, object] | None = None,
) -> None:
    engine = sa.create_engine(url)
    names = TableNames(prefix)
    create_site(engine, names, kivicare=kivicare, mapping_shape=mapping_shape)
    schema = SiteSchema.load(engine, names)
    with engine.begin() as conn:
        for name, value in (options or {}).items():
            Options(schema).set(conn, name, value)
    engine.dispose()


SITE_OPTIONS: dict[str, object] = {
    "db_version": "53496",
    "siteurl": "https://clinic.example",
    "timezone_string": "Europe/Berlin",
    "gmt_offset": "",
    "active_plugins": ACTIVE_PLUGINS,
    "kiviCare_google_meet_setting": {
        "enabled": "1",
        "client_id": "addon-client.apps.googleusercontent.com",
        "client_secret": "addon-client-secret-value",
    },
}


def site_env(env: Callable[..., None], url: str, **extra: str) -> None:
    env(
        **{
            "KCSC_DATABASE__URL": url,
            "KCSC_SIDECAR__SECRET_KEY": SECRET_KEY,
            "KCSC_SIDECAR__PUBLIC_URL": "https://clinic.example/kc-sidecar",
            "KCSC_WORDPRESS__LOGGED_IN_KEY": "configured logged in key",
            "KCSC_WORDPRESS__LOGGED_IN_SALT": "configured logged in salt",
            **extra,
        }
    )


def test_check_on_a_kivicare_v4_site_passes(
    env: Callable[..., None], capsys: pytest.CaptureFixture[str],
    new_mysql_database: Callable[[], str],
) -> None:
    url = new_mysql_database()
    make_site(url, options=SITE_OPTIONS)
    site_env(env, url)
    code, out, err = run(capsys, "check")
    assert code == 0, out + err
    assert "MariaDB" in out
    assert "WordPress db_version 53496" in out
    assert "KiviCare v4 tables (wp_kc_appointments): UTC columns, appointment_timezone" in out
    assert "shape c" in out
    assert "KiviCare Google Meet add-on (kivicare-google-meet/kivicare-googlemeet.php)" in out
    assert "KiviCare Pro" not in out
    assert "site time zone: Europe/Berlin" in out
    assert "Google client addon-client.apps.googleusercontent.com" in out
    assert "Result: the sidecar can run" in out
    # never a secret
    assert "addon-client-secret-value" not in out
    assert SECRET_KEY not in out
    assert "configured logged in" not in out


def test_check_json_reports_facts(
    env: Callable[..., None], capsys: pytest.CaptureFixture[str],
    new_mysql_database: Callable[[], str],
) -> None:
    url = new_mysql_database()
    options = {**SITE_OPTIONS, "timezone_string": "", "gmt_offset": "5.5"}
    make_site(url, mapping_shape="a", options=options)
    site_env(env, url)
    code, out, _ = run(capsys, "check", "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] is True
    assert report["facts"]["schema"]["generation"] == "v4"
    assert report["facts"]["schema"]["mapping_shape"] == "a"
    assert report["facts"]["plugins"]["google_meet"] == ACTIVE_PLUGINS[1]
    assert report["facts"]["plugins"]["pro"] is None
    messages = [i["message"] for i in report["items"]]
    assert "site time zone: UTC+05:30 (gmt_offset; no named zone, so no DST)" in messages


def test_pro_two_way_sync_is_a_warning_with_an_explanation(
    env: Callable[..., None], capsys: pytest.CaptureFixture[str],
    new_mysql_database: Callable[[], str],
) -> None:
    url = new_mysql_database()
    options = {
        **SITE_OPTIONS,
        "active_plugins": [*ACTIVE_PLUGINS, "kivicare-pro/kivicare-pro.php"],
        "kiviCare_google_cal_setting": {"client_id": "x", "enableTwoWaySync": "on"},
    }
    make_site(url, options=options)
    site_env(env, url)
    code, out, _ = run(capsys, "check")
    assert code == 0
    assert "WARN" in out
    assert "two-way Google Calendar sync is enabled" in out
    assert "double reconciliation" in out
    assert "KiviCare Pro (kivicare-pro/kivicare-pro.php)" in out


def test_wrong_table_prefix_fails_with_a_hint(
    env: Callable[..., None], capsys: pytest.CaptureFixture[str],
    new_mysql_database: Callable[[], str],
) -> None:
    url = new_mysql_database()
    make_site(url, options=SITE_OPTIONS)
    site_env(env, url, KCSC_DATABASE__TABLE_PREFIX="clinic_")
    code, out, err = run(capsys, "check")
    assert code == 1
    assert "Traceback" not in err
    assert "no table clinic_kc_appointments" in out
    assert "is $table_prefix (and the blog id) right? found wp_kc_appointments" in out
    assert "Result: the sidecar cannot run" in out


def test_database_without_kivicare_fails_with_a_hint(
    env: Callable[..., None], capsys: pytest.CaptureFixture[str],
    new_mysql_database: Callable[[], str],
) -> None:
    url = new_mysql_database()
    make_site(url, kivicare=None, mapping_shape=None, options=SITE_OPTIONS)
    site_env(env, url)
    code, out, _ = run(capsys, "check")
    assert code == 1
    assert "no table wp_kc_appointments" in out
    assert "is KiviCare activated on this blog?" in out


def test_missing_secret_key_and_google_client_are_reported_together(
    env: Callable[..., None], capsys: pytest.CaptureFixture[str],
    new_mysql_database: Callable[[], str],
) -> None:
    url = new_mysql_database()
    make_site(url, options={k: v for k, v in SITE_OPTIONS.items()
                            if k != "kiviCare_google_meet_setting"})
    env(KCSC_DATABASE__URL=url)
    code, out, _ = run(capsys, "check")
    assert code == 1
    assert "sidecar.secret_key is not set" in out
    assert "no Google OAuth client id" in out
    assert "no usable logged_in_key" in out


def test_unreachable_database_fails_without_showing_the_password(
    env: Callable[..., None], capsys: pytest.CaptureFixture[str]
) -> None:
    site_env(env, "mysql+pymysql://wp:hunter2secret@127.0.0.1:1/wordpress?connect_timeout=2")
    code, out, err = run(capsys, "check")
    assert code == 1
    assert "cannot connect to mysql+pymysql://wp:***@127.0.0.1:1/wordpress" in out
    assert "hunter2secret" not in out + err


def test_emulator_needs_the_google_client(
    env: Callable[..., None], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "emulator", "--port", "0")
    assert code == 2
    assert err.count("\n") == 1
    assert "google.client_id: is not set" in err


def test_emulator_registers_the_configured_client_under_public_url(
    env: Callable[..., None],
) -> None:
    from sidecar.cli import default_emulator_port, emulator_config
    from sidecar.config import load_settings

    settings = load_settings(
        None,
        environ={
            "KCSC_GOOGLE__CLIENT_ID": "demo-client",
            "KCSC_GOOGLE__CLIENT_SECRET": "demo-secret",
            "KCSC_SIDECAR__PUBLIC_URL": "http://127.0.0.1:8090/kc",
            "KCSC_GOOGLE__API_ENDPOINT": "http://127.0.0.1:9123/",
        },
    )
    config = emulator_config(settings, testing=True)
    registration = config.client_registrations()["demo-client"]
    assert registration.secret == "demo-secret"
    assert registration.allows_redirect("http://127.0.0.1:8090/kc/oauth/callback")
    assert not registration.allows_redirect("http://127.0.0.1:8090/elsewhere")
    assert config.testing is True
    assert default_emulator_port(settings) == 9123


def test_sample_phrase_keys_fall_back_to_site_options(
    env: Callable[..., None], capsys: pytest.CaptureFixture[str],
    new_mysql_database: Callable[[], str],
) -> None:
    url = new_mysql_database()
    make_site(url, options={**SITE_OPTIONS, "logged_in_key": "k" * 64})
    site_env(env, url, KCSC_WORDPRESS__LOGGED_IN_KEY="put your unique phrase here")
    code, out, _ = run(capsys, "check")
    assert code == 0, out
    assert "logged-in key and salt available for cookie checks " \
        "(logged_in_key from the site option)" in out
