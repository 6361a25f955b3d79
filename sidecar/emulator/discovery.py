"""The bundled Calendar v3 discovery document as the emulator's source of truth.

Scopes per method, query parameters and request-body schemas all come from the same JSON file
googleapiclient uses (``googleapiclient/discovery_cache/documents/calendar.v3.json``), so the
emulator rejects exactly what the document does not allow.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime
from functools import cache
from pathlib import Path
from typing import Any

import googleapiclient

from sidecar.emulator import errors

OTHER_SCOPES = frozenset(
    {
        "openid",
        "email",
        "profile",
        "https://www.googleapis.com/auth/userinfo.email",
        "https://www.googleapis.com/auth/userinfo.profile",
    }
)


@cache
def document() -> dict[str, Any]:
    path = Path(googleapiclient.__file__).parent / "discovery_cache/documents/calendar.v3.json"
    return json.loads(path.read_text(encoding="utf-8"))


@cache
def known_scopes() -> frozenset[str]:
    return frozenset(document()["auth"]["oauth2"]["scopes"]) | OTHER_SCOPES


@cache
def method(method_id: str) -> dict[str, Any]:
    """``method("calendar.events.insert")`` → the discovery method description."""
    _, resource, name = method_id.split(".")
    return document()["resources"][resource]["methods"][name]


def method_scopes(method_id: str) -> frozenset[str]:
    return frozenset(method(method_id)["scopes"])


def _parse_bool(name: str, raw: str) -> bool:
    if raw == "true":
        return True
    if raw == "false":
        return False
    raise errors.invalid(f"Invalid boolean value: '{raw}'.", name, reason="invalidParameter")


def parse_rfc3339(raw: str, name: str) -> datetime:
    """RFC 3339 date-time with a mandatory offset (``Z`` or ``±HH:MM``)."""
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})", raw):
        raise errors.invalid(f"Invalid value for: {name}", name, reason="invalid")
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as err:
        raise errors.invalid(f"Invalid value for: {name}", name) from err


def parse_query(method_id: str, args: Any) -> dict[str, Any]:
    """Validate query parameters against the discovery doc; returns typed values.

    ``args`` is a werkzeug MultiDict. Unknown parameters, wrong types, enum violations, bounds
    and non-repeated parameters given twice are 400 errors (stricter than Google, which ignores
    some unknown parameters).
    """
    spec = {
        k: v for k, v in method(method_id).get("parameters", {}).items() if v["location"] == "query"
    }
    spec.update(document()["parameters"])
    out: dict[str, Any] = {}
    for name in args:
        values = args.getlist(name)
        pspec = spec.get(name)
        if pspec is None:
            raise errors.invalid(f"Unknown parameter: '{name}'.", name, reason="invalidParameter")
        if len(values) > 1 and not pspec.get("repeated"):
            raise errors.invalid(f"Parameter '{name}' given more than once.", name,
                                 reason="invalidParameter")
        typed = [_typed(name, pspec, raw) for raw in values]
        out[name] = typed if pspec.get("repeated") else typed[0]
    return out


def _typed(name: str, pspec: dict[str, Any], raw: str) -> Any:
    kind = pspec.get("type")
    value: Any = raw
    if kind == "boolean":
        value = _parse_bool(name, raw)
    elif kind == "integer":
        if not re.fullmatch(r"-?\d+", raw):
            raise errors.invalid(f"Invalid integer value: '{raw}'.", name,
                                 reason="invalidParameter")
        value = int(raw)
        if "minimum" in pspec and value < int(pspec["minimum"]):
            raise errors.invalid(f"Invalid value '{raw}'. Values must be within the range: "
                                 f"[{pspec['minimum']}, {pspec.get('maximum', '')}]", name,
                                 reason="invalidParameter")
        if "maximum" in pspec and value > int(pspec["maximum"]):
            raise errors.invalid(f"Invalid value '{raw}'. Values must be within the range: "
                                 f"[{pspec.get('minimum', '')}, {pspec['maximum']}]", name,
                                 reason="invalidParameter")
    elif kind == "string" and "enum" in pspec and raw not in pspec["enum"]:
        raise errors.invalid(f"Invalid value for: {name}", name, reason="invalidParameter")
    elif pspec.get("format") == "date-time":
        parse_rfc3339(raw, name)
    return value


# --- request bodies ---------------------------------------------------------------------------


def validate_body(schema_name: str, body: Any, method_id: str, *, patch: bool = False) -> None:
    """Strict JSON-schema check of a request body against a discovery schema.

    Unknown fields and wrong types → 400 ``invalid``; fields annotated as required for
    ``method_id`` and missing → 400 ``required`` (not for patch, which sends partial resources).
    """
    _check(body, {"$ref": schema_name}, "resource", method_id, patch, top=True)


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        extra = {k: v for k, v in schema.items() if k != "$ref"}
        schema = {**document()["schemas"][schema["$ref"]], **extra}
    return schema


def _bad(path: str, what: str) -> errors.ApiError:
    return errors.ApiError(400, "invalid", f"Invalid value at '{path}': {what}", location=path,
                           location_type="other")


def _check(value: Any, schema: dict[str, Any], path: str, method_id: str, patch: bool,
           top: bool = False) -> None:
    schema = _resolve(schema)
    kind = schema.get("type", "any")
    if value is None:
        if patch:
            return  # null clears a field in a patch
        raise _bad(path, "null is not allowed")
    if kind == "object":
        if not isinstance(value, dict):
            raise _bad(path, "expected an object")
        props = schema.get("properties")
        addl = schema.get("additionalProperties")
        for key, item in value.items():
            sub = f"{path}.{key}"
            if props is not None and key in props:
                _check(item, props[key], sub, method_id, patch)
            elif addl is not None:
                _check(item, addl, sub, method_id, patch)
            else:
                raise errors.ApiError(
                    400,
                    "invalid",
                    f"Invalid JSON payload received. Unknown name \"{key}\" at '{path}': "
                    "Cannot find field.",
                    location=sub,
                    location_type="other",
                )
        if props and not patch:
            for key, pspec in props.items():
                needed = pspec.get("annotations", {}).get("required", [])
                if method_id in needed and key not in value:
                    label = {"start": "Missing start time.", "end": "Missing end time."}
                    raise errors.required(label.get(key, f"Required field missing: {path}.{key}"),
                                          f"{path}.{key}")
    elif kind == "array":
        if not isinstance(value, list):
            raise _bad(path, "expected an array")
        for i, item in enumerate(value):
            _check(item, schema.get("items", {}), f"{path}[{i}]", method_id, patch)
    elif kind == "string":
        fmt = schema.get("format")
        if fmt in ("int64", "uint64") and isinstance(value, int) and not isinstance(value, bool):
            return
        if not isinstance(value, str):
            raise _bad(path, "expected a string")
        if fmt in ("int64", "uint64") and not re.fullmatch(r"-?\d+", value):
            raise _bad(path, "expected an integer string")
        if fmt == "date-time":
            parse_rfc3339(value, path)
        if fmt == "date":
            try:
                date.fromisoformat(value)
            except ValueError as err:
                raise _bad(path, "expected a date YYYY-MM-DD") from err
    elif kind == "integer":
        if not isinstance(value, int) or isinstance(value, bool):
            raise _bad(path, "expected an integer")
    elif kind == "number":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise _bad(path, "expected a number")
    elif kind == "boolean" and not isinstance(value, bool):
        raise _bad(path, "expected a boolean")
