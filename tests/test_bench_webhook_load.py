"""The webhook benchmark's load generator counts what the server answered, numbers each
channel's messages 1, 2, 3... and survives servers that close connections."""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from typing import Any

import pytest
from flask import Flask, Response, request

from bench.webhook_load import Answer, run
from sidecar.emulator.server import run_in_thread


def _server() -> tuple[Any, Counter[int], dict[str, list[int]]]:
    app = Flask(__name__)
    answered: Counter[int] = Counter()
    numbers: dict[str, list[int]] = defaultdict(list)
    guard = threading.Lock()

    @app.post("/hook")
    def hook() -> Response:
        channel = request.headers["X-Goog-Channel-ID"]
        with guard:
            numbers[channel].append(int(request.headers["X-Goog-Message-Number"]))
            n = sum(answered.values())
            status = 200 if request.headers.get("X-Goog-Channel-Token") == "good" else 403
            answered[status] += 1
        response = Response("ok\n" if status == 200 else "no\n", status=status)
        if n % 7 == 0:
            response.headers["Connection"] = "close"
        return response

    return run_in_thread(app), answered, numbers


def test_counts_match_the_server_and_numbers_increase_per_channel() -> None:
    server, answered, numbers = _server()
    headers = [{"X-Goog-Channel-ID": f"ch-{i}",
                "X-Goog-Channel-Token": "good" if i != 2 else "bad",
                "X-Goog-Resource-ID": f"res-{i}", "X-Goog-Resource-State": "exists"}
               for i in range(4)]
    try:
        out = run(server.url + "/hook", 0.5, 3, headers)
    finally:
        server.stop()
    assert out["status"] == {str(k): v for k, v in sorted(answered.items())}
    assert out["sent"] == sum(answered.values()) > 20
    assert out["accepted"] == answered[200]
    assert answered[403] > 0
    for channel, got in numbers.items():
        assert sorted(got) == list(range(1, len(got) + 1)), channel
    assert out["seconds"] >= 0.5


def test_answer_parser_handles_split_heads_and_close() -> None:
    raw = (b"HTTP/1.1 403 FORBIDDEN\r\nContent-Type: text/plain\r\ncontent-length: 3\r\n"
           b"Connection: close\r\n\r\nno\n")
    answer = Answer()
    chunks = [raw[i:i + 5] for i in range(0, len(raw), 5)]
    assert [answer.feed(c) for c in chunks] == [False] * (len(chunks) - 1) + [True]
    whole = Answer()
    assert whole.feed(raw)
    assert (whole.status, whole.close) == (403, True)
    keep = Answer()
    assert not keep.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok")
    assert keep.feed(b"\n") and (keep.status, keep.close) == (200, False)
    with pytest.raises(ValueError):
        Answer().feed(b"SSH-2.0-OpenSSH\r\n\r\n")
