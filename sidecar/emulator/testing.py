"""Client-side shortcuts for tests, benchmarks and the demo: a grant without a browser.

Goes through the sidecar's own OAuth code (authorization URL with PKCE, code exchange) and the
emulator's ``--testing`` auto-approve extension, so only the consent click is skipped.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from sidecar import oauth


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def auto_approve(authorization_url: str, email: str, *, timeout: float = 30.0,
                 **extra: str) -> str:
    """Approve ``authorization_url`` as ``email``; returns the redirect (callback) URL."""
    url = authorization_url + "&" + urllib.parse.urlencode(
        {"emulator_auto_approve": email, **extra})
    try:
        urllib.request.build_opener(_NoRedirect).open(url, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code in (301, 302, 303, 307) and err.headers.get("Location"):
            return str(err.headers["Location"])
        raise
    raise RuntimeError("the emulator did not redirect back: is it running with --testing?")


def grant(settings: Any, email: str, *, scope: str | None = None,
          timeout: float = 30.0, **extra: str) -> oauth.TokenResponse:
    """Consent as ``email`` and exchange the code: the token response Google would send.

    ``scope`` replaces the requested scope in the authorization URL (tests of narrow grants).
    """
    verifier, challenge = oauth.new_pkce_pair()
    url = oauth.build_authorization_url(settings, "state", challenge)
    if scope is not None:
        url = url.replace(urllib.parse.quote(oauth.CALENDAR_SCOPE, safe=""),
                          urllib.parse.quote(scope, safe=""))
    location = auto_approve(url, email, timeout=timeout, **extra)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
    if "code" not in query:
        raise RuntimeError(f"consent refused: {query.get('error', ['?'])[0]}")
    return oauth.exchange_code(settings, query["code"][0], verifier)
