"""Testing-only HTTP control and inspection under ``/_emulator/`` (registered with --testing).

Each route is a thin wrapper over an :class:`~sidecar.emulator.state.EmulatorState` method so
out-of-process tests (demo, bench, PHP) can do what in-process tests do with ``app.emulator``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, current_app, request

from sidecar.emulator import errors
from sidecar.emulator.state import EmulatorState

bp = Blueprint("emulator_control", __name__, url_prefix="/_emulator")


def _state() -> EmulatorState:
    return current_app.emulator  # type: ignore[attr-defined,no-any-return]


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body, default=str), status=status, mimetype="application/json")


def _call(fn: Callable[[dict[str, Any]], Any]) -> Response:
    data = request.get_json(silent=True) or {}
    if not isinstance(data, dict):
        return _json({"error": "expected a JSON object"}, 400)
    try:
        result = fn(data)
    except (KeyError, TypeError, ValueError) as err:
        return _json({"error": f"bad control request: {err}"}, 400)
    except errors.ApiError as err:
        return _json(err.body(), err.code)
    return _json({"ok": True} if result is None else result)


@bp.get("/state")
def dump() -> Response:
    return _json(_state().dump())


@bp.get("/requests")
def requests_log() -> Response:
    return _json(_state().requests(request.args.get("api_method"), request.args.get("user")))


@bp.delete("/requests")
def clear_requests() -> Response:
    _state().clear_requests()
    return _json({"ok": True})


@bp.post("/clock/advance")
def advance() -> Response:
    return _call(lambda d: _state().advance(float(d["seconds"])))


@bp.post("/faults")
def faults() -> Response:
    """``{"method": "calendar.events.insert", "kinds": ["429", null]}`` or
    ``{"method": "*", "kind": "503", "probability": 0.2, "count": 5}``."""

    def apply(d: dict[str, Any]) -> None:
        if "kinds" in d:
            _state().inject_faults(d.get("method", "*"), list(d["kinds"]))
        else:
            _state().inject_fault_probability(d.get("method", "*"), d["kind"],
                                              float(d["probability"]), d.get("count"))

    return _call(apply)


@bp.delete("/faults")
def clear_faults() -> Response:
    _state().clear_faults()
    return _json({"ok": True})


@bp.post("/latency")
def latency() -> Response:
    return _call(lambda d: _state().set_latency(float(d["seconds"]), d.get("method", "*")))


@bp.post("/quota")
def quota() -> Response:
    return _call(lambda d: _state().set_quota(int(d["per_user_per_minute"])))


@bp.post("/grants/revoke")
def revoke_grant() -> Response:
    return _call(lambda d: {"revoked": _state().revoke_grant(d["client_id"], d["email"])})


@bp.post("/conferences/mode")
def conference_mode() -> Response:
    return _call(lambda d: _state().set_conference_mode(d["mode"], d.get("count")))


@bp.post("/conferences/resolve")
def conference_resolve() -> Response:
    return _call(lambda d: {"resolved": _state().resolve_conferences()})


@bp.post("/sync-tokens/invalidate")
def invalidate_sync_tokens() -> Response:
    return _call(lambda d: _state().invalidate_sync_tokens(d.get("email"), d.get("calendar_id")))


@bp.post("/push/deliver")
def push_deliver() -> Response:
    return _call(lambda d: {"attempts": _state().deliver_pending()})


@bp.post("/push/faults")
def push_faults() -> Response:
    return _call(lambda d: _state().set_push_faults(float(d.get("drop", 0.0)),
                                                    float(d.get("duplicate", 0.0))))


@bp.post("/users/<email>/events")
def user_create(email: str) -> Response:
    return _call(lambda d: _state().user_create_event(email, d["event"],
                                                      d.get("calendar_id", "primary")))


@bp.post("/users/<email>/events/<event_id>/<action>")
def user_action(email: str, event_id: str, action: str) -> Response:
    state = _state()
    actions: dict[str, Callable[[dict[str, Any]], Any]] = {
        "edit": lambda d: state.user_edit_event(email, event_id, d["changes"],
                                                d.get("calendar_id", "primary")),
        "move": lambda d: state.user_move_event(email, event_id, d["start"], d["end"],
                                                d.get("calendar_id", "primary")),
        "delete": lambda d: state.user_delete_event(email, event_id,
                                                    d.get("calendar_id", "primary")),
        "regenerate-meet": lambda d: state.user_regenerate_meet(email, event_id,
                                                                d.get("calendar_id", "primary")),
    }
    if action not in actions:
        return _json({"error": f"unknown action {action!r}"}, 404)
    return _call(actions[action])
