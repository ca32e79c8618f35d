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
from dr.schema.types import Arg, Beh, Behaviour, Class, FdEffect, Kind, Order, Rule, Sub, Syscall, message_slot

__all__ = [
    "Arg", "Beh", "Behaviour", "Class", "FdEffect", "Kind", "Order", "Rule", "Sub", "Syscall", "message_slot",
    "RecordLayout", "with_order", "with_fd_effect", "with_flag", "cloexec_of",
    "by_name", "by_nr", "name_of", "all_syscalls", "record", "FLAGS", "ENUMS",
    "EVENT_FLAGS", "PROC_EVENTS", "CLOCK_SOURCES", "LOSS_CAUSES", "CHUNK", "SNAPLEN_DEFAULT", "s32", "s64",
]

FLAGS = _tables.FLAGS
ENUMS = _tables.ENUMS
IOCTL_BUFFERS = _tables.IOCTL_BUFFERS
IOCTL_COUNTED = getattr(_tables, "IOCTL_COUNTED", {})
SOCKOPT_POINTED = getattr(_tables, "SOCKOPT_POINTED", {})
BPF_POINTED = getattr(_tables, "BPF_POINTED", {})
EVENT_FLAGS = _tables.EVENT_FLAGS
PROC_EVENTS = _tables.PROC_EVENTS
CLOCK_SOURCES = getattr(_tables, "CLOCK_SOURCES", {})   # getattr: the generator imports this first
LOSS_CAUSES = _tables.LOSS_CAUSES
CHUNK = _tables.CHUNK
SNAPLEN_DEFAULT = _tables.SNAPLEN_DEFAULT
RULES = _tables.RULES
ENTRY_RULES = getattr(_tables, "ENTRY_RULES", ())   # getattr: the generator imports this package before writing _tables
REQUEST_BUFFERS = getattr(_tables, "REQUEST_BUFFERS", {})
REQUEST_SUB_BUFFERS = getattr(_tables, "REQUEST_SUB_BUFFERS", {})
MAX_RULES = _tables.MAX_RULES


def s32(v: int) -> int:
    """An fd or int argument as the kernel sees it: a register's low 32 bits, signed."""
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def s64(v: int) -> int:
    """A register (argument or return value) as a signed 64-bit integer."""
    v &= 0xFFFFFFFFFFFFFFFF
    return v - (1 << 64) if v & (1 << 63) else v


def _mk(name: str, row: tuple) -> Syscall:
    nr, nr64, cls, ret, args, beh = row
    return Syscall(name, nr, nr64, Class(cls), tuple(
        Arg(n, Kind(k), Rule(r), size, ctype, elem) for (n, k, r, size, ctype, elem) in args), ret,
        beh=Behaviour.from_row(beh))


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
    _, x86, a64 = _index()
    return (x86 if arch == "x86_64" else a64).get(nr)


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


# ------------------------------------------------------------------ behaviour queries
# Readers take sets of numbers from these once (hot paths test membership).

def with_order(*orders: Order) -> frozenset[int]:
    """x86_64 numbers of the syscalls whose replay ordering class is one of ``orders``."""
    return frozenset(s.nr for s in all_syscalls() if s.beh.order in orders)


def with_fd_effect(*effects: FdEffect) -> frozenset[int]:
    """x86_64 numbers of the syscalls with one of these effects on the fd table."""
    return frozenset(s.nr for s in all_syscalls() if s.beh.fd in effects)


def with_flag(flag: Beh) -> frozenset[int]:
    """x86_64 numbers of the syscalls carrying behaviour flag ``flag``."""
    return frozenset(s.nr for s in all_syscalls() if s.beh.flags & flag)


def cloexec_of(sc: Syscall, args: tuple[int, ...] | list[int], payload: bytes | None = None) -> bool:
    """Whether the fd ``sc`` creates (NEW, PAIR, DUP) is close-on-exec, from the
    call's arguments (``payload``: the bytes of the cloexec argument when it is a
    structure, as openat2's struct open_how)."""
    arg, mask = sc.beh.cloexec
    if arg == -2:
        return True
    if arg < 0 or arg >= len(args):
        return False
    if sc.args[arg].kind in (Kind.BUF_IN, Kind.INOUT):
        if not payload or len(payload) < 8:
            return False
        return bool(int.from_bytes(payload[:8], "little") & mask)
    return bool(args[arg] & mask)
