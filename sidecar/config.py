"""The sidecar's configuration: one immutable :class:`Settings` from four layered sources.

Precedence, per key: environment (``KCSC_<SECTION>__<KEY>``, or ``..._FILE`` naming a file that
holds the value) > the TOML file (``--config`` or ``KCSC_CONFIG``) > the site's ``wp-config.php``
(``[wordpress] config_path``: DB credentials, ``$table_prefix``, keys and salts, ``WP_SITEURL``)
> built-in defaults. Every key is declared once, in the section dataclasses below, with its
default, type and an example used in error messages; ``config.example.toml`` documents them.

Every problem is a :class:`ConfigError` whose text is one line: the key, what is wrong and how to
fix it. Unknown sections and keys are errors (typos should not silently fall back to defaults).
Secret values never appear in ``repr`` or in error messages.
"""

from __future__ import annotations

import difflib
import os
import re
import string
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from sidecar.wpconfig import WpConfig, WpConfigError, load_wp_config

ENV_PREFIX = "KCSC_"
CALENDAR_SCOPE = "https://www.googleapis.com/auth/calendar"


class ConfigError(Exception):
    """A configuration problem, rendered as one line: ``key: problem — fix``."""

    def __init__(self, key: str, problem: str, fix: str, *, source: str | None = None) -> None:
        super().__init__(key, problem, fix)
        self.key = key
        self.problem = problem
        self.fix = fix
        self.source = source

    def __str__(self) -> str:
        where = f" (from {self.source})" if self.source else ""
        line = f"{self.key}{where}: {self.problem} — {self.fix}"
        return " ".join(line.split())  # one line, whatever the parts contained


# --- key declarations ----------------------------------------------------------------------------


def _key(
    default: Any,
    kind: str,
    *,
    example: str,
    secret: bool = False,
    choices: tuple[str, ...] = (),
    minimum: float | None = None,
    required_fix: str = "",
) -> Any:
    """A declared setting: dataclass field plus what the loader needs to coerce and explain it."""
    meta = {
        "kind": kind,
        "example": example,
        "secret": secret,
        "choices": choices,
        "minimum": minimum,
        "required_fix": required_fix,
    }
    return field(default=default, metadata=meta)


