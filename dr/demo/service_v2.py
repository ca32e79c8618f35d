"""The demo's "modified build" of :mod:`dr.demo.service`: one handler changed.

``GET /price/ID?qty=N`` now takes 10 % off the total from 3 items on (rounded
down to the cent). Every other route answers exactly as the original build, so
a streams replay of a trace of the original reports only the ``/price``
responses with ``qty >= 3`` as different.

Run: ``python -m dr.demo.service_v2 --port PORT --kv 127.0.0.1:KVPORT``.
"""

from __future__ import annotations

from dr.demo import service


class ShopHandlerV2(service.ShopHandler):
    server_version = "shop/1.4"

    def price(self, item_id: str, qty: int) -> None:
        item = self._item(item_id)
        if item is None:
            self._json(404, {"error": f"no item {item_id}"})
            return
        unit = item["price_cents"]
        total = unit * qty
        if qty >= 3:
            total = total * 9 // 10
        self._json(200, {"id": int(item_id), "qty": qty, "unit_cents": unit,
                         "total_cents": total})


if __name__ == "__main__":
    service.main(handler=ShopHandlerV2)
