"""Read a WordPress ``wp-config.php`` by parsing it, never by executing PHP.

The sidecar needs what PHP needs to reach the same database and to check the same cookies: the
``DB_*`` constants, ``$table_prefix``, the eight authentication keys and salts, ``WP_SITEURL`` /
``WP_HOME`` and a few cookie constants. A small PHP lexer (strings, comments, identifiers) finds
``define('NAME', value)`` calls and the ``$table_prefix = value;`` assignment. Values may be string
literals (single or double quoted), numbers, ``true``/``false``/``null``, concatenations of those,
and ``getenv_docker('VAR', 'default')`` / ``getenv('VAR')`` as written by the official WordPress
Docker image. Anything else (``$_SERVER[...]``, function calls) is recorded as *unevaluated* and
left out, so a value is either exactly what PHP would see or absent.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

AUTH_KEY_NAMES = (
    "AUTH_KEY",
    "SECURE_AUTH_KEY",
    "LOGGED_IN_KEY",
    "NONCE_KEY",
    "AUTH_SALT",
    "SECURE_AUTH_SALT",
    "LOGGED_IN_SALT",
    "NONCE_SALT",
)
SECRET_CONSTANTS = frozenset({"DB_PASSWORD", *AUTH_KEY_NAMES})
DEFAULT_MYSQL_SOCKET = "/run/mysqld/mysqld.sock"

PhpScalar = str | int | float | bool | None


class WpConfigError(ValueError):
    """wp-config.php could not be read at all (not: a single value could not be evaluated)."""


@dataclass(frozen=True)
class DbHost:
    """``DB_HOST`` split the way ``wpdb::parse_db_host`` and mysqli read it."""

    host: str
    port: int | None = None
    socket: str | None = None
    is_ipv6: bool = False

    @property
    def uses_socket(self) -> bool:
        return self.socket is not None


def parse_db_host(value: str, default_socket: str = DEFAULT_MYSQL_SOCKET) -> DbHost:
    """Split ``DB_HOST`` as WordPress does: ``host``, ``host:port``, ``host:/socket``,
    ``[::1]:3306``, and ``localhost`` (mysqli connects through the default socket then)."""
    socket: str | None = None
    host = value.strip()
    pos = host.find(":/")
    if pos != -1:
        socket = host[pos + 1 :]
        host = host[:pos]
    is_ipv6 = host.count(":") > 1
    if is_ipv6:
        m = re.match(r"^(?:\[)?(?P<host>[0-9a-fA-F:]+)(?:\]:(?P<port>\d+))?", host)
    else:
        m = re.match(r"^(?P<host>[^:/]*)(?::(?P<port>\d+))?", host)
    if m is None:  # pragma: no cover - both patterns match the empty string
        raise WpConfigError(f"DB_HOST {value!r} is not a host, host:port or host:/socket")
    name = m.group("host") or ""
    port = int(m.group("port")) if m.group("port") and int(m.group("port")) else None
    if socket is None and name in ("", "localhost") and port is None:
        # mysqli (and mysqlnd) treat "localhost" as "use the Unix socket".
        socket = default_socket
    return DbHost(host=name or "localhost", port=port, socket=socket, is_ipv6=is_ipv6)


@dataclass(frozen=True, repr=False)
class WpConfig:
    """What a wp-config.php defines. ``constants`` holds every evaluable ``define``."""

    constants: Mapping[str, PhpScalar] = field(default_factory=dict)
    table_prefix: str | None = None
    unevaluated: tuple[str, ...] = ()

    def __repr__(self) -> str:
        shown = {
            name: ("***" if name in SECRET_CONSTANTS and value else value)
            for name, value in self.constants.items()
        }
        return (
            f"WpConfig(constants={shown!r}, table_prefix={self.table_prefix!r}, "
            f"unevaluated={self.unevaluated!r})"
        )

    def get(self, name: str) -> str | None:
        """A constant as PHP would stringify it, or None when not defined (or not evaluable)."""
        if name not in self.constants:
            return None
        value = self.constants[name]
        if value is None or value is False:
            return ""
        if value is True:
            return "1"
        return str(value)

    @property
    def db_host(self) -> DbHost | None:
        host = self.get("DB_HOST")
        return None if host is None else parse_db_host(host)

    @property
    def auth_keys(self) -> dict[str, str]:
        """The keys and salts that are defined, by lower-case name (``logged_in_key`` ...)."""
        out: dict[str, str] = {}
        for name in AUTH_KEY_NAMES:
            value = self.get(name)
            if value is not None:
                out[name.lower()] = value
        return out

    def database_url(self, default_socket: str = DEFAULT_MYSQL_SOCKET) -> str | None:
        """``mysql+pymysql://`` URL equivalent to the DB_* constants, or None if DB_NAME is
        missing. Credentials are URL-quoted; sockets become ``?unix_socket=``."""
        name = self.get("DB_NAME")
        if not name:
            return None
        user = self.get("DB_USER") or ""
        password = self.get("DB_PASSWORD") or ""
        host = parse_db_host(self.get("DB_HOST") or "localhost", default_socket)
        charset = (self.get("DB_CHARSET") or "utf8mb4").strip()
        if charset.lower() == "utf8":
            # wpdb::determine_charset upgrades utf8 to utf8mb4 on every server we support.
            charset = "utf8mb4"
        auth = quote(user, safe="")
        if password:
            auth += ":" + quote(password, safe="")
        netloc = f"[{host.host}]" if host.is_ipv6 else host.host
        if host.port is not None:
            netloc += f":{host.port}"
        query = [f"charset={quote(charset, safe='')}"]
        if host.socket is not None:
            query.append(f"unix_socket={quote(host.socket, safe='/')}")
        userinfo = f"{auth}@" if auth else ""
        return f"mysql+pymysql://{userinfo}{netloc}/{quote(name, safe='')}?{'&'.join(query)}"


def load_wp_config(path: str | Path, environ: Mapping[str, str] | None = None) -> WpConfig:
    """Read and parse the file; unreadable files raise :class:`WpConfigError`."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        raise WpConfigError(f"cannot read {path}: {err.strerror or err}") from err
    return parse_wp_config(text, environ)


