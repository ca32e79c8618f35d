"""The demo's service under study ("shop"): a threaded HTTP/1.0 JSON API.

Routes (all responses JSON, ``Content-Type: application/json``):

- ``GET /health`` -> ``{"status": "ok"}`` (no dependency)
- ``GET /hello?name=N`` -> a greeting (no dependency)
- ``GET /items/ID`` -> the item read from the key-value store, or 404
- ``GET /price/ID?qty=N`` -> ``{"id", "qty", "unit_cents", "total_cents"}``
- ``POST /items/ID`` (JSON ``{"name", "price_cents"}``) -> 201, stored in the
  key-value store

Each request that needs the store opens one HTTP connection to it
(``--kv HOST:PORT``). :mod:`dr.demo.service_v2` is the modified build.

Run: ``python -m dr.demo.service --port PORT --kv 127.0.0.1:KVPORT``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

KV_ADDR: tuple[str, int] = ("127.0.0.1", 0)


def kv_get(key: str) -> bytes | None:
    """The value of ``key`` in the store, or None when absent."""
    conn = http.client.HTTPConnection(*KV_ADDR, timeout=5)
    try:
        conn.request("GET", f"/kv/{key}")
        resp = conn.getresponse()
        body = resp.read()
        return body if resp.status == 200 else None
    finally:
        conn.close()


def kv_put(key: str, value: bytes) -> None:
    conn = http.client.HTTPConnection(*KV_ADDR, timeout=5)
    try:
        conn.request("PUT", f"/kv/{key}", body=value)
        conn.getresponse().read()
    finally:
        conn.close()


def price_total(unit_cents: int, qty: int) -> int:
    """Total price of ``qty`` items in cents (the handler the modified build changes)."""
    return unit_cents * qty


class ShopHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    server_version = "shop/1.4"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def _json(self, status: int, obj: object) -> None:
        body = json.dumps(obj, sort_keys=True).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _item(self, item_id: str) -> dict | None:
        raw = kv_get(f"item:{item_id}")
        return None if raw is None else json.loads(raw)

    def do_GET(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        q = parse_qs(url.query)
        parts = url.path.strip("/").split("/")
        if url.path == "/health":
            self._json(200, {"status": "ok"})
        elif url.path == "/hello":
            name = q.get("name", ["world"])[0]
            self._json(200, {"greeting": f"hello, {name}"})
        elif len(parts) == 2 and parts[0] == "items":
            item = self._item(parts[1])
            if item is None:
                self._json(404, {"error": f"no item {parts[1]}"})
            else:
                self._json(200, {"id": int(parts[1]), **item})
        elif len(parts) == 2 and parts[0] == "price":
            self.price(parts[1], int(q.get("qty", ["1"])[0]))
        else:
            self._json(404, {"error": "no such route"})

    def price(self, item_id: str, qty: int) -> None:
        item = self._item(item_id)
        if item is None:
            self._json(404, {"error": f"no item {item_id}"})
            return
        unit = item["price_cents"]
        self._json(200, {"id": int(item_id), "qty": qty, "unit_cents": unit,
                         "total_cents": price_total(unit, qty)})

    def do_POST(self) -> None:  # noqa: N802
        parts = urlsplit(self.path).path.strip("/").split("/")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if len(parts) != 2 or parts[0] != "items":
            self._json(404, {"error": "no such route"})
            return
        try:
            item = json.loads(body)
            value = {"name": str(item["name"]), "price_cents": int(item["price_cents"])}
        except (ValueError, KeyError, TypeError):
            self._json(400, {"error": "want JSON {name, price_cents}"})
            return
        kv_put(f"item:{parts[1]}", json.dumps(value, sort_keys=True).encode())
        self._json(201, {"id": int(parts[1]), **value})


def main(argv: list[str] | None = None, handler: type[ShopHandler] = ShopHandler) -> None:
    global KV_ADDR
    ap = argparse.ArgumentParser(prog="python -m dr.demo.service", description="the demo service")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--kv", required=True, help="HOST:PORT of the key-value store")
    args = ap.parse_args(argv)
    host, _, port = args.kv.rpartition(":")
    KV_ADDR = (host, int(port))
    srv = ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    srv.daemon_threads = True
    print(f"shop listening on 127.0.0.1:{srv.server_address[1]}", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
