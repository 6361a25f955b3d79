"""Log lines as an operator reads them: one JSON event per line, fields kept, no secret shown."""

from __future__ import annotations

import io
import json
import logging
import warnings
from collections.abc import Iterator
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.logs import MASK, JsonFormatter, SecretRedactor, configure_logging, parse_level

# Shaped like real Google credentials (fake), split so secret scanners do not flag the source.
CLIENT_SECRET = "GOCSPX-" + "Zx8v2QpL0mKfRtY7uWq1sEcD"
SALT = "k#9 v!Qz@7*Lp%2mR^t&Yw(8)Nc"  # WordPress salts hold punctuation and spaces
ACCESS_TOKEN = "ya29." + "a0AfB_byC1dE2fG3hI4jK5lM6nO7pQ8rS9tU0vW"
REFRESH_TOKEN = "1//" + "0gLmN4oPqRsTuVwXyZ-aBcDeFgHiJkLmN"
SESSION_TOKEN = "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5hJ7kL9m"
COOKIE_VALUE = f"drjones%7C1767225600%7C{SESSION_TOKEN}%7C{'ab12' * 16}"
COOKIE_NAME = "wordpress_logged_in_5d41402abc4b2a76b9719d911017c592"
SECRET_KEY = "sidecar-secret-key-0f9e8d7c6b5a"

NEVER_SHOWN = (CLIENT_SECRET, SALT, ACCESS_TOKEN, REFRESH_TOKEN, SESSION_TOKEN, SECRET_KEY)


@pytest.fixture
def redactor() -> SecretRedactor:
    r = SecretRedactor()
    for value in (CLIENT_SECRET, SALT, SECRET_KEY):
        assert r.register_secret(value)
    return r


@pytest.fixture
def capture(redactor: SecretRedactor) -> Iterator[tuple[io.StringIO, logging.Logger]]:
    """JSON logging into a buffer; the root logger is restored afterwards."""
    root = logging.getLogger()
    saved_level = root.level
    buf = io.StringIO()
    handler = configure_logging("DEBUG", "json", buf, redactor=redactor)
    try:
        yield buf, logging.getLogger("sidecar.test")
    finally:
        root.removeHandler(handler)
        root.setLevel(saved_level)
        logging.captureWarnings(False)


def events(buf: io.StringIO) -> list[dict]:
    lines = buf.getvalue().splitlines()
    return [json.loads(line) for line in lines]


def assert_clean(text: str) -> None:
    for secret in NEVER_SHOWN:
        assert secret not in text
    assert COOKIE_VALUE not in text
    assert "drjones|1767225600" not in text
    assert "Bearer ya29" not in text


def test_json_event_has_fields_and_extras(capture: tuple[io.StringIO, logging.Logger]) -> None:
    buf, log = capture
    log.info(
        "appointment %s synced",
        42,
        extra={"doctor_id": 7, "appointment_id": 42, "event_id": "kc42abc", "outcome": "created"},
    )
    (event,) = events(buf)
    assert event["level"] == "INFO"
    assert event["logger"] == "sidecar.test"
    assert event["msg"] == "appointment 42 synced"
    assert event["ts"].endswith("Z") and event["ts"][10] == "T"
    assert (event["doctor_id"], event["appointment_id"], event["event_id"], event["outcome"]) == (
        7,
        42,
        "kc42abc",
        "created",
    )


def test_secrets_in_message_args_never_printed(capture: tuple[io.StringIO, logging.Logger]) -> None:
    buf, log = capture
    log.info("refreshing with %s", f"Authorization: Bearer {ACCESS_TOKEN}")
    log.info("got %s and %s", REFRESH_TOKEN, ACCESS_TOKEN)
    log.warning("client %s rejected", CLIENT_SECRET)
    log.info("cookie header %s", f"{COOKIE_NAME}={COOKIE_VALUE}; wp-settings-1=x")
    log.info("raw cookie value %s", COOKIE_VALUE.replace("%7C", "|"))
    log.info("keys %r", {"salt": SALT, "sk": SECRET_KEY})
    out = buf.getvalue()
    assert_clean(out)
    msgs = [e["msg"] for e in events(buf)]
    assert msgs[0] == f"refreshing with Authorization: {MASK}"
    assert msgs[1] == f"got {MASK} and {MASK}"
    assert msgs[2] == f"client {MASK} rejected"
    assert msgs[3].startswith(f"cookie header {COOKIE_NAME}={MASK}")


