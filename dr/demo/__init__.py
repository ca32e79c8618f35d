"""The built-in demo of dr's main job: capture a live service, replay it offline.

Parts, each runnable on its own with ``python -m``:

- :mod:`dr.demo.kv` — the dependency: a small key-value store over HTTP.
- :mod:`dr.demo.service` — the service under study ("shop"): a threaded HTTP API
  whose handlers read and write the key-value store.
- :mod:`dr.demo.service_v2` — the "modified build": the same service with one
  handler changed (``/price`` gives a bulk discount from 3 items on).
- :mod:`dr.demo.load` — a bounded load generator: N requests over mixed paths,
  127.0.0.1 only.
- ``python -m dr.demo`` (``make demo``) — the whole story, end to end.

Everything binds 127.0.0.1 only; nothing here reaches a network.
"""

from __future__ import annotations

__all__ = ["SEED_ITEMS"]

#: Items the key-value store holds when it starts: id -> (name, price in cents).
SEED_ITEMS: dict[int, tuple[str, int]] = {
    1: ("kettle", 2499),
    2: ("teapot", 1850),
    3: ("mug", 699),
    4: ("spoon", 199),
    5: ("strainer", 950),
    6: ("tray", 3200),
}
