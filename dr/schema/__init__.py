"""The syscall schema: lookups over the generated tables.

Declared in :mod:`dr.schema.syscalls` and :mod:`dr.schema.layout`; this module
reads only the generated ``_tables`` so importing it is cheap.

>>> from dr import schema
>>> schema.by_name("read").nr
0
>>> schema.name_of(1)
'write'
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache

from dr.schema import _tables
from dr.schema.types import Arg, Class, Kind, Rule, Sub, Syscall

__all__ = [
    "Arg", "Class", "Kind", "Rule", "Sub", "Syscall", "RecordLayout",
    "by_name", "by_nr", "name_of", "all_syscalls", "record", "FLAGS", "ENUMS",
    "EVENT_FLAGS", "PROC_EVENTS", "LOSS_CAUSES", "CHUNK", "SNAPLEN_DEFAULT",
]

FLAGS = _tables.FLAGS
ENUMS = _tables.ENUMS
IOCTL_BUFFERS = _tables.IOCTL_BUFFERS
EVENT_FLAGS = _tables.EVENT_FLAGS
PROC_EVENTS = _tables.PROC_EVENTS
LOSS_CAUSES = _tables.LOSS_CAUSES
CHUNK = _tables.CHUNK
SNAPLEN_DEFAULT = _tables.SNAPLEN_DEFAULT
RULES = _tables.RULES
ENTRY_RULES = getattr(_tables, "ENTRY_RULES", ())   # getattr: the generator imports this package before writing _tables
REQUEST_BUFFERS = getattr(_tables, "REQUEST_BUFFERS", {})
MAX_RULES = _tables.MAX_RULES


def _mk(name: str, row: tuple) -> Syscall:
    nr, nr64, cls, ret, args = row
    return Syscall(name, nr, nr64, Class(cls), tuple(
        Arg(n, Kind(k), Rule(r), size, ctype, elem) for (n, k, r, size, ctype, elem) in args), ret)


@lru_cache(maxsize=None)
def _index() -> tuple[dict[str, Syscall], dict[int, Syscall], dict[int, Syscall]]:
    by_n = {name: _mk(name, row) for name, row in _tables.SYSCALLS.items()}
    x86 = {s.nr: s for s in by_n.values()}
    a64 = {s.nr_aarch64: s for s in by_n.values() if s.nr_aarch64 is not None}
    return by_n, x86, a64


def by_name(name: str) -> Syscall:
    """The declared syscall called ``name``. Raises KeyError when undeclared."""
    return _index()[0][name]


def by_nr(nr: int, arch: str = "x86_64") -> Syscall | None:
    """The syscall with number ``nr`` on ``arch`` (x86_64 or aarch64), or None."""
    return _index()[1 if arch == "x86_64" else 2].get(nr)


def name_of(nr: int, arch: str = "x86_64") -> str:
    """Name of syscall ``nr``, or ``syscall_<nr>`` when the table does not know it."""
    sc = by_nr(nr, arch)
    return sc.name if sc else f"syscall_{nr}"


def all_syscalls() -> list[Syscall]:
    """Every declared syscall, in x86_64 number order."""
    return sorted(_index()[0].values(), key=lambda s: s.nr)


@dataclass(frozen=True, slots=True)
class RecordLayout:
    """A probe record's layout: ``struct`` object, field names, header size in bytes."""

    name: str
    kind: int
    st: struct.Struct
    fields: tuple[str, ...]
    has_data: bool

    @property
    def size(self) -> int:
        return self.st.size


@lru_cache(maxsize=None)
def record(name: str) -> RecordLayout:
    """Layout of record ``name`` (``syscall_event``, ``payload``, ``proc_event``)."""
    kind, fmt, fields, _size, has_data = _tables.RECORDS[name]
    return RecordLayout(name, kind, struct.Struct(fmt), fields, has_data)
