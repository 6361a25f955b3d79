"""Every route of the web app under generated and malformed requests, over real HTTP, with real
WordPress cookies (extends ``tests/web/test_web_security.py``, which pins the precise answers).

* Hypothesis builds requests — method, path (with and without the public prefix, known routes
  and junk), headers (Google's push headers, Origin, cookies, junk, oversized), query strings
  and bodies of every shape — sent as nobody, a forged, expired or logged-out cookie, or a
  logged-in patient. No answer is a 5xx, no page shows a secret, and the database (every table,
  by checksum) is unchanged: nothing happens without authorisation.
* Malformed HTTP that ``requests`` would never send (bad percent escapes, invalid UTF-8, a lying
  Content-Length, broken multipart, a thousand form fields) goes over a raw socket.
* The admin page escapes hostile text that reaches it from Google's error messages.

Default 1,000 generated cases; ``KCSC_RELIABILITY_FULL=1``: 10,000.
"""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
import requests
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability.clinic import report
from tests.reliability.conftest import count
from tests.web.web_clinic import CLIENT_SECRET, PREFIX, SECRET_KEY, Clinic, clinic_factory

pytestmark = pytest.mark.php

__all__ = ["clinic_factory"]

ROUTES = ["/", "/connect", "/oauth/callback", "/disconnect", "/invite/abc.def", "/admin",
          "/admin/invite", "/me", "/healthz", "/readyz", "/metrics", "/assets/app.css",
          "/webhook/google"]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
LATIN1 = st.characters(min_codepoint=0x20, max_codepoint=0xFF,
                       exclude_characters="\x7f\x85\xa0")
HEADER_NAMES = ["Origin", "Referer", "Sec-Fetch-Site", "Content-Type", "Accept", "Host",
                "X-Forwarded-For", "X-Forwarded-Proto", "X-Goog-Channel-ID",
                "X-Goog-Channel-Token", "X-Goog-Resource-ID", "X-Goog-Resource-State",
                "X-Goog-Message-Number", "Authorization", "X-CSRF-Token"]
CONTENT_TYPES = ["application/x-www-form-urlencoded", "multipart/form-data; boundary=zz",
                 "multipart/form-data", "application/json", "text/plain", "\u00ff/\u00fe",
                 "application/x-www-form-urlencoded; charset=utf-16"]


@pytest.fixture(scope="module")
def clinic(clinic_factory: Any) -> Clinic:
    clinic = clinic_factory()
    clinic.add_stale_cookies()
    # a connected doctor, so that tokens exist to leak
    assert clinic.connect(clinic.browser("doc_one"), email="fuzz@gmail.test").status_code == 303
    return clinic


def secrets_of(clinic: Clinic) -> list[str]:
    """Everything that must never appear in a page or a log line."""
    values = [CLIENT_SECRET, SECRET_KEY, *clinic.cookies.values(),
              *(v for k, v in clinic.extra.items() if k in ("expired", "logged_out"))]
    settings_ = clinic.runtime.settings.wordpress
    values += [getattr(settings_, n) for n in ("auth_key", "secure_auth_key", "logged_in_key",
                                               "nonce_key", "auth_salt", "secure_auth_salt",
                                               "logged_in_salt", "nonce_salt")]
    with clinic.engine.connect() as conn:
        raw = conn.execute(sa.text("SELECT meta_value FROM wp_usermeta WHERE meta_key LIKE "
                                   "'%google%'")).scalars().all()
    from tests.reliability.conftest import _token_values

    for value in raw:
        values += _token_values(value)
    return [v for v in values if v and len(v) >= 8]


def snapshot(clinic: Clinic) -> dict[str, Any]:
    """A checksum of every table of the site's database."""
    with clinic.engine.connect() as conn:
        tables = sa.inspect(conn).get_table_names()
        return {t: conn.exec_driver_sql(f"CHECKSUM TABLE `{t}`").one()[1] for t in tables}


