"""What the site's database actually looks like: reflected tables and detected schema drift.

KiviCare sites carry different histories (3.x installs, 4.x migrations, upgraded 3→4 sites, the
three shapes of the Meet add-on's mapping table, with or without the 2026 UTC columns), so the
sidecar never hard-codes columns: it reflects the tables it touches once at startup and asks
this object. Only the listed tables are reflected, one reflection each.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import sqlalchemy as sa

from wp_schema.ddl import SQLITE_INDEX_SEPARATOR
from wp_schema.names import TableNames

log = logging.getLogger(__name__)

UTC_COLUMNS = ("appointment_start_utc", "appointment_end_utc", "created_at_utc")

# logical key -> (table name suffix, is a KiviCare table on the blog prefix)
_CORE = ("users", "usermeta", "options")
_KC = (
    "appointments",
    "appointment_google_meet_mappings",
    "appointment_service_mapping",
    "service_doctor_mapping",
    "services",
    "clinics",
    "doctor_clinic_mappings",
    "patient_clinic_mappings",
    "receptionist_clinic_mappings",
)
_REQUIRED_COLUMNS = {
    "users": ("ID", "user_login", "user_email", "display_name"),
    "usermeta": ("umeta_id", "user_id", "meta_key", "meta_value"),
    "options": ("option_id", "option_name", "option_value", "autoload"),
    "appointments": (
        "id",
        "appointment_start_date",
        "appointment_start_time",
        "appointment_end_date",
        "appointment_end_time",
        "clinic_id",
        "doctor_id",
        "patient_id",
        "status",
    ),
    "meet_mappings": ("id", "appointment_id", "event_id", "url", "password", "event_url"),
    "appointment_service_mapping": ("appointment_id", "service_id"),
    "service_doctor_mapping": ("service_id", "doctor_id", "clinic_id", "telemed_service"),
    "services": ("id", "name"),
    "clinics": ("id", "name"),
    "doctor_clinic_mappings": ("doctor_id", "clinic_id"),
}
_HINTS = {
    "meet_mappings": "activate the KiviCare Google Meet add-on once so it creates its table",
    "appointment_service_mapping": "is KiviCare installed and activated on this blog?",
    "service_doctor_mapping": "is KiviCare installed and activated on this blog?",
    "services": "is KiviCare installed and activated on this blog?",
    "clinics": "is KiviCare installed and activated on this blog?",
    "doctor_clinic_mappings": "is KiviCare installed and activated on this blog?",
}


class SchemaError(RuntimeError):
    """The database lacks what the sidecar needs; ``problems`` says what and how to fix it."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__(
            "the WordPress/KiviCare database is not usable:\n- " + "\n- ".join(self.problems)
        )


