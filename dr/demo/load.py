"""A bounded load generator for the demo service: N requests over mixed paths.

The request list is a pure function of N (:func:`plan`), so a test knows which
responses the modified build changes. Requests go to 127.0.0.1 only, one
HTTP/1.0 connection each, from ``concurrency`` threads.

Run: ``python -m dr.demo.load --port PORT [-n 50] [-c 4]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Request:
    """One planned request: method, path, JSON body (bytes) or None."""

    method: str
    path: str
    body: bytes | None = None


def plan(n: int = 50) -> list[Request]:
    """The first ``n`` requests of the demo's traffic mix (deterministic).

    The mix cycles through /health, /items/ID (some missing), /price/ID?qty=Q
    (Q = 1..5), /hello?name=..., and two POSTs of new items early on.
    """
    out: list[Request] = []
    names = ["ada", "grace", "linus", "ken", "barbara"]
    for i in range(n):
        k = i % 6
        if i == 2:
            out.append(Request("POST", "/items/7", json.dumps({"name": "cosy", "price_cents": 1200}).encode()))
        elif i == 3:
            out.append(Request("POST", "/items/8", json.dumps({"name": "infuser", "price_cents": 450}).encode()))
        elif k == 0:
            out.append(Request("GET", "/health"))
        elif k in (1, 4):
            out.append(Request("GET", f"/items/{1 + (i * 5) % 9}"))
        elif k in (2, 5):
            out.append(Request("GET", f"/price/{1 + (i * 7) % 8}?qty={1 + (i // 2) % 5}"))
        else:
            out.append(Request("GET", f"/hello?name={names[i % len(names)]}"))
    return out


def send(port: int, req: Request, host: str = "127.0.0.1", timeout: float = 10.0) -> tuple[int, bytes]:
    """Send one request; returns (HTTP status, body bytes)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if req.body is not None else {}
        conn.request(req.method, req.path, body=req.body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def run(port: int, n: int = 50, concurrency: int = 4, pause_s: float = 0.0,
        host: str = "127.0.0.1") -> list[tuple[Request, int, bytes]]:
    """Send :func:`plan` (n) from ``concurrency`` threads; results in plan order.

    ``pause_s`` is a delay each thread takes between its requests (to spread
    the load over a capture window). Failed requests get status 0.
    """
    reqs = plan(n)
    results: list[tuple[Request, int, bytes] | None] = [None] * n
    nxt = iter(range(n))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                i = next(nxt, None)
            if i is None:
                return
            try:
                status, body = send(port, reqs[i], host)
            except OSError as err:
                status, body = 0, str(err).encode()
            results[i] = (reqs[i], status, body)
            if pause_s:
                time.sleep(pause_s)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, concurrency))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [r for r in results if r is not None]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m dr.demo.load", description="demo load generator")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("-n", type=int, default=50)
    ap.add_argument("-c", "--concurrency", type=int, default=4)
    args = ap.parse_args(argv)
    res = run(args.port, args.n, args.concurrency)
    ok = sum(1 for _, s, _ in res if 200 <= s < 500)
    print(f"{len(res)} requests, {ok} answered")


if __name__ == "__main__":
    main()