def cookie_for(clinic: Clinic, kind: str) -> str | None:
    good = clinic.cookies["doc_one"]
    return {
        "none": None,
        "forged": good[:-3] + ("abc" if not good.endswith("abc") else "def"),
        "expired": clinic.extra["expired"],
        "logged_out": clinic.extra["logged_out"],
        "patient": clinic.cookies["pat"],
        "junk": "x|1|y|z",
    }[kind]


requests_st = st.fixed_dictionaries({
    "method": st.sampled_from(METHODS),
    "prefixed": st.booleans(),
    "route": st.one_of(st.sampled_from(ROUTES), st.sampled_from(ROUTES), st.sampled_from(ROUTES),
                       st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x2FF),
                               max_size=40).map(lambda s: "/" + quote(s, safe="/"))),
    "suffix": st.sampled_from([""] * 8 + ["/", "/x", "/../admin", "//", "%00", ";x=1", "/%2e%2e/"]),
    "query": st.one_of(
        st.just(""),
        st.lists(st.tuples(st.sampled_from(["doctor", "return", "state", "code", "error",
                                            "scope", "x"]), st.text(max_size=60)),
                 max_size=5).map(lambda kv: "&".join(f"{quote(k)}={quote(v)}" for k, v in kv)),
        st.sampled_from(["%zz", "%ff%fe", "doctor=1&doctor=2", "a" * 3000, "=&=&&",
                         "return=javascript:alert(1)", "doctor=0x10", "doctor=１"])),
    "headers": st.dictionaries(
        st.one_of(st.sampled_from(HEADER_NAMES),
                  st.from_regex(r"X-[A-Za-z0-9-]{1,16}", fullmatch=True)),
        st.text(alphabet=LATIN1, max_size=80).map(str.strip), max_size=5),
    "huge_header": st.sampled_from([False] * 9 + [True]),
    "content_type": st.one_of(st.none(), st.sampled_from(CONTENT_TYPES)),
    "body": st.one_of(st.none(), st.binary(max_size=600), st.just(b"x=" + b"a" * 20000),
                      st.just(b"--zz\r\nContent-Disposition: form-data; name=\"doctor\"\r\n\r\n1"),
                      st.just(b"doctor=1&csrf_token=" + b"A" * 80)),
    "cookie": st.sampled_from(["none", "forged", "expired", "logged_out", "patient", "junk"]),
})


