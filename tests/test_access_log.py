"""Request logs of both servers that run the sidecar never print an invite token or the OAuth
callback's ``code``/``state``: werkzeug (tests, demo, ``serve`` without gunicorn) and gunicorn
with exactly the options ``kc-sidecar serve`` uses, each driven over real HTTP."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from sidecar.emulator import run_in_thread

ROOT = Path(__file__).resolve().parent.parent
INVITE = "eyJuIjoiYWJjZGVmIiwiZCI6N30.QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlq"
CODE = "4/0AanSecretAuthCode_a1b2c3d4e5"
STATE = "eyJuIjoic3RhdGUifQ.U3RhdGVNYWNTZWNyZXQtMDEyMzQ1Njc4OWFiY2RlZg"
PATHS = [
    f"/kc-sidecar/invite/{INVITE}",
    f"/kc-sidecar/oauth/callback?state={STATE}&code={CODE}"
    "&scope=https://www.googleapis.com/auth/calendar",
    f"/kc-sidecar/oauth/callback?code={CODE}&state={STATE}&boom=1",  # the app fails
]
SECRETS = (INVITE, CODE, STATE, INVITE[:20], STATE[:20], "AanSecretAuthCode")


def app(environ: dict, start_response: object) -> list[bytes]:  # type: ignore[type-arg]
    if "boom" in environ.get("QUERY_STRING", ""):
        raise RuntimeError("the app failed")
    if "forged" in environ.get("QUERY_STRING", ""):
        start_response("403 Forbidden", [("Content-Type", "text/plain")])  # type: ignore[operator]
        return [b"no"]
    start_response("200 OK", [("Content-Type", "text/plain")])  # type: ignore[operator]
    return [b"ok"]


def post(url: str) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=b"", method="POST"),
                                    timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return err.code


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return err.code


def raw(port: int, request_line: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(request_line + b"\r\nHost: x\r\n\r\n")
        conn.recv(4096)


def assert_scrubbed(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret[:12]}… printed in:\n{text}"


def test_werkzeug_request_lines_are_scrubbed(caplog: pytest.LogCaptureFixture,
                                             capfd: pytest.CaptureFixture[str]) -> None:
    server = run_in_thread(app)
    try:
        with caplog.at_level(logging.INFO, logger="werkzeug"):
            assert [get(server.url + path) for path in PATHS] == [200, 200, 500]
            raw(server.port, f"GET /invite/{INVITE} HTTP/1.1 junk".encode())  # a bad line
    finally:
        server.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == "werkzeug"]
    text = "\n".join(lines) + capfd.readouterr().err
    assert_scrubbed(text)
    assert any('"GET /kc-sidecar/invite/*** HTTP/1.1" 200' in line for line in lines), lines
    assert any('"GET /kc-sidecar/oauth/callback?*** HTTP/1.1" 200' in line for line in lines)
    assert any("/invite/***" in line and "400" in line for line in lines), lines


GUNICORN_SCRIPT = textwrap.dedent("""
    import sys
    from gunicorn.app.base import BaseApplication
    from sidecar.commands.serve import gunicorn_options
    from sidecar.config import Settings, SidecarSettings
    from tests.test_access_log import app

    settings = Settings(sidecar=SidecarSettings(listen=sys.argv[1]))

    class Probe(BaseApplication):
        def load_config(self):
            for key, value in gunicorn_options(settings).items():
                self.cfg.set(key, value)

        def load(self):
            return app

    Probe().run()
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_gunicorn_access_and_error_logs_are_scrubbed() -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", GUNICORN_SCRIPT, f"127.0.0.1:{port}"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, proc.communicate()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "gunicorn never listened"
                time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        assert [get(base + path) for path in PATHS] == [200, 200, 500]
        raw(port, f"GET /invite/{INVITE} HTTP/1.1 junk".encode())
        assert post(base + "/kc-sidecar/webhook/google?n=accepted") == 200
        assert post(base + "/kc-sidecar/webhook/google?n=forged") == 403
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert_scrubbed(out + err)
    assert '"GET /kc-sidecar/invite/*** HTTP/1.1" 200' in out, out
    assert '"GET /kc-sidecar/oauth/callback?*** HTTP/1.1" 200' in out, out
    assert "Error handling request /kc-sidecar/oauth/callback?***" in err, err
    assert "the app failed" in err  # the error log still says what went wrong
    # accepted push notifications are counted in /metrics, not logged one line each; a
    # rejected one is logged
    assert "webhook/google?n=accepted" not in out, out
    assert '"POST /kc-sidecar/webhook/google?n=forged HTTP/1.1" 403' in out, out
