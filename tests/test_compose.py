"""The container deployment as an operator runs it: docker-compose.yml, the Dockerfile, the proxy.

No Docker engine runs here, so the compose file is checked by reading it: every service can
start, the sidecar is handed the database credentials, table prefix and logged-in key/salt that
WordPress uses (the same secret files, and the same values once wp-config.php is evaluated),
secrets are files and never literals, and the proxy serves the sidecar under ``/kc-sidecar/``.
Where the tools exist, ``docker compose config`` validates the file, Caddy routes real requests
to two local backends, and the Dockerfile's HEALTHCHECK command runs against a local server.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from sidecar.config import load_settings
from sidecar.wpconfig import parse_wp_config

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
CADDYFILE = ROOT / "deploy" / "Caddyfile"
MAKE_SECRETS = ROOT / "deploy" / "make-secrets.sh"

# wp-config.php as the official WordPress image generates it (the parts the sidecar reads).
OFFICIAL_STYLE_WP_CONFIG = """<?php
define( 'DB_NAME', getenv_docker('WORDPRESS_DB_NAME', 'wordpress') );
define( 'DB_USER', getenv_docker('WORDPRESS_DB_USER', 'example username') );
define( 'DB_PASSWORD', getenv_docker('WORDPRESS_DB_PASSWORD', 'example password') );
define( 'DB_HOST', getenv_docker('WORDPRESS_DB_HOST', 'mysql') );
define( 'DB_CHARSET', getenv_docker('WORDPRESS_DB_CHARSET', 'utf8') );
define( 'LOGGED_IN_KEY',    getenv_docker('WORDPRESS_LOGGED_IN_KEY',    '0f2c9a1b7d') );
define( 'LOGGED_IN_SALT',   getenv_docker('WORDPRESS_LOGGED_IN_SALT',   '9e8d7c6b5a') );
$table_prefix = getenv_docker('WORDPRESS_TABLE_PREFIX', 'wp_');
"""


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's ``${VAR}`` / ``${VAR:-default}`` substitution."""
    env = env or {}

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(3)
        return env.get(name) or (default if default is not None else "")

    return re.sub(r"\$\{(\w+)(:-([^}]*))?\}", sub, value)


def service_env(compose: dict[str, Any], name: str) -> dict[str, str]:
    env = compose["services"][name].get("environment", {})
    assert isinstance(env, dict), f"{name}: environment must be a mapping"
    return {k: interpolate(str(v)) for k, v in env.items()}


def secret_name(compose: dict[str, Any], path: str) -> str:
    """The top-level secret mounted at ``/run/secrets/<name>``."""
    assert path.startswith("/run/secrets/"), path
    name = path.removeprefix("/run/secrets/")
    assert name in compose["secrets"], f"{name} is not a declared secret"
    return name


def test_every_service_can_start(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) >= {"db", "wordpress", "sidecar", "proxy"}
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, f"{name} has neither image nor build"
    assert services["db"]["image"].startswith("mariadb:11")
    assert services["wordpress"]["image"].startswith("wordpress:6-php8.2-apache")
    assert services["sidecar"]["build"] == "."