def parse_wp_config(text: str, environ: Mapping[str, str] | None = None) -> WpConfig:
    """Parse wp-config.php source. ``environ`` answers ``getenv_docker``/``getenv`` (default:
    the process environment, as PHP-FPM in the official image would see it)."""
    env = os.environ if environ is None else environ
    tokens = _lex(text)
    constants: dict[str, PhpScalar] = {}
    unevaluated: list[str] = []
    table_prefix: str | None = None
    i = 0
    n = len(tokens)
    while i < n:
        kind, value = tokens[i]
        if kind == "ident" and str(value).lower() == "define" and _is_op(tokens, i + 1, "("):
            args, end = _split_args(tokens, i + 2)
            i = end
            if len(args) < 2:
                continue
            name = _evaluate(args[0], env)
            if not isinstance(name, _Value) or not isinstance(name.value, str):
                continue
            result = _evaluate(args[1], env)
            if name.value in constants:
                continue  # PHP keeps the first definition
            if isinstance(result, _Value):
                constants[name.value] = result.value
            elif name.value not in unevaluated:
                unevaluated.append(name.value)
            continue
        if (
            kind == "ident"
            and str(value).lower() == "getenv_docker"
            and _is_op(tokens, i + 1, "(")
            and i + 2 < n
            and tokens[i + 2][0] == "str"
            and getattr(tokens[i + 2][1], "value", None) == "WORDPRESS_CONFIG_EXTRA"
        ):
            # The official image eval()s this variable: PHP code, usually more define()s.
            extra_code = _getenv_docker(env, "WORDPRESS_CONFIG_EXTRA", "")
            if extra_code:
                extra = parse_wp_config(extra_code, env)
                for name, extra_value in extra.constants.items():
                    constants.setdefault(name, extra_value)
                unevaluated.extend(u for u in extra.unevaluated if u not in unevaluated)
                if extra.table_prefix is not None:
                    table_prefix = extra.table_prefix
            i += 3
            continue
        if kind == "var" and value == "table_prefix" and _is_op(tokens, i + 1, "="):
            expr, end = _until(tokens, i + 2, ";")
            i = end
            result = _evaluate(expr, env)
            if isinstance(result, _Value) and result.value is not None:
                table_prefix = _php_str(result.value)
            else:
                table_prefix = None
                if "$table_prefix" not in unevaluated:
                    unevaluated.append("$table_prefix")
            continue
        i += 1
    return WpConfig(constants=constants, table_prefix=table_prefix, unevaluated=tuple(unevaluated))


