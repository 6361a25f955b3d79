"""HTTP face of the accounts server: ``/o/oauth2/v2/auth`` and its approve form, ``/token``,
``/revoke``.

Non-interactive approval for tests and scripts: POST the consent form directly to
``/o/oauth2/v2/auth/approve`` with the authorization parameters plus ``email`` (and optionally
``granted_scope`` repeated, for granular consent; ``decision=deny`` to refuse). With
``testing`` on, ``GET /o/oauth2/v2/auth?...&emulator_auto_approve=EMAIL`` redirects at once
(``emulator_grant_scopes`` narrows the grant; ``emulator_auto_approve=deny`` refuses).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from typing import Any
from urllib.parse import unquote

from flask import Blueprint, Response, current_app, redirect, render_template, request

from sidecar.emulator.errors import AuthPageError, OAuthError
from sidecar.emulator.oauth import AUTH_PARAMS, AuthRequest
from sidecar.emulator.state import EmulatorState

bp = Blueprint("emulator_oauth", __name__)


def _state() -> EmulatorState:
    return current_app.emulator  # type: ignore[attr-defined,no-any-return]


def _error_page(err: AuthPageError) -> Response:
    html = render_template("auth_error.html", error=err.error, description=err.description)
    return Response(html, status=400, mimetype="text/html")


def _auth_params(source: Any) -> dict[str, str]:
    return {k: source[k] for k in AUTH_PARAMS if k in source}


@bp.get("/o/oauth2/v2/auth")
@bp.get("/o/oauth2/auth")
def authorize() -> Response:
    state = _state()
    with state.lock:
        try:
            req = state.oauth.validate_auth_request(_auth_params(request.args))
            state.log_request({"http_method": "GET", "path": request.path,
                               "api_method": "oauth2.authorize", "client_id": req.client_id,
                               "params": {"scope": " ".join(req.scopes)}, "status": 200})
            if "none" in req.prompt:
                return redirect(state.oauth.silent(req))
            auto = request.args.get("emulator_auto_approve")
            if auto is not None and state.config.testing:
                return redirect(_auto(state, req, auto))
        except AuthPageError as err:
            return _error_page(err)
    html = render_template(
        "consent.html",
        params=req.as_params(),
        scopes=req.scopes,
        login_hint=req.login_hint,
        client_id=req.client_id,
        approve_url=request.script_root + "/o/oauth2/v2/auth/approve",
    )
    return Response(html, mimetype="text/html")


def _auto(state: EmulatorState, req: AuthRequest, auto: str) -> str:
    if auto == "deny":
        return state.oauth.deny(req)
    granted = request.args.get("emulator_grant_scopes")
    scopes = granted.split() if granted else list(req.scopes)
    return state.oauth.approve(req, auto, scopes)


@bp.post("/o/oauth2/v2/auth/approve")
def approve() -> Response:
    state = _state()
    with state.lock:
        try:
            req = state.oauth.validate_auth_request(_auth_params(request.form))
            if request.form.get("decision", "approve") == "deny":
                return redirect(state.oauth.deny(req))
            email = request.form.get("email", "")
            if not email:
                raise AuthPageError("invalid_request", "Missing e-mail address.")
            if "granted_scope" in request.form or request.form.get("scopes_selected"):
                scopes = request.form.getlist("granted_scope")
            else:
                scopes = list(req.scopes)
            return redirect(state.oauth.approve(req, email, scopes))
        except AuthPageError as err:
            return _error_page(err)


def _json(body: dict[str, Any], status: int) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json",
                    headers={"Cache-Control": "no-cache, no-store, max-age=0, must-revalidate",
                             "Pragma": "no-cache"})


def _basic_auth() -> tuple[str, str] | None:
    header = request.headers.get("Authorization", "")
    if not header.lower().startswith("basic "):
        return None
    try:
        raw = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as err:
        raise OAuthError(400, "invalid_request", "Malformed Authorization header.") from err
    user, sep, password = raw.partition(":")
    if not sep:
        raise OAuthError(400, "invalid_request", "Malformed Authorization header.")
    return unquote(user), unquote(password)


_TOKEN_FAULTS = {
    "500": (500, "internal_failure", "Backend Error"),
    "backendError": (500, "internal_failure", "Backend Error"),
    "503": (503, "temporarily_unavailable", "The service is currently unavailable."),
    "unavailable": (503, "temporarily_unavailable", "The service is currently unavailable."),
    "429": (429, "rate_limit_exceeded", "Rate Limit Exceeded"),
}


def _oauth_fault(state: EmulatorState, method: str) -> Response | None:
    kind = state.faults.next_fault(method)
    if kind is None:
        return None
    status, error, description = _TOKEN_FAULTS.get(kind, _TOKEN_FAULTS["500"])
    return _json({"error": error, "error_description": description}, status)


@bp.post("/token")
@bp.post("/o/oauth2/token")
def token() -> Response:
    state = _state()
    latency = state.faults.latency_for("oauth2.token")
    if latency:
        time.sleep(latency)
    entry: dict[str, Any] = {"http_method": "POST", "path": request.path,
                             "api_method": "oauth2.token",
                             "params": {"grant_type": request.form.get("grant_type")}}
    with state.lock:
        try:
            faulted = _oauth_fault(state, "oauth2.token")
            if faulted is not None:
                entry["status"] = faulted.status_code
                return faulted
            if request.mimetype != "application/x-www-form-urlencoded":
                raise OAuthError(400, "invalid_request",
                                 "Content-Type must be application/x-www-form-urlencoded.")
            body = state.oauth.token(request.form.to_dict(), _basic_auth())
            entry["status"] = 200
            return _json(body, 200)
        except OAuthError as err:
            entry["status"] = err.status
            entry["error"] = err.error
            return _json(err.body(), err.status)
        finally:
            state.log_request(entry)


@bp.post("/revoke")
@bp.post("/o/oauth2/revoke")
def revoke() -> Response:
    state = _state()
    entry: dict[str, Any] = {"http_method": "POST", "path": request.path,
                             "api_method": "oauth2.revoke", "params": {}}
    with state.lock:
        try:
            faulted = _oauth_fault(state, "oauth2.revoke")
            if faulted is not None:
                entry["status"] = faulted.status_code
                return faulted
            state.oauth.revoke(request.form.get("token") or request.args.get("token"))
            entry["status"] = 200
            return _json({}, 200)
        except OAuthError as err:
            entry["status"] = err.status
            return _json(err.body(), err.status)
        finally:
            state.log_request(entry)
