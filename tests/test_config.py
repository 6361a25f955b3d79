"""Settings: precedence env > TOML > wp-config.php > defaults, _FILE secrets, errors, masking."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from sidecar.config import (
    CALENDAR_SCOPE,
    ConfigError,
    Settings,
    all_keys,
    default_value,
    load_settings,
)

WP_CONFIG = """<?php
define( 'DB_NAME', 'from_wp' );
define( 'DB_USER', 'wpuser' );
define( 'DB_PASSWORD', 'wp-db-password' );
define( 'DB_HOST', 'db.wp:3307' );
define( 'LOGGED_IN_KEY', 'wp logged in key' );
define( 'LOGGED_IN_SALT', 'wp logged in salt' );
define( 'NONCE_KEY', 'wp nonce key' );
define( 'WP_SITEURL', 'https://wp.example' );
$table_prefix = 'wpc_';
"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "wp-config.php").write_text(WP_CONFIG)
    return tmp_path


def write_toml(directory: Path, text: str) -> Path:
    path = directory / "sidecar.toml"
    path.write_text(text)
    return path


def test_defaults_when_nothing_is_configured() -> None:
    s = load_settings(None, environ={})
    assert s.database.url is None
    assert s.database.table_prefix == "wp_"
    assert s.database.blog_id == 1
    assert s.sidecar.listen == "127.0.0.1:8090"
    assert (s.sidecar.listen_host, s.sidecar.listen_port) == ("127.0.0.1", 8090)
    assert s.google.token_uri == "https://oauth2.googleapis.com/token"
    assert s.google.scope == CALENDAR_SCOPE
    assert s.sync.poll_seconds == 2
    assert s.sync.settle_seconds == 20
    assert s.sync.channel_ttl_seconds == 604800
    assert s.sync.google_deleted_policy == "recreate"
    assert s.config_file is None
    assert set(s.origins.values()) == {"default"}


def test_precedence_env_over_toml_over_wp_config_over_default(site: Path) -> None:
    toml = write_toml(
        site,
        """
[database]
table_prefix = "toml_"

[wordpress]
config_path = "wp-config.php"   # relative to this file
logged_in_key = "toml logged in key"

[sync]
poll_seconds = 5
""",
    )
    env = {
        "KCSC_CONFIG": str(toml),
        "KCSC_DATABASE__TABLE_PREFIX": "env_",
        "KCSC_SYNC__RECONCILE_SECONDS": "90",
    }
    s = load_settings(None, environ=env)
    # env beats TOML
    assert s.database.table_prefix == "env_"
    assert s.origins["database.table_prefix"] == "env"
    # TOML beats wp-config.php
    assert s.wordpress.logged_in_key == "toml logged in key"
    assert s.origins["wordpress.logged_in_key"] == "toml"
    # wp-config.php beats defaults
    assert s.wordpress.logged_in_salt == "wp logged in salt"
    assert s.wordpress.site_url == "https://wp.example"
    assert s.origins["wordpress.logged_in_salt"] == "wp-config"
    url = make_url(s.database.url)
    assert (url.username, url.password, url.host, url.port, url.database) == (
        "wpuser", "wp-db-password", "db.wp", 3307, "from_wp"
    )
    assert s.origins["database.url"] == "wp-config"
    # defaults fill the rest; TOML and env values are typed
    assert s.sync.poll_seconds == 5
    assert s.sync.reconcile_seconds == 90
    assert s.sync.upcoming_days == 60
    assert s.origins["sync.upcoming_days"] == "default"
    assert s.wordpress.config_path == site / "wp-config.php"
    assert s.config_file == toml.resolve()


def test_wp_config_prefix_used_when_toml_and_env_are_silent(site: Path) -> None:
    s = load_settings(None, environ={"KCSC_WORDPRESS__CONFIG_PATH": str(site / "wp-config.php")})
    assert s.database.table_prefix == "wpc_"
    assert s.wp_config is not None and s.wp_config.get("NONCE_KEY") == "wp nonce key"