def _mask_url(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL is never shown
        return "***"


class _MaskedRepr:
    """``repr`` that shows every field but replaces secret values with ``***``."""

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.metadata.get("secret") and value:
                shown = "'***'"
            elif f.metadata.get("kind") == "db_url" and value:
                shown = repr(_mask_url(value))
            else:
                shown = repr(value)
            parts.append(f"{f.name}={shown}")
        return f"{type(self).__name__}({', '.join(parts)})"


@dataclass(frozen=True, repr=False)
class DatabaseSettings(_MaskedRepr):
    url: str | None = _key(
        None,
        "db_url",
        example="mysql+pymysql://wp:secret@127.0.0.1:3306/wordpress",
        required_fix=(
            "set [database] url (or KCSC_DATABASE__URL), e.g. "
            "mysql+pymysql://wp:secret@127.0.0.1:3306/wordpress, "
            "or point [wordpress] config_path at the site's wp-config.php"
        ),
    )
    table_prefix: str = _key("wp_", "prefix", example="wp_")
    blog_id: int = _key(1, "int", example="1", minimum=1)

    def table_names(self) -> Any:
        """``wp_schema.names.TableNames`` for this site (prefix and blog id)."""
        from wp_schema.names import TableNames

        return TableNames(prefix=self.table_prefix, blog_id=self.blog_id)


@dataclass(frozen=True, repr=False)
class WordPressSettings(_MaskedRepr):
    config_path: Path | None = _key(  # noqa: RUF009 - _key returns a dataclass field
        None, "path", example="/var/www/html/wp-config.php"
    )
    site_url: str = _key("", "opt_http_url", example="https://clinic.example")
    cookie_hash: str = _key("", "str", example="md5 of the siteurl option")
    auth_key: str = _key("", "str", example="the AUTH_KEY of wp-config.php", secret=True)
    secure_auth_key: str = _key("", "str", example="the SECURE_AUTH_KEY", secret=True)
    logged_in_key: str = _key("", "str", example="the LOGGED_IN_KEY", secret=True)
    nonce_key: str = _key("", "str", example="the NONCE_KEY", secret=True)
    auth_salt: str = _key("", "str", example="the AUTH_SALT", secret=True)
    secure_auth_salt: str = _key("", "str", example="the SECURE_AUTH_SALT", secret=True)
    logged_in_salt: str = _key("", "str", example="the LOGGED_IN_SALT", secret=True)
    nonce_salt: str = _key("", "str", example="the NONCE_SALT", secret=True)


@dataclass(frozen=True, repr=False)
class SidecarSettings(_MaskedRepr):
    public_url: str = _key(
        "http://127.0.0.1:8090", "public_url", example="https://clinic.example/kc-sidecar"
    )
    listen: str = _key("127.0.0.1:8090", "listen", example="127.0.0.1:8090")
    secret_key: str = _key(
        "",
        "secret_key",
        example="a random string of at least 16 characters",
        secret=True,
        required_fix=(
            "set [sidecar] secret_key (or KCSC_SIDECAR__SECRET_KEY_FILE) to a random string, "
            'e.g. the output of: python3 -c "import secrets; print(secrets.token_urlsafe(32))"'
        ),
    )
    log_level: str = _key(
        "INFO", "enum_upper", example="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
    )
    log_format: str = _key("text", "enum", example="text", choices=("text", "json"))
    data_dir: Path | None = _key(  # noqa: RUF009 - _key returns a dataclass field
        None, "path", example="/var/lib/kc-sidecar"
    )

    @property
    def listen_host(self) -> str:
        return _split_listen(self.listen)[0]

    @property
    def listen_port(self) -> int:
        return _split_listen(self.listen)[1]


@dataclass(frozen=True, repr=False)
class GoogleSettings(_MaskedRepr):
    client_id: str = _key("", "str", example="1234.apps.googleusercontent.com")
    client_secret: str = _key("", "str", example="the OAuth client secret", secret=True)
    auth_uri: str = _key(
        "https://accounts.google.com/o/oauth2/v2/auth", "http_url",
        example="https://accounts.google.com/o/oauth2/v2/auth",
    )
    token_uri: str = _key(
        "https://oauth2.googleapis.com/token", "http_url",
        example="https://oauth2.googleapis.com/token",
    )
    revoke_uri: str = _key(
        "https://oauth2.googleapis.com/revoke", "http_url",
        example="https://oauth2.googleapis.com/revoke",
    )
    api_endpoint: str = _key(
        "https://www.googleapis.com/", "root_url", example="https://www.googleapis.com/"
    )
    scope: str = _key(CALENDAR_SCOPE, "enum", example=CALENDAR_SCOPE, choices=(CALENDAR_SCOPE,))
    request_timeout: float = _key(30.0, "seconds", example="30", minimum=0.1)


@dataclass(frozen=True, repr=False)
class SyncSettings(_MaskedRepr):
    poll_seconds: float = _key(2.0, "seconds", example="2", minimum=0.1)
    reconcile_seconds: int = _key(60, "int", example="60", minimum=1)
    upcoming_days: int = _key(60, "int", example="60", minimum=1)
    retry_seconds: int = _key(30, "int", example="30", minimum=1)
    settle_seconds: int = _key(20, "int", example="20", minimum=0)
    attendees: str = _key("none", "enum", example="none", choices=("none", "patient"))
    send_updates: str = _key(
        "none", "enum", example="none", choices=("none", "externalOnly", "all")
    )
    summary_template: str = _key("{services}", "template", example="{services}")
    description_template: str = _key("{services}", "template", example="{services}")
    channel_ttl_seconds: int = _key(604800, "int", example="604800", minimum=3600)
    channel_renew_margin_seconds: int = _key(86400, "int", example="86400", minimum=0)
    inbound_poll_seconds: int = _key(300, "int", example="300", minimum=1)
    google_deleted_policy: str = _key(
        "recreate", "enum", example="recreate", choices=("recreate", "unlink")
    )
    google_moved_policy: str = _key(
        "revert", "enum", example="revert", choices=("revert", "accept")
    )
    per_doctor_calls_per_minute: int = _key(500, "int", example="500", minimum=1)
    workers: int = _key(8, "int", example="8", minimum=1)
    per_doctor: int = _key(2, "int", example="2", minimum=1)


SECTIONS: dict[str, type] = {
    "database": DatabaseSettings,
    "wordpress": WordPressSettings,
    "sidecar": SidecarSettings,
    "google": GoogleSettings,
    "sync": SyncSettings,
}


@dataclass(frozen=True, repr=False)
class Settings:
    """Everything the sidecar is configured with. Immutable; build with :func:`load_settings`.

    ``origins`` says where each ``section.key`` came from: ``env``, ``env file``, ``toml``,
    ``wp-config`` or ``default``. ``wp_config`` is the parsed wp-config.php, if one was read
    (its ``constants`` carry e.g. ``COOKIE_DOMAIN`` for cookie handling).
    """

    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    wordpress: WordPressSettings = field(default_factory=WordPressSettings)
    sidecar: SidecarSettings = field(default_factory=SidecarSettings)
    google: GoogleSettings = field(default_factory=GoogleSettings)
    sync: SyncSettings = field(default_factory=SyncSettings)
    config_file: Path | None = None
    origins: Mapping[str, str] = field(default_factory=dict, compare=False)
    wp_config: WpConfig | None = field(default=None, compare=False)

    SECTION_NAMES: ClassVar[tuple[str, ...]] = tuple(SECTIONS)

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in SECTIONS)
        return f"Settings({inner}, config_file={self.config_file!r})"

    def get(self, dotted: str) -> Any:
        """The value of ``section.key``."""
        section, _, name = dotted.partition(".")
        return getattr(getattr(self, section), name)

    def require(self, *dotted: str) -> None:
        """Raise :class:`ConfigError` for the first of these keys that is empty."""
        for key in dotted:
            value = self.get(key)
            if value in (None, ""):
                section, _, name = key.partition(".")
                meta = _field(section, name).metadata
                fix = meta["required_fix"] or (
                    f"set {name} in [{section}] or {env_name(section, name)}"
                )
                raise ConfigError(key, "is not set", fix)