# --- lexer -------------------------------------------------------------------------------------

Token = tuple[str, object]  # ("str", _Str) | ("num", int|float) | ("ident", str) | ("var", str)
#                             | ("op", str)

_DQ_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "v": "\v", "e": "\x1b", "f": "\f",
               "\\": "\\", "$": "$", '"': '"'}


@dataclass(frozen=True)
class _Str:
    value: str
    interpolates: bool = False  # a double-quoted string naming a variable: not evaluable


_IDENT_RE = re.compile(r"[A-Za-z_\x80-\uffff][A-Za-z0-9_\x80-\uffff\\]*")
_NUM_RE = re.compile(r"0[xX][0-9a-fA-F_]+|\d[\d_]*(?:\.\d+)?(?:[eE][+-]?\d+)?|\.\d+")
_MULTI_OPS = ("===", "!==", "==", "!=", "<=", ">=", ".=", "=>", "->", "::", "??", "&&", "||")


def _lex(text: str) -> list[Token]:
    tokens: list[Token] = []
    i = 0
    n = len(text)
    in_php = not text.lstrip().startswith("<?") and "<?php" not in text
    while i < n:
        if not in_php:
            start = text.find("<?php", i)
            short = text.find("<?", i)
            if start == -1 and short == -1:
                break
            i = start + 5 if start != -1 and (short == -1 or start <= short) else short + 2
            in_php = True
            continue
        c = text[i]
        if c.isspace():
            i += 1
        elif text.startswith("?>", i):
            in_php = False
            i += 2
            tokens.append(("op", ";"))
        elif c == "#" or text.startswith("//", i):
            # Line comment; a "?>" ends it, as in PHP.
            end = i
            while end < n and text[end] != "\n" and not text.startswith("?>", end):
                end += 1
            i = end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end == -1 else end + 2
        elif c == "'":
            value, i = _single_quoted(text, i + 1)
            tokens.append(("str", _Str(value)))
        elif c == '"':
            s, i = _double_quoted(text, i + 1)
            tokens.append(("str", s))
        elif c == "$" and i + 1 < n and (m := _IDENT_RE.match(text, i + 1)):
            tokens.append(("var", m.group()))
            i = m.end()
        elif (m := _NUM_RE.match(text, i)) and (c.isdigit() or c == "."):
            raw = m.group().replace("_", "")
            number: int | float
            if raw.lower().startswith("0x"):
                number = int(raw, 16)
            elif any(ch in raw for ch in ".eE"):
                number = float(raw)
            else:
                number = int(raw)
            tokens.append(("num", number))
            i = m.end()
        elif m := _IDENT_RE.match(text, i):
            tokens.append(("ident", m.group()))
            i = m.end()
        else:
            for op in _MULTI_OPS:
                if text.startswith(op, i):
                    tokens.append(("op", op))
                    i += len(op)
                    break
            else:
                tokens.append(("op", c))
                i += 1
    return tokens


def _single_quoted(text: str, i: int) -> tuple[str, int]:
    out: list[str] = []
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n and text[i + 1] in "\\'":
            out.append(text[i + 1])
            i += 2
        elif c == "'":
            return "".join(out), i + 1
        else:
            out.append(c)
            i += 1
    raise WpConfigError("a single-quoted string is never closed")


def _double_quoted(text: str, i: int) -> tuple[_Str, int]:
    out: list[str] = []
    interpolates = False
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n:
            nxt = text[i + 1]
            if nxt in _DQ_ESCAPES:
                out.append(_DQ_ESCAPES[nxt])
                i += 2
            elif m := re.match(r"[0-7]{1,3}", text[i + 1 :]):
                out.append(chr(int(m.group(), 8) & 0xFF))
                i += 1 + m.end()
            elif m := re.match(r"x([0-9a-fA-F]{1,2})|u\{([0-9a-fA-F]+)\}", text[i + 1 :]):
                out.append(chr(int(m.group(1) or m.group(2), 16)))
                i += 1 + m.end()
            else:
                out.append(c)
                i += 1
        elif c == '"':
            return _Str("".join(out), interpolates), i + 1
        else:
            nxt = text[i + 1] if i + 1 < n else ""
            if (c == "$" and (nxt == "{" or _IDENT_RE.match(text, i + 1))) or (
                c == "{" and nxt == "$"
            ):
                interpolates = True
            out.append(c)
            i += 1
    raise WpConfigError("a double-quoted string is never closed")