def test_explicit_config_argument_beats_kcsc_config(tmp_path: Path) -> None:
    a = tmp_path / "a.toml"
    a.write_text("[sync]\npoll_seconds = 7\n")
    b = tmp_path / "b.toml"
    b.write_text("[sync]\npoll_seconds = 9\n")
    assert load_settings(a, environ={"KCSC_CONFIG": str(b)}).sync.poll_seconds == 7
    assert load_settings(None, environ={"KCSC_CONFIG": str(b)}).sync.poll_seconds == 9


def test_file_secrets_strip_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "client_secret").write_text("s3cr3t value\n")
    (tmp_path / "key").write_text("a-very-long-random-secret-key\r\n")
    s = load_settings(
        None,
        environ={
            "KCSC_GOOGLE__CLIENT_SECRET_FILE": str(tmp_path / "client_secret"),
            "KCSC_SIDECAR__SECRET_KEY_FILE": str(tmp_path / "key"),
        },
    )
    assert s.google.client_secret == "s3cr3t value"
    assert s.sidecar.secret_key == "a-very-long-random-secret-key"
    assert s.origins["google.client_secret"] == "env file"


def test_file_secret_beats_toml(tmp_path: Path) -> None:
    (tmp_path / "db_url").write_text("mysql+pymysql://u:p@h/fromfile\n")
    toml = write_toml(tmp_path, '[database]\nurl = "mysql+pymysql://u:p@h/fromtoml"\n')
    s = load_settings(toml, environ={"KCSC_DATABASE__URL_FILE": str(tmp_path / "db_url")})
    assert make_url(s.database.url).database == "fromfile"


def test_secrets_never_appear_in_repr(site: Path) -> None:
    (site / "secret").write_text("client-secret-xyz\n")
    s = load_settings(
        None,
        environ={
            "KCSC_WORDPRESS__CONFIG_PATH": str(site / "wp-config.php"),
            "KCSC_GOOGLE__CLIENT_SECRET_FILE": str(site / "secret"),
            "KCSC_SIDECAR__SECRET_KEY": "sidecar-secret-key-123456",
        },
    )
    text = repr(s) + str(s) + repr(s.wp_config)
    for secret in (
        "client-secret-xyz",
        "sidecar-secret-key-123456",
        "wp-db-password",
        "wp logged in key",
        "wp logged in salt",
    ):
        assert secret not in text
    assert "***" in text
    assert "db.wp" in text  # the non-secret parts stay visible


