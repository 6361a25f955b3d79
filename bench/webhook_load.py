"""Load generator for the webhook benchmark, run as a child process so its CPU is not the
sidecar's: ``python -m bench.webhook_load URL SECONDS THREADS`` with a JSON list of header sets
on stdin; prints ``{"sent": n, "accepted": n, "status": {...}, "seconds": s}``.

Each thread keeps one HTTP/1.1 connection and posts notifications round-robin over the header
sets (one per doctor's channel) until the time is up; bounded in time and to loopback.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
from collections import Counter
from urllib.parse import urlsplit


def main() -> int:
    url, seconds, threads = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    headers: list[dict[str, str]] = json.loads(sys.stdin.read())
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("the webhook load generator only targets loopback")
    status: Counter[int] = Counter()
    guard = threading.Lock()
    start = time.perf_counter()
    stop_at = start + seconds

    def worker(offset: int) -> None:
        local: Counter[int] = Counter()
        conn = http.client.HTTPConnection(parts.netloc, timeout=10)
        n = offset
        while time.perf_counter() < stop_at:
            h = headers[n % len(headers)]
            n += 1
            msg = {**h, "X-Goog-Message-Number": str(n), "Content-Length": "0"}
            try:
                conn.request("POST", parts.path, body=b"", headers=msg)
                resp = conn.getresponse()
                resp.read()
                local[resp.status] += 1
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = http.client.HTTPConnection(parts.netloc, timeout=10)
            except (OSError, http.client.HTTPException):
                local[0] += 1
                conn.close()
                conn = http.client.HTTPConnection(parts.netloc, timeout=10)
        conn.close()
        with guard:
            status.update(local)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - start
    accepted = sum(n for s, n in status.items() if 200 <= s < 300)
    print(json.dumps({"sent": sum(status.values()), "accepted": accepted,
                      "status": {str(k): v for k, v in status.items()}, "seconds": elapsed}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
