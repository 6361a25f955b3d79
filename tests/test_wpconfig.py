"""wp-config.php is parsed, never executed: constants, $table_prefix, DB_HOST forms, Docker.

The ``php`` tests run the same samples through php-cli and compare: what we parse is exactly what
PHP defines, and whatever we cannot evaluate is named rather than guessed.
"""

# ruff: noqa: E501 - the PHP samples keep WordPress's own line lengths

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from sidecar.wpconfig import (
    DbHost,
    WpConfigError,
    load_wp_config,
    parse_db_host,
    parse_wp_config,
)

CLASSIC = r"""<?php
/**
 * The base configuration for WordPress
 * define( 'DB_NAME', 'inside_a_docblock' );
 */

// ** Database settings ** //
define( 'DB_NAME', 'clinic' );
define('DB_USER','clinic_wp');
define( "DB_PASSWORD", "p@ss:w/rd#?\"q\"" );
define( 'DB_HOST', 'db.internal:3307' );
define( 'DB_CHARSET', 'utf8mb4' );
# define( 'DB_NAME', 'hash_comment' );
// define( 'DB_NAME', 'line_comment' );
/* define( 'DB_NAME', 'block_comment' ); */

define( 'AUTH_KEY',         'a#b//c/*d*/e' );
define( 'SECURE_AUTH_KEY',  'it\'s \\ fine' );
define( 'LOGGED_IN_KEY',    '9v)oQ=~?>ixV_<{X)GA!a(+|o' );
define( 'NONCE_KEY',        'nonce key' );
define( 'AUTH_SALT',        'auth salt' );
define( 'SECURE_AUTH_SALT', 'secure auth salt' );
define( 'LOGGED_IN_SALT',   "logged\tin \$salt" );
define( 'NONCE_SALT',       'nonce salt' );

$table_prefix = 'kc7_';

define( 'WP_HOME', 'https://clinic.example' );
define( 'WP_SITEURL', 'https://clinic.example' . '/wp' );
define( 'WP_DEBUG', false );
define( 'COOKIE_DOMAIN', $_SERVER['HTTP_HOST'] );
define( 'DB_NAME', 'second_definition_is_ignored' );

if ( ! defined( 'ABSPATH' ) ) {
	define( 'ABSPATH', __DIR__ . '/' );
}
require_once ABSPATH . 'wp-settings.php';
"""


def test_classic_wp_config_constants_and_prefix() -> None:
    wp = parse_wp_config(CLASSIC, environ={})
    assert wp.get("DB_NAME") == "clinic"  # not a commented-out one, not the redefinition
    assert wp.get("DB_USER") == "clinic_wp"
    assert wp.get("DB_PASSWORD") == 'p@ss:w/rd#?"q"'
    assert wp.get("DB_HOST") == "db.internal:3307"
    assert wp.table_prefix == "kc7_"
    assert wp.auth_keys == {
        "auth_key": "a#b//c/*d*/e",
        "secure_auth_key": "it's \\ fine",
        "logged_in_key": "9v)oQ=~?>ixV_<{X)GA!a(+|o",
        "nonce_key": "nonce key",
        "auth_salt": "auth salt",
        "secure_auth_salt": "secure auth salt",
        "logged_in_salt": "logged\tin $salt",
        "nonce_salt": "nonce salt",
    }
    assert wp.get("WP_HOME") == "https://clinic.example"
    assert wp.get("WP_SITEURL") == "https://clinic.example/wp"
    assert wp.constants["WP_DEBUG"] is False
    # Values that depend on the request or on PHP functions are named, not guessed.
    assert "COOKIE_DOMAIN" in wp.unevaluated
    assert "ABSPATH" in wp.unevaluated
    assert wp.get("COOKIE_DOMAIN") is None


def test_database_url_quotes_credentials_so_they_round_trip() -> None:
    wp = parse_wp_config(CLASSIC, environ={})
    url = make_url(wp.database_url())
    assert url.drivername == "mysql+pymysql"
    assert url.username == "clinic_wp"
    assert url.password == 'p@ss:w/rd#?"q"'
    assert (url.host, url.port, url.database) == ("db.internal", 3307, "clinic")
    assert url.query == {"charset": "utf8mb4"}


def test_secrets_are_masked_in_repr() -> None:
    wp = parse_wp_config(CLASSIC, environ={})
    text = repr(wp)
    assert "p@ss" not in text
    assert "a#b//c" not in text
    assert "'clinic'" in text


