"""Run real WordPress PHP against a test database, for interop tests.

``WordPressPHP`` boots Debian's WordPress (``/usr/share/wordpress``) through the loader shipped in
``sidecar/php/wp-loader.php``: each ``run`` is one ``php`` process (about 100 ms or more), so
callers batch several checks into one script. Values cross the process boundary as PHP
``serialize()`` text decoded with the independent ``phpserialize`` library, so PHP types (ints,
bools, floats, nested arrays) survive exactly and wp_schema's own codec is never used to judge
itself.

PHP is required in CI: when ``php`` or WordPress is missing, ``require_php()`` fails the test if
``KCSC_REQUIRE_PHP=1`` and skips it otherwise.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import string
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import phpserialize
import pytest
import sqlalchemy as sa

import sidecar
from sidecar.wpconfig import AUTH_KEY_NAMES

WORDPRESS_DIR = Path(os.environ.get("KCSC_WORDPRESS_DIR", "/usr/share/wordpress"))
LOADER = Path(sidecar.__file__).parent / "php" / "wp-loader.php"
SALT_NAMES = AUTH_KEY_NAMES  # the eight keys and salts of wp-config.php
# Like WordPress's secret-key generator: printable ASCII including quotes, backslash and dollar.
_SALT_ALPHABET = string.ascii_letters + string.digits + "!@#$%^&*()-_ []{}<>~`+=,.;:/?|'\"\\"
DEFAULT_ADMIN_PASSWORD = "admin-pass-123"


class PhpError(RuntimeError):
    """A PHP run exited non-zero; carries its stderr (and stdout) for the test report."""

    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        super().__init__(
            f"php exited {returncode}\n--- stderr ---\n{stderr}\n--- stdout ---\n{stdout}"
        )
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


def php_missing_reason() -> str | None:
    """Why PHP WordPress cannot run here, or None when it can."""
    if shutil.which("php") is None:
        return "php-cli is not installed (apt-get install php-cli php-mysql)"
    if not (WORDPRESS_DIR / "wp-settings.php").is_file():
        return f"WordPress is not installed in {WORDPRESS_DIR} (apt-get install wordpress)"
    probe = subprocess.run(
        ["php", "-r", "echo function_exists('mysqli_connect') ? 'ok' : 'no';"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.stdout.strip() != "ok":
        return "php-mysql (mysqli) is not installed"
    return None


def require_php() -> None:
    """Skip the calling test when PHP is unavailable, or fail it when KCSC_REQUIRE_PHP=1."""
    reason = php_missing_reason()
    if reason is None:
        return
    if os.environ.get("KCSC_REQUIRE_PHP") == "1":
        pytest.fail(f"KCSC_REQUIRE_PHP=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def random_salts() -> dict[str, str]:
    """Eight distinct 64-character keys and salts, as wp-config.php would hold them."""
    return {name: "".join(secrets.choice(_SALT_ALPHABET) for _ in range(64)) for name in SALT_NAMES}


def php_literal(value: Any) -> str:
    """A PHP expression evaluating to ``value`` (via serialize, so types are exact).

    Python lists and dicts become PHP arrays, bools ``true``/``false``, None ``null``.
    """
    encoded = base64.b64encode(phpserialize.dumps(value)).decode("ascii")
    return f"unserialize(base64_decode('{encoded}'))"


def php_to_python(value: Any) -> Any:
    """Normalize a ``phpserialize.loads`` result: bytes → str, arrays with keys 0..n-1 → list."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, dict):
        items = {php_to_python(k): php_to_python(v) for k, v in value.items()}
        if list(items) == list(range(len(items))):
            return list(items.values())
        return items
    return value


def token_of(cookie_value: str) -> str:
    """The session token inside a (URL-encoded) logged_in cookie value."""
    return unquote_plus(cookie_value).split("|")[2]


