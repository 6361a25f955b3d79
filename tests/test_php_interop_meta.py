"""PHP reads what we write, and we read what PHP writes: user meta and options, both directions.

A real WordPress (wp_install) in a fresh MariaDB database, KiviCare v4 tables added by
``wp_schema.ddl.create_site``. Python writes every sample value with ``wp_schema.meta``; one PHP
run reads them back with ``get_user_meta($id, $key, true)`` / ``get_option`` and writes the same
values with ``update_user_meta`` / ``update_option``; Python then reads those and compares the raw
rows byte for byte. A second PHP run checks overwrite and delete semantics.

Slashes: ``update_user_meta`` runs ``wp_unslash`` on its value, so the PHP side writes
``wp_slash($value)``, which is what a form handler does with slashed ``$_POST`` data and what
``UserMeta.set`` mirrors. ``update_option`` does not unslash. Both facts are pinned below.

What PHP sees of a scalar is its string form (``true`` → ``"1"``, ``false`` → ``""``, ``42`` →
``"42"``); arrays keep their types. A user meta written as ``null`` is SQL NULL: PHP's
``get_user_meta(..., true)`` returns ``""`` for it (its default), ``UserMeta.get`` returns None.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa

from tests.php_wp import WordPressPHP, php_literal, require_php
from wp_schema.ddl import create_site
from wp_schema.meta import Options, UserMeta
from wp_schema.names import TableNames
from wp_schema.reflect import SiteSchema

pytestmark = pytest.mark.php

MISSING = "@@missing@@"
CASES: dict[str, Any] = {
    "plain": "hello",
    "quotes": 'He said "hi" & it\'s <b>bold</b>',
    "backslashes": "C:\\path\\to\\new \\' \\\" \\\\ end\\",
    "unicode": "Zürich — 東京 — Ελληνικά ✓",
    "emoji": "👩\u200d⚕️ 🩺 📅",
    "multiline": "line1\nline2\r\n\ttabbed",
    "padded": "  padded  ",
    "zero_string": "0",
    "empty": "",
    "json": '{"access_token":"ya29.a0-x","expires_in":3599,"scope":"a b","created":1767225600}',
    "json_escapes": '{"name":"Z\\u00fcrich","path":"a\\/b","q":"\\"x\\""}',
    "looks_serialized_array": 'a:1:{i:0;s:1:"x";}',
    "looks_serialized_string": 's:5:"hello";',
    "looks_serialized_false": "b:0;",
    "int": 42,
    "negative_int": -7,
    "float": -1.5,
    "true": True,
    "false": False,
    "null": None,
    "list": ["x", "y", "z"],
    "empty_array": [],
    "nested": {"a": [1, 2, {"b": None, "c": True}], "d": {"e": 'f \\ g "h"'}, "u": "✓"},
    "typed_array": {"on": True, "off": False, "ratio": 0.1, "n": -7, "s": "7"},
    "int_keys": {5: "five", 10: "ten"},
    "tokens_shape": {
        "access_token": "ya29.token",
        "refresh_token": "1//0g-refresh",
        "expires_in": 3599,
        "created": 1767225600,
        "id_token": None,
    },
}


def php_view(value: Any) -> Any:
    """What PHP's get_user_meta/get_option return for a value stored by WordPress."""
    if value is True:
        return "1"
    if value is False or value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if not value.is_integer() else str(int(value))
    return value


def array_view(value: Any) -> Any:
    """Arrays keep PHP types inside; only the top level is stringified."""
    if isinstance(value, list | dict):
        return value
    return php_view(value)


@dataclass
class Interop:
    engine: sa.Engine
    schema: SiteSchema
    wp: WordPressPHP
    user_id: int
    php_saw: dict[str, Any]  # PHP's view of what Python wrote
    py_saw: dict[str, Any]  # Python's view of what PHP wrote
    raw: dict[str, tuple[Any, Any]]  # (python row, PHP row) per meta case
    raw_opt: dict[str, tuple[Any, Any]]
    second_run: dict[str, Any]