def test_generated_requests_never_5xx_leak_or_change_state(clinic: Clinic, log_tap) -> None:
    cases = count(1000, 10000)
    secrets = secrets_of(clinic)
    log_tap.remember(*secrets)
    before = snapshot(clinic)
    server = urlsplit(clinic.sidecar.url)
    seen: dict[int, int] = {}
    session = requests.Session()

    @settings(max_examples=cases, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(requests_st)
    def one(case: dict[str, Any]) -> None:
        path = (PREFIX if case["prefixed"] else "") + case["route"] + case["suffix"]
        url = f"{server.scheme}://{server.netloc}{path}"
        if case["query"]:
            url += "?" + case["query"]
        headers = dict(case["headers"])
        headers.pop("Host", None)
        if case["huge_header"]:
            headers["X-Huge"] = "a" * 20000
        if case["content_type"]:
            headers["Content-Type"] = case["content_type"]
        cookie = cookie_for(clinic, case["cookie"])
        if cookie is not None:
            headers["Cookie"] = f"{clinic.cookie_name}={cookie}"
        answer = session.request(case["method"], url, headers=headers, data=case["body"],
                                 allow_redirects=False, timeout=10)
        seen[answer.status_code] = seen.get(answer.status_code, 0) + 1
        assert answer.status_code < 500, (case, answer.text[:300])
        page = answer.text + " ".join(f"{k}: {v}" for k, v in answer.headers.items())
        leaked = [s[:6] for s in secrets if s in page]
        assert not leaked, (case, leaked)

    one()
    assert snapshot(clinic) == before
    report("fuzz_routes", cases=cases, statuses=dict(sorted(seen.items())),
           server_errors=sum(n for s, n in seen.items() if s >= 500), state_changes=0)


def raw_request(clinic: Clinic, data: bytes) -> int:
    """Send bytes as they are; the status code of the answer (0 if the server just closed)."""
    server = urlsplit(clinic.sidecar.url)
    with socket.create_connection((server.hostname, server.port), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    if not reply:
        return 0
    return int(reply.split(b" ", 2)[1])


def _post(path: str, body: bytes, content_type: str, cookie: str = "",
          length: int | None = None) -> bytes:
    head = (f"POST {PREFIX}{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: "
            f"{len(body) if length is None else length}\r\n")
    if cookie:
        head += f"Cookie: {cookie}\r\n"
    return head.encode("latin-1") + b"\r\n" + body


MALFORMED = {
    "bad percent escapes in path": b"GET " + PREFIX.encode() + b"/me%zz%g1 HTTP/1.1\r\n"
                                   b"Host: x\r\nConnection: close\r\n\r\n",
    "invalid utf-8 in query": b"GET " + PREFIX.encode() + b"/connect?doctor=\xff\xfe&return=\xc3"
                              b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    "header without colon": b"GET " + PREFIX.encode() + b"/me HTTP/1.1\r\nHost: x\r\n"
                            b"NoColonHere\r\nConnection: close\r\n\r\n",
    "many headers": b"GET " + PREFIX.encode() + b"/me HTTP/1.1\r\nHost: x\r\n"
                    + b"".join(b"X-H%d: v\r\n" % i for i in range(500))
                    + b"Connection: close\r\n\r\n",
    "non-latin cookie bytes": b"GET " + PREFIX.encode() + b"/admin HTTP/1.1\r\nHost: x\r\n"
                              b"Cookie: wordpress_logged_in_x=\xe2\x98\x83|\xff\r\n"
                              b"Connection: close\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_http_gets_no_5xx(clinic: Clinic, name: str) -> None:
    before = snapshot(clinic)
    status = raw_request(clinic, MALFORMED[name])
    assert status == 0 or 400 <= status < 500 or status in (200, 302, 303), status
    assert status < 500
    assert snapshot(clinic) == before


def test_malformed_bodies_to_the_forms_get_4xx(clinic: Clinic) -> None:
    cookie = f"{clinic.cookie_name}={clinic.cookies['doc_one']}"
    cases = {
        "lying content length": _post("/disconnect", b"doctor=1", "application/"
                                      "x-www-form-urlencoded", cookie, length=5000),
        "broken multipart": _post("/disconnect", b"--zz\r\nContent-Disposition: form-data\r\n"
                                  b"\r\nno end", "multipart/form-data; boundary=zz", cookie),
        "multipart without boundary": _post("/admin/invite", b"x", "multipart/form-data",
                                            cookie),
        "thousand fields": _post("/disconnect", b"&".join(b"f%d=1" % i for i in range(1000)),
                                 "application/x-www-form-urlencoded", cookie),
        "invalid utf-8 form": _post("/disconnect", b"doctor=\xff\xfe&csrf_token=\xc3",
                                    "application/x-www-form-urlencoded", cookie),
        "json body": _post("/admin/invite", b'{"doctor": 1}', "application/json", cookie),
        "webhook with a body": _post("/webhook/google", b"\x00" * 4000,
                                     "application/octet-stream"),
    }
    before = snapshot(clinic)
    statuses = {name: raw_request(clinic, data) for name, data in cases.items()}
    assert all(0 < s < 500 and s not in (200, 302, 303) for s in statuses.values()), statuses
    assert snapshot(clinic) == before


def test_admin_page_escapes_hostile_text_from_google(clinic: Clinic) -> None:
    hostile = "<img src=x onerror=alert(1)> \"' 𝄞 שלום \u202e"
    clinic.runtime.state.upsert_doctor(clinic.ids["doc_two"], status="needs_reconnect",
                                       status_reason=hostile, google_email="a\"<b>@x.test")
    page = clinic.browser("admin").get(clinic.url("/admin"))
    assert page.status_code == 200
    assert "<img src=x" not in page.text and '"<b>' not in page.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.text and "𝄞 שלום" in page.text
