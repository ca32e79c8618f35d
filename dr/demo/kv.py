"""The demo's dependency: an in-memory key-value store spoken to over HTTP/1.0.

``GET /kv/KEY`` -> 200 and the value, or 404; ``PUT /kv/KEY`` (body = value)
-> 204. Values are bytes (the service stores JSON). Starts with
:data:`dr.demo.SEED_ITEMS` as ``item:ID`` keys.

Run: ``python -m dr.demo.kv --port PORT`` (127.0.0.1 only).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from dr.demo import SEED_ITEMS


def seed() -> dict[str, bytes]:
    """The initial store: ``item:ID`` -> JSON ``{"name", "price_cents"}``."""
    return {f"item:{i}": json.dumps({"name": n, "price_cents": p}, sort_keys=True).encode()
            for i, (n, p) in SEED_ITEMS.items()}


class KVHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    server_version = "demo-kv/1"
    store: dict[str, bytes] = {}
    lock = threading.Lock()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def _key(self) -> str | None:
        return self.path[len("/kv/"):] if self.path.startswith("/kv/") else None

    def _reply(self, status: int, body: bytes = b"") -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        key = self._key()
        with self.lock:
            value = self.store.get(key) if key else None
        if value is None:
            self._reply(404)
        else:
            self._reply(200, value)

    def do_PUT(self) -> None:  # noqa: N802
        key = self._key()
        length = int(self.headers.get("Content-Length") or 0)
        value = self.rfile.read(length)
        if not key:
            self._reply(400)
            return
        with self.lock:
            self.store[key] = value
        self._reply(204)


def make_server(port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """A ready (bound, listening) key-value server; call ``serve_forever()``."""
    KVHandler.store = seed()
    srv = ThreadingHTTPServer((host, port), KVHandler)
    srv.daemon_threads = True
    return srv


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m dr.demo.kv", description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args(argv)
    srv = make_server(args.port)
    print(f"kv listening on 127.0.0.1:{srv.server_address[1]}", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
