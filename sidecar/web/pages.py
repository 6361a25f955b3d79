"""Rendering of the sidecar's HTML pages and the one exception views raise to show an error page.

Views never build HTML: they render a template from ``sidecar/templates`` (Jinja autoescaping on)
or raise :class:`PageError`, which the app's error handler turns into ``message.html`` with the
right status code. Messages are written for the person in front of the browser and never contain
a token, cookie or secret.
"""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, render_template


class PageError(Exception):
    """Stop the view and answer ``status`` with a short explanation page.

    ``link``/``link_text`` add one action (e.g. "Log in to WordPress").
    """

    def __init__(self, status: int, title: str, message: str, *, link: str | None = None,
                 link_text: str | None = None) -> None:
        super().__init__(f"{status} {title}: {message}")
        self.status = status
        self.title = title
        self.message = message
        self.link = link
        self.link_text = link_text


def public_url(path: str = "/") -> str:
    """Absolute URL of one of our routes as browsers reach it (``sidecar.public_url`` + path)."""
    base: str = current_app.config["KCSC_PUBLIC_URL"]
    return base + path


def page(template: str, status: int = 200, **context: Any) -> Response:
    html = render_template(template, url=public_url, **context)
    return Response(html, status=status, mimetype="text/html")


def message_page(status: int, title: str, message: str, *, link: str | None = None,
                 link_text: str | None = None) -> Response:
    return page("message.html", status=status, title=title, message=message, link=link,
                link_text=link_text)


def error_response(err: PageError) -> Response:
    return message_page(err.status, err.title, err.message, link=err.link,
                        link_text=err.link_text)