def test_settings_are_immutable() -> None:
    s = load_settings(None, environ={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.sync.poll_seconds = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.sync = s.sync  # type: ignore[misc]


def test_urls_are_normalised() -> None:
    s = load_settings(
        None,
        environ={
            "KCSC_SIDECAR__PUBLIC_URL": "https://clinic.example/kc-sidecar/",
            "KCSC_GOOGLE__API_ENDPOINT": "http://127.0.0.1:8091",
            "KCSC_DATABASE__URL": "mysql://u:p@db/wordpress",
            "KCSC_SIDECAR__LISTEN": "[::]:8090",
            "KCSC_SIDECAR__LOG_LEVEL": "debug",
        },
    )
    assert s.sidecar.public_url == "https://clinic.example/kc-sidecar"
    assert s.google.api_endpoint == "http://127.0.0.1:8091/"
    assert s.database.url.startswith("mysql+pymysql://")
    assert (s.sidecar.listen_host, s.sidecar.listen_port) == ("::", 8090)
    assert s.sidecar.log_level == "DEBUG"


def test_require_names_the_missing_key() -> None:
    s = load_settings(None, environ={})
    with pytest.raises(ConfigError) as info:
        s.require("database.url")
    assert info.value.key == "database.url"
    assert "KCSC_DATABASE__URL" in str(info.value)
    with pytest.raises(ConfigError, match=r"sidecar\.secret_key: is not set"):
        s.require("sidecar.secret_key")


@pytest.mark.parametrize(
    ("environ", "toml", "expected"),
    [
        (
            {"KCSC_SYNC__POLL_SECONDS": "abc"},
            None,
            'sync.poll_seconds (from KCSC_SYNC__POLL_SECONDS): "abc" is not a number'
            " — set a number of seconds such as 2",
        ),
        ({}, "[sync]\npoll_seconds = 0.05\n",
         'sync.poll_seconds: "0.05" is below the minimum of 0.1'),
        ({}, "[sync]\nreconcile_seconds = \"abc\"\n",
         'sync.reconcile_seconds: "abc" is not a whole number'),
        ({}, "[sync]\nreconcile_seconds = 0\n",
         "sync.reconcile_seconds: 0 is below the minimum of 1"),
        ({}, "[sync]\npoll_seconds = true\n", "is a true/false value"),
        ({}, "[sync]\npoll_second = 2\n", "did you mean sync.poll_seconds?"),
        ({}, "[synk]\npoll_seconds = 2\n", "synk: [synk] in sidecar.toml is not a section"),
        ({}, "[sync\n", "is not valid TOML"),
        ({"KCSC_SYNC__POLL_SECOND": "2"}, None, "did you mean KCSC_SYNC__POLL_SECONDS?"),
        ({"KCSC_SYNC__ATTENDEES": "everyone"}, None, 'set "none" or "patient"'),
        ({"KCSC_GOOGLE__SCOPE": "https://www.googleapis.com/auth/calendar.readonly"}, None,
         "the only value"),
        ({"KCSC_SIDECAR__PUBLIC_URL": "clinic.example"}, None, "is not an absolute http(s) URL"),
        ({"KCSC_SIDECAR__LISTEN": "8090"}, None, "is not host:port"),
        ({"KCSC_SIDECAR__LISTEN": "0.0.0.0:99999"}, None, "is not host:port"),
        ({"KCSC_DATABASE__URL": "postgresql://u:p@h/db"}, None, "are not supported"),
        ({"KCSC_DATABASE__TABLE_PREFIX": "wp-"}, None, "only letters, digits and underscores"),
        ({"KCSC_SYNC__SUMMARY_TEMPLATE": "{services"}, None, "is not a valid template"),
        ({"KCSC_SIDECAR__SECRET_KEY": "short"}, None, "at least 16"),
        ({"KCSC_SYNC__CHANNEL_RENEW_MARGIN_SECONDS": "604800"}, None, "is not shorter than"),
        ({"KCSC_CONFIG": "/nonexistent/sidecar.toml"}, None, "KCSC_CONFIG: /nonexistent"),
        ({"KCSC_GOOGLE__CLIENT_SECRET_FILE": "/nonexistent/secret"}, None, "cannot be read"),
        ({"KCSC_WORDPRESS__CONFIG_PATH": "/nonexistent/wp-config.php"}, None, "cannot read"),
        ({"KCSC_GOOGLE__CLIENT_SECRET": "a", "KCSC_GOOGLE__CLIENT_SECRET_FILE": "/x"}, None,
         "set only one of them"),
    ],
)
def test_each_problem_is_one_line_naming_key_problem_and_fix(
    tmp_path: Path, environ: dict[str, str], toml: str | None, expected: str
) -> None:
    path = write_toml(tmp_path, toml) if toml is not None else None
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ=environ)
    text = str(info.value)
    assert expected in text
    assert "\n" not in text
    assert " — " in text  # problem, then the fix


def test_secret_values_are_not_echoed_in_errors() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, environ={"KCSC_SIDECAR__SECRET_KEY": "hunter2"})
    assert "hunter2" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_settings(None, environ={"KCSC_DATABASE__URL": "oracle://u:topsecret@h/db"})
    assert "topsecret" not in str(info.value)


def test_example_file_documents_every_key_with_its_default() -> None:
    example = Path(__file__).resolve().parent.parent / "config.example.toml"
    data = tomllib.loads(example.read_text())
    documented = {f"{section}.{key}" for section, table in data.items() for key in table}
    assert documented == set(all_keys())
    # The example must itself load.
    s = load_settings(example, environ={})
    assert isinstance(s, Settings)
    for key in all_keys():
        value = data[key.split(".")[0]][key.split(".")[1]]
        default = default_value(key)
        shown = "" if default is None else default
        assert value == (str(shown) if isinstance(value, str) else shown), key
