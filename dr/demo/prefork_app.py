"""A small WSGI app for pre-fork servers (gunicorn) in the services tests.

``/`` answers a fixed page; ``/hit`` counts requests in the worker that served
it (per-worker state: which worker the kernel picks shows in the body only
when the service keeps such state, and this app keeps it out of the body);
``/time`` returns the time the worker read, with microseconds, as a service
stamping its responses would.
"""

from __future__ import annotations

import time


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/time":
        body = f"{time.time():.6f}\n".encode()
    else:
        body = b"hello from a pre-forked worker\n" * 4
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