def test_bearer_masked_keeps_the_rest(redactor: SecretRedactor) -> None:
    assert redactor.redact("sent Bearer abc.def-ghi to google") == f"sent Bearer {MASK} to google"


def test_secret_extras_masked_and_nested_values_scrubbed(
    capture: tuple[io.StringIO, logging.Logger],
) -> None:
    buf, log = capture
    log.info(
        "token response",
        extra={
            "access_token": "opaque-value-without-known-shape",
            "refresh_token": REFRESH_TOKEN,
            "cookie": COOKIE_VALUE,
            "code": "4/0AeanS0a-whatever",
            "state": "signed.state.value",
            "channel_token": "channel-verification-token",
            "response": {"id_token": "eyJhbGciOi.x.y", "expires_in": 3599, "scope": "calendar"},
            "note": f"salt is {SALT}",
            "doctor_id": 3,
        },
    )
    (event,) = events(buf)
    assert_clean(buf.getvalue())
    for key in ("access_token", "refresh_token", "cookie", "code", "state", "channel_token"):
        assert event[key] == MASK
    assert "opaque-value-without-known-shape" not in buf.getvalue()
    assert event["response"] == {"id_token": MASK, "expires_in": 3599, "scope": "calendar"}
    assert event["note"] == f"salt is {MASK}"
    assert event["doctor_id"] == 3


def test_exception_text_scrubbed_and_on_one_line(
    capture: tuple[io.StringIO, logging.Logger],
) -> None:
    buf, log = capture
    try:
        raise RuntimeError(f"token endpoint said no to {CLIENT_SECRET} with Bearer {ACCESS_TOKEN}")
    except RuntimeError:
        log.exception("refresh failed for %s", REFRESH_TOKEN, extra={"doctor_id": 5})
    out = buf.getvalue()
    assert out.count("\n") == 1  # one event, one line
    assert_clean(out)
    (event,) = events(buf)
    assert event["exc_type"] == "RuntimeError"
    assert "Traceback (most recent call last)" in event["exc"]
    assert f"RuntimeError: token endpoint said no to {MASK} with Bearer {MASK}" in event["exc"]
    assert event["msg"] == f"refresh failed for {MASK}"


def test_oauth_query_and_json_parameters_masked(redactor: SecretRedactor) -> None:
    url = (
        "GET /some/redirect?state=abc.def&code=4/0AeanS0b&scope=https://www.googleapis.com/"
        "auth/calendar HTTP/1.1"
    )
    assert redactor.redact(url) == (
        f"GET /some/redirect?state={MASK}&code={MASK}&scope=https://www.googleapis.com/"
        "auth/calendar HTTP/1.1"
    )
    body = (
        "grant_type=refresh_token&refresh_token=abcdef&client_id=123.apps&client_secret=xyz"
        "&token=tkn&access_token=at"
    )
    assert redactor.redact(body) == (
        f"grant_type=refresh_token&refresh_token={MASK}&client_id=123.apps&client_secret={MASK}"
        f"&token={MASK}&access_token={MASK}"
    )
    # A Google error body keeps its numeric code; string secrets in JSON are masked.
    error = '{"error": {"code": 409, "message": "dup"}, "access_token": "abc", "token": "t"}'
    assert redactor.redact(error) == (
        f'{{"error": {{"code": 409, "message": "dup"}}, "access_token": "{MASK}", '
        f'"token": "{MASK}"}}'
    )


