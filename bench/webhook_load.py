"""Load generator for the webhook benchmark, run as a child process so its CPU is not the
sidecar's: ``python -m bench.webhook_load URL SECONDS CONNECTIONS`` with a JSON list of header
sets on stdin; prints ``{"sent": n, "accepted": n, "status": {...}, "seconds": s, "cpu_s": c}``.

One thread drives ``CONNECTIONS`` keep-alive HTTP/1.1 connections through a ``selectors`` loop:
each connection has one request in flight and sends the next notification as soon as the answer
is in, round-robin over the header sets (one per doctor's channel), until the time is up; the
requests still in flight are then awaited (at most ``GRACE`` seconds). Bounded in time and to
loopback.

The generator must cost far less CPU than the server it measures (both share the machine), so
each channel's request is pre-encoded once; only ``X-Goog-Message-Number`` is appended per
request, increasing per channel as Google numbers a channel's messages. Answers are parsed just
enough to count them and keep the connection usable: status line, ``Content-Length`` and
``Connection: close`` (the connection is then reopened). A connection error, an answer that is
not HTTP, or no answer within ``TIMEOUT`` seconds counts as status 0 and reopens the connection.
"""

from __future__ import annotations

import json
import selectors
import socket
import sys
import time
from collections import Counter
from urllib.parse import urlsplit

TIMEOUT = 10.0  # seconds without an answer before a request counts as failed (status 0)
GRACE = 10.0  # seconds allowed after the run for answers still in flight
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def encode_requests(path: str, host: str, headers: list[dict[str, str]]) -> list[bytes]:
    """Each channel's request up to (not including) its message number and the blank line."""
    out = []
    for h in headers:
        lines = [f"POST {path} HTTP/1.1", f"Host: {host}", "Content-Length: 0"]
        lines += [f"{k}: {v}" for k, v in h.items()]
        out.append(("\r\n".join(lines) + "\r\nX-Goog-Message-Number: ").encode("latin-1"))
    return out


class Answer:
    """Incremental parse of one HTTP/1.1 response: ``feed`` until it returns True."""

    __slots__ = ("buf", "close", "need", "status")

    def __init__(self) -> None:
        self.buf = b""
        self.status = 0
        self.need = -1  # total bytes of head + body, once the head is complete
        self.close = False

    def feed(self, data: bytes) -> bool:
        """Add received bytes; True when the whole response is in. Raises ValueError when the
        bytes are not an HTTP/1.x response with a length (this generator sends no HEAD and
        expects no chunked or close-delimited bodies from the webhook)."""
        self.buf += data
        if self.need < 0:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > 65536:
                    raise ValueError("response head too long")
                return False
            head = self.buf[:end].split(b"\r\n")
            first = head[0].split(b" ", 2)
            if len(first) < 2 or not first[0].startswith(b"HTTP/1."):
                raise ValueError("not an HTTP/1.x response")
            self.status = int(first[1])
            length = -1
            for line in head[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value.strip())
                elif name == b"connection" and value.strip().lower() == b"close":
                    self.close = True
                elif name == b"transfer-encoding":
                    raise ValueError("chunked responses are not expected")
            if first[0] == b"HTTP/1.0" and not any(
                    line.lower().replace(b" ", b"") == b"connection:keep-alive"
                    for line in head[1:]):
                self.close = True
            if length < 0:
                if self.status in (204, 304) or 100 <= self.status < 200:
                    length = 0
                else:
                    raise ValueError("response without Content-Length")
            self.need = end + 4 + length
        return len(self.buf) >= self.need


class Conn:
    __slots__ = ("answer", "out", "sent_at", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.answer = Answer()
        self.sent_at = 0.0
        self.out = b""


def run(url: str, seconds: float, connections: int, headers: list[dict[str, str]]
        ) -> dict[str, object]:
    parts = urlsplit(url)
    if parts.hostname not in LOOPBACK:
        raise SystemExit("the webhook load generator only targets loopback")
    if not headers:
        raise SystemExit("no header sets on stdin")
    address = (parts.hostname, parts.port or 80)
    prefixes = encode_requests(parts.path or "/", parts.netloc, headers)
    numbers = [0] * len(prefixes)  # last message number sent per channel
    status: Counter[int] = Counter()
    sel = selectors.DefaultSelector()
    nxt = 0

    def open_conn() -> Conn:
        sock = socket.create_connection(address, timeout=TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        return Conn(sock)

    def send_next(c: Conn) -> None:
        nonlocal nxt
        i = nxt
        nxt = (nxt + 1) % len(prefixes)
        numbers[i] += 1
        c.out = prefixes[i] + str(numbers[i]).encode() + b"\r\n\r\n"
        c.answer = Answer()
        c.sent_at = time.perf_counter()
        try:
            n = c.sock.send(c.out)
        except BlockingIOError:
            n = 0
        c.out = c.out[n:]
        sel.register(c.sock, selectors.EVENT_WRITE if c.out else selectors.EVENT_READ, c)

    def reopen(c: Conn, sending: bool) -> None:
        sel.unregister(c.sock)
        c.sock.close()
        if not sending:
            return
        try:
            fresh = open_conn()
        except OSError:
            status[0] += 1
            return  # one connection fewer for the rest of the run
        send_next(fresh)

    cpu0 = time.process_time()
    start = time.perf_counter()
    stop_at = start + seconds
    for _ in range(connections):
        send_next(open_conn())
    last = start
    while sel.get_map():
        now = time.perf_counter()
        if now > stop_at + GRACE:
            for key in list(sel.get_map().values()):
                status[0] += 1
                reopen(key.data, False)
            break
        for key, events in sel.select(timeout=0.2):
            c: Conn = key.data
            try:
                if events & selectors.EVENT_WRITE:
                    n = c.sock.send(c.out)
                    c.out = c.out[n:]
                    if not c.out:
                        sel.modify(c.sock, selectors.EVENT_READ, c)
                    continue
                data = c.sock.recv(65536)
                if not data:
                    raise ConnectionError("closed by the server")
                if not c.answer.feed(data):
                    continue
            except (OSError, ValueError):
                status[0] += 1
                reopen(c, time.perf_counter() < stop_at)
                continue
            status[c.answer.status] += 1
            last = time.perf_counter()
            if c.answer.close:
                reopen(c, last < stop_at)
            elif last < stop_at:
                sel.unregister(c.sock)
                send_next(c)
            else:
                sel.unregister(c.sock)
                c.sock.close()
        now = time.perf_counter()
        for key in list(sel.get_map().values()):
            c = key.data
            if now - c.sent_at > TIMEOUT:
                status[0] += 1
                reopen(c, now < stop_at)
    # The run lasts until the last answer, or the whole window if answers stopped early.
    elapsed = max(last, min(time.perf_counter(), stop_at)) - start
    accepted = sum(n for s, n in status.items() if 200 <= s < 300)
    return {"sent": sum(status.values()), "accepted": accepted,
            "status": {str(k): v for k, v in sorted(status.items())}, "seconds": elapsed,
            "connections": connections, "cpu_s": round(time.process_time() - cpu0, 3),
            "last_message_number": max(numbers)}


def main() -> int:
    url, seconds, connections = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    headers: list[dict[str, str]] = json.loads(sys.stdin.read())
    print(json.dumps(run(url, seconds, connections, headers)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