@pytest.mark.parametrize(
    ("db_host", "expected"),
    [
        ("db", DbHost("db", None, None)),
        ("db.internal:3307", DbHost("db.internal", 3307, None)),
        ("10.0.0.5:3306", DbHost("10.0.0.5", 3306, None)),
        ("localhost", DbHost("localhost", None, "/run/mysqld/mysqld.sock")),
        ("localhost:/var/lib/mysql/mysql.sock", DbHost("localhost", None, "/var/lib/mysql/mysql.sock")),
        (":/tmp/mysql.sock", DbHost("localhost", None, "/tmp/mysql.sock")),
        ("localhost:3306", DbHost("localhost", 3306, None)),
        ("[::1]:3306", DbHost("::1", 3306, None, is_ipv6=True)),
        ("::1", DbHost("::1", None, None, is_ipv6=True)),
    ],
)
def test_db_host_forms(db_host: str, expected: DbHost) -> None:
    assert parse_db_host(db_host) == expected


@pytest.mark.parametrize(
    ("db_host", "netloc", "query"),
    [
        ("db:3307", ("db", 3307), {}),
        ("localhost", ("localhost", None), {"unix_socket": "/run/mysqld/mysqld.sock"}),
        ("localhost:/srv/my.sock", ("localhost", None), {"unix_socket": "/srv/my.sock"}),
        ("[::1]:3306", ("::1", 3306), {}),
    ],
)
def test_database_url_for_each_db_host_form(db_host: str, netloc: tuple, query: dict) -> None:
    wp = parse_wp_config(
        f"define('DB_NAME','wp'); define('DB_USER','u'); define('DB_HOST','{db_host}');",
        environ={},
    )
    url = make_url(wp.database_url())
    assert (url.host, url.port) == netloc
    assert dict(url.query) == {"charset": "utf8mb4", **query}


def test_utf8_charset_is_upgraded_like_wpdb_does() -> None:
    wp = parse_wp_config("define('DB_NAME','wp'); define('DB_CHARSET','utf8');", environ={})
    assert make_url(wp.database_url()).query["charset"] == "utf8mb4"


def test_no_db_name_means_no_url() -> None:
    assert parse_wp_config("define('DB_USER','u');", environ={}).database_url() is None


# A wp-config.php in the style of the official WordPress Docker image: every value comes from
# getenv_docker(NAME, default), which reads NAME_FILE, then NAME, then the default.
DOCKER = r"""<?php
/**
 * This has been slightly modified (to read environment variables) for use in Docker.
 */

// a helper function to lookup "env_FILE", "env", then fallback
if (!function_exists('getenv_docker')) {
	function getenv_docker($env, $default) {
		if ($fileEnv = getenv($env . '_FILE')) {
			return rtrim(file_get_contents($fileEnv), "\r\n");
		}
		else if (($val = getenv($env)) !== false) {
			return $val;
		}
		else {
			return $default;
		}
	}
}

define( 'DB_NAME', getenv_docker('WORDPRESS_DB_NAME', 'wordpress') );
define( 'DB_USER', getenv_docker('WORDPRESS_DB_USER', 'example username') );
define( 'DB_PASSWORD', getenv_docker('WORDPRESS_DB_PASSWORD', 'example password') );
define( 'DB_HOST', getenv_docker('WORDPRESS_DB_HOST', 'mysql') );
define( 'DB_CHARSET', getenv_docker('WORDPRESS_DB_CHARSET', 'utf8') );
define( 'DB_COLLATE', getenv_docker('WORDPRESS_DB_COLLATE', '') );

define( 'AUTH_KEY',         getenv_docker('WORDPRESS_AUTH_KEY',         'put your unique phrase here') );
define( 'SECURE_AUTH_KEY',  getenv_docker('WORDPRESS_SECURE_AUTH_KEY',  'put your unique phrase here') );
define( 'LOGGED_IN_KEY',    getenv_docker('WORDPRESS_LOGGED_IN_KEY',    'put your unique phrase here') );
define( 'NONCE_KEY',        getenv_docker('WORDPRESS_NONCE_KEY',        'put your unique phrase here') );
define( 'AUTH_SALT',        getenv_docker('WORDPRESS_AUTH_SALT',        'put your unique phrase here') );
define( 'SECURE_AUTH_SALT', getenv_docker('WORDPRESS_SECURE_AUTH_SALT', 'put your unique phrase here') );
define( 'LOGGED_IN_SALT',   getenv_docker('WORDPRESS_LOGGED_IN_SALT',   'put your unique phrase here') );
define( 'NONCE_SALT',       getenv_docker('WORDPRESS_NONCE_SALT',       'put your unique phrase here') );

$table_prefix = getenv_docker('WORDPRESS_TABLE_PREFIX', 'wp_');

define( 'WP_DEBUG', !!getenv_docker('WORDPRESS_DEBUG', '') );

if (isset($_SERVER['HTTP_X_FORWARDED_PROTO']) && strpos($_SERVER['HTTP_X_FORWARDED_PROTO'], 'https') !== false) {
	$_SERVER['HTTPS'] = 'on';
}

if ($configExtra = getenv_docker('WORDPRESS_CONFIG_EXTRA', '')) {
	eval($configExtra);
}

if ( ! defined( 'ABSPATH' ) ) {
	define( 'ABSPATH', __DIR__ . '/' );
}
require_once ABSPATH . 'wp-settings.php';
"""


