"""The rules of expected noise a comparison ignores (``--ignore FILE``, TOML; the format
is in :mod:`dr.replay.compare`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from dr.errors import UsageError

# --------------------------------------------------------------------------- ignore rules


@dataclass(frozen=True, slots=True)
class Ignore:
    """Expected noise: HTTP header names (lower case), JSON keys, byte ranges [start, end)."""

    headers: frozenset[str] = frozenset()
    json_keys: frozenset[str] = frozenset()
    byte_ranges: tuple[tuple[int, int], ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.headers or self.json_keys or self.byte_ranges)

    def describe(self) -> str:
        parts = []
        if self.headers:
            parts.append("headers " + ", ".join(sorted(self.headers)))
        if self.json_keys:
            parts.append("JSON keys " + ", ".join(sorted(self.json_keys)))
        if self.byte_ranges:
            parts.append("bytes " + ", ".join(f"[{a}, {b})" for a, b in self.byte_ranges))
        return "; ".join(parts)


def load_ignore(source: Any) -> Ignore:
    """An :class:`Ignore` from a TOML file path (None: nothing ignored), or a dict.

    Raises :class:`dr.errors.UsageError` (one line) for an unreadable file,
    bad TOML, unknown tables or keys, or values of the wrong type.
    """
    import tomllib

    if source is None:
        return Ignore()
    if isinstance(source, Ignore):
        return source
    if isinstance(source, dict):
        doc = source
        where = "ignore rules"
    else:
        where = str(source)
        try:
            with open(source, "rb") as f:
                doc = tomllib.load(f)
        except OSError as e:
            raise UsageError(f"cannot read the ignore file {where}: {e.strerror or e}") from None
        except tomllib.TOMLDecodeError as e:
            raise UsageError(f"the ignore file {where} is not valid TOML: {e}") from None
    allowed = {"http": {"headers"}, "json": {"keys"}, "bytes": {"ranges"}}
    for table, body in doc.items():
        if table not in allowed or not isinstance(body, dict):
            raise UsageError(f"{where}: unknown table [{table}]; use [http] headers, [json] keys, [bytes] ranges")
        for k in body:
            if k not in allowed[table]:
                raise UsageError(f"{where}: unknown key {k!r} in [{table}]; expected {sorted(allowed[table])[0]!r}")

    def strs(table: str, key: str) -> list[str]:
        v = doc.get(table, {}).get(key, [])
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise UsageError(f"{where}: [{table}] {key} must be a list of strings")
        return v

    ranges = doc.get("bytes", {}).get("ranges", [])
    ok = isinstance(ranges, list) and all(
        isinstance(r, list) and len(r) == 2 and all(isinstance(x, int) and x >= 0 for x in r) and r[0] < r[1]
        for r in ranges)
    if not ok:
        raise UsageError(f"{where}: [bytes] ranges must be a list of [start, end] pairs with 0 <= start < end")
    return Ignore(frozenset(h.lower() for h in strs("http", "headers")),
                  frozenset(strs("json", "keys")),
                  tuple((int(a), int(b)) for a, b in ranges))


def _mask(data: bytes, ranges: Iterable[tuple[int, int]]) -> bytes:
    b = bytearray(data)
    for a, z in ranges:
        for i in range(a, min(z, len(b))):
            b[i] = 0x2A  # '*' on both sides, so the range compares equal
    return bytes(b)
