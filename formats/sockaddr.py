"""``struct sockaddr`` bytes as the kernel copies them, decoded once for all of dr.

Layouts: sockaddr_in — u16 family, be16 port, 4-byte address (ip(7));
sockaddr_in6 — u16 family, be16 port, u32 flowinfo, 16-byte address, u32 scope
id (ipv6(7)); sockaddr_un — u16 family, NUL-terminated path, or a leading NUL
and an abstract name (unix(7)). Family numbers are the same on x86_64 and
aarch64 (linux/socket.h).
"""

from __future__ import annotations

import socket
import struct
from typing import NamedTuple

AF_UNIX, AF_INET, AF_INET6 = 1, 2, 10


class RawAddr(NamedTuple):
    """A decoded sockaddr: ``family`` (AF_*), ``host`` (text address, or the
    unix path with abstract names as ``@name``), ``port`` (0 for unix)."""

    family: int
    host: str
    port: int


def decode(raw: bytes | None) -> RawAddr | None:
    """Decode ``raw``; None when absent or too short for its family.

    An unknown family gives ``RawAddr(family, "", 0)``.
    """
    if not raw or len(raw) < 2:
        return None
    (fam,) = struct.unpack_from("<H", raw)
    if fam == AF_INET:
        if len(raw) < 8:
            return None
        return RawAddr(AF_INET, socket.inet_ntop(socket.AF_INET, raw[4:8]),
                       struct.unpack_from(">H", raw, 2)[0])
    if fam == AF_INET6:
        if len(raw) < 24:
            return None
        return RawAddr(AF_INET6, socket.inet_ntop(socket.AF_INET6, raw[8:24]),
                       struct.unpack_from(">H", raw, 2)[0])
    if fam == AF_UNIX:
        p = raw[2:]
        if p[:1] == b"\0":
            name = p[1:].split(b"\0", 1)[0] if p[1:].strip(b"\0") else b""
            return RawAddr(AF_UNIX, ("@" + name.decode("utf-8", "replace")) if name else "", 0)
        return RawAddr(AF_UNIX, p.split(b"\0", 1)[0].decode("utf-8", "replace"), 0)
    return RawAddr(fam, "", 0)


def text(raw: bytes | None) -> str | None:
    """``1.2.3.4:80``, ``[::1]:80`` or ``unix:/path``; None when undecodable."""
    a = decode(raw)
    if a is None:
        return None
    if a.family == AF_INET:
        return f"{a.host}:{a.port}"
    if a.family == AF_INET6:
        return f"[{a.host}]:{a.port}"
    if a.family == AF_UNIX:
        return "unix:" + a.host
    return None


def proc_net(hexaddr: str) -> RawAddr:
    """Decode an address of /proc/net/{tcp,tcp6,udp,udp6} (``0100007F:1F90``).

    The kernel prints the address as host-order u32 words in hex (one word for
    IPv4, four for IPv6) and the port in hex (proc(5)). Raises ValueError on
    malformed text.
    """
    h, _, p = hexaddr.partition(":")
    raw = bytes.fromhex(h)
    if len(raw) not in (4, 16):
        raise ValueError(f"not a /proc/net address: {hexaddr!r}")
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    if len(raw) == 4:
        return RawAddr(AF_INET, socket.inet_ntop(socket.AF_INET, raw), int(p, 16))
    return RawAddr(AF_INET6, socket.inet_ntop(socket.AF_INET6, raw), int(p, 16))
