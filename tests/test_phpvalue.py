"""PHP value codec: WordPress's maybe_serialize / maybe_unserialize / is_serialized.

Unit cases pin the behaviour users notice (double serialization, byte lengths, objects).
The ``php`` tests run the real WordPress functions in php-cli over a large corpus, in one PHP
process per test, and demand identical answers.
"""

from __future__ import annotations

import base64
import json
import math
import random
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wp_schema.phpvalue import (
    PhpObject,
    is_serialized,
    maybe_serialize,
    maybe_unserialize,
    php_float_str,
    serialize,
    unserialize,
)

WP_ROOT = Path("/usr/share/wordpress")


# --------------------------------------------------------------------------- unit


def test_capabilities_array_matches_wordpress_bytes() -> None:
    assert maybe_serialize({"kiviCare_doctor": True}) == 'a:1:{s:15:"kiviCare_doctor";b:1;}'
    assert maybe_unserialize('a:1:{s:15:"kiviCare_doctor";b:1;}') == {"kiviCare_doctor": True}


def test_string_lengths_are_utf8_byte_lengths() -> None:
    text = "Dr. Müller 🩺"
    out = serialize(text)
    assert out == 's:16:"Dr. Müller 🩺";'
    assert unserialize(out) == text


def test_already_serialized_string_is_serialized_again() -> None:
    stored = maybe_serialize('a:1:{i:0;s:1:"x";}')
    assert stored == 's:18:"a:1:{i:0;s:1:"x";}";'
    # Reading it back gives the original *string*, not the array.
    assert maybe_unserialize(stored) == 'a:1:{i:0;s:1:"x";}'


def test_loose_check_double_serializes_strings_strict_check_would_not_read() -> None:
    # Not serialized under the strict rule (ends with a space before trim? no: with text after ;)
    text = "i:5;trailing"
    assert not is_serialized(text)
    assert is_serialized(text, strict=False)
    assert maybe_serialize(text) == 's:12:"i:5;trailing";'


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        (True, "1"),
        (False, ""),
        (None, ""),
        (0, "0"),
        (-42, "-42"),
        (0.1 + 0.2, "0.3"),
        (1e15, "1.0E+15"),
        (2.5, "2.5"),
        ("on", "on"),
        ("", ""),
    ],
)
def test_scalars_land_as_wpdb_formats_them(value: Any, stored: str) -> None:
    assert maybe_serialize(value) == stored


def test_plain_text_is_returned_unchanged() -> None:
    for text in ["on", "", "primary", '{"access_token": "x"}', "a:b", "s:3:", "   "]:
        assert maybe_unserialize(text) == text


def test_lists_and_dicts() -> None:
    assert serialize(["a", "b"]) == 'a:2:{i:0;s:1:"a";i:1;s:1:"b";}'
    assert unserialize('a:2:{i:0;s:1:"a";i:1;s:1:"b";}') == ["a", "b"]
    assert unserialize("a:0:{}") == []
    # Keys not exactly 0..n-1 in order stay a dict.
    assert unserialize('a:2:{i:1;s:1:"b";i:0;s:1:"a";}') == {1: "b", 0: "a"}
    assert unserialize('a:1:{i:3;s:1:"x";}') == {3: "x"}
    # Numeric string keys become int keys, like PHP.
    assert serialize({"5": 1, "05": 2, "-3": 3}) == 'a:3:{i:5;i:1;s:2:"05";i:2;i:-3;i:3;}'
    assert unserialize('a:1:{s:1:"5";i:1;}') == {5: 1}


def test_objects_decode_to_php_object_and_round_trip() -> None:
    text = 'O:8:"stdClass":2:{s:4:"name";s:3:"Ann";s:4:"tags";a:1:{i:0;s:1:"x";}}'
    value = maybe_unserialize(text)
    assert isinstance(value, PhpObject)
    assert value.class_name == "stdClass"
    assert value == PhpObject("stdClass", {"name": "Ann", "tags": ["x"]})
    assert serialize(value) == text


def test_broken_serialized_text_reads_as_false_like_php() -> None:
    assert maybe_unserialize('s:5:"abc";') is False  # wrong length
    assert maybe_unserialize('a:1:{i:0;C:3:"Foo":0:{}}') is False  # custom object: not decoded
    assert maybe_unserialize("b:0;") is False  # the real false
    with pytest.raises(ValueError):
        unserialize("x:1;")


def test_whitespace_around_serialized_text_is_ignored() -> None:
    assert maybe_unserialize("  \n a:1:{i:0;i:7;}\t") == [7]


