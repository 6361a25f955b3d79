"""The sidecar's web app: ``create_app(runtime)`` wires blueprints, hardening and error pages.

Routes are registered at ``/``. ``sidecar.public_url`` may carry a path prefix (e.g.
``https://clinic.example/kc-sidecar``): a reverse proxy usually strips it, but when it does not,
:class:`PrefixMiddleware` strips it here, so both deployments work. Every URL we *generate*
(redirect_uri, links, cookie paths) is built from ``public_url``. The scheduler is not started
here; the process entry point does that.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from sidecar.web import security, views_connect, views_ops, views_pages, webhook
from sidecar.web.connect_flow import FlowError
from sidecar.web.pages import PageError, error_response, message_page

if TYPE_CHECKING:
    from sidecar.runtime import Runtime

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

APP_CSS = """\
body{font-family:system-ui,sans-serif;max-width:56rem;margin:2rem auto;padding:0 1rem;color:#222}
h1{font-size:1.5rem}table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.4rem .6rem;border-bottom:1px solid #ddd;vertical-align:top}
.connected{color:#176117;font-weight:600}.not_connected{color:#8a5a00;font-weight:600}
.error{color:#a11}form{display:inline}
button,.button{display:inline-block;font:inherit;font-size:.9rem;line-height:1.2;
padding:.35rem .8rem;cursor:pointer;border:1px solid #888;border-radius:4px;background:#f3f3f3;
color:#222;text-decoration:none}
button:hover,.button:hover{background:#e4e4e4}td:last-child{white-space:nowrap}
.connected,.not_connected{white-space:nowrap}
code{word-break:break-all}.muted{color:#666}
"""


class PrefixMiddleware:
    """Move a leading ``prefix`` of PATH_INFO into SCRIPT_NAME (when the proxy did not)."""

    def __init__(self, app: Any, prefix: str) -> None:
        self.app = app
        self.prefix = prefix.rstrip("/")

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if self.prefix and (path == self.prefix or path.startswith(self.prefix + "/")):
            environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + self.prefix
            environ["PATH_INFO"] = path[len(self.prefix):] or "/"
        return self.app(environ, start_response)


def create_app(runtime: Runtime) -> Flask:
    app = Flask(__name__, template_folder=str(TEMPLATES), static_folder=None)
    app.config["KCSC_PUBLIC_URL"] = runtime.public_url
    app.extensions["kcsc_runtime"] = runtime
    security.install(app)
    app.register_blueprint(views_connect.bp)
    app.register_blueprint(views_pages.bp)
    app.register_blueprint(views_ops.bp)
    app.register_blueprint(webhook.bp)
    app.add_url_rule("/assets/app.css", "app_css", _app_css)
    app.add_url_rule("/", "index", _index)
    _register_error_handlers(app)
    prefix = urlsplit(runtime.public_url).path
    if prefix.strip("/"):
        app.wsgi_app = PrefixMiddleware(app.wsgi_app, prefix)  # type: ignore[method-assign]
    return app


def _app_css() -> Response:
    response = Response(APP_CSS, mimetype="text/css")
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response


def _index() -> Response:
    from flask import redirect

    from sidecar.web.pages import public_url

    return redirect(public_url("/me"), code=302)  # type: ignore[return-value]


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(PageError)
    def _page_error(err: PageError) -> Response:
        return error_response(err)

    @app.errorhandler(FlowError)
    def _flow_error(err: FlowError) -> Response:
        return message_page(err.status, err.title, err.message)

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException) -> Response:
        status = err.code or 500
        response = message_page(status, f"{status} {err.name}", err.description or "")
        if status == 405 and err.get_headers():
            allow = dict(err.get_headers()).get("Allow")
            if allow:
                response.headers["Allow"] = allow
        return response

    @app.errorhandler(Exception)
    def _unexpected(err: Exception) -> Response:
        log.error("unhandled error in %s", type(err).__name__, exc_info=err)
        return message_page(500, "Something went wrong",
                            "The sidecar hit an unexpected error. It has been logged; please "
                            "try again later or tell the site administrator.")