def test_every_service_has_a_healthcheck_and_waits_for_healthy_dependencies(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    for name, svc in services.items():
        test = svc.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"
        for dep, cond in svc.get("depends_on", {}).items():
            assert dep in services
            assert "condition" in cond, f"{name} -> {dep}"
    healthy = {"condition": "service_healthy"}
    assert services["sidecar"]["depends_on"] == {"db": healthy, "wordpress": healthy}
    assert services["wordpress"]["depends_on"] == {"db": healthy}
    # The proxy must not wait for a healthy sidecar: WordPress has to be installable first.
    assert services["proxy"]["depends_on"] == {
        "wordpress": healthy,
        "sidecar": {"condition": "service_started"},
    }
    assert any("/healthz" in part for part in services["sidecar"]["healthcheck"]["test"])


def test_sidecar_reads_the_same_secret_files_as_wordpress(compose: dict[str, Any]) -> None:
    wp, sc, db = (service_env(compose, n) for n in ("wordpress", "sidecar", "db"))
    # Same database, user and password file as the MariaDB service creates.
    assert wp["WORDPRESS_DB_NAME"] == db["MARIADB_DATABASE"]
    assert wp["WORDPRESS_DB_USER"] == db["MARIADB_USER"]
    assert wp["WORDPRESS_DB_PASSWORD_FILE"] == db["MARIADB_PASSWORD_FILE"]
    # Every WORDPRESS_* variable reaches the sidecar unchanged (its wp-config.php reads them).
    for key, value in wp.items():
        assert sc.get(key) == value, key
    assert sc["KCSC_DATABASE__TABLE_PREFIX"] == wp["WORDPRESS_TABLE_PREFIX"]
    assert sc["KCSC_WORDPRESS__LOGGED_IN_KEY_FILE"] == wp["WORDPRESS_LOGGED_IN_KEY_FILE"]
    assert sc["KCSC_WORDPRESS__LOGGED_IN_SALT_FILE"] == wp["WORDPRESS_LOGGED_IN_SALT_FILE"]
    # ...and the secrets those variables name are mounted in both containers.
    for key, value in wp.items():
        if key.endswith("_FILE"):
            name = secret_name(compose, value)
            assert name in compose["services"]["wordpress"]["secrets"]
            assert name in compose["services"]["sidecar"]["secrets"]
    # The generated wp-config.php is readable by the sidecar, and only readable.
    config_path = Path(sc["KCSC_WORDPRESS__CONFIG_PATH"])
    mounts = compose["services"]["sidecar"]["volumes"]
    (mount,) = [m for m in mounts if m.split(":")[1] == str(config_path.parent)]
    volume, _, mode = mount.split(":")
    assert mode == "ro"
    assert f"{volume}:/var/www/html" in compose["services"]["wordpress"]["volumes"]


def test_sidecar_and_wordpress_see_the_same_values(compose: dict[str, Any], tmp_path: Path) -> None:
    """Evaluate both containers' environments as they would be, with real secret files."""
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    values = {
        "db_password": "Pw8xJ2mQ7rT4vZ1c",
        "wp_logged_in_key": "k#9 v!Qz@7*Lp%2mR^t&Yw(8)Nc",
        "wp_logged_in_salt": "s@1 B$4nM&8q*Wz;E5r{T}6y",
        "sidecar_secret_key": "aVeryRandomSecretKeyValue0123456789",
        "google_client_secret": "",
        "db_root_password": "Root0123456789xyz",
    }
    for name, value in values.items():
        (secrets_dir / name).write_text(value + "\n")  # a trailing newline, as editors leave

    def in_container(env: dict[str, str]) -> dict[str, str]:
        return {
            k: v.replace("/run/secrets/", f"{secrets_dir}/") if k.endswith("_FILE") else v
            for k, v in env.items()
        }

    wp_env = in_container(service_env(compose, "wordpress"))
    sc_env = in_container(service_env(compose, "sidecar"))
    wp_config = tmp_path / "wp-config.php"
    wp_config.write_text(OFFICIAL_STYLE_WP_CONFIG)
    sc_env["KCSC_WORDPRESS__CONFIG_PATH"] = str(wp_config)

    php = parse_wp_config(OFFICIAL_STYLE_WP_CONFIG, environ=wp_env)
    settings = load_settings(environ=sc_env)

    url = urlsplit(settings.database.url or "")
    assert (url.hostname, url.port) == ("db", 3306)
    assert url.username == php.get("DB_USER") == "wordpress"
    assert url.password == php.get("DB_PASSWORD") == values["db_password"]
    assert url.path.lstrip("/") == php.get("DB_NAME") == "wordpress"
    assert settings.database.table_prefix == php.table_prefix == "wp_"
    assert settings.wordpress.logged_in_key == php.get("LOGGED_IN_KEY")
    assert settings.wordpress.logged_in_key == values["wp_logged_in_key"]
    assert settings.wordpress.logged_in_salt == php.get("LOGGED_IN_SALT")
    assert settings.wordpress.logged_in_salt == values["wp_logged_in_salt"]
    assert settings.sidecar.secret_key == values["sidecar_secret_key"]
    assert settings.sidecar.public_url == "http://localhost:8080/kc-sidecar"


def test_no_secret_is_written_into_the_compose_file(compose: dict[str, Any]) -> None:
    text = COMPOSE.read_text()
    assert "GOCSPX-" not in text
    sidecar = service_env(compose, "sidecar")
    assert "KCSC_GOOGLE__CLIENT_SECRET" not in sidecar
    assert secret_name(compose, sidecar["KCSC_GOOGLE__CLIENT_SECRET_FILE"]) == (
        "google_client_secret"
    )
    secretish = re.compile(r"PASSWORD|SECRET|_KEY$|_SALT$|TOKEN")
    for name in compose["services"]:
        for key, value in service_env(compose, name).items():
            if secretish.search(key):
                assert key.endswith("_FILE"), f"{name}: {key} holds a literal secret"
                secret_name(compose, value)
    for name, spec in compose["secrets"].items():
        assert set(spec) == {"file"}, name
        assert spec["file"].startswith("./deploy/secrets/"), name


def test_only_the_proxy_publishes_ports(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        assert ("ports" in svc) == (name == "proxy"), name
    ports = [interpolate(p) for p in compose["services"]["proxy"]["ports"]]
    assert "8080:80" in ports
    # The default public URL is the proxy's default address plus the sidecar's path.
    public = urlsplit(service_env(compose, "sidecar")["KCSC_SIDECAR__PUBLIC_URL"])
    assert (public.port, public.path) == (8080, "/kc-sidecar")
    mount = "./deploy/Caddyfile:/etc/caddy/Caddyfile:ro"
    assert mount in compose["services"]["proxy"]["volumes"]


def test_caddyfile_sends_kc_sidecar_to_the_sidecar() -> None:
    text = CADDYFILE.read_text()
    block = re.search(r"handle_path /kc-sidecar/\* \{\n(.*?)\n\s*\}\n", text, re.S)
    assert block, "no handle_path /kc-sidecar/* block"
    assert re.search(r"reverse_proxy \{\$SIDECAR_UPSTREAM:sidecar:8090\}", block.group(1))
    assert "reverse_proxy {$WORDPRESS_UPSTREAM:wordpress:80}" in text


def compose_command() -> list[str] | None:
    for cmd in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(cmd[0]) is None:
            continue
        probe = subprocess.run([*cmd, "version"], capture_output=True, text=True, timeout=30)
        if probe.returncode == 0:
            return cmd
    return None


def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    cmd = compose_command()
    if cmd is None:
        pytest.skip(
            "neither the docker compose plugin nor docker-compose is installed "
            "(`compose config` needs no engine, but the CLI plugin is not on this machine)"
        )
    result = subprocess.run(
        [*cmd, "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "DOCKER_CONFIG": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr


# --- Dockerfile ------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_runs_unprivileged_with_a_healthcheck() -> None:
    instr = dockerfile_instructions()
    assert instr[0] == ("FROM", "python:3.11-slim")
    users = [rest for word, rest in instr if word == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0")
    assert ("EXPOSE", "8090") in instr
    assert ("ENTRYPOINT", '["kc-sidecar"]') in instr
    assert ("CMD", '["serve"]') in instr
    runs = " ".join(rest for word, rest in instr if word == "RUN")
    assert "pip install" in runs
    assert any(word == "HEALTHCHECK" and "/healthz" in rest for word, rest in instr)


class _Recorder(BaseHTTPRequestHandler):
    """Answers every GET with 200 (or ``status``) and records path and headers."""

    status = 200

    def do_GET(self) -> None:
        self.server.seen.append((self.path, dict(self.headers)))  # type: ignore[attr-defined]
        body = self.server.label.encode()  # type: ignore[attr-defined]
        self.send_response(self.server.status)  # type: ignore[attr-defined]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def backend() -> Iterator[Any]:
    servers = []

    def start(label: str, status: int = 200) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
        server.seen = []  # type: ignore[attr-defined]
        server.label = label  # type: ignore[attr-defined]
        server.status = status  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def healthcheck_argv() -> list[str]:
    (rest,) = [rest for word, rest in dockerfile_instructions() if word == "HEALTHCHECK"]
    return json.loads(rest[rest.index("CMD ") + 4 :])


def test_dockerfile_healthcheck_command_reports_health(backend: Any) -> None:
    argv = healthcheck_argv()
    assert argv[0] == "python"
    python = shutil.which("python3") or "python3"
    healthy = backend("ok")
    sick = backend("down", status=503)

    def run(port: int) -> int:
        env = {**os.environ, "KCSC_SIDECAR__LISTEN": f"0.0.0.0:{port}"}
        return subprocess.run([python, *argv[1:]], env=env, timeout=30).returncode

    assert run(healthy.server_address[1]) == 0
    assert healthy.seen[0][0] == "/healthz"
    assert run(sick.server_address[1]) != 0
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    assert run(port) != 0  # nothing listening


# --- the proxy, for real ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen[bytes], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"caddy exited early: {proc.stderr.read().decode()[-2000:]}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError("caddy did not start listening")


def test_caddy_routes_kc_sidecar_to_the_sidecar_with_the_login_cookie(
    backend: Any, tmp_path: Path
) -> None:
    import http.client

    caddy = shutil.which("caddy")
    if caddy is None:
        pytest.skip("caddy is not installed (Debian package: caddy)")
    sidecar = backend("sidecar")
    wordpress = backend("wordpress")
    port = free_port()
    env = {
        **os.environ,
        "SITE_ADDRESS": f"http://clinic.example:{port}",
        "SIDECAR_UPSTREAM": f"127.0.0.1:{sidecar.server_address[1]}",
        "WORDPRESS_UPSTREAM": f"127.0.0.1:{wordpress.server_address[1]}",
        "CADDY_ADMIN": f"127.0.0.1:{free_port()}",
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "HOME": str(tmp_path),
    }
    proc = subprocess.Popen(
        [caddy, "run", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port, proc)
        cookie = "wordpress_logged_in_0123abcd=drjones%7C1767225600%7Ctok%7Chmac"
        host = f"clinic.example:{port}"

        def get(path: str) -> tuple[int, str, dict[str, str]]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", path, headers={"Host": host, "Cookie": cookie})
            resp = conn.getresponse()
            body = resp.read().decode()
            conn.close()
            return resp.status, body, dict(resp.getheaders())

        assert get("/kc-sidecar/metrics")[0] == 404  # scraped inside, not published
        assert get("/kc-sidecar/connect?doctor=3")[:2] == (200, "sidecar")
        path, headers = sidecar.seen[-1]
        assert path == "/connect?doctor=3"
        assert headers["Cookie"] == cookie
        assert headers["Host"] == host  # WordPress and the sidecar see the public host
        assert headers["X-Forwarded-Proto"] == "http"

        assert get("/wp-login.php")[:2] == (200, "wordpress")
        assert wordpress.seen[-1][0] == "/wp-login.php"
        assert get("/kc-sidecarx")[:2] == (200, "wordpress")  # only the folder goes across
        status, _, headers = get("/kc-sidecar")
        assert status == 308 and headers["Location"] == "/kc-sidecar/"
        assert [p for p, _ in sidecar.seen] == ["/connect?doctor=3"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()


# --- deploy/make-secrets.sh ------------------------------------------------------------------


def test_make_secrets_creates_every_compose_secret_once(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    target = tmp_path / "secrets"
    subprocess.run(["sh", str(MAKE_SECRETS), str(target)], check=True, capture_output=True)
    expected = {Path(spec["file"]).name for spec in compose["secrets"].values()}
    assert {p.name for p in target.iterdir()} == expected
    first = {p.name: p.read_text() for p in target.iterdir()}
    assert first["google_client_secret"] == ""  # the operator pastes it
    randoms = [v for k, v in first.items() if k != "google_client_secret"]
    assert all(re.fullmatch(r"[A-Za-z0-9]{48}", v) for v in randoms)
    assert len(set(randoms)) == len(randoms)
    assert target.stat().st_mode & 0o077 == 0  # the folder is private on the host
    subprocess.run(["sh", str(MAKE_SECRETS), str(target)], check=True, capture_output=True)
    assert {p.name: p.read_text() for p in target.iterdir()} == first  # never rotated