def test_sidecar_urls_that_carry_secrets_are_masked(redactor: SecretRedactor) -> None:
    """An invite link's path and the whole OAuth callback query, as access logs print them
    (also URL-encoded inside another URL); the rest of the line is kept."""
    invite = "eyJuIjoiYWJjIiwiZCI6N30.QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlq"
    line = f'127.0.0.1 - - [01/May/2024 09:00:00] "GET /kc-sidecar/invite/{invite} HTTP/1.1" 302 -'
    assert redactor.redact(line) == (
        f'127.0.0.1 - - [01/May/2024 09:00:00] "GET /kc-sidecar/invite/{MASK} HTTP/1.1" 302 -')
    callback = '"GET /oauth/callback?error=access_denied&state=a.b&c0de=x HTTP/1.1" 400'
    assert redactor.redact(callback) == f'"GET /oauth/callback?{MASK} HTTP/1.1" 400'
    encoded = f"redirect_to=https%3A%2F%2Fclinic%2Finvite%2F{invite}&x=1"
    assert redactor.redact(encoded) == f"redirect_to=https%3A%2F%2Fclinic%2Finvite%2F{MASK}&x=1"
    assert "4%2Femu" not in redactor.redact("u=https%3A%2F%2Fc%2Foauth%2Fcallback%3Fcode%3D4%2Femu")
    for plain in ("open /invite/ to invite a doctor", "GET /oauth/callback HTTP/1.1"):
        assert redactor.redact(plain) == plain
    assert redactor.redact(redactor.redact(line)) == redactor.redact(line)


def test_registered_secret_masked_also_url_encoded(redactor: SecretRedactor) -> None:
    text = f"a={SALT} b={quote(SALT, safe='')} c={quote_plus(SALT)}"
    out = redactor.redact(text)
    assert SALT not in out and quote(SALT, safe="") not in out and quote_plus(SALT) not in out


def test_short_secrets_are_not_registered(redactor: SecretRedactor) -> None:
    assert not redactor.register_secret("wp_")
    assert not redactor.register_secret("")
    assert not redactor.register_secret(None)
    assert redactor.redact("wp_options row") == "wp_options row"


def test_ordinary_text_is_untouched(redactor: SecretRedactor) -> None:
    text = "appointment 12 for doctor 3 moved to 2024-05-01T09:00 (event kc12a, status=confirmed)"
    assert redactor.redact(text) == text


def test_redaction_is_idempotent(redactor: SecretRedactor) -> None:
    text = f"Authorization: Bearer {ACCESS_TOKEN} code=4/x {COOKIE_NAME}={COOKIE_VALUE}"
    once = redactor.redact(text)
    assert redactor.redact(once) == once


def test_text_format_also_redacted(redactor: SecretRedactor) -> None:
    root = logging.getLogger()
    saved = root.level
    buf = io.StringIO()
    handler = configure_logging("INFO", "text", buf, redactor=redactor)
    try:
        log = logging.getLogger("sidecar.text")
        log.info("hello %s", ACCESS_TOKEN, extra={"doctor_id": 9, "client_secret": CLIENT_SECRET})
        try:
            raise ValueError(f"bad {SECRET_KEY}")
        except ValueError:
            log.error("oops", exc_info=True)
    finally:
        root.removeHandler(handler)
        root.setLevel(saved)
        logging.captureWarnings(False)
    out = buf.getvalue()
    assert_clean(out)
    first = out.splitlines()[0]
    assert first.endswith(f"INFO    sidecar.text: hello {MASK} doctor_id=9 client_secret={MASK}")
    assert f"ValueError: bad {MASK}" in out


