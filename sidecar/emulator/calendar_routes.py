"""Calendar v3 over HTTP: ``/calendar/v3/calendars/{calendarId}`` (get),
``/calendar/v3/calendars/{calendarId}/events...`` and ``channels/stop``.

Each call runs the same pipeline, in Google's order: injected latency → access token (401) →
scope (403) → query parameters (400) → per-user quota (403 userRateLimitExceeded) → injected
fault → request body schema (400) → the operation. Every call lands in the request log.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, current_app, request

from sidecar.emulator import discovery, errors
from sidecar.emulator.oauth import AccessToken
from sidecar.emulator.push import resource_uri
from sidecar.emulator.state import EmulatorState

bp = Blueprint("emulator_calendar", __name__, url_prefix="/calendar/v3")
APP_CREATED = "https://www.googleapis.com/auth/calendar.app.created"
BODY_SCHEMAS = {
    "calendar.events.insert": "Event",
    "calendar.events.patch": "Event",
    "calendar.events.update": "Event",
    "calendar.events.watch": "Channel",
    "calendar.channels.stop": "Channel",
}


def _state() -> EmulatorState:
    return current_app.emulator  # type: ignore[attr-defined,no-any-return]


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[7:].strip()
    return request.args.get("oauth_token")


def _body(method_id: str) -> dict[str, Any]:
    if request.mimetype != "application/json":
        raise errors.ApiError(400, "parseError", "This API does not support parsing form-encoded "
                              "input." if request.data else "Parse Error")
    try:
        body = json.loads(request.get_data(as_text=True) or "null")
    except ValueError as err:
        raise errors.ApiError(400, "parseError", "Parse Error") from err
    if not isinstance(body, dict):
        raise errors.ApiError(400, "parseError", "Parse Error")
    discovery.validate_body(BODY_SCHEMAS[method_id], body, method_id,
                            patch=method_id == "calendar.events.patch")
    return body


def _run(method_id: str, operation: Callable[[AccessToken, dict[str, Any], Any], Any]) -> Response:
    state = _state()
    latency = state.faults.latency_for(method_id)
    if latency:
        time.sleep(latency)
    entry: dict[str, Any] = {
        "http_method": request.method,
        "path": request.path,
        "api_method": method_id,
        "params": {k: v for k, v in request.args.items() if k not in ("oauth_token", "key")},
    }
    with state.lock:
        try:
            state.tick()
            token = state.oauth.access(_bearer())
            if token is None:
                raise errors.auth_error()
            entry["user"], entry["client_id"] = token.email, token.client_id
            allowed = discovery.method_scopes(method_id) - {APP_CREATED}
            if not token.scopes & allowed:
                raise errors.insufficient_scope()
            params = discovery.parse_query(method_id, request.args)
            quota_key = token.email + "|" + str(params.get("quotaUser", ""))
            if state.faults.over_quota(quota_key, state.clock.time()):
                raise errors.fault("userRateLimitExceeded")
            kind = state.faults.next_fault(method_id)
            if kind is not None:
                raise errors.fault(kind)
            body = _body(method_id) if method_id in BODY_SCHEMAS else None
            if body is not None:
                entry["body"] = body
            result = operation(token, params, body)
            status = 204 if result is None else 200
            entry["status"] = status
            return Response(status=204) if result is None else _json(result)
        except errors.ApiError as err:
            entry["status"] = err.code
            entry["reason"] = err.reason
            headers = {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'} \
                if err.code == 401 else {}
            resp = _json(err.body(), err.code)
            resp.headers.update(headers)
            return resp
        finally:
            state.log_request(entry)


@bp.get("/calendars/<calendar_id>")
def calendar_get(calendar_id: str) -> Response:
    cal = _state().calendar
    return _run("calendar.calendars.get", lambda t, p, b: cal.metadata(t.email, calendar_id))


@bp.route("/calendars/<calendar_id>/events", methods=["GET", "POST"])
def events(calendar_id: str) -> Response:
    cal = _state().calendar
    if request.method == "GET":
        return _run("calendar.events.list",
                    lambda t, p, b: cal.list(t.email, calendar_id, p))
    return _run("calendar.events.insert",
                lambda t, p, b: cal.insert(t.email, calendar_id, b, p))


@bp.post("/calendars/<calendar_id>/events/watch")
def watch(calendar_id: str) -> Response:
    state = _state()

    def op(token: AccessToken, params: dict[str, Any], body: Any) -> Any:
        cal = state.calendar.calendar(token.email, calendar_id)
        uri = resource_uri(request.host_url, cal.id)
        return state.push.watch(token.client_id, token.email, cal.id, body, uri)

    return _run("calendar.events.watch", op)


@bp.route("/calendars/<calendar_id>/events/<event_id>",
          methods=["GET", "PUT", "PATCH", "DELETE"])
def event(calendar_id: str, event_id: str) -> Response:
    cal = _state().calendar
    if request.method == "GET":
        return _run("calendar.events.get",
                    lambda t, p, b: cal.get(t.email, calendar_id, event_id))
    if request.method == "PATCH":
        return _run("calendar.events.patch",
                    lambda t, p, b: cal.patch(t.email, calendar_id, event_id, b, p))
    if request.method == "PUT":
        return _run("calendar.events.update",
                    lambda t, p, b: cal.update(t.email, calendar_id, event_id, b, p))
    return _run("calendar.events.delete",
                lambda t, p, b: cal.delete(t.email, calendar_id, event_id))


@bp.post("/channels/stop")
def channels_stop() -> Response:
    push = _state().push
    return _run("calendar.channels.stop", lambda t, p, b: push.stop(t.client_id, b))


@bp.route("/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def unsupported(rest: str) -> Response:
    err = errors.ApiError(501, "notImplemented",
                          f"The emulator does not implement {request.method} /calendar/v3/{rest}.")
    return _json(err.body(), 501)