def env_name(section: str, name: str) -> str:
    return f"{ENV_PREFIX}{section.upper()}__{name.upper()}"


def _field(section: str, name: str) -> Any:
    for f in fields(SECTIONS[section]):
        if f.name == name:
            return f
    raise KeyError(f"{section}.{name}")


def _keys(section: str) -> list[str]:
    return [f.name for f in fields(SECTIONS[section])]


def all_keys() -> list[str]:
    """Every ``section.key``, in declaration order."""
    return [f"{s}.{k}" for s in SECTIONS for k in _keys(s)]


# --- loading -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Raw:
    value: Any
    origin: str  # env | env file | toml | wp-config | default
    source: str | None  # the variable or file that supplied it, for error messages
    base_dir: Path | None = None  # relative paths in a TOML file are relative to the file


def load_settings(
    config_file: str | Path | None = None, environ: Mapping[str, str] = os.environ
) -> Settings:
    """Build :class:`Settings` from environment, TOML file, wp-config.php and defaults."""
    path = _config_path(config_file, environ)
    raw: dict[str, _Raw] = {}
    if path is not None:
        for key, value in _read_toml(path).items():
            raw[key] = _Raw(value, "toml", str(path), path.parent)
    for key, item in _read_env(environ).items():
        raw[key] = item  # env beats TOML

    wp_config: WpConfig | None = None
    if "wordpress.config_path" in raw:
        cp = _coerce("wordpress", "config_path", raw["wordpress.config_path"])
        if cp is not None:
            wp_config = _read_wp_config(cp, raw["wordpress.config_path"], environ)
            for key, value in _from_wp_config(wp_config).items():
                raw.setdefault(key, _Raw(value, "wp-config", str(cp)))

    sections: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for section, cls in SECTIONS.items():
        values: dict[str, Any] = {}
        for f in fields(cls):
            key = f"{section}.{f.name}"
            if key in raw:
                values[f.name] = _coerce(section, f.name, raw[key])
                origins[key] = raw[key].origin
            else:
                origins[key] = "default"
        sections[section] = cls(**values)
    settings = Settings(
        **sections, config_file=path, origins=dict(origins), wp_config=wp_config
    )
    _cross_check(settings, raw)
    return settings


