"""Reference DDL and schema reflection on MariaDB and SQLite, for every supported site shape."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from wp_schema.ddl import create_site
from wp_schema.names import TableNames
from wp_schema.reflect import SchemaError, SiteSchema


@pytest.fixture(params=["mariadb", "sqlite"])
def engine(
    request: pytest.FixtureRequest, tmp_path: Path, new_mysql_database: Callable[[], str]
) -> Iterator[sa.Engine]:
    if request.param == "mariadb":
        eng = sa.create_engine(new_mysql_database())
    else:
        eng = sa.create_engine(f"sqlite:///{tmp_path / 'site.db'}")
    yield eng
    eng.dispose()


def _indexes(engine: sa.Engine, schema: SiteSchema, key: str) -> set[str]:
    with engine.connect() as conn:
        return schema.index_names(conn, key)


def test_current_v4_site_with_utc_columns(engine: sa.Engine) -> None:
    names = TableNames()
    create_site(engine, names, kivicare="v4", mapping_shape="c", utc_columns=True)
    schema = SiteSchema.load(engine, names).require()
    assert schema.problems == []
    assert (schema.generation, schema.mapping_shape) == ("v4", "c")
    assert schema.has_utc_columns and schema.has_appointment_timezone
    assert schema.appointments is not None and schema.appointments.name == "wp_kc_appointments"
    cols = list(schema.appointments.c.keys())
    # appointment_timezone sits after appointment_end_utc, like KiviCare's ALTER ... AFTER.
    assert cols[-4:] == [
        "appointment_start_utc",
        "appointment_end_utc",
        "appointment_timezone",
        "created_at_utc",
    ]
    idx = _indexes(engine, schema, "appointments")
    assert {
        "idx_appointment_start_utc",
        "idx_doctor_date",
        "idx_status_date",
        "idx_apt_doctor_utcrange_status",
    } <= idx
    assert {"idx_appointment_event", "idx_appointment_id"} <= _indexes(
        engine, schema, "meet_mappings"
    )
    for key in ("appointment_service_mapping", "service_doctor_mapping", "services", "clinics"):
        assert schema.tables[key] is not None
    assert schema.doctor_clinic_mappings is not None
    assert schema.patient_clinic_mappings is not None
    assert schema.receptionist_clinic_mappings is not None


def test_appointment_timezone_default_is_utc(engine: sa.Engine) -> None:
    names = TableNames()
    create_site(engine, names)
    schema = SiteSchema.load(engine, names)
    appts = schema.appointments
    assert appts is not None
    with engine.begin() as conn:
        conn.execute(appts.insert().values(clinic_id=1, doctor_id=2, patient_id=3, status=1))
        assert conn.execute(sa.select(appts.c.appointment_timezone)).scalar_one() == "UTC"


def test_v4_before_the_utc_migration(engine: sa.Engine) -> None:
    names = TableNames()
    create_site(engine, names, kivicare="v4", mapping_shape="b", utc_columns=False)
    schema = SiteSchema.load(engine, names).require()
    assert (schema.generation, schema.mapping_shape) == ("v4", "b")
    assert not schema.has_utc_columns and not schema.has_appointment_timezone
    idx = _indexes(engine, schema, "appointments")
    assert "idx_doctor_date" in idx and "idx_appointment_start_utc" not in idx


def test_utc_columns_without_timezone_column(engine: sa.Engine) -> None:
    names = TableNames()
    create_site(engine, names, utc_columns=True, appointment_timezone=False)
    schema = SiteSchema.load(engine, names)
    assert schema.has_utc_columns and not schema.has_appointment_timezone


def test_legacy_v3_site_with_legacy_mapping_table(engine: sa.Engine) -> None:
    names = TableNames()
    create_site(engine, names, kivicare="v3", mapping_shape="a")
    schema = SiteSchema.load(engine, names).require()
    assert (schema.generation, schema.mapping_shape) == ("v3", "a")
    assert not schema.has_utc_columns and not schema.has_appointment_timezone
    assert "appointment_report" not in schema.appointments.c  # type: ignore[union-attr]
    assert _indexes(engine, schema, "appointments") == set()
    assert schema.meet_mappings is not None and "created_at" not in schema.meet_mappings.c
    assert any("site-local" in note for note in schema.notes)


def test_v3_site_with_kivicare_migrations_table_counts_as_v4(engine: sa.Engine) -> None:
    names = TableNames()
    create_site(engine, names, kivicare="v3", mapping_shape="b")
    create_site(engine, names, kivicare=None, mapping_shape=None, core=False)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE wp_kc_migrations (id INTEGER PRIMARY KEY, name VARCHAR(255) NOT NULL)"
        )
    schema = SiteSchema.load(engine, names)
    assert schema.generation == "v4" and schema.has_migrations_table


@pytest.mark.parametrize("shape", ["a", "b", "c"])
def test_each_mapping_shape_is_detected(engine: sa.Engine, shape: str) -> None:
    names = TableNames("kc_")
    create_site(engine, names, kivicare="v4", mapping_shape=shape)  # type: ignore[arg-type]
    schema = SiteSchema.load(engine, names)
    assert schema.mapping_shape == shape
    assert schema.problems == []


def test_multisite_blog_three(engine: sa.Engine) -> None:
    names = TableNames("wp_", blog_id=3)
    created = create_site(engine, names)
    assert {"wp_users", "wp_usermeta", "wp_3_options", "wp_3_kc_appointments"} <= set(created)
    schema = SiteSchema.load(engine, names).require()
    assert schema.users is not None and schema.users.name == "wp_users"
    assert "spam" in schema.users.c  # multisite users table
    assert schema.options is not None and schema.options.name == "wp_3_options"
    assert schema.meet_mappings is not None
    assert schema.meet_mappings.name == "wp_3_kc_appointment_google_meet_mappings"

    # Pointing the sidecar at blog 1 of the same network explains where the tables are.
    wrong = SiteSchema.load(engine, TableNames("wp_"))
    with pytest.raises(SchemaError) as err:
        wrong.require()
    text = str(err.value)
    assert "no table wp_kc_appointments" in text
    assert "found wp_3_kc_appointments" in text


def test_wrong_prefix_gives_a_hint(engine: sa.Engine) -> None:
    create_site(engine, TableNames("site_"))
    schema = SiteSchema.load(engine, TableNames("wp_"))
    assert schema.generation is None
    assert any(
        p.startswith("no table wp_kc_appointments") and "'site_'" in p for p in schema.problems
    )
    assert any(p.startswith("no table wp_usermeta") for p in schema.problems)


def test_empty_database_lists_every_missing_table(engine: sa.Engine) -> None:
    schema = SiteSchema.load(engine, TableNames())
    with pytest.raises(SchemaError) as err:
        schema.require()
    assert "no table wp_kc_appointments — is $table_prefix right" in str(err.value)
    assert "no table wp_users" in str(err.value)


def test_missing_meet_addon_table_is_a_problem_with_a_fix(engine: sa.Engine) -> None:
    names = TableNames()
    create_site(engine, names, mapping_shape=None)
    schema = SiteSchema.load(engine, names)
    assert schema.mapping_shape is None
    assert schema.problems == [
        "no table wp_kc_appointment_google_meet_mappings — activate the KiviCare Google Meet "
        "add-on once so it creates its table"
    ]


def test_missing_required_column_is_reported(engine: sa.Engine) -> None:
    names = TableNames()
    create_site(engine, names, kivicare="v4", mapping_shape="c")
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE wp_kc_service_doctor_mapping")
        conn.exec_driver_sql(
            "CREATE TABLE wp_kc_service_doctor_mapping (id INTEGER PRIMARY KEY, "
            "service_id INTEGER, doctor_id INTEGER, clinic_id INTEGER)"
        )
    schema = SiteSchema.load(engine, names)
    assert len(schema.problems) == 1
    assert "wp_kc_service_doctor_mapping lacks column(s) telemed_service" in schema.problems[0]


def test_create_site_is_idempotent_and_core_optional(engine: sa.Engine) -> None:
    names = TableNames()
    create_site(engine, names, kivicare=None, mapping_shape=None)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO wp_options (option_name, option_value, autoload) "
            "VALUES ('siteurl', 'http://x', 'yes')"
        )
    created = create_site(engine, names, core=False)
    assert "wp_options" not in created and "wp_kc_appointments" in created
    create_site(engine, names)  # again, everything exists: no error, data kept
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM wp_options").scalar_one() == 1


def test_bad_arguments_are_rejected(engine: sa.Engine) -> None:
    with pytest.raises(ValueError, match="kivicare"):
        create_site(engine, TableNames(), kivicare="v5")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mapping_shape"):
        create_site(engine, TableNames(), mapping_shape="d")  # type: ignore[arg-type]


def test_mariadb_types_are_wordpress_and_kivicare_types(
    new_mysql_database: Callable[[], str],
) -> None:
    engine = sa.create_engine(new_mysql_database())
    create_site(engine, TableNames(), kivicare="v3", mapping_shape="a")
    create_site(engine, TableNames("v4_"), kivicare="v4", mapping_shape="c")
    with engine.connect() as conn:

        def ddl(table: str) -> str:
            return conn.exec_driver_sql(f"SHOW CREATE TABLE `{table}`").one()[1]

        usermeta = ddl("wp_usermeta")
        assert "`umeta_id` bigint(20) unsigned NOT NULL AUTO_INCREMENT" in usermeta
        assert "`meta_value` longtext" in usermeta
        assert "KEY `meta_key` (`meta_key`(191))" in usermeta
        options = ddl("wp_options")
        assert "UNIQUE KEY `option_name` (`option_name`)" in options
        assert "`autoload` varchar(20) NOT NULL DEFAULT 'yes'" in options
        assert "utf8mb4_unicode_520_ci" in options
        v3 = ddl("wp_kc_appointments")
        assert "`status` tinyint(1) unsigned DEFAULT 0" in v3
        assert "`appointment_id` int(11) NOT NULL" in ddl("wp_kc_appointment_google_meet_mappings")
        v4 = ddl("v4_kc_appointments")
        assert "`appointment_timezone` varchar(64) NOT NULL DEFAULT 'UTC'" in v4
        assert "KEY `idx_appointment_start_utc` (`appointment_start_utc`)" in v4
        meet = ddl("v4_kc_appointment_google_meet_mappings")
        assert "`url` longtext NOT NULL" in meet and "`extra` text DEFAULT NULL" in meet
        assert "`created_at` datetime NOT NULL" in meet
        # The session's sql_mode is restored after the DDL ran.
        mode = conn.exec_driver_sql("SELECT @@SESSION.sql_mode").scalar_one()
        assert "STRICT_TRANS_TABLES" in mode
    engine.dispose()
