"""``kc-sidecar check``: can the sidecar run against this site, and what did it find?

Read-only. Connects to the database, reflects the schema (``wp_schema.reflect``), reads a few
WordPress options and reports each finding as ok / info / warn / fail with a hint. The report is
``ok`` (exit 0) only when nothing failed. Secrets are reported as present or missing, never shown.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa

from sidecar.config import Settings
from sidecar.wpconfig import AUTH_KEY_NAMES

log = logging.getLogger(__name__)

Status = Literal["ok", "info", "warn", "fail"]

PLUGIN_DIRS = {
    "kivicare": "kivicare-clinic-management-system/",
    "google_meet": "kivicare-google-meet/",
    "pro": "kivicare-pro/",
}
PLUGIN_LABELS = {
    "kivicare": "KiviCare",
    "google_meet": "KiviCare Google Meet add-on",
    "pro": "KiviCare Pro",
}
_TRUTHY = {"1", "on", "yes", "true"}


@dataclass(frozen=True)
class CheckItem:
    """One finding: ``topic`` groups it (database, schema, ...), ``hint`` says what to do."""

    topic: str
    status: Status
    message: str
    hint: str = ""


@dataclass
class CheckReport:
    items: list[CheckItem] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(i.status == "fail" for i in self.items)

    def add(self, topic: str, status: Status, message: str, hint: str = "") -> None:
        self.items.append(CheckItem(topic, status, message, hint))

    def count(self, status: Status) -> int:
        return sum(1 for i in self.items if i.status == status)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "items": [
                {"topic": i.topic, "status": i.status, "message": i.message, "hint": i.hint}
                for i in self.items
            ],
            "facts": self.facts,
        }


def run_checks(settings: Settings, engine: sa.Engine | None = None) -> CheckReport:
    """Check configuration, database and schema. ``database.url`` must be set (ConfigError)."""
    settings.require("database.url")
    report = CheckReport()
    _check_configuration(settings, report)
    own_engine = engine is None
    if engine is None:
        from sidecar.db import create_engine

        engine = create_engine(settings.database.url)  # type: ignore[arg-type]
    try:
        if _check_connection(settings, engine, report):
            _check_site(settings, engine, report)
    finally:
        if own_engine:
            engine.dispose()
    return report


# --- configuration -------------------------------------------------------------------------------


def _check_configuration(settings: Settings, report: CheckReport) -> None:
    sources = []
    if settings.config_file:
        sources.append(f"config file {settings.config_file}")
    if settings.wordpress.config_path:
        sources.append(f"wp-config.php {settings.wordpress.config_path}")
    env_keys = sorted(k for k, o in settings.origins.items() if o.startswith("env"))
    if env_keys:
        sources.append(f"{len(env_keys)} environment variable(s)")
    report.add(
        "config", "ok", "configuration loaded from " + (", ".join(sources) or "defaults only")
    )
    report.facts["config_file"] = str(settings.config_file) if settings.config_file else None
    wp = settings.wp_config
    if wp is not None and wp.unevaluated:
        relevant = [
            name
            for name in wp.unevaluated
            if name.startswith("DB_") or name in AUTH_KEY_NAMES or name == "$table_prefix"
            or name in ("WP_SITEURL", "COOKIEHASH")
        ]
        if relevant:
            report.add(
                "config", "warn",
                "wp-config.php computes " + ", ".join(relevant) + " at run time; "
                "the sidecar cannot evaluate that",
                "set the matching keys in the sidecar configuration ([database], [wordpress])",
            )
    if not settings.sidecar.secret_key:
        report.add(
            "config", "fail", "sidecar.secret_key is not set",
            "set [sidecar] secret_key or KCSC_SIDECAR__SECRET_KEY_FILE to a random string of "
            "at least 16 characters; it signs OAuth state, CSRF tokens and invite links",
        )
    public = settings.sidecar.public_url
    if public.startswith("http://") and not _is_local_url(public):
        report.add(
            "config", "warn", f"sidecar.public_url {public} is not https",
            "Google delivers push notifications only to https URLs, and login cookies marked "
            "secure are not sent over http; put the sidecar behind TLS",
        )
    else:
        report.add("config", "ok", f"public URL {public}")


def _is_local_url(url: str) -> bool:
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    return host in ("localhost", "127.0.0.1", "::1") or host.endswith(".localhost")


# --- database ------------------------------------------------------------------------------------


def _check_connection(settings: Settings, engine: sa.Engine, report: CheckReport) -> bool:
    where = engine.url.render_as_string(hide_password=True)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                version = "SQLite " + str(conn.exec_driver_sql("select sqlite_version()").scalar())
            else:
                raw = str(conn.exec_driver_sql("SELECT VERSION()").scalar())
                flavour = "MariaDB" if "mariadb" in raw.lower() else "MySQL"
                version = f"{flavour} {raw}"
    except sa.exc.SQLAlchemyError as err:
        reason = _db_error_text(err, settings)
        report.add(
            "database", "fail", f"cannot connect to {where}: {reason}",
            "check [database] url (or DB_* in wp-config.php): host, port, user, password and "
            "database name, and that the server accepts connections from this machine",
        )
        report.facts["database"] = {"url": where, "connected": False}
        return False
    report.add("database", "ok", f"connected to {version} at {where}")
    report.facts["database"] = {"url": where, "connected": True, "server_version": version}
    return True


def _db_error_text(err: sa.exc.SQLAlchemyError, settings: Settings) -> str:
    orig = getattr(err, "orig", None)
    text = str(orig if orig is not None else err).splitlines()[0]
    from sqlalchemy.engine import make_url

    password = make_url(settings.database.url or "sqlite://").password  # type: ignore[arg-type]
    if password:
        text = text.replace(str(password), "***")
    return text


# --- site ----------------------------------------------------------------------------------------


def _check_site(settings: Settings, engine: sa.Engine, report: CheckReport) -> None:
    from wp_schema.meta import Options
    from wp_schema.reflect import SiteSchema

    names = settings.database.table_names()
    schema = SiteSchema.load(engine, names)
    report.facts["schema"] = {
        "table_prefix": names.prefix,
        "blog_id": names.blog_id,
        "generation": schema.generation,
        "mapping_shape": schema.mapping_shape,
        "utc_columns": schema.has_utc_columns,
        "appointment_timezone": schema.has_appointment_timezone,
        "tables": sorted(t.name for t in schema.tables.values()),
    }
    _report_schema(schema, report)

    if schema.options is None:
        return  # already a failure; nothing more can be read
    options = Options(schema)
    with engine.connect() as conn:
        values = {
            name: options.get(conn, name)
            for name in (
                "db_version", "siteurl", "active_plugins", "timezone_string", "gmt_offset",
                "kiviCare_google_meet_setting", "kiviCare_google_cal_setting",
                "logged_in_key", "logged_in_salt",
            )
        }
    _report_wordpress(values, report)
    plugins = _report_plugins(values.get("active_plugins"), schema, report)
    _report_two_way_sync(plugins, values.get("kiviCare_google_cal_setting"), report)
    _report_google_client(settings, values.get("kiviCare_google_meet_setting"), report)
    _report_login_keys(settings, values, report)


def _report_schema(schema: Any, report: CheckReport) -> None:
    appts = schema.appointments
    if schema.generation is not None:
        columns = []
        columns.append("UTC columns" if schema.has_utc_columns else "no UTC columns")
        columns.append(
            "appointment_timezone" if schema.has_appointment_timezone
            else "no appointment_timezone (times are read in the site time zone)"
        )
        report.add(
            "schema", "ok",
            f"KiviCare {schema.generation} tables ({appts.name}): " + ", ".join(columns),
        )
    if schema.mapping_shape is not None:
        shape_text = {
            "a": "legacy shape a (no created_at)",
            "b": "shape b (created_at)",
            "c": "shape c (created_at, extra)",
        }[schema.mapping_shape]
        report.add("schema", "ok", f"Meet mapping table {schema.meet_mappings.name}: {shape_text}")
    for problem in schema.problems:
        report.add("schema", "fail", *_split_hint(problem))
    for note in schema.notes:
        report.add("schema", "info", note)


def _split_hint(text: str) -> tuple[str, str]:
    message, sep, hint = text.partition(" — ")
    return (message, hint) if sep else (text, "")


def _report_wordpress(values: Mapping[str, Any], report: CheckReport) -> None:
    db_version = values.get("db_version")
    tz_string = values.get("timezone_string") or ""
    gmt_offset = values.get("gmt_offset")
    if tz_string:
        zone = tz_string
    elif gmt_offset not in (None, ""):
        zone = f"UTC{_format_offset(gmt_offset)} (gmt_offset; no named zone, so no DST)"
    else:
        zone = "UTC (neither timezone_string nor gmt_offset is set)"
    report.facts["wordpress"] = {
        "db_version": db_version,
        "siteurl": values.get("siteurl"),
        "timezone_string": tz_string or None,
        "gmt_offset": gmt_offset,
    }
    if db_version in (None, ""):
        report.add(
            "wordpress", "warn", "no db_version option",
            "the options table exists but looks empty; is this the site's database?",
        )
    else:
        report.add("wordpress", "ok", f"WordPress db_version {db_version}")
    report.add("wordpress", "info", f"site time zone: {zone}")


def _format_offset(value: Any) -> str:
    try:
        hours = float(value)
    except (TypeError, ValueError):
        return f" {value}"
    sign = "-" if hours < 0 else "+"
    minutes = round(abs(hours) * 60)
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def _report_plugins(active: Any, schema: Any, report: CheckReport) -> dict[str, str | None]:
    files = _plugin_files(active)
    found: dict[str, str | None] = {}
    for key, directory in PLUGIN_DIRS.items():
        found[key] = next((f for f in files if f.startswith(directory)), None)
    report.facts["plugins"] = {"active_plugins": files, **found}
    labels = [f"{PLUGIN_LABELS[k]} ({v})" for k, v in found.items() if v]
    report.add(
        "plugins", "info",
        "active: " + (", ".join(labels) if labels else "none of KiviCare's plugins"),
    )
    if not found["kivicare"] and schema.generation is not None:
        report.add(
            "plugins", "warn", "KiviCare is not in active_plugins although its tables exist",
            "activate KiviCare in WordPress (network-activated plugins are not listed here)",
        )
    if found["google_meet"]:
        report.add(
            "plugins", "info",
            "the Google Meet add-on is active: PHP may create events itself; the sidecar "
            "adopts them and waits sync.settle_seconds after booking before creating one",
        )
    return found


def _plugin_files(active: Any) -> list[str]:
    if isinstance(active, Mapping):
        items: Iterable[Any] = active.values()
    elif isinstance(active, list | tuple):
        items = active
    else:
        return []
    return [str(i) for i in items if isinstance(i, str | bytes)]


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    return str(value).strip().lower() in _TRUTHY


def _report_two_way_sync(
    plugins: Mapping[str, str | None], setting: Any, report: CheckReport
) -> None:
    enabled = isinstance(setting, Mapping) and _truthy(setting.get("enableTwoWaySync", ""))
    report.facts["pro_two_way_sync"] = enabled
    if not enabled:
        return
    if plugins.get("pro"):
        report.add(
            "plugins", "warn",
            "KiviCare Pro two-way Google Calendar sync is enabled "
            "(kiviCare_google_cal_setting.enableTwoWaySync)",
            "Pro reacts to time changes of Google events it has mapped, including Meet events "
            "it patched, and may reschedule the appointment or revert the event while the "
            "sidecar reconciles the same event: double reconciliation. Either turn Pro's "
            "two-way sync off, or keep sync.google_moved_policy = \"revert\" so the KiviCare "
            "row stays the single source of truth and the two never pull in opposite directions",
        )
    else:
        report.add(
            "plugins", "info",
            "kiviCare_google_cal_setting.enableTwoWaySync is on but KiviCare Pro is not active",
        )


def _report_google_client(settings: Settings, addon: Any, report: CheckReport) -> None:
    addon_map = addon if isinstance(addon, Mapping) else {}
    client_id = settings.google.client_id or str(addon_map.get("client_id") or "")
    secret_set = bool(settings.google.client_secret or addon_map.get("client_secret"))
    source = "configuration" if settings.google.client_id else "the Meet add-on's settings"
    report.facts["google"] = {
        "client_id": client_id or None,
        "client_secret_set": secret_set,
        "auth_uri": settings.google.auth_uri,
        "token_uri": settings.google.token_uri,
        "api_endpoint": settings.google.api_endpoint,
    }
    if not client_id:
        report.add(
            "google", "fail", "no Google OAuth client id",
            "set [google] client_id and client_secret (or configure them in the Meet add-on)",
        )
        return
    if not secret_set:
        report.add(
            "google", "fail", f"Google client {client_id} (from {source}) has no client secret",
            "set [google] client_secret or KCSC_GOOGLE__CLIENT_SECRET_FILE",
        )
        return
    report.add("google", "ok", f"Google client {client_id} from {source}; secret set")
    if settings.google.api_endpoint != "https://www.googleapis.com/":
        report.add("google", "info", f"Google API endpoint: {settings.google.api_endpoint}")


def _report_login_keys(
    settings: Settings, values: Mapping[str, Any], report: CheckReport
) -> None:
    """WordPress's wp_salt('logged_in') choice (``sidecar.wp_auth.LoggedInKeys``): usable
    constants first, else the site options ``logged_in_key`` / ``logged_in_salt``."""
    from sidecar.wp_auth import LoggedInKeys

    constants: dict[str, Any] = {}
    if settings.wp_config is not None:  # SECRET_KEY may stand in for LOGGED_IN_KEY
        constants.update(
            (n, v) for n, v in settings.wp_config.constants.items() if n.startswith("SECRET_")
        )
    for name in AUTH_KEY_NAMES:
        value = getattr(settings.wordpress, name.lower())
        if value:
            constants[name] = value
    keys = LoggedInKeys.from_constants(constants)
    options = {n: values.get(n) or "" for n in ("logged_in_key", "logged_in_salt")}
    if keys.resolve(options) is None:
        has_key = bool(keys.key or options["logged_in_key"])
        missing = "logged_in_salt" if has_key else "logged_in_key"
        report.add(
            "wordpress", "fail", f"no usable {missing}: the sidecar cannot check WordPress logins",
            "set [wordpress] config_path to the site's wp-config.php, or set "
            f"[wordpress] {missing} to the value of {missing.upper()} "
            "(the sample phrase and duplicated values do not count, as in WordPress)",
        )
        return
    from_options = [n for n, v in (("key", keys.key), ("salt", keys.salt)) if not v]
    where = (
        " (" + " and ".join(f"logged_in_{n} from the site option" for n in from_options) + ")"
        if from_options else ""
    )
    report.add("wordpress", "ok", f"logged-in key and salt available for cookie checks{where}")


# --- rendering -----------------------------------------------------------------------------------

_MARK = {"ok": "ok  ", "info": "info", "warn": "WARN", "fail": "FAIL"}


def render_text(report: CheckReport) -> str:
    lines = ["kc-sidecar check"]
    width = max((len(i.topic) for i in report.items), default=8)
    for item in report.items:
        lines.append(f"  {_MARK[item.status]}  {item.topic:<{width}}  {item.message}")
        if item.hint and item.status in ("warn", "fail"):
            lines.append(f"        {'':<{width}}  → {item.hint}")
    failures = report.count("fail")
    warnings = report.count("warn")
    if failures:
        lines.append(
            f"Result: the sidecar cannot run — {failures} problem(s)"
            + (f", {warnings} warning(s)" if warnings else "")
        )
    else:
        lines.append(
            "Result: the sidecar can run" + (f" ({warnings} warning(s))" if warnings else "")
        )
    return "\n".join(lines)
