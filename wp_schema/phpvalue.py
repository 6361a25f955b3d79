"""PHP values as WordPress stores them: maybe_serialize, maybe_unserialize, is_serialized.

Ported from WordPress 6.1 ``wp-includes/functions.php`` and checked against php-cli. What the
functions model is the *database*: a meta or option row holds text, and what PHP reads back is
``maybe_unserialize(text)``.

Python ↔ PHP mapping
- ``dict`` / ``list`` / ``tuple`` → PHP array. Dict keys that are canonical decimal integers
  (``"5"``, ``"-3"``, not ``"05"``) become integer keys, as PHP does; ``bool``/``float`` keys are
  truncated to int and ``None`` becomes ``""``, again as PHP does.
- A PHP array decodes to a ``list`` when its keys are exactly ``0..n-1`` in that order (the empty
  array included), otherwise to a ``dict`` (int and str keys, insertion order kept).
- PHP objects (``O:``) decode to :class:`PhpObject`, a ``dict`` of the raw property names
  (private/protected names keep their ``\\0Class\\0`` markers) with ``.class_name``; it serializes
  back to the same ``O:`` form. Nothing is ever instantiated or executed.
- Strings are UTF-8; PHP lengths are *byte* lengths. Bytes that are not valid UTF-8 inside a
  serialized string survive a round trip through ``surrogateescape``.

Scalars at the top level (``maybe_serialize``): WordPress passes them to ``$wpdb`` unchanged and
``$wpdb`` formats them with ``%s``, so what lands in the row is ``True`` → ``"1"``, ``False`` →
``""``, ``None`` → ``""`` (see ``meta`` for the usermeta NULL case), ``int`` → decimal, ``float``
→ PHP's ``(string)`` form (14 significant digits). A string that already looks serialized
(``is_serialized(s, strict=False)``) is serialized *again*, exactly as WordPress does.

``maybe_unserialize`` follows PHP's ``@unserialize``: text that passes ``is_serialized`` but
cannot be decoded returns ``False``. Not decoded (→ ``False``): references ``r:``/``R:``, custom
serialized objects ``C:`` and enums ``E:``, which WordPress data does not use.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Any

import phpserialize

__all__ = [
    "PhpObject",
    "is_serialized",
    "maybe_serialize",
    "maybe_unserialize",
    "php_float_str",
    "serialize",
    "unserialize",
]

_PHP_WS = " \t\n\r\0\x0b"  # what PHP's trim() strips
_INT_KEY_RE = re.compile(r"-?(?:0|[1-9][0-9]*)")
_PHP_INT_MAX = 2**63 - 1
_PHP_INT_MIN = -(2**63)
_BID_STRICT = {t: re.compile(rb"^" + t + rb":[0-9.E+-]+;\Z") for t in (b"b", b"i", b"d")}
_BID_LOOSE = {t: re.compile(rb"^" + t + rb":[0-9.E+-]+;") for t in (b"b", b"i", b"d")}


class PhpObject(dict):
    """A PHP object read from serialized data: its properties plus ``class_name``."""

    def __init__(self, class_name: str, props: dict[Any, Any] | None = None) -> None:
        super().__init__(props or {})
        self.class_name = class_name

    def __repr__(self) -> str:
        return f"PhpObject({self.class_name!r}, {dict.__repr__(self)})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PhpObject):
            return self.class_name == other.class_name and dict.__eq__(self, other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]


# --------------------------------------------------------------------------- is_serialized


def is_serialized(data: Any, strict: bool = True) -> bool:
    """WordPress ``is_serialized($data, $strict)``, byte for byte (PHP works on UTF-8 bytes)."""
    if isinstance(data, str):
        raw = _enc(data)
    elif isinstance(data, bytes):
        raw = data
    else:
        return False
    raw = raw.strip(_PHP_WS.encode())
    if raw == b"N;":
        return True
    if len(raw) < 4:
        return False
    if raw[1:2] != b":":
        return False
    if strict:
        if raw[-1:] not in (b";", b"}"):
            return False
    else:
        semicolon = raw.find(b";")
        brace = raw.find(b"}")
        if semicolon == -1 and brace == -1:
            return False
        if semicolon != -1 and semicolon < 3:
            return False
        if brace != -1 and brace < 4:
            return False
    token = raw[0:1]
    if token == b"s":
        if strict:
            if raw[-2:-1] != b'"':
                return False
        elif b'"' not in raw:
            return False
        return re.match(rb"^s:[0-9]+:", raw, re.S) is not None
    if token in (b"a", b"O", b"E"):
        return re.match(rb"^" + token + rb":[0-9]+:", raw, re.S) is not None
    if token in (b"b", b"i", b"d"):
        table = _BID_STRICT if strict else _BID_LOOSE
        return table[token].match(raw) is not None
    return False


# --------------------------------------------------------------------------- serialize


def php_float_str(value: float, *, serialize_form: bool = False) -> str:
    """PHP 8's text for a float.

    ``serialize_form=False``: ``(string)$f`` / ``sprintf('%s')`` (``precision=14``).
    ``serialize_form=True``: the ``d:`` payload of ``serialize()`` (``serialize_precision=-1``,
    the shortest text that reads back the same float).
    """
    if math.isnan(value):
        return "NAN"
    if math.isinf(value):
        return "INF" if value > 0 else "-INF"
    neg = math.copysign(1.0, value) < 0
    if value == 0:
        return "-0" if neg else "0"
    if serialize_form:
        dec = Decimal(repr(abs(value)))
        _sign, digits_t, exp = dec.as_tuple()
        digits = "".join(map(str, digits_t))
        decpt = len(digits) + int(exp)
        ndigit = 17
    else:
        mant, _, e = (f"{abs(value):.13e}").partition("e")
        digits = mant.replace(".", "")
        decpt = int(e) + 1
        ndigit = 14
    digits = digits.rstrip("0") or "0"
    # php_gcvt: exponential when decpt < -3 or decpt > ndigit.
    if (decpt < -3) if decpt < 0 else (decpt > ndigit):
        mant_s = digits[0] + "." + (digits[1:] or "0")
        e_val = decpt - 1
        text = f"{mant_s}E{'+' if e_val >= 0 else '-'}{abs(e_val)}"
    elif decpt <= 0:
        text = "0." + "0" * (-decpt) + digits
    elif len(digits) <= decpt:
        text = digits + "0" * (decpt - len(digits))
    else:
        text = digits[:decpt] + "." + digits[decpt:]
    return ("-" if neg else "") + text


def _enc(text: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # lone surrogates that did not come from undecodable bytes
        return text.encode("utf-8", "surrogatepass")


def _ser_str(raw: bytes) -> bytes:
    return b"s:" + str(len(raw)).encode() + b':"' + raw + b'";'


def _ser_key(key: Any) -> bytes:
    if isinstance(key, bool):
        return b"i:%d;" % int(key)
    if isinstance(key, int):
        if not _PHP_INT_MIN <= key <= _PHP_INT_MAX:
            raise ValueError(f"array key {key} does not fit a PHP integer")
        return b"i:%d;" % key
    if isinstance(key, float):
        if math.isnan(key) or math.isinf(key):
            return b"i:0;"
        return b"i:%d;" % int(key)
    if key is None:
        return b's:0:"";'
    if isinstance(key, str):
        if _INT_KEY_RE.fullmatch(key) and _PHP_INT_MIN <= int(key) <= _PHP_INT_MAX:
            return b"i:" + key.encode() + b";"
        return _ser_str(_enc(key))
    if isinstance(key, bytes):
        return _ser_str(key)
    raise TypeError(f"cannot use {type(key).__name__} as a PHP array key")


def _ser(value: Any, depth: int) -> bytes:
    if depth > 512:
        raise ValueError("value nested too deeply to serialize")
    if value is None:
        return b"N;"
    if isinstance(value, bool):
        return b"b:1;" if value else b"b:0;"
    if isinstance(value, int):
        if not _PHP_INT_MIN <= value <= _PHP_INT_MAX:
            # PHP has no bigger integers; serialize would have turned it into a float.
            return b"d:" + php_float_str(float(value), serialize_form=True).encode() + b";"
        return b"i:%d;" % value
    if isinstance(value, float):
        return b"d:" + php_float_str(value, serialize_form=True).encode() + b";"
    if isinstance(value, str):
        return _ser_str(_enc(value))
    if isinstance(value, bytes):
        return _ser_str(value)
    if isinstance(value, PhpObject):
        name = _enc(value.class_name)
        return (
            b"O:"
            + str(len(name)).encode()
            + b':"'
            + name
            + b'":'
            + _ser_members(value, depth, props=True)
        )
    if isinstance(value, dict):
        return b"a:" + _ser_members(value, depth)
    if isinstance(value, (list, tuple)):
        return b"a:" + _ser_members(dict(enumerate(value)), depth)
    raise TypeError(f"cannot serialize {type(value).__name__} as a PHP value")


def _ser_members(mapping: dict[Any, Any], depth: int, *, props: bool = False) -> bytes:
    # PHP arrays cannot hold the same key twice: later writes win, order of first insert kept.
    # Object property names are always strings in PHP 7.2+.
    items: dict[bytes, bytes] = {}
    for key, val in mapping.items():
        if props and not isinstance(key, (str, bytes)):
            raise TypeError(f"PHP object property names must be str, not {type(key).__name__}")
        ser_key = _ser_str(_enc(key) if isinstance(key, str) else key) if props else _ser_key(key)
        items[ser_key] = _ser(val, depth + 1)
    body = b"".join(k + v for k, v in items.items())
    return str(len(items)).encode() + b":{" + body + b"}"


def serialize(value: Any) -> str:
    """PHP ``serialize($value)`` for a Python value, as text (UTF-8 lengths in bytes)."""
    return _ser(value, 0).decode("utf-8", "surrogateescape")


def maybe_serialize(value: Any) -> str:
    """What ``update_*_meta`` / ``update_option`` writes to the row for ``value``."""
    if isinstance(value, (dict, list, tuple, PhpObject)):
        return serialize(value)
    if isinstance(value, str):
        if is_serialized(value, strict=False):
            return serialize(value)
        return value
    if value is None or value is False:
        return ""
    if value is True:
        return "1"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return php_float_str(value)
    raise TypeError(f"cannot store {type(value).__name__} in WordPress (use str, int or a dict)")


# --------------------------------------------------------------------------- unserialize


def _array_hook(pairs: list[tuple[Any, Any]]) -> Any:
    # PHP turns canonical numeric string keys into integer keys when it builds the array.
    pairs = [
        (int(k), v)
        if isinstance(k, str)
        and _INT_KEY_RE.fullmatch(k)
        and _PHP_INT_MIN <= int(k) <= _PHP_INT_MAX
        else (k, v)
        for k, v in pairs
    ]
    if all(isinstance(k, int) and k == i for i, (k, _) in enumerate(pairs)):
        return [v for _, v in pairs]
    return dict(pairs)


def _object_hook(name: str, props: dict[Any, Any]) -> PhpObject:
    return PhpObject(name, props)


def unserialize(text: str | bytes) -> Any:
    """PHP ``unserialize``; raises ``ValueError`` when PHP would return false with a notice."""
    raw = text if isinstance(text, bytes) else _enc(text)
    head = raw[:1]
    if head not in (b"N", b"b", b"i", b"d", b"s", b"a", b"O"):
        raise ValueError("not a serialized PHP value we can decode")
    try:
        return phpserialize.loads(
            raw,
            charset="utf-8",
            errors="surrogateescape",
            decode_strings=True,
            object_hook=_object_hook,
            array_hook=_array_hook,
        )
    except (ValueError, TypeError, OverflowError, RecursionError, UnicodeError) as err:
        raise ValueError(f"cannot unserialize: {err}") from None


def maybe_unserialize(text: Any) -> Any:
    """WordPress ``maybe_unserialize``: decode only what ``is_serialized`` accepts.

    Non-strings (``None`` from a NULL column, ints) come back unchanged. Serialized-looking but
    broken text gives ``False``, like PHP's ``@unserialize``.
    """
    if not is_serialized(text):
        return text
    raw = text if isinstance(text, bytes) else _enc(text)
    try:
        return unserialize(raw.strip(_PHP_WS.encode()))
    except ValueError:
        return False
