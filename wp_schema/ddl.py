"""Reference DDL: the WordPress core and KiviCare tables the sidecar touches, per generation.

Used by tests, the demo and the benchmark to build realistic sites; production never creates
these tables (WordPress and KiviCare own them). Column lists, types, defaults and index names
follow WordPress 6.1 ``wp-admin/includes/schema.php``, KiviCare 3.6 ``app/database/kc-*-db.php``,
KiviCare 4.x migrations (incl. 2025-10 index optimisation and the 2026 UTC / time-zone
migrations) and the Google Meet add-on (three mapping-table shapes: a = legacy add-on 1.x,
b = add-on 4.x create migration, c = after its optimize migration).

Tables are declared once in MariaDB syntax and rendered for SQLite (demo) by translating types
and moving secondary keys to ``CREATE INDEX`` statements named ``{table}__{key}`` (SQLite index
names are global per database). Every statement uses ``IF NOT EXISTS``, so a database where
WordPress already ran ``wp_install()`` is left as it is.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Literal

import sqlalchemy as sa

from wp_schema.names import TableNames

log = logging.getLogger(__name__)

Generation = Literal["v3", "v4"]
MappingShape = Literal["a", "b", "c"]

MYSQL_TABLE_OPTIONS = "DEFAULT CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_520_ci"
SQLITE_INDEX_SEPARATOR = "__"


@dataclass(frozen=True)
class Key:
    name: str
    columns: str  # MariaDB syntax, may carry prefix lengths: "meta_key(191)"
    unique: bool = False


@dataclass(frozen=True)
class TableDef:
    name: str
    columns: tuple[tuple[str, str], ...]  # (column name, MariaDB definition)
    primary: str = "id"
    keys: tuple[Key, ...] = field(default_factory=tuple)

    def render(self, dialect: str) -> list[str]:
        if dialect == "sqlite":
            return _render_sqlite(self)
        return [_render_mysql(self)]


def _keys(*specs: str) -> tuple[Key, ...]:
    """``"idx_name: a, b"`` → Key; a leading ``!`` marks UNIQUE."""
    out = []
    for spec in specs:
        name, _, cols = spec.partition(":")
        unique = name.startswith("!")
        out.append(Key(name.lstrip("!").strip(), cols.strip(), unique))
    return tuple(out)


# --------------------------------------------------------------------------- WordPress core


def _users(names: TableNames) -> TableDef:
    cols = [
        ("ID", "bigint(20) unsigned NOT NULL auto_increment"),
        ("user_login", "varchar(60) NOT NULL default ''"),
        ("user_pass", "varchar(255) NOT NULL default ''"),
        ("user_nicename", "varchar(50) NOT NULL default ''"),
        ("user_email", "varchar(100) NOT NULL default ''"),
        ("user_url", "varchar(100) NOT NULL default ''"),
        ("user_registered", "datetime NOT NULL default '0000-00-00 00:00:00'"),
        ("user_activation_key", "varchar(255) NOT NULL default ''"),
        ("user_status", "int(11) NOT NULL default '0'"),
        ("display_name", "varchar(250) NOT NULL default ''"),
    ]
    if names.is_multisite_blog:
        cols += [
            ("spam", "tinyint(2) NOT NULL default '0'"),
            ("deleted", "tinyint(2) NOT NULL default '0'"),
        ]
    return TableDef(
        names.users,
        tuple(cols),
        primary="ID",
        keys=_keys(
            "user_login_key: user_login", "user_nicename: user_nicename", "user_email: user_email"
        ),
    )


def _usermeta(names: TableNames) -> TableDef:
    return TableDef(
        names.usermeta,
        (
            ("umeta_id", "bigint(20) unsigned NOT NULL auto_increment"),
            ("user_id", "bigint(20) unsigned NOT NULL default '0'"),
            ("meta_key", "varchar(255) default NULL"),
            ("meta_value", "longtext"),
        ),
        primary="umeta_id",
        keys=_keys("user_id: user_id", "meta_key: meta_key(191)"),
    )


def _options(names: TableNames) -> TableDef:
    return TableDef(
        names.options,
        (
            ("option_id", "bigint(20) unsigned NOT NULL auto_increment"),
            ("option_name", "varchar(191) NOT NULL default ''"),
            ("option_value", "longtext NOT NULL"),
            ("autoload", "varchar(20) NOT NULL default 'yes'"),
        ),
        primary="option_id",
        keys=_keys("!option_name: option_name", "autoload: autoload"),
    )


# --------------------------------------------------------------------------- KiviCare


def _appointments(names: TableNames, gen: Generation, utc: bool, tz: bool) -> TableDef:
    if gen == "v3":
        cols = [
            ("id", "bigint(20) NOT NULL AUTO_INCREMENT"),
            ("appointment_start_date", "date NULL"),
            ("appointment_start_time", "time NULL"),
            ("appointment_end_date", "date NULL"),
            ("appointment_end_time", "time NULL"),
            ("visit_type", "varchar(191) NULL"),
            ("clinic_id", "bigint(20) UNSIGNED NOT NULL"),
            ("doctor_id", "bigint(20) UNSIGNED NOT NULL"),
            ("patient_id", "bigint(20) UNSIGNED NOT NULL"),
            ("description", "text NULL"),
            ("status", "tinyint(1) UNSIGNED NULL DEFAULT 0"),
            ("created_at", "datetime NULL"),
        ]
        keys: list[str] = []
    else:
        cols = [
            ("id", "bigint NOT NULL AUTO_INCREMENT"),
            ("appointment_start_date", "date DEFAULT NULL"),
            ("appointment_start_time", "time DEFAULT NULL"),
            ("appointment_end_date", "date DEFAULT NULL"),
            ("appointment_end_time", "time DEFAULT NULL"),
            ("visit_type", "varchar(191) DEFAULT NULL"),
            ("clinic_id", "bigint UNSIGNED NOT NULL"),
            ("doctor_id", "bigint UNSIGNED NOT NULL"),
            ("patient_id", "bigint UNSIGNED NOT NULL"),
            ("description", "text"),
            ("status", "tinyint UNSIGNED DEFAULT '0'"),
            ("created_at", "datetime DEFAULT NULL"),
            ("appointment_report", "longtext"),
        ]
        keys = [
            "idx_appointment_start_date: appointment_start_date",
            "idx_appointment_end_date: appointment_end_date",
            "idx_clinic_id: clinic_id",
            "idx_doctor_id: doctor_id",
            "idx_patient_id: patient_id",
            "idx_status: status",
            "idx_created_at: created_at",
            "idx_visit_type: visit_type",
            "idx_doctor_date: doctor_id, appointment_start_date",
            "idx_clinic_date: clinic_id, appointment_start_date",
            "idx_patient_date: patient_id, appointment_start_date",
            "idx_status_date: status, appointment_start_date",
        ]
    if utc:
        cols += [
            ("appointment_start_utc", "DATETIME NULL"),
            ("appointment_end_utc", "DATETIME NULL"),
        ]
        keys += [
            "idx_appointment_start_utc: appointment_start_utc",
            "idx_apt_doctor_utcrange_status: "
            "doctor_id, appointment_start_utc, appointment_end_utc, status",
            "idx_apt_clinic_start_status: clinic_id, appointment_start_utc, status",
            "idx_apt_patient_start_status: patient_id, appointment_start_utc, status",
        ]
    if tz:
        cols.append(
            (
                "appointment_timezone",
                "VARCHAR(64) NOT NULL DEFAULT 'UTC' "
                "COMMENT 'IANA timezone used when appointment was booked'",
            )
        )
    if utc:
        cols.append(("created_at_utc", "DATETIME NULL"))
    return TableDef(names.kc("appointments"), tuple(cols), keys=_keys(*keys))


def _meet_mappings(names: TableNames, shape: MappingShape) -> TableDef:
    table = names.kc("appointment_google_meet_mappings")
    if shape == "a":
        return TableDef(
            table,
            (
                ("id", "int NOT NULL AUTO_INCREMENT"),
                ("event_id", "varchar(255) NOT NULL"),
                ("appointment_id", "int NOT NULL"),
                ("url", "varchar(255) NOT NULL"),
                ("password", "varchar(255) DEFAULT NULL"),
                ("event_url", "varchar(255) DEFAULT NULL"),
            ),
        )
    cols = [
        ("id", "bigint NOT NULL AUTO_INCREMENT"),
        ("event_id", "varchar(191) NOT NULL"),
        ("appointment_id", "bigint UNSIGNED NOT NULL"),
        ("url", "longtext NOT NULL"),
        ("password", "varchar(191) DEFAULT NULL"),
        ("event_url", "longtext DEFAULT NULL"),
        ("created_at", "datetime NOT NULL"),
    ]
    keys: tuple[Key, ...] = ()
    if shape == "c":
        cols.append(("extra", "TEXT NULL"))
        keys = _keys(
            "idx_appointment_id: appointment_id",
            "idx_event_id: event_id",
            "idx_created_at: created_at",
            "idx_appointment_event: appointment_id, event_id",
        )
    return TableDef(table, tuple(cols), keys=keys)


def _kivicare_tables(names: TableNames, gen: Generation, utc: bool, tz: bool) -> list[TableDef]:
    v4 = gen == "v4"
    w20 = "" if v4 else "(20)"  # v3 declares display widths, v4 does not
    tables = [_appointments(names, gen, utc, tz)]
    tables.append(
        TableDef(
            names.kc("appointment_service_mapping"),
            (
                ("id", f"bigint{w20} NOT NULL AUTO_INCREMENT"),
                ("appointment_id", f"bigint{w20} DEFAULT '0'"),
                ("service_id", f"int{'' if v4 else '(10)'} DEFAULT '0'"),
                ("status", f"int{'' if v4 else '(1)'} DEFAULT '0'"),
                ("created_at", "datetime DEFAULT NULL"),
            ),
            keys=_keys(
                "idx_appointment_id: appointment_id",
                "idx_service_id: service_id",
                "idx_status: status",
                "idx_created_at: created_at",
                "idx_appointment_service: appointment_id, service_id",
            )
            if v4
            else (),
        )
    )
    sdm_cols = [
        ("id", f"bigint{w20} NOT NULL AUTO_INCREMENT"),
        ("service_id", f"int{'' if v4 else '(11)'} DEFAULT '0'"),
        ("doctor_id", f"bigint{w20} UNSIGNED DEFAULT '0'"),
        ("clinic_id", f"int{'' if v4 else '(11)'} DEFAULT '0'"),
        ("charges", "varchar(50) DEFAULT NULL" if v4 else "varchar(50) DEFAULT '0'"),
        ("extra", "longtext"),
        # v3 adds these four through its upgrade routine (kcUpdateFields), after `status`.
        ("telemed_service", "varchar(10) DEFAULT NULL"),
        ("service_name_alias", "varchar(191) DEFAULT NULL"),
        ("multiple", "varchar(191) DEFAULT NULL"),
        ("image", f"bigint{w20} DEFAULT NULL"),
        ("status", f"int{'' if v4 else '(1)'} DEFAULT '1'"),
        ("created_at", "datetime NOT NULL"),
    ]
    if v4:
        sdm_cols.append(("duration", "int DEFAULT NULL"))
    tables.append(
        TableDef(
            names.kc("service_doctor_mapping"),
            tuple(sdm_cols),
            keys=_keys(
                "idx_service_id: service_id",
                "idx_doctor_id: doctor_id",
                "idx_clinic_id: clinic_id",
                "idx_status: status",
                "idx_telemed_service: telemed_service",
                "idx_created_at: created_at",
                "idx_service_doctor: service_id, doctor_id",
                "idx_doctor_clinic: doctor_id, clinic_id",
                "idx_service_status: service_id, status",
            )
            if v4
            else (),
        )
    )
    tables.append(
        TableDef(
            names.kc("services"),
            (
                ("id", f"bigint{w20} NOT NULL AUTO_INCREMENT"),
                ("type", "varchar(191) DEFAULT NULL"),
                ("name", "varchar(191) NOT NULL"),
                ("price", "varchar(50) DEFAULT NULL" if v4 else "varchar(50) NOT NULL"),
                ("status", "bigint NOT NULL" if v4 else "bigint(1) NOT NULL"),
                ("created_at", "datetime NOT NULL"),
            ),
            keys=_keys(
                "idx_type: type",
                "idx_status: status",
                "idx_created_at: created_at",
                "idx_name: name",
                "idx_type_status: type, status",
            )
            if v4
            else (),
        )
    )
    clinic_cols = [
        ("id", f"bigint{w20} NOT NULL AUTO_INCREMENT"),
        ("name", "varchar(191) DEFAULT NULL"),
        ("email", "varchar(191) DEFAULT NULL"),
        ("telephone_no", "varchar(191) DEFAULT NULL"),
        ("specialties", "longtext"),
        ("address", "text"),
        ("city", "varchar(191) DEFAULT NULL"),
        ("state", "varchar(191) DEFAULT NULL"),
        ("country", "varchar(191) DEFAULT NULL"),
        ("postal_code", "varchar(191) DEFAULT NULL"),
        ("status", f"tinyint{'' if v4 else '(1)'} UNSIGNED DEFAULT '0'"),
        ("clinic_admin_id", f"bigint{w20} NOT NULL DEFAULT '0'"),
        ("clinic_logo", f"bigint{w20} NOT NULL DEFAULT '0'"),
        ("profile_image", f"bigint{w20} DEFAULT NULL"),
        ("extra", "longtext"),
        ("country_code", "varchar(10) DEFAULT NULL"),
        ("created_at", "datetime DEFAULT NULL"),
    ]
    if v4:
        clinic_cols.append(("country_calling_code", "varchar(10) DEFAULT NULL"))
    tables.append(
        TableDef(
            names.kc("clinics"),
            tuple(clinic_cols),
            keys=_keys(
                "idx_clinic_admin_id: clinic_admin_id",
                "idx_status: status",
                "idx_email: email",
                "idx_telephone_no: telephone_no",
                "idx_city: city",
                "idx_state: state",
                "idx_country: country",
                "idx_created_at: created_at",
                "idx_status_admin: status, clinic_admin_id",
            )
            if v4
            else (),
        )
    )
    tables.append(
        TableDef(
            names.kc("doctor_clinic_mappings"),
            (
                ("id", f"bigint{w20} NOT NULL AUTO_INCREMENT"),
                ("doctor_id", f"bigint{w20} UNSIGNED NOT NULL"),
                ("clinic_id", f"bigint{w20} UNSIGNED NOT NULL"),
                ("owner", f"tinyint{'' if v4 else '(1)'} UNSIGNED DEFAULT '0'"),
                ("created_at", "datetime DEFAULT NULL"),
            ),
            keys=_keys(
                "idx_doctor_id: doctor_id",
                "idx_clinic_id: clinic_id",
                "idx_owner: owner",
                "idx_created_at: created_at",
                "idx_doctor_clinic: doctor_id, clinic_id",
                "idx_clinic_owner: clinic_id, owner",
            )
            if v4
            else (),
        )
    )
    tables.append(
        TableDef(
            names.kc("patient_clinic_mappings"),
            (
                ("id", f"bigint{w20} NOT NULL AUTO_INCREMENT"),
                ("patient_id", f"bigint{w20} UNSIGNED NOT NULL"),
                ("clinic_id", f"bigint{w20} UNSIGNED NOT NULL"),
                ("created_at", "datetime DEFAULT NULL"),
            ),
            keys=_keys(
                "idx_patient_id: patient_id",
                "idx_clinic_id: clinic_id",
                "idx_created_at: created_at",
                "idx_patient_clinic: patient_id, clinic_id",
            )
            if v4
            else (),
        )
    )
    # KiviCare 4 defines indexes for this table but its optimize migration never calls that step.
    tables.append(
        TableDef(
            names.kc("receptionist_clinic_mappings"),
            (
                ("id", f"bigint{w20} NOT NULL AUTO_INCREMENT"),
                ("receptionist_id", f"bigint{w20} UNSIGNED NOT NULL"),
                ("clinic_id", f"bigint{w20} UNSIGNED NOT NULL"),
                ("created_at", "datetime DEFAULT NULL"),
            ),
        )
    )
    if v4:
        tables.append(
            TableDef(
                names.kc("migrations"),
                (
                    ("id", "bigint(20) NOT NULL auto_increment"),
                    ("name", "varchar(255) NOT NULL"),
                    ("date_ran", "datetime DEFAULT '0000-00-00 00:00:00' NOT NULL"),
                ),
            )
        )
    return tables


# --------------------------------------------------------------------------- rendering


def _render_mysql(t: TableDef) -> str:
    lines = [f"  `{name}` {definition}" for name, definition in t.columns]
    lines.append(f"  PRIMARY KEY (`{t.primary}`)")
    for key in t.keys:
        kind = "UNIQUE KEY" if key.unique else "KEY"
        lines.append(f"  {kind} `{key.name}` ({key.columns})")
    body = ",\n".join(lines)
    return f"CREATE TABLE IF NOT EXISTS `{t.name}` (\n{body}\n) {MYSQL_TABLE_OPTIONS}"


_SQLITE_TYPES = [
    (re.compile(r"^(?:tinyint|smallint)\b", re.I), "SMALLINT"),
    (re.compile(r"^bigint\b", re.I), "BIGINT"),
    (re.compile(r"^int\b", re.I), "INTEGER"),
    (re.compile(r"^(?:longtext|text)\b", re.I), "TEXT"),
    (re.compile(r"^varchar\b", re.I), "VARCHAR"),
    (re.compile(r"^datetime\b", re.I), "DATETIME"),
    (re.compile(r"^date\b", re.I), "DATE"),
    (re.compile(r"^time\b", re.I), "TIME"),
]
_MYSQL_TYPE = re.compile(r"^(\w+)(\(\d+\))?(\s+unsigned)?", re.I)


def _sqlite_column(name: str, definition: str, primary: bool) -> str:
    m = _MYSQL_TYPE.match(definition)
    assert m is not None, definition
    base, width, _unsigned = m.groups()
    rest = definition[m.end() :]
    sqlite_type = next(
        (target for pattern, target in _SQLITE_TYPES if pattern.match(base)), base.upper()
    )
    if sqlite_type == "VARCHAR" and width:
        sqlite_type += width
    rest = re.sub(r"\s+COMMENT\s+'(?:[^']|'')*'", "", rest, flags=re.I)
    if re.search(r"auto_increment", rest, re.I):
        return f'"{name}" INTEGER PRIMARY KEY AUTOINCREMENT'
    if primary:
        rest += " PRIMARY KEY"
    return f'"{name}" {sqlite_type}{rest}'


def _render_sqlite(t: TableDef) -> list[str]:
    cols = ",\n".join("  " + _sqlite_column(name, d, name == t.primary) for name, d in t.columns)
    statements = [f'CREATE TABLE IF NOT EXISTS "{t.name}" (\n{cols}\n)']
    for key in t.keys:
        columns = re.sub(r"\(\d+\)", "", key.columns)
        quoted = ", ".join(f'"{c.strip()}"' for c in columns.split(","))
        unique = "UNIQUE " if key.unique else ""
        statements.append(
            f'CREATE {unique}INDEX IF NOT EXISTS "{t.name}{SQLITE_INDEX_SEPARATOR}{key.name}" '
            f'ON "{t.name}" ({quoted})'
        )
    return statements


# --------------------------------------------------------------------------- public API


def table_defs(
    names: TableNames,
    *,
    kivicare: Generation | None = "v4",
    mapping_shape: MappingShape | None = "c",
    utc_columns: bool = True,
    appointment_timezone: bool | None = None,
    core: bool = True,
) -> list[TableDef]:
    """The table definitions ``create_site`` would create (see there)."""
    if kivicare not in ("v3", "v4", None):
        raise ValueError(f"kivicare must be 'v3', 'v4' or None, not {kivicare!r}")
    if mapping_shape not in ("a", "b", "c", None):
        raise ValueError(f"mapping_shape must be 'a', 'b', 'c' or None, not {mapping_shape!r}")
    tz = utc_columns if appointment_timezone is None else appointment_timezone
    defs: list[TableDef] = []
    if core:
        defs += [_users(names), _usermeta(names), _options(names)]
    if kivicare is not None:
        defs += _kivicare_tables(
            names, kivicare, utc_columns and kivicare == "v4", tz and kivicare == "v4"
        )
    if mapping_shape is not None:
        defs.append(_meet_mappings(names, mapping_shape))
    return defs


def create_site(
    engine: sa.Engine,
    names: TableNames,
    *,
    kivicare: Generation | None = "v4",
    mapping_shape: MappingShape | None = "c",
    utc_columns: bool = True,
    appointment_timezone: bool | None = None,
    core: bool = True,
) -> list[str]:
    """Create the tables of a WordPress + KiviCare site; returns the table names.

    ``kivicare``: ``"v4"`` (migrations table, indexes), ``"v3"`` (legacy, no indexes) or
    ``None`` (no KiviCare tables). ``utc_columns`` adds KiviCare 4's 2026 UTC columns and their
    indexes (v4 only); ``appointment_timezone`` defaults to ``utc_columns``. ``mapping_shape``
    picks the Meet add-on's mapping table, ``None`` = add-on never installed. ``core=False``
    skips users/usermeta/options (e.g. after a real ``wp_install()``). Existing tables are kept.
    """
    defs = table_defs(
        names,
        kivicare=kivicare,
        mapping_shape=mapping_shape,
        utc_columns=utc_columns,
        appointment_timezone=appointment_timezone,
        core=core,
    )
    dialect = engine.dialect.name
    if dialect not in ("mysql", "mariadb", "sqlite"):
        raise ValueError(f"unsupported database {dialect!r}: use MariaDB/MySQL or SQLite")
    with engine.begin() as conn:
        if dialect != "sqlite":
            # WordPress relaxes these modes for its own session; its zero-date defaults need it.
            # The pooled connection gets its original mode back afterwards.
            old_mode = conn.exec_driver_sql("SELECT @@SESSION.sql_mode").scalar_one()
            relaxed = ",".join(
                m
                for m in str(old_mode).split(",")
                if m and m not in ("NO_ZERO_DATE", "NO_ZERO_IN_DATE", "TRADITIONAL")
            )
            conn.exec_driver_sql("SET SESSION sql_mode = %s", (relaxed,))
        try:
            for table in defs:
                for statement in table.render(dialect):
                    conn.exec_driver_sql(statement)
        finally:
            if dialect != "sqlite":
                conn.exec_driver_sql("SET SESSION sql_mode = %s", (old_mode,))
    log.info("created %d tables for prefix %s", len(defs), names.blog_prefix)
    return [t.name for t in defs]