# --- tiny evaluator ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Value:
    value: PhpScalar


def _is_op(tokens: list[Token], i: int, op: str) -> bool:
    return i < len(tokens) and tokens[i] == ("op", op)


def _split_args(tokens: list[Token], i: int) -> tuple[list[list[Token]], int]:
    """Arguments of a call whose "(" is just before ``i``; returns (args, index after ")")."""
    args: list[list[Token]] = [[]]
    depth = 0
    n = len(tokens)
    while i < n:
        tok = tokens[i]
        if tok[0] == "op" and tok[1] in ("(", "[", "{"):
            depth += 1
        elif tok[0] == "op" and tok[1] in (")", "]", "}"):
            if depth == 0:
                return ([] if args == [[]] else args), i + 1
            depth -= 1
        elif tok == ("op", ",") and depth == 0:
            args.append([])
            i += 1
            continue
        elif tok == ("op", ";") and depth == 0:
            return [], i + 1  # broken call: give up on it
        args[-1].append(tok)
        i += 1
    return [], n


def _until(tokens: list[Token], i: int, op: str) -> tuple[list[Token], int]:
    out: list[Token] = []
    n = len(tokens)
    while i < n and tokens[i] != ("op", op):
        out.append(tokens[i])
        i += 1
    return out, min(i + 1, n)


def _php_str(value: PhpScalar) -> str:
    if value is None or value is False:
        return ""
    if value is True:
        return "1"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _evaluate(expr: list[Token], env: Mapping[str, str]) -> _Value | None:
    """Concatenation of evaluable terms; None when any part is beyond this little evaluator."""
    terms: list[list[Token]] = [[]]
    depth = 0
    for tok in expr:
        if tok[0] == "op" and tok[1] in ("(", "["):
            depth += 1
        elif tok[0] == "op" and tok[1] in (")", "]"):
            depth -= 1
        if tok == ("op", ".") and depth == 0:
            terms.append([])
        else:
            terms[-1].append(tok)
    values = [_term(t, env) for t in terms]
    if any(v is None for v in values):
        return None
    if len(values) == 1:
        return values[0]
    return _Value("".join(_php_str(v.value) for v in values if v is not None))


def _term(tokens: list[Token], env: Mapping[str, str]) -> _Value | None:
    if len(tokens) >= 2 and tokens[0] == ("op", "(") and tokens[-1] == ("op", ")"):
        return _evaluate(tokens[1:-1], env)
    if len(tokens) == 1:
        kind, value = tokens[0]
        if kind == "str":
            assert isinstance(value, _Str)
            return None if value.interpolates else _Value(value.value)
        if kind == "num":
            assert isinstance(value, int | float)
            return _Value(value)
        if kind == "ident":
            word = str(value).lower()
            if word in ("true", "false", "null"):
                return _Value({"true": True, "false": False, "null": None}[word])
        return None
    if len(tokens) == 2 and tokens[0] == ("op", "-") and tokens[1][0] == "num":
        number = tokens[1][1]
        assert isinstance(number, int | float)
        return _Value(-number)
    if tokens and tokens[0][0] == "ident" and _is_op(tokens, 1, "(") and tokens[-1] == ("op", ")"):
        func = str(tokens[0][1]).lower().lstrip("\\")
        args, end = _split_args(tokens, 2)
        if end != len(tokens):
            return None
        evaluated = [_evaluate(a, env) for a in args]
        if any(v is None for v in evaluated):
            return None
        plain = [_php_str(v.value) for v in evaluated if v is not None]
        if func == "getenv_docker" and len(plain) == 2:
            return _Value(_getenv_docker(env, plain[0], plain[1]))
        if func == "getenv" and len(plain) == 1:
            found = env.get(plain[0])
            return _Value(False if found is None else found)
    return None


def _getenv_docker(env: Mapping[str, str], name: str, default: str) -> str:
    """The official image's helper: ``NAME_FILE`` (a file's content), else ``NAME``, else the
    default."""
    file_name = env.get(name + "_FILE")
    if file_name:
        try:
            return Path(file_name).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as err:
            raise WpConfigError(
                f"{name}_FILE names {file_name}, which cannot be read: {err.strerror or err}"
            ) from err
    found = env.get(name)
    return default if found is None else found
