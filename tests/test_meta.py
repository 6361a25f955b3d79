"""User meta and options accessors on MariaDB and SQLite, with WordPress semantics."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from wp_schema.ddl import create_site
from wp_schema.meta import Options, UserMeta
from wp_schema.names import TableNames
from wp_schema.reflect import SchemaError, SiteSchema


@dataclass
class Site:
    engine: sa.Engine
    schema: SiteSchema
    meta: UserMeta
    options: Options

    def raw_meta(self, user_id: int, key: str) -> list[str | None]:
        t = self.schema.usermeta
        assert t is not None
        with self.engine.connect() as c:
            return list(
                c.execute(
                    sa.select(t.c.meta_value)
                    .where(t.c.user_id == user_id, t.c.meta_key == key)
                    .order_by(t.c.umeta_id)
                ).scalars()
            )


@pytest.fixture(params=["mariadb", "sqlite"])
def site(
    request: pytest.FixtureRequest, tmp_path: Path, new_mysql_database: Callable[[], str]
) -> Iterator[Site]:
    if request.param == "mariadb":
        engine = sa.create_engine(new_mysql_database())
    else:
        engine = sa.create_engine(f"sqlite:///{tmp_path / 'site.db'}")
    names = TableNames("wp_", blog_id=2)
    create_site(engine, names, kivicare=None, mapping_shape=None)
    schema = SiteSchema.load(engine, names)
    yield Site(engine, schema, UserMeta(schema), Options(schema))
    engine.dispose()


TRICKY_VALUES: list[Any] = [
    "on",
    "Zoë 🩺 診療",
    'O\'Brien "quoted"',
    "C:\\path\\with\\backslashes \\' \\\\",
    'a:1:{i:0;s:1:"x";}',  # looks serialized: must come back as this very string
    's:3:"abc";',
    "i:5;",
    "b:0;",
    "N;",
    "",
    "  padded  ",
    '{"access_token": "t", "expires_in": 1700000000}',
    {"kiviCare_doctor": True},
    ["a", "b"],
    {"nested": {"list": [1, 2.5, None, "é"]}, "5": "five"},
]


@pytest.mark.parametrize("value", TRICKY_VALUES, ids=range(len(TRICKY_VALUES)))
def test_values_round_trip(site: Site, value: Any) -> None:
    with site.engine.begin() as c:
        site.meta.set(c, 7, "k", value)
        site.options.set(c, "opt", value)
    with site.engine.connect() as c:
        expected = (
            {5: "five", "nested": value["nested"]}
            if isinstance(value, dict) and "5" in value
            else value
        )
        assert site.meta.get(c, 7, "k") == expected
        assert site.options.get(c, "opt") == expected


def test_stored_text_is_what_wordpress_writes(site: Site) -> None:
    with site.engine.begin() as c:
        site.meta.set(c, 1, "wp_2_capabilities", {"kiviCare_doctor": True})
        site.meta.set(c, 1, "count", 5)
        site.meta.set(c, 1, "flag", True)
        site.meta.set(c, 1, "off", False)
        site.meta.set(c, 1, "nothing", None)
        site.meta.set(c, 1, "ser", "b:1;")
    assert site.raw_meta(1, "wp_2_capabilities") == ['a:1:{s:15:"kiviCare_doctor";b:1;}']
    assert site.raw_meta(1, "count") == ["5"]
    assert site.raw_meta(1, "flag") == ["1"]
    assert site.raw_meta(1, "off") == [""]
    assert site.raw_meta(1, "nothing") == [None]
    assert site.raw_meta(1, "ser") == ['s:4:"b:1;";']
    with site.engine.connect() as c:
        assert site.meta.get(c, 1, "count") == "5"  # like get_user_meta: a string
        assert site.meta.get(c, 1, "nothing", default="d") is None  # row exists, value NULL


def test_several_rows_per_key(site: Site) -> None:
    with site.engine.begin() as c:
        first = site.meta.add(c, 3, "telemed_type", "googlemeet")
        second = site.meta.add(c, 3, "telemed_type", "zoom")
        site.meta.add(c, 4, "telemed_type", "zoom")
        assert second > first
        assert site.meta.get(c, 3, "telemed_type") == "googlemeet"
        assert site.meta.get_all(c, 3, "telemed_type") == ["googlemeet", "zoom"]
        # update_user_meta rewrites every row of the key, for that user only.
        site.meta.set(c, 3, "telemed_type", "googlemeet")
        assert site.meta.get_all(c, 3, "telemed_type") == ["googlemeet", "googlemeet"]
        assert site.meta.get(c, 4, "telemed_type") == "zoom"
        assert site.meta.delete(c, 3, "telemed_type") == 2
        assert site.meta.get(c, 3, "telemed_type", default="none") == "none"
        assert site.meta.get_all(c, 3, "telemed_type") == []
        assert site.meta.get(c, 4, "telemed_type") == "zoom"


def test_reads_match_key_exactly(site: Site) -> None:
    with site.engine.begin() as c:
        site.meta.add(c, 5, "kiviCare_google_meet_connect", "on")
        site.meta.add(c, 5, "kivicare_google_meet_connect", "off")
        assert site.meta.get(c, 5, "kiviCare_google_meet_connect") == "on"
        assert site.meta.get(c, 5, "kivicare_google_meet_connect") == "off"
        assert site.meta.get_many(c, [5], ["kivicare_google_meet_connect"]) == {
            5: {"kivicare_google_meet_connect": "off"}
        }


def test_all_keys(site: Site) -> None:
    with site.engine.begin() as c:
        site.meta.add(c, 9, "a", "1")
        site.meta.add(c, 9, "b", ["x"])
        site.meta.add(c, 9, "a", "2")
        assert site.meta.all_keys(c, 9) == {"a": ["1", "2"], "b": [["x"]]}


def test_get_many_reads_first_row_per_user_and_key(site: Site) -> None:
    t = site.schema.usermeta
    assert t is not None
    with site.engine.begin() as c:
        rows = [
            {"user_id": uid, "meta_key": "timezone", "meta_value": f"Zone/{uid}"}
            for uid in range(1, 701)
        ]
        c.execute(t.insert(), rows)
        site.meta.add(c, 2, "timezone", "Second/Row")
        site.meta.set(c, 2, "google_meet_config", {"auth_type": "oauth"})
        site.meta.set(c, 3, "other", "ignored")
        got = site.meta.get_many(c, [2, 3, 699, 5000], ["timezone", "google_meet_config"])
        assert got == {
            2: {"timezone": "Zone/2", "google_meet_config": {"auth_type": "oauth"}},
            3: {"timezone": "Zone/3"},
            699: {"timezone": "Zone/699"},
        }
        assert len(site.meta.get_many(c, range(1, 701), ["timezone"])) == 700
        assert site.meta.get_many(c, [], ["timezone"]) == {}
        assert site.meta.get_many(c, [1], []) == {}


def test_bad_ids_and_keys_are_rejected_before_writing(site: Site) -> None:
    with site.engine.begin() as c:
        for bad in (0, -1, True, "3"):
            with pytest.raises(ValueError, match="user id"):
                site.meta.set(c, bad, "k", "v")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="meta key"):
            site.meta.set(c, 1, "", "v")
        with pytest.raises(TypeError):
            site.meta.set(c, 1, "k", object())
        assert site.meta.all_keys(c, 1) == {}


def test_options_autoload(site: Site) -> None:
    with site.engine.begin() as c:
        site.options.set(c, "kiviCare_google_meet_setting", {"enableCal": "yes"})
        assert site.options.get_autoload(c, "kiviCare_google_meet_setting") == "yes"
        site.options.set(c, "quiet", "1", autoload="no")
        assert site.options.get_autoload(c, "quiet") == "no"
        # Updating without autoload keeps it; passing it changes it.
        site.options.set(c, "quiet", "2")
        assert (site.options.get(c, "quiet"), site.options.get_autoload(c, "quiet")) == ("2", "no")
        site.options.set(c, "quiet", "3", autoload=True)
        assert site.options.get_autoload(c, "quiet") == "yes"
        site.options.set(c, "quiet", "4", autoload=False)
        assert site.options.get_autoload(c, "quiet") == "no"
        with pytest.raises(ValueError, match="autoload"):
            site.options.set(c, "quiet", "5", autoload="maybe")
        assert site.options.get(c, "quiet") == "4"
        site.options.set(c, "empty", None)
        assert site.options.get(c, "empty") == ""
        assert site.options.get(c, "missing", default=False) is False
        assert site.options.delete(c, "quiet") is True
        assert site.options.delete(c, "quiet") is False
        assert site.options.get(c, "quiet") is None
    t = site.schema.options
    assert t is not None and t.name == "wp_2_options"
    with site.engine.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(t)).scalar_one() == 2


def test_accessors_need_their_table(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    schema = SiteSchema.load(engine, TableNames())
    with pytest.raises(SchemaError, match="no table wp_usermeta"):
        UserMeta(schema)
    with pytest.raises(SchemaError, match="no table wp_options"):
        Options(schema)