def _raw_meta(conn: sa.Connection, schema: SiteSchema, uid: int, key: str) -> Any:
    um = schema.usermeta
    rows = conn.execute(
        sa.select(um.c.meta_value).where(um.c.user_id == uid, um.c.meta_key == key)
    ).all()
    assert len(rows) <= 1, key
    return rows[0][0] if rows else MISSING


def _raw_option(conn: sa.Connection, schema: SiteSchema, name: str) -> Any:
    opts = schema.options
    rows = conn.execute(
        sa.select(opts.c.option_value, opts.c.autoload).where(opts.c.option_name == name)
    ).all()
    return tuple(rows[0]) if rows else MISSING


@pytest.fixture(scope="module")
def interop(new_mysql_database: Any) -> Any:
    require_php()
    url = new_mysql_database()
    wp = WordPressPHP(url)
    engine = sa.create_engine(url)
    try:
        uid = wp.install()
        names = TableNames("wp_")
        create_site(engine, names, core=False, kivicare="v4", mapping_shape="c")
        schema = SiteSchema.load(engine, names)
        meta, options = UserMeta(schema), Options(schema)

        with engine.begin() as conn:
            for case, value in CASES.items():
                meta.set(conn, uid, f"py_{case}", value)
                options.set(conn, f"kcsc_py_{case}", value)
            options.set(conn, "kcsc_py_not_autoloaded", "lazy ✓", autoload="no")

        # One PHP run: read Python's rows, then write the same values the WordPress way.
        first = wp.call(
            f"""
            $uid = {uid};
            $cases = {php_literal(CASES)};
            $out = array();
            foreach ($cases as $id => $v) {{
                $out["meta:$id"] = array(
                    metadata_exists('user', $uid, "py_$id"),
                    get_user_meta($uid, "py_$id", true),
                );
                $out["opt:$id"] = get_option("kcsc_py_$id", {php_literal(MISSING)});
            }}
            $out['opt:not_autoloaded'] = get_option('kcsc_py_not_autoloaded');
            foreach ($cases as $id => $v) {{
                update_user_meta($uid, "php_$id", wp_slash($v));
                update_option("kcsc_php_$id", $v);
            }}
            update_user_meta($uid, 'php_unslashed', 'C:\\\\dir\\\\file');
            update_option('kcsc_php_unslashed', 'C:\\\\dir\\\\file');
            update_user_meta($uid, 'shared_single', 'old');
            add_user_meta($uid, 'shared_multi', 'old-1');
            add_user_meta($uid, 'shared_multi', 'old-2');
            return $out;
            """
        )

        py_saw: dict[str, Any] = {}
        raw: dict[str, tuple[Any, Any]] = {}
        raw_opt: dict[str, tuple[Any, Any]] = {}
        with engine.begin() as conn:
            for case in CASES:
                py_saw[f"meta:{case}"] = meta.get(conn, uid, f"php_{case}", MISSING)
                py_saw[f"opt:{case}"] = options.get(conn, f"kcsc_php_{case}", MISSING)
                raw[case] = (
                    _raw_meta(conn, schema, uid, f"py_{case}"),
                    _raw_meta(conn, schema, uid, f"php_{case}"),
                )
                raw_opt[case] = (
                    _raw_option(conn, schema, f"kcsc_py_{case}"),
                    _raw_option(conn, schema, f"kcsc_php_{case}"),
                )
            py_saw["meta:unslashed"] = meta.get(conn, uid, "php_unslashed")
            py_saw["opt:unslashed"] = options.get(conn, "kcsc_php_unslashed")
            # Overwrite and delete from Python; PHP checks the result in a second run.
            meta.set(conn, uid, "shared_single", {"new": "✓"})
            meta.set(conn, uid, "shared_multi", "new")
            meta.delete(conn, uid, "php_plain")
            options.set(conn, "kcsc_php_plain", ["changed"])
            options.delete(conn, "kcsc_php_int")

        second = wp.call(
            f"""
            $uid = {uid};
            return array(
                'single' => get_user_meta($uid, 'shared_single'),
                'multi' => get_user_meta($uid, 'shared_multi'),
                'deleted_meta_exists' => metadata_exists('user', $uid, 'php_plain'),
                'option' => get_option('kcsc_php_plain'),
                'deleted_option' => get_option('kcsc_php_int', {php_literal(MISSING)}),
            );
            """
        )
        yield Interop(engine, schema, wp, uid, first, py_saw, raw, raw_opt, second)
    finally:
        engine.dispose()
        wp.close()


