"""``kc-sidecar``: the command line. Parses arguments, loads settings, dispatches, maps exit codes.

Exit codes: 0 ok, 1 the command ran and something failed, 2 bad usage or configuration. A
configuration problem is printed as one line on stderr, never as a traceback.

``check`` and ``emulator`` are wired here; every other command lives in
``sidecar.commands.<name>`` (dashes become underscores) as ``run(settings, args) -> int`` and is
imported only when used, so a broken optional part cannot stop ``check`` from running.
"""

from __future__ import annotations

import argparse
import importlib
import ipaddress
import json
import re
import sys
from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any
from urllib.parse import urlsplit

from sidecar import __version__
from sidecar.config import ConfigError, Settings, load_settings
from sidecar.wpconfig import AUTH_KEY_NAMES

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
DEFAULT_EMULATOR_PORT = 8091

DISPATCHED = ("serve", "sync-once", "backfill", "status", "connect-url", "disconnect", "retry",
              "demo")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2, message printed)
        return _exit_code(exc)
    if args.command is None:
        parser.print_usage(sys.stderr)
        print("kc-sidecar: error: a command is required", file=sys.stderr)
        return EXIT_USAGE
    try:
        settings = load_settings(args.config)
        configure_logging(settings)
        return _dispatch(args, settings)
    except ConfigError as err:
        print(f"kc-sidecar: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return EXIT_OK
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return EXIT_FAILED


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "check":
        return _run_check(settings, args)
    if args.command == "emulator":
        return _run_emulator(settings, args)
    module_name = "sidecar.commands." + args.command.replace("-", "_")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name not in (module_name, "sidecar.commands"):
            raise
        print(f"kc-sidecar {args.command}: not implemented yet", file=sys.stderr)
        return EXIT_FAILED
    return int(module.run(settings, args))


def _run_check(settings: Settings, args: argparse.Namespace) -> int:
    from sidecar.checks import render_text, run_checks

    report = run_checks(settings)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(render_text(report))
    return EXIT_OK if report.ok else EXIT_FAILED


def _run_emulator(settings: Settings, args: argparse.Namespace) -> int:
    from sidecar.emulator import serve_forever

    host = args.host or "127.0.0.1"
    port = args.port if args.port is not None else default_emulator_port(settings)
    result = serve_forever(host, port, emulator_config(settings, testing=args.testing))
    return EXIT_OK if result is None else int(result)


def emulator_config(settings: Settings, *, testing: bool = False) -> Any:
    """The emulator for this configuration: it knows the OAuth client ``[google] client_id`` /
    ``client_secret`` with redirect URIs under ``sidecar.public_url``."""
    from sidecar.emulator import ClientRegistration, EmulatorConfig

    settings.require("google.client_id", "google.client_secret")
    client = ClientRegistration(
        settings.google.client_secret, (settings.sidecar.public_url + "/*",)
    )
    return EmulatorConfig(clients={settings.google.client_id: client}, testing=testing)


def default_emulator_port(settings: Settings) -> int:
    """The port of ``google.api_endpoint`` when that points at this machine, else 8091."""
    parts = urlsplit(settings.google.api_endpoint)
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback and parts.port:
        return parts.port
    return DEFAULT_EMULATOR_PORT


# --- argument parsing ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kc-sidecar",
        description="Google Calendar / Google Meet sidecar for a WordPress + KiviCare site.",
        epilog="Exit codes: 0 ok, 1 the command ran and something failed, 2 bad usage or "
        "configuration. Configuration: see config.example.toml; every key can be set with "
        "KCSC_<SECTION>__<KEY> or read from the file named by KCSC_<SECTION>__<KEY>_FILE.",
    )
    parser.add_argument(
        "--config", metavar="FILE", default=None,
        help="TOML configuration file (default: $KCSC_CONFIG, else built-in defaults)",
    )
    parser.add_argument("--version", action="version", version=f"kc-sidecar {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    check = sub.add_parser(
        "check", help="validate configuration, database and schema; exit 0 only if ready"
    )
    check.add_argument("--json", action="store_true", help="print the report as JSON")

    sub.add_parser("serve", help="run the web app and the scheduler (production)")
    sub.add_parser("sync-once", help="one full sync cycle (outbound and inbound), then exit")

    backfill = sub.add_parser("backfill", help="create missing meetings for upcoming appointments")
    backfill.add_argument(
        "--from", dest="from_date", metavar="DATE", type=_date, default=None,
        help="first appointment day to consider, YYYY-MM-DD (default: today)",
    )

    status = sub.add_parser("status", help="doctors, connections, pending and failed items")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    connect = sub.add_parser("connect-url", help="print a signed single-use invite URL")
    connect.add_argument("--doctor", metavar="ID", type=_user_id, required=True,
                         help="WordPress user id of the doctor")
    connect.add_argument("--ttl", metavar="DURATION", type=duration, default=timedelta(hours=24),
                         help="how long the link stays valid, e.g. 30m, 24h, 7d (default 24h)")

    disconnect = sub.add_parser("disconnect", help="disconnect a doctor from Google")
    disconnect.add_argument("--doctor", metavar="ID", type=_user_id, required=True,
                            help="WordPress user id of the doctor")

    retry = sub.add_parser("retry", help="retry failed items now")
    retry.add_argument("--doctor", metavar="ID", type=_user_id, default=None,
                       help="only this doctor's items")

    emulator = sub.add_parser("emulator", help="run the local Google emulator")
    emulator.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    emulator.add_argument(
        "--port", type=_port, default=None,
        help="port to bind (default: the port of google.api_endpoint if local, else 8091)",
    )
    emulator.add_argument("--testing", action="store_true", help="enable the control API")

    from sidecar.commands.demo import add_arguments as add_demo_arguments

    add_demo_arguments(
        sub.add_parser("demo", help="the embedded demo (SQLite + emulator + sidecar)"))
    return parser


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2026-12-01") from None


def _user_id(text: str) -> int:
    if not re.fullmatch(r"\d+", text) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a WordPress user id (a number from 1)")
    return int(text)


def _port(text: str) -> int:
    if not re.fullmatch(r"\d+", text) or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port from 0 to 65535")
    return int(text)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``24h``, ``7d`` (or plain seconds) as a timedelta."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text.lower())
    if m is None or int(m.group(1)) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 30m, 24h or 7d")
    return timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2) or "s"])


# --- logging -------------------------------------------------------------------------------------


class _CurrentStderr:
    """A stream that always writes to the current ``sys.stderr`` (tests and tools replace it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(settings: Settings) -> None:
    """Process logging per ``[sidecar] log_level/log_format``, with every configured secret
    registered for redaction (``sidecar.logs``)."""
    from sqlalchemy.engine import make_url

    from sidecar import logs

    secrets = [
        settings.sidecar.secret_key,
        settings.google.client_secret,
        *(getattr(settings.wordpress, n.lower()) for n in AUTH_KEY_NAMES),
    ]
    if settings.database.url:
        secrets.append(make_url(settings.database.url).password)
    for secret in secrets:
        if secret:
            logs.register_secret(str(secret))
    fmt = "json" if settings.sidecar.log_format == "json" else "text"
    logs.configure_logging(settings.sidecar.log_level, fmt, stream=_CurrentStderr())  # type: ignore[arg-type]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