class WordPressPHP:
    """One real WordPress site (PHP) over one MariaDB database."""

    def __init__(
        self,
        db: str | sa.URL | Mapping[str, str],
        table_prefix: str = "wp_",
        salts: Mapping[str, str] | None = None,
        site_url: str = "http://clinic.test",
        *,
        extra_constants: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(db, Mapping):
            params = {
                "db_name": db["name"],
                "db_user": db.get("user", "root"),
                "db_password": db.get("password", ""),
                "db_host": db.get("host", "127.0.0.1:3306"),
            }
        else:
            url = sa.make_url(db)
            params = {
                "db_name": url.database or "",
                "db_user": url.username or "root",
                "db_password": url.password or "",
                "db_host": f"{url.host or '127.0.0.1'}:{url.port or 3306}",
            }
        self.db = db
        self.salts = dict(random_salts() if salts is None else salts)
        self.table_prefix = table_prefix
        self.site_url = site_url
        self._workdir = Path(tempfile.mkdtemp(prefix="kcsc-wp-"))
        (self._workdir / "content").mkdir()
        self._config = {
            **params,
            "table_prefix": table_prefix,
            "site_url": site_url,
            "abspath": str(WORDPRESS_DIR),
            "content_dir": str(self._workdir / "content"),
            "constants": {**self.salts, **(extra_constants or {})},
        }
        self.last_stderr = ""

    def close(self) -> None:
        shutil.rmtree(self._workdir, ignore_errors=True)

    # -- running PHP -------------------------------------------------------------------------

    def run(self, php_code: str, *, installing: bool = False, admin: bool = False) -> str:
        """Run ``php_code`` (no ``<?php`` tag) inside a booted WordPress; returns stdout.

        ``admin`` also loads wp-admin/includes (user.php, upgrade.php) first. Raises PhpError
        with stderr when PHP exits non-zero. Warnings and deprecations go to ``last_stderr``.
        """
        config_file = self._workdir / ("install.json" if installing else "site.json")
        config_file.write_text(json.dumps({**self._config, "installing": installing}))
        includes = ""
        if admin or installing:
            includes = (
                "require_once ABSPATH . 'wp-admin/includes/upgrade.php';\n"
                "require_once ABSPATH . 'wp-admin/includes/user.php';\n"
            )
        script = self._workdir / f"run-{secrets.token_hex(4)}.php"
        script.write_text(f"<?php\nrequire {str(LOADER)!r};\n{includes}{php_code}\n")
        try:
            done = subprocess.run(
                [
                    "php",
                    "-d",
                    "display_errors=stderr",
                    "-d",
                    "log_errors=0",
                    "-d",
                    "error_reporting=E_ALL & ~E_DEPRECATED",
                    "-d",
                    "memory_limit=256M",
                    str(script),
                ],
                capture_output=True,
                text=True,
                env={**os.environ, "KCSC_WP_LOADER_CONFIG": str(config_file)},
                timeout=60,
                check=False,
            )
        finally:
            script.unlink(missing_ok=True)
        self.last_stderr = done.stderr
        if done.returncode != 0:
            raise PhpError(done.returncode, done.stdout, done.stderr)
        return done.stdout

    def call(self, php_body: str, **kwargs: Any) -> Any:
        """Run ``php_body`` as a function body that ``return``s a value; the value in Python.

        The value crosses as serialize() text, so ``true`` stays True and ``"1"`` stays "1".
        """
        marker = "@@KCSC-RESULT@@"
        out = self.run(
            f"$kcsc_result = (function () {{\n{php_body}\n}})();\n"
            f"echo {marker!r} . base64_encode(serialize($kcsc_result));",
            **kwargs,
        )
        _, sep, payload = out.rpartition(marker)
        if not sep:
            raise PhpError(0, out, self.last_stderr)
        return php_to_python(phpserialize.loads(base64.b64decode(payload)))

    # -- site lifecycle ----------------------------------------------------------------------

    def install(
        self, *, admin_login: str = "admin", admin_password: str = DEFAULT_ADMIN_PASSWORD
    ) -> int:
        """Create WordPress's tables and default content (wp_install); returns the admin's id."""
        email = admin_login + "@example.test"
        return self.call(
            f"""
            $r = wp_install('Clinic', {php_literal(admin_login)}, {php_literal(email)},
                            false, '', wp_slash({php_literal(admin_password)}));
            update_option('siteurl', {php_literal(self.site_url)});
            update_option('home', {php_literal(self.site_url)});
            return (int) $r['user_id'];
            """,
            installing=True,
        )

    # -- convenience wrappers (each is one PHP run; batch with ``call`` when it matters) -------

    def get_user_meta(self, user_id: int, key: str) -> Any:
        return self.call(f"return get_user_meta({int(user_id)}, {php_literal(key)}, true);")

    def update_user_meta(self, user_id: int, key: str, value: Any) -> Any:
        """Like a form post: the value is wp_slash()ed because update_user_meta unslashes."""
        return self.call(
            f"return update_user_meta({int(user_id)}, {php_literal(key)}, "
            f"wp_slash({php_literal(value)}));"
        )

    def get_option(self, name: str, default: Any = False) -> Any:
        return self.call(f"return get_option({php_literal(name)}, {php_literal(default)});")

    def update_option(self, name: str, value: Any, autoload: str | None = None) -> bool:
        """update_option does not unslash, so the value is passed as is."""
        auto = "null" if autoload is None else php_literal(autoload)
        return self.call(
            f"return update_option({php_literal(name)}, {php_literal(value)}, {auto});"
        )

    def create_user(self, login: str, password: str, role: str) -> int:
        """wp_insert_user with ``role``; returns the new user's id. See ``create_users``."""
        return self.create_users([(login, password, role)])[0]

    def create_users(self, users: list[tuple[str, str, str]]) -> list[int]:
        """Several wp_insert_user calls in one PHP run: (login, password, role) → ids.

        A role WordPress lacks is registered first with add_role(), as the KiviCare plugin does
        for ``kiviCare_*`` on activation. E-mail is ``<login>@example.test``, display name the
        login title-cased.
        """
        rows = [
            {
                "login": login,
                "pass": pw,
                "email": login + "@example.test",
                "name": login.title(),
                "role": role,
            }
            for login, pw, role in users
        ]
        return self.call(
            f"""
            $ids = array();
            foreach ({php_literal(rows)} as $u) {{
                if (!get_role($u['role'])) {{
                    add_role($u['role'], $u['role'], array('read' => true));
                }}
                $id = wp_insert_user(array(
                    'user_login' => $u['login'], 'user_pass' => $u['pass'],
                    'user_email' => $u['email'], 'display_name' => $u['name'], 'role' => $u['role'],
                ));
                if (is_wp_error($id)) {{ fwrite(STDERR, $id->get_error_message()); exit(1); }}
                $ids[] = $id;
            }}
            return $ids;
            """
        )

    def mint_login_cookie(
        self, user_id: int, expiration: int | None = None, remember: bool = False
    ) -> tuple[str, str]:
        """A logged_in cookie exactly as wp_set_auth_cookie() issues it: a new session token
        stored in ``session_tokens`` and the cookie from wp_generate_auth_cookie(). Returns
        (cookie name, value as the browser sends it, i.e. URL-encoded like setcookie())."""
        return self.mint_login_cookies([(user_id, expiration, remember)])[0]

    def mint_login_cookies(
        self, requests: list[tuple[int, int | None, bool]]
    ) -> list[tuple[str, str]]:
        """``mint_login_cookie`` for several (user id, expiration or None, remember) at once."""
        rows = [
            {"id": int(uid), "exp": 0 if exp is None else int(exp), "days": 14 if remember else 2}
            for uid, exp, remember in requests
        ]
        minted = self.call(
            f"""
            $out = array();
            foreach ({php_literal(rows)} as $r) {{
                $expiration = $r['exp'] ? $r['exp'] : time() + $r['days'] * DAY_IN_SECONDS;
                $token = WP_Session_Tokens::get_instance($r['id'])->create($expiration);
                $cookie = wp_generate_auth_cookie($r['id'], $expiration, 'logged_in', $token);
                if ($cookie === '') {{ fwrite(STDERR, 'no such user ' . $r['id']); exit(1); }}
                $out[] = array(LOGGED_IN_COOKIE, urlencode($cookie));
            }}
            return $out;
            """
        )
        return [(name, value) for name, value in minted]

    def validate_cookie(self, cookie_value: str) -> int:
        """WordPress's own verdict: wp_validate_auth_cookie() → user id, or 0 when rejected."""
        return self.validate_cookies([cookie_value])[0]

    def validate_cookies(self, cookie_values: list[str]) -> list[int]:
        """``validate_cookie`` for several raw (URL-encoded) values in one PHP run."""
        return self.call(
            f"""
            $out = array();
            foreach ({php_literal(list(cookie_values))} as $v) {{
                $out[] = (int) wp_validate_auth_cookie(urldecode($v), 'logged_in');
            }}
            return $out;
            """
        )

    def logout(self, user_id: int, token: str) -> None:
        """What wp_logout() does to the session: destroy this token only."""
        self.call(
            f"WP_Session_Tokens::get_instance({int(user_id)})->destroy({php_literal(token)}); "
            "return null;"
        )

    def destroy_all_sessions(self, user_id: int) -> None:
        self.call(f"WP_Session_Tokens::get_instance({int(user_id)})->destroy_all(); return null;")

    def wp_set_password(self, user_id: int, password: str) -> None:
        self.call(f"wp_set_password({php_literal(password)}, {int(user_id)}); return null;")

    def wp_delete_user(self, user_id: int) -> bool:
        return self.call(f"return wp_delete_user({int(user_id)});", admin=True)