def test_docker_image_defaults_without_environment() -> None:
    wp = parse_wp_config(DOCKER, environ={})
    assert wp.get("DB_HOST") == "mysql"
    assert wp.get("DB_NAME") == "wordpress"
    assert wp.get("DB_USER") == "example username"
    assert wp.table_prefix == "wp_"
    assert wp.auth_keys["logged_in_key"] == "put your unique phrase here"
    url = make_url(wp.database_url())
    assert (url.host, url.port, url.username) == ("mysql", None, "example username")


def test_docker_image_reads_env_and_file_secrets(tmp_path: Path) -> None:
    password_file = tmp_path / "db_password"
    password_file.write_text("from-a-secret\n")
    environ = {
        "WORDPRESS_DB_HOST": "mariadb:3306",
        "WORDPRESS_DB_USER": "wp",
        "WORDPRESS_DB_PASSWORD_FILE": str(password_file),
        "WORDPRESS_DB_NAME": "clinic",
        "WORDPRESS_TABLE_PREFIX": "clinic_",
        "WORDPRESS_LOGGED_IN_KEY": "env logged in key",
        "WORDPRESS_CONFIG_EXTRA": "define('WP_SITEURL', 'https://clinic.example');\n"
        "define('DB_NAME', 'extra cannot redefine');",
    }
    wp = parse_wp_config(DOCKER, environ=environ)
    assert wp.get("DB_PASSWORD") == "from-a-secret"
    assert wp.table_prefix == "clinic_"
    assert wp.auth_keys["logged_in_key"] == "env logged in key"
    assert wp.get("WP_SITEURL") == "https://clinic.example"
    assert wp.get("DB_NAME") == "clinic"
    url = make_url(wp.database_url())
    assert (url.host, url.port, url.database, url.password) == (
        "mariadb", 3306, "clinic", "from-a-secret"
    )
    assert "WP_DEBUG" in wp.unevaluated


def test_docker_file_secret_that_cannot_be_read_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(WpConfigError, match="WORDPRESS_DB_PASSWORD_FILE"):
        parse_wp_config(DOCKER, environ={"WORDPRESS_DB_PASSWORD_FILE": str(tmp_path / "nope")})


def test_unclosed_string_is_reported(tmp_path: Path) -> None:
    broken = tmp_path / "wp-config.php"
    broken.write_text("<?php\ndefine('DB_NAME', 'never closed);\n")
    with pytest.raises(WpConfigError, match="never closed"):
        load_wp_config(broken)


def test_unreadable_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(WpConfigError, match="cannot read"):
        load_wp_config(tmp_path / "missing.php")


def test_text_outside_php_tags_is_ignored() -> None:
    text = "define('X', 'html');\n<?php define('DB_NAME', 'real'); ?>\n<p>define('Y','z')</p>"
    wp = parse_wp_config(text, environ={})
    assert wp.constants == {"DB_NAME": "real"}


# --------------------------------------------------------------------------- real PHP

php = pytest.mark.skipif(shutil.which("php") is None, reason="php-cli is required")

_PHP_DUMP = r"""<?php
$_SERVER['HTTP_HOST'] = 'clinic.example';
include $argv[1];
echo json_encode(['constants' => get_defined_constants(true)['user'], 'table_prefix' => $table_prefix]);
"""


def _php_view(tmp_path: Path, source: str, environ: dict[str, str]) -> dict:
    config = tmp_path / "wp-config.php"
    config.write_text(source.replace("require_once ABSPATH . 'wp-settings.php';", ""))
    dumper = tmp_path / "dump.php"
    dumper.write_text(_PHP_DUMP)
    out = subprocess.run(
        ["php", "-n", "-d", "display_errors=stderr", str(dumper), str(config)],
        capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin", **environ},
    )
    return json.loads(out.stdout)


@php
@pytest.mark.php
@pytest.mark.parametrize("name", ["classic", "docker"])
def test_parser_agrees_with_php(tmp_path: Path, name: str) -> None:
    secret = tmp_path / "secret"
    secret.write_text("file secret\r\n")
    source, environ = {
        "classic": (CLASSIC, {}),
        "docker": (
            DOCKER,
            {
                "WORDPRESS_DB_HOST": "[::1]:3306",
                "WORDPRESS_DB_PASSWORD_FILE": str(secret),
                "WORDPRESS_TABLE_PREFIX": "d_",
                "WORDPRESS_CONFIG_EXTRA": "define('WP_HOME', 'https://clinic.example');",
            },
        ),
    }[name]
    seen = _php_view(tmp_path, source, environ)
    wp = parse_wp_config(source, environ=environ)
    assert wp.table_prefix == seen["table_prefix"]
    for constant, value in seen["constants"].items():
        if constant in wp.unevaluated:
            continue
        assert constant in wp.constants, constant
        assert wp.constants[constant] == value, constant
    assert set(wp.constants) <= set(seen["constants"])