def _config_path(config_file: str | Path | None, environ: Mapping[str, str]) -> Path | None:
    if config_file is not None and str(config_file) != "":
        source = "--config"
        path = Path(config_file)
    elif environ.get("KCSC_CONFIG"):
        source = "KCSC_CONFIG"
        path = Path(environ["KCSC_CONFIG"])
    else:
        return None
    path = path.expanduser()
    if not path.is_file():
        problem = "is a directory" if path.is_dir() else "does not exist"
        raise ConfigError(
            source, f"{path} {problem}", "give the path of the sidecar's TOML configuration file"
        )
    return path.resolve()


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(
            str(path), f"is not valid TOML ({err})", "fix the syntax; see config.example.toml"
        ) from err
    except OSError as err:
        raise ConfigError(
            str(path), f"cannot be read ({err.strerror})", "check the file's permissions"
        ) from err
    out: dict[str, Any] = {}
    for section, table in data.items():
        if section not in SECTIONS:
            raise ConfigError(
                section,
                f"[{section}] in {path.name} is not a section of the configuration",
                _did_you_mean(section, list(SECTIONS), "use one of " + ", ".join(SECTIONS)),
            )
        if not isinstance(table, dict):
            raise ConfigError(
                section,
                f"is a value in {path.name}, not a [{section}] table",
                f"put its settings under a [{section}] header",
            )
        for name, value in table.items():
            if name not in _keys(section):
                raise ConfigError(
                    f"{section}.{name}",
                    f"in {path.name} is not a setting",
                    _did_you_mean(
                        name,
                        _keys(section),
                        f"remove it; [{section}] knows " + ", ".join(_keys(section)),
                        f"{section}.",
                    ),
                )
            if isinstance(value, dict | list):
                raise ConfigError(
                    f"{section}.{name}",
                    f"in {path.name} is a {type(value).__name__}, not a single value",
                    f"write it as {name} = {_example(section, name)}",
                )
            out[f"{section}.{name}"] = value
    return out


def _read_env(environ: Mapping[str, str]) -> dict[str, _Raw]:
    out: dict[str, _Raw] = {}
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX) or "__" not in var[len(ENV_PREFIX) :]:
            continue
        section_part, _, name_part = var[len(ENV_PREFIX) :].partition("__")
        section = section_part.lower()
        name = name_part.lower()
        is_file = False
        if (
            section in SECTIONS
            and name not in _keys(section)
            and name.removesuffix("_file") in _keys(section)
        ):
            name = name.removesuffix("_file")
            is_file = True
        if section not in SECTIONS or name not in _keys(section):
            candidates = [env_name(s, k) for s in SECTIONS for k in _keys(s)]
            raise ConfigError(
                var,
                "names no setting",
                _did_you_mean(
                    var.removesuffix("_FILE"),
                    candidates,
                    "use KCSC_<SECTION>__<KEY> with a key from config.example.toml",
                ),
            )
        key = f"{section}.{name}"
        if key in out:
            raise ConfigError(
                key,
                f"both {env_name(section, name)} and {env_name(section, name)}_FILE are set",
                "set only one of them",
            )
        if is_file:
            out[key] = _Raw(_read_secret_file(var, environ[var]), "env file", var)
        else:
            out[key] = _Raw(environ[var], "env", var)
    return out