def test_lone_surrogates_do_not_crash() -> None:
    assert not is_serialized("\ud800abc")
    assert maybe_serialize("\ud800") == "\ud800"
    assert serialize("\ud800").startswith("s:3:")


def test_non_strings_pass_through() -> None:
    assert maybe_unserialize(None) is None
    assert maybe_unserialize(5) == 5
    assert not is_serialized(5)


def test_unsupported_types_raise_type_error() -> None:
    with pytest.raises(TypeError):
        maybe_serialize(object())
    with pytest.raises(TypeError):
        serialize({(1, 2): "x"})


def test_float_text_forms() -> None:
    assert php_float_str(1e17, serialize_form=True) == "1.0E+17"
    assert php_float_str(1e16, serialize_form=True) == "10000000000000000"
    assert php_float_str(1e-5, serialize_form=True) == "1.0E-5"
    assert php_float_str(-0.0, serialize_form=True) == "-0"
    assert php_float_str(float("inf")) == "INF"
    assert php_float_str(123456789012345.678) == "1.2345678901235E+14"


# --------------------------------------------------------------------------- property

_keys = st.one_of(st.integers(-(2**63), 2**63 - 1), st.text(max_size=8))
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.text(),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(_keys, inner, max_size=4),
        st.builds(
            PhpObject,
            st.text(min_size=1, max_size=6),
            st.dictionaries(st.text(max_size=5), inner, max_size=3),
        ),
    ),
    max_leaves=20,
)


def _php_normal(value: Any) -> Any:
    """What a value looks like after a trip through PHP (int-like string keys become ints)."""
    if isinstance(value, PhpObject):
        return PhpObject(value.class_name, {k: _php_normal(v) for k, v in value.items()})
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        for k, v in value.items():
            if (
                isinstance(k, str)
                and re.fullmatch(r"-?(0|[1-9][0-9]*)", k)
                and -(2**63) <= int(k) < 2**63
            ):
                k = int(k)
            out[k] = _php_normal(v)
        if list(out) == list(range(len(out))):
            return list(out.values())
        return out
    if isinstance(value, (list, tuple)):
        return [_php_normal(v) for v in value]
    return value


@settings(max_examples=300, deadline=None)
@given(_values)
def test_serialize_unserialize_round_trip(value: Any) -> None:
    text = serialize(value)
    if isinstance(value, float) and math.isinf(value):
        # WordPress's is_serialized() pattern for ``d:`` is [0-9.E+-]+: a bare ``d:INF;``
        # (what PHP writes for an infinite float) is not recognised, inside an array it is.
        assert not is_serialized(text)
    else:
        assert is_serialized(text)
    assert unserialize(text) == _php_normal(value)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_string_survives_store_and_read(text: str) -> None:
    assert maybe_unserialize(maybe_serialize(text)) == text


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.lists(_values, max_size=3), st.dictionaries(st.text(max_size=6), _values, max_size=3)
    )
)
def test_arrays_survive_store_and_read(value: Any) -> None:
    assert maybe_unserialize(maybe_serialize(value)) == _php_normal(value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=30))