@dataclass
class SiteSchema:
    """Reflected tables of one site plus what was detected about them."""

    names: TableNames
    tables: dict[str, sa.Table] = field(default_factory=dict)
    generation: Literal["v3", "v4"] | None = None
    mapping_shape: Literal["a", "b", "c"] | None = None
    has_utc_columns: bool = False
    has_appointment_timezone: bool = False
    has_migrations_table: bool = False
    dialect: str = ""
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    metadata: sa.MetaData = field(default_factory=sa.MetaData)

    # -- table accessors (None when the table does not exist) -------------------------
    def _t(self, key: str) -> sa.Table | None:
        return self.tables.get(key)

    @property
    def users(self) -> sa.Table | None:
        return self._t("users")

    @property
    def usermeta(self) -> sa.Table | None:
        return self._t("usermeta")

    @property
    def options(self) -> sa.Table | None:
        return self._t("options")

    @property
    def appointments(self) -> sa.Table | None:
        return self._t("appointments")

    @property
    def meet_mappings(self) -> sa.Table | None:
        return self._t("meet_mappings")

    @property
    def appointment_service_mapping(self) -> sa.Table | None:
        return self._t("appointment_service_mapping")

    @property
    def service_doctor_mapping(self) -> sa.Table | None:
        return self._t("service_doctor_mapping")

    @property
    def services(self) -> sa.Table | None:
        return self._t("services")

    @property
    def clinics(self) -> sa.Table | None:
        return self._t("clinics")

    @property
    def doctor_clinic_mappings(self) -> sa.Table | None:
        return self._t("doctor_clinic_mappings")

    @property
    def patient_clinic_mappings(self) -> sa.Table | None:
        return self._t("patient_clinic_mappings")

    @property
    def receptionist_clinic_mappings(self) -> sa.Table | None:
        return self._t("receptionist_clinic_mappings")

    def has_column(self, key: str, column: str) -> bool:
        table = self.tables.get(key)
        return table is not None and column in table.c

    # -- loading ---------------------------------------------------------------------
    @classmethod
    def load(cls, engine: sa.Engine, names: TableNames) -> SiteSchema:
        schema = cls(names=names, dialect=engine.dialect.name)
        wanted: dict[str, str] = {key: getattr(names, key) for key in _CORE}
        for suffix in _KC:
            key = "meet_mappings" if suffix == "appointment_google_meet_mappings" else suffix
            wanted[key] = names.kc(suffix)
        with engine.connect() as conn:
            existing = set(sa.inspect(conn).get_table_names())
            for key, table_name in wanted.items():
                if table_name in existing:
                    schema.tables[key] = sa.Table(table_name, schema.metadata, autoload_with=conn)
        schema.has_migrations_table = names.kc("migrations") in existing
        schema._detect(existing, wanted)
        log.info(
            "schema: generation=%s mapping_shape=%s utc=%s tz=%s problems=%d",
            schema.generation,
            schema.mapping_shape,
            schema.has_utc_columns,
            schema.has_appointment_timezone,
            len(schema.problems),
        )
        return schema

    def _detect(self, existing: set[str], wanted: dict[str, str]) -> None:
        appts = self.appointments
        if appts is not None:
            v4 = "appointment_report" in appts.c or self.has_migrations_table
            self.generation = "v4" if v4 else "v3"
            self.has_utc_columns = all(c in appts.c for c in UTC_COLUMNS)
            self.has_appointment_timezone = "appointment_timezone" in appts.c
            partial = [c for c in UTC_COLUMNS if c in appts.c]
            if partial and not self.has_utc_columns:
                missing = ", ".join(c for c in UTC_COLUMNS if c not in appts.c)
                self.notes.append(
                    f"{appts.name} has only some UTC columns (missing {missing}); "
                    "they are treated as absent — the KiviCare UTC migration did not finish"
                )
        mappings = self.meet_mappings
        if mappings is not None:
            if "extra" in mappings.c:
                self.mapping_shape = "c"
            elif "created_at" in mappings.c:
                self.mapping_shape = "b"
            else:
                self.mapping_shape = "a"

        for key in ("users", "usermeta", "options", "appointments", *_HINTS):
            table_name = wanted[key]
            if key not in self.tables:
                self.problems.append(self._missing_hint(key, table_name, existing))
                continue
            table = self.tables[key]
            missing_cols = [c for c in _REQUIRED_COLUMNS[key] if c not in table.c]
            if missing_cols:
                self.problems.append(
                    f"table {table_name} lacks column(s) {', '.join(missing_cols)} — "
                    "the plugin's database upgrade may not have run; open the WordPress admin "
                    "once so KiviCare can update its tables"
                )
        if self.generation == "v3" and appts is not None:
            self.notes.append(
                "KiviCare 3.x tables: no UTC columns, appointment times are site-local"
            )

    def _missing_hint(self, key: str, table_name: str, existing: set[str]) -> str:
        prefix = self.names.base_prefix if key in ("users", "usermeta") else self.names.blog_prefix
        base = table_name[len(prefix) :]
        msg = f"no table {table_name}"
        elsewhere = sorted(t for t in existing if t.endswith(base) and t != table_name)
        if elsewhere:
            return (
                f"{msg} — is $table_prefix (and the blog id) right? "
                f"found {elsewhere[0]} (prefix {elsewhere[0][: -len(base)]!r})"
            )
        if key in _CORE:
            return f"{msg} — is $table_prefix right?"
        if key == "appointments":
            return f"{msg} — is $table_prefix right, and is KiviCare activated on this blog?"
        return f"{msg} — {_HINTS[key]}"

    # -- checks ----------------------------------------------------------------------
    def require(self) -> SiteSchema:
        """Raise :class:`SchemaError` when the sidecar cannot run on this database."""
        if self.problems:
            raise SchemaError(self.problems)
        return self

    def index_names(self, conn: sa.Connection, key: str) -> set[str]:
        """Index names of a table as KiviCare named them (diagnostics and tests)."""
        table = self.tables[key]
        found = set()
        for index in sa.inspect(conn).get_indexes(table.name):
            name = index["name"] or ""
            prefix = table.name + SQLITE_INDEX_SEPARATOR
            found.add(name[len(prefix) :] if name.startswith(prefix) else name)
        return found