def _typed(value: Any) -> Any:
    """``value`` with every leaf tagged by its type, so True != 1 and "1" != 1 when compared."""
    if isinstance(value, dict):
        return ("dict", [(_typed(k), _typed(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [_typed(v) for v in value])
    return (type(value).__name__, value)


def _same(actual: Any, expected: Any) -> bool:
    return _typed(actual) == _typed(expected)


# -- Python writes, PHP reads ----------------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_php_get_user_meta_returns_what_user_meta_set_wrote(interop: Interop, case: str) -> None:
    exists, value = interop.php_saw[f"meta:{case}"]
    assert exists is True
    assert _same(value, array_view(CASES[case])), value


@pytest.mark.parametrize("case", list(CASES))
def test_php_get_option_returns_what_options_set_wrote(interop: Interop, case: str) -> None:
    value = interop.php_saw[f"opt:{case}"]
    assert _same(value, array_view(CASES[case])), value


def test_php_reads_an_option_that_is_not_autoloaded(interop: Interop) -> None:
    assert interop.php_saw["opt:not_autoloaded"] == "lazy ✓"


# -- PHP writes, Python reads ----------------------------------------------------------------


def _python_view_of_php_meta(value: Any) -> Any:
    return None if value is None else array_view(value)


@pytest.mark.parametrize("case", list(CASES))
def test_user_meta_get_returns_what_php_update_user_meta_wrote(interop: Interop, case: str) -> None:
    expected = _python_view_of_php_meta(CASES[case])
    assert _same(interop.py_saw[f"meta:{case}"], expected), interop.py_saw[f"meta:{case}"]


@pytest.mark.parametrize("case", list(CASES))
def test_options_get_returns_what_php_update_option_wrote(interop: Interop, case: str) -> None:
    # update_option(new, false) is a no-op in WordPress: false equals get_option's "missing".
    expected = MISSING if CASES[case] is False else array_view(CASES[case])
    assert _same(interop.py_saw[f"opt:{case}"], expected), interop.py_saw[f"opt:{case}"]


@pytest.mark.parametrize("case", list(CASES))
def test_rows_are_byte_identical_to_what_php_writes(interop: Interop, case: str) -> None:
    ours, theirs = interop.raw[case]
    assert ours == theirs
    ours_opt, theirs_opt = interop.raw_opt[case]
    if CASES[case] is False:
        assert theirs_opt == MISSING
    else:
        assert ours_opt == theirs_opt  # value and autoload='yes'


def test_slashing_rules_of_the_two_php_apis(interop: Interop) -> None:
    # update_user_meta unslashes (callers must wp_slash); update_option stores as given.
    assert interop.py_saw["meta:unslashed"] == "C:dirfile"
    assert interop.py_saw["opt:unslashed"] == "C:\\dir\\file"


# -- overwrite and delete ----------------------------------------------------------------------


def test_php_sees_python_overwrites_and_deletes(interop: Interop) -> None:
    second = interop.second_run
    assert second["single"] == [{"new": "✓"}]
    assert second["multi"] == ["new", "new"]  # update_user_meta updates every row of the key
    assert second["deleted_meta_exists"] is False
    assert second["option"] == ["changed"]
    assert second["deleted_option"] == MISSING


# -- the harness's own contract ----------------------------------------------------------------


def test_missing_php_fails_in_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("KCSC_REQUIRE_PHP", "1")
    with pytest.raises(pytest.fail.Exception, match="php-cli is not installed"):
        require_php()
    monkeypatch.delenv("KCSC_REQUIRE_PHP")
    with pytest.raises(pytest.skip.Exception):
        require_php()