def test_is_serialized_never_crashes_and_unserialize_is_safe(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    is_serialized(text, strict=False)
    maybe_unserialize(text)


# --------------------------------------------------------------------------- real PHP

_PHP_HARNESS = r"""<?php
define('ABSPATH', $argv[1] . '/'); define('WPINC', 'wp-includes');
require ABSPATH . WPINC . '/functions.php';
$cases = json_decode(stream_get_contents(STDIN), true);
$out = [];
foreach ($cases as $c) {
    switch ($c['op']) {
    case 'is_serialized':
        $s = base64_decode($c['b64']);
        $out[] = [is_serialized($s, true), is_serialized($s, false)];
        break;
    case 'serialize':
        $out[] = base64_encode(serialize($c['value']));
        break;
    case 'maybe_serialize_str':
        $out[] = base64_encode(maybe_serialize(base64_decode($c['b64'])));
        break;
    case 'scalar':
        $out[] = sprintf('%s', $c['value']);
        break;
    }
}
echo json_encode($out);
"""

php = pytest.mark.skipif(
    shutil.which("php") is None or not (WP_ROOT / "wp-includes/functions.php").exists(),
    reason="php-cli and the Debian wordpress package are required",
)


def _run_php(tmp_path: Path, cases: list[dict[str, Any]]) -> list[Any]:
    script = tmp_path / "harness.php"
    script.write_text(_PHP_HARNESS)
    proc = subprocess.run(
        ["php", str(script), str(WP_ROOT)],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(proc.stdout)


def _serialized_like_corpus(rng: random.Random, n: int) -> list[str]:
    pieces = [
        "s:",
        "a:",
        "O:",
        "E:",
        "b:",
        "i:",
        "d:",
        "N;",
        "C:",
        "1",
        "0",
        "12",
        "-",
        "+",
        ".",
        "E",
        "e",
        ":",
        ";",
        "}",
        "{",
        '"',
        " ",
        "\n",
        "\t",
        "\0",
        "x",
        "é",
        "🩺",
        "INF",
    ]
    corpus = [
        "",
        "N;",
        " N; ",
        "b:1;",
        "b:1; ",
        "i:-5;",
        "d:1.5E+3;",
        "d:1.5e3;",
        's:1:"a";',
        's:1:"a"; ',
        "a:0:{}",
        'O:1:"A":0:{}',
        'E:3:"A:B";',
        "i:5;x",
        "s:0:",
        "é:12;",
        "a:1",
        "s:1:é;",
    ]
    for _ in range(n):
        corpus.append("".join(rng.choice(pieces) for _ in range(rng.randint(1, 9))))
    return corpus


@php
@pytest.mark.php
def test_is_serialized_and_maybe_serialize_match_wordpress(tmp_path: Path) -> None:
    corpus = _serialized_like_corpus(random.Random(1234), 3000)
    cases: list[dict[str, Any]] = []
    for s in corpus:
        b64 = base64.b64encode(s.encode()).decode()
        cases.append({"op": "is_serialized", "b64": b64})
        cases.append({"op": "maybe_serialize_str", "b64": b64})
    got = _run_php(tmp_path, cases)
    for i, s in enumerate(corpus):
        strict, loose = got[2 * i]
        assert (is_serialized(s), is_serialized(s, strict=False)) == (strict, loose), repr(s)
        assert maybe_serialize(s) == base64.b64decode(got[2 * i + 1]).decode(), repr(s)


@php
@pytest.mark.php
def test_serialize_matches_php_for_json_values(tmp_path: Path) -> None:
    rng = random.Random(99)
    values = [_random_json_value(rng, 3) for _ in range(400)]
    values += [
        0.1,
        1e15,
        1e16,
        1e17,
        1e-4,
        1e-5,
        123456789012345.67,
        -0.0,
        2.0,
        5e-324,
        1.7976931348623157e308,
    ]
    got = _run_php(tmp_path, [{"op": "serialize", "value": v} for v in values])
    for value, php_b64 in zip(values, got, strict=True):
        assert serialize(value) == base64.b64decode(php_b64).decode(), repr(value)
        assert unserialize(base64.b64decode(php_b64)) == _php_normal(value)


@php
@pytest.mark.php
def test_scalar_text_matches_php_sprintf(tmp_path: Path) -> None:
    rng = random.Random(7)
    values: list[Any] = [
        True,
        False,
        None,
        0,
        -1,
        2**63 - 1,
        0.1 + 0.2,
        1e14,
        1e15,
        1e-4,
        1e-5,
        -0.0,
        2.5,
    ]
    values += [rng.uniform(-1e20, 1e20) for _ in range(200)] + [
        rng.random() / 1e6 for _ in range(100)
    ]
    got = _run_php(tmp_path, [{"op": "scalar", "value": v} for v in values])
    for value, text in zip(values, got, strict=True):
        assert maybe_serialize(value) == text, repr(value)


def _random_json_value(rng: random.Random, depth: int) -> Any:
    kind = rng.randrange(7 if depth > 0 else 5)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([0, -1, 7, 2**63 - 1, -(2**63), rng.randint(-(10**12), 10**12)])
    if kind == 2:
        return rng.choice([rng.uniform(-1e6, 1e6), rng.random() * 10 ** rng.randint(-12, 25), 0.5])
    if kind in (3, 4):
        return "".join(
            rng.choice(["a", "Z", "é", "🩺", '"', "\\", ";", "}", " ", "0", "5", "-"])
            for _ in range(rng.randint(0, 6))
        )
    if kind == 5:
        return [_random_json_value(rng, depth - 1) for _ in range(rng.randint(0, 3))]
    keys = ["k", "5", "05", "-2", "0", "1", "é", "", "9223372036854775808"]
    return {rng.choice(keys): _random_json_value(rng, depth - 1) for _ in range(rng.randint(0, 3))}