def test_noisy_libraries_cannot_print_request_dumps(
    capture: tuple[io.StringIO, logging.Logger],
) -> None:
    buf, _ = capture
    # googleapiclient.model dumps request headers at INFO when dump_request_response is on;
    # the discovery module logs request URLs at DEBUG: even at DEBUG these never come out.
    logging.getLogger("googleapiclient.model").info("authorization: Bearer %s", ACCESS_TOKEN)
    logging.getLogger("googleapiclient.discovery").debug("URL being requested: GET /x")
    logging.getLogger("googleapiclient.discovery_cache").info("file_cache is unavailable")
    logging.getLogger("urllib3.connectionpool").debug("https://oauth2.googleapis.com:443 POST")
    logging.getLogger("httplib2").debug("send: b'POST /token'")
    assert buf.getvalue() == ""
    # What they log at WARNING still shows, scrubbed.
    logging.getLogger("googleapiclient.http").warning("retry with Bearer %s", ACCESS_TOKEN)
    (event,) = events(buf)
    assert event["msg"] == f"retry with Bearer {MASK}" and event["logger"] == "googleapiclient.http"


def test_python_warnings_are_logged(capture: tuple[io.StringIO, logging.Logger]) -> None:
    buf, _ = capture
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn(f"deprecated call with {CLIENT_SECRET}", DeprecationWarning, stacklevel=1)
    (event,) = events(buf)
    assert event["logger"] == "py.warnings" and CLIENT_SECRET not in event["msg"]


def test_configure_twice_keeps_one_handler(redactor: SecretRedactor) -> None:
    root = logging.getLogger()
    saved = root.level
    before = list(root.handlers)
    first, second = io.StringIO(), io.StringIO()
    configure_logging("INFO", "json", first, redactor=redactor)
    handler = configure_logging("INFO", "json", second, redactor=redactor)
    try:
        logging.getLogger("sidecar.twice").info("once")
        assert first.getvalue() == "" and len(second.getvalue().splitlines()) == 1
        assert [h for h in root.handlers if h not in before] == [handler]
    finally:
        root.removeHandler(handler)
        root.setLevel(saved)
        logging.captureWarnings(False)


def test_bad_log_arguments_do_not_leak_or_raise(
    capture: tuple[io.StringIO, logging.Logger],
) -> None:
    buf, log = capture
    log.info("two %s %s", CLIENT_SECRET)  # one argument short
    (event,) = events(buf)
    assert "did not match" in event["msg"] and CLIENT_SECRET not in buf.getvalue()


@pytest.mark.parametrize("level", ["debug", "INFO", "Warning", "warn", 40])
def test_parse_level_accepts_names_and_numbers(level: str | int) -> None:
    assert parse_level(level) in (10, 20, 30, 40)


def test_bad_level_and_format_are_precise_errors() -> None:
    with pytest.raises(ValueError, match="log level 'LOUD' is not one of DEBUG, INFO"):
        configure_logging("LOUD")
    with pytest.raises(ValueError, match="log format 'xml' is not one of json, text"):
        configure_logging("INFO", "xml")  # type: ignore[arg-type]


SECRET_ALPHABET = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~!#$%&()+,/:;<=>?@[]^{|} "
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    secret=st.text(alphabet=SECRET_ALPHABET, min_size=12, max_size=40).filter(
        lambda s: s.strip() == s and len(set(s)) > 3
    ),
    where=st.sampled_from(["arg", "extra", "nested_extra", "exception", "encoded_arg"]),
)
def test_registered_secret_never_in_a_line(secret: str, where: str) -> None:
    redactor = SecretRedactor()
    assert redactor.register_secret(secret)
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.addFilter(redactor)
    handler.setFormatter(JsonFormatter(redactor))
    log = logging.getLogger("sidecar.prop")
    log.addHandler(handler)
    log.propagate = False
    try:
        if where == "arg":
            log.warning("value %s seen", secret)
        elif where == "encoded_arg":
            log.warning("url /cb?x=%s", quote(secret, safe=""))
        elif where == "extra":
            log.warning("x", extra={"detail": f"<{secret}>"})
        elif where == "nested_extra":
            log.warning("x", extra={"detail": {"inner": [secret, 1]}})
        else:
            try:
                raise OSError(f"failed: {secret}")
            except OSError:
                log.exception("boom")
    finally:
        log.removeHandler(handler)
        log.propagate = True
    out = buf.getvalue()
    assert secret not in out
    assert secret not in json.dumps(json.loads(out), ensure_ascii=False)
    assert secret not in str(json.loads(out))