def _read_secret_file(var: str, filename: str) -> str:
    try:
        text = Path(filename).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise ConfigError(
            var, f"names {filename}, which cannot be read ({reason})",
            "point it at a readable file holding just the value",
        ) from err
    return text.rstrip("\r\n")


def _read_wp_config(path: Path, raw: _Raw, environ: Mapping[str, str]) -> WpConfig:
    try:
        return load_wp_config(path, environ)
    except WpConfigError as err:
        raise ConfigError(
            "wordpress.config_path",
            str(err),
            "point it at the site's wp-config.php (readable by the sidecar) or leave it empty",
            source=raw.source if raw.origin.startswith("env") else None,
        ) from err


def _from_wp_config(wp: WpConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    url = wp.database_url()
    if url:
        out["database.url"] = url
    if wp.table_prefix:
        out["database.table_prefix"] = wp.table_prefix
    if wp.get("WP_SITEURL"):
        out["wordpress.site_url"] = wp.get("WP_SITEURL")
    if wp.get("COOKIEHASH"):
        out["wordpress.cookie_hash"] = wp.get("COOKIEHASH")
    for name, value in wp.auth_keys.items():
        out[f"wordpress.{name}"] = value
    return out


# --- coercion ------------------------------------------------------------------------------------


def _coerce(section: str, name: str, raw: _Raw) -> Any:
    meta = _field(section, name).metadata
    kind: str = meta["kind"]
    key = f"{section}.{name}"
    source = None if raw.origin == "toml" else raw.source
    shown = "the value" if meta["secret"] else _show(raw.value)

    def fail(problem: str, fix: str | None = None) -> ConfigError:
        return ConfigError(key, problem, fix or f"set it to e.g. {meta['example']}", source=source)

    value = raw.value
    if isinstance(value, bool):
        raise fail(f"{shown} is a true/false value")
    handler = _COERCERS[kind]
    return handler(value, meta, shown, fail, raw)


Fail = Callable[..., ConfigError]


def _show(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return '"' + text.replace('"', '\\"') + '"'


def _as_str(value: Any, meta: Mapping[str, Any], shown: str, fail: Fail, raw: _Raw) -> str:
    if not isinstance(value, str):
        raise fail(f"{shown} is not text", f'put it in quotes, e.g. "{meta["example"]}"')
    return value


def _as_int(value: Any, meta: Mapping[str, Any], shown: str, fail: Fail, raw: _Raw) -> int:
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        number = int(value)
    else:
        raise fail(f"{shown} is not a whole number", _int_fix(meta))
    if meta["minimum"] is not None and number < meta["minimum"]:
        raise fail(f"{number} is below the minimum of {int(meta['minimum'])}", _int_fix(meta))
    return number


def _int_fix(meta: Mapping[str, Any]) -> str:
    unit = "number of seconds" if meta["example"].isdigit() else "number"
    return f"set a {unit} such as {meta['example']}"


def _as_seconds(value: Any, meta: Mapping[str, Any], shown: str, fail: Fail, raw: _Raw) -> float:
    fix = f"set a number of seconds such as {meta['example']}"
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise fail(f"{shown} is not a number", fix) from None
    if not number == number or number in (float("inf"), float("-inf")):
        raise fail(f"{shown} is not a finite number", fix)
    if meta["minimum"] is not None and number < meta["minimum"]:
        raise fail(f"{shown} is below the minimum of {meta['minimum']}", fix)
    return number


def _as_enum(value: Any, meta: Mapping[str, Any], shown: str, fail: Fail, raw: _Raw) -> str:
    choices: tuple[str, ...] = meta["choices"]
    text = _as_str(value, meta, shown, fail, raw).strip()
    for choice in choices:
        if text == choice or text.lower() == choice.lower():
            return choice
    options = " or ".join(f'"{c}"' for c in choices)
    if len(choices) == 1:
        raise fail(f"{shown} is not supported", f"remove it or set {options}, the only value")
    raise fail(f"{shown} is not one of the choices", f"set {options}")


def _as_enum_upper(value: Any, meta: Mapping[str, Any], shown: str, fail: Fail, raw: _Raw) -> str:
    return _as_enum(value, meta, shown, fail, raw).upper()


def _http_url(text: str, shown: str, fail: Fail, meta: Mapping[str, Any]) -> str:
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.hostname is None:
        raise fail(
            f"{shown} is not an absolute http(s) URL", f"set a URL such as {meta['example']}"
        )
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise fail(f"{shown} has an invalid port", f"set a URL such as {meta['example']}") from None
    return text.strip()


def _as_http_url(value: Any, meta: Mapping[str, Any], shown: str, fail: Fail, raw: _Raw) -> str:
    return _http_url(_as_str(value, meta, shown, fail, raw), shown, fail, meta)


def _as_opt_http_url(
    value: Any, meta: Mapping[str, Any], shown: str, fail: Fail, raw: _Raw
) -> str:
    text = _as_str(value, meta, shown, fail, raw).strip()
    return _http_url(text, shown, fail, meta).rstrip("/") if text else ""


def _as_public_url(value: Any, meta: Mapping[str, Any], shown: str, fail: Fail, raw: _Raw) -> str:
    url = _as_http_url(value, meta, shown, fail, raw)
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise fail(
            f"{shown} has a query or fragment", f"set just the base URL, e.g. {meta['example']}"
        )
    return url.rstrip("/")


def _as_root_url(value: Any, meta: Mapping[str, Any], shown: str, fail: Fail, raw: _Raw) -> str:
    url = _as_http_url(value, meta, shown, fail, raw)
    return url if url.endswith("/") else url + "/"


def _split_listen(text: str) -> tuple[str, int]:
    m = re.fullmatch(r"\[(?P<v6>[0-9A-Fa-f:.]+)\]:(?P<port>\d+)|(?P<host>[^:\s\[\]]+):(?P<p>\d+)",
                     text.strip())
    if m is None:
        raise ValueError(text)
    host = m.group("v6") or m.group("host")
    port = int(m.group("port") or m.group("p"))
    if not 1 <= port <= 65535:
        raise ValueError(text)
    return host, port


def _as_listen(value: Any, meta: Mapping[str, Any], shown: str, fail: Fail, raw: _Raw) -> str:
    text = _as_str(value, meta, shown, fail, raw).strip()
    try:
        _split_listen(text)
    except ValueError:
        raise fail(
            f"{shown} is not host:port with a port from 1 to 65535",
            "set e.g. 127.0.0.1:8090, 0.0.0.0:8090 or [::]:8090",
        ) from None
    return text


def _as_secret_key(value: Any, meta: Mapping[str, Any], shown: str, fail: Fail, raw: _Raw) -> str:
    text = _as_str(value, meta, shown, fail, raw)
    if text and len(text) < 16:
        raise fail(
            f"the value is only {len(text)} characters long",
            "use at least 16 random characters, e.g. the output of: "
            'python3 -c "import secrets; print(secrets.token_urlsafe(32))"',
        )
    return text


def _as_prefix(value: Any, meta: Mapping[str, Any], shown: str, fail: Fail, raw: _Raw) -> str:
    text = _as_str(value, meta, shown, fail, raw)
    if not re.fullmatch(r"[A-Za-z0-9_]+", text):
        raise fail(
            f"{shown} may contain only letters, digits and underscores",
            "copy $table_prefix from wp-config.php, e.g. wp_",
        )
    return text


def _as_path(
    value: Any, meta: Mapping[str, Any], shown: str, fail: Fail, raw: _Raw
) -> Path | None:
    text = _as_str(value, meta, shown, fail, raw).strip()
    if not text:
        return None
    path = Path(text).expanduser()
    if not path.is_absolute() and raw.base_dir is not None:
        path = raw.base_dir / path
    return path.absolute()


def _as_template(value: Any, meta: Mapping[str, Any], shown: str, fail: Fail, raw: _Raw) -> str:
    text = _as_str(value, meta, shown, fail, raw)
    try:
        for _, field_name, _, _ in string.Formatter().parse(text):
            if field_name is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", field_name):
                raise ValueError(f"placeholder {{{field_name}}} is not a plain name")
    except ValueError as err:
        raise fail(
            f"{shown} is not a valid template ({err})",
            "use {name} placeholders and write a literal brace as {{ or }}, e.g. {services}",
        ) from None
    return text


_DB_BACKENDS = {"mysql", "mariadb", "sqlite"}


def _as_db_url(
    value: Any, meta: Mapping[str, Any], shown: str, fail: Fail, raw: _Raw
) -> str | None:
    text = _as_str(value, meta, "the value", fail, raw).strip()
    if not text:
        return None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    fix = (
        "use mysql+pymysql://USER:PASSWORD@HOST:3306/DBNAME (URL-quote special characters) "
        "or sqlite:///path/to/site.db"
    )
    try:
        url = make_url(text)
    except (ArgumentError, ValueError):
        raise fail("the value is not a database URL", fix) from None
    backend, _, driver = url.drivername.partition("+")
    if backend not in _DB_BACKENDS:
        raise fail(f'"{backend}" databases are not supported', fix)
    if backend in ("mysql", "mariadb"):
        if not driver:
            url = url.set(drivername=f"{backend}+pymysql")
        elif driver != "pymysql":
            raise fail(f'the driver "{driver}" is not installed', f"use {backend}+pymysql://...")
        if not url.database:
            raise fail("the URL names no database", fix)
    return url.render_as_string(hide_password=False)


_COERCERS: dict[str, Callable[..., Any]] = {
    "str": _as_str,
    "int": _as_int,
    "seconds": _as_seconds,
    "enum": _as_enum,
    "enum_upper": _as_enum_upper,
    "http_url": _as_http_url,
    "opt_http_url": _as_opt_http_url,
    "public_url": _as_public_url,
    "root_url": _as_root_url,
    "listen": _as_listen,
    "secret_key": _as_secret_key,
    "prefix": _as_prefix,
    "path": _as_path,
    "template": _as_template,
    "db_url": _as_db_url,
}


def _cross_check(settings: Settings, raw: Mapping[str, _Raw]) -> None:
    sync = settings.sync
    if sync.channel_renew_margin_seconds >= sync.channel_ttl_seconds:
        item = raw.get("sync.channel_renew_margin_seconds")
        raise ConfigError(
            "sync.channel_renew_margin_seconds",
            f"{sync.channel_renew_margin_seconds} is not shorter than "
            f"sync.channel_ttl_seconds ({sync.channel_ttl_seconds})",
            "renew channels a while before they expire, e.g. 86400 with a TTL of 604800",
            source=item.source if item and item.origin.startswith("env") else None,
        )


def _example(section: str, name: str) -> str:
    meta = _field(section, name).metadata
    example = meta["example"]
    return example if meta["kind"] in ("int", "seconds") else f'"{example}"'


def _did_you_mean(word: str, options: list[str], otherwise: str, prefix: str = "") -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f"did you mean {prefix}{close[0]}?" if close else otherwise


def default_value(dotted: str) -> Any:
    """The built-in default of ``section.key`` (used by docs and ``check``)."""
    section, _, name = dotted.partition(".")
    f = _field(section, name)
    return None if f.default is MISSING else f.default
