"""``struct sockaddr`` bytes as the kernel copies them, decoded once for all of dr.

Layouts: sockaddr_in — u16 family, be16 port, 4-byte address (ip(7));
sockaddr_in6 — u16 family, be16 port, u32 flowinfo, 16-byte address, u32 scope
id (ipv6(7)); sockaddr_un — u16 family, NUL-terminated path, or a leading NUL
and an abstract name (unix(7)). Family numbers are the same on x86_64 and
aarch64 (linux/socket.h).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass
from typing import Any, NamedTuple

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


# --------------------------------------------------------------------------- addresses


@dataclass(frozen=True, slots=True)
class SockAddr:
    """A socket address: ``family`` (AF_INET, AF_INET6, AF_UNIX or other),
    ``host`` (dotted or colon text; "" for unix), ``port`` (host order),
    ``path`` (unix: the path, "@name" for the abstract namespace, "" unnamed).
    """

    family: int
    host: str = ""
    port: int = 0
    path: str = ""

    @property
    def is_inet(self) -> bool:
        return self.family in (AF_INET, AF_INET6)

    @property
    def unspecified(self) -> bool:
        """0.0.0.0 / :: (a wildcard bind): not the address a peer saw."""
        if not self.is_inet:
            return False
        try:
            return ipaddress.ip_address(self.host).is_unspecified
        except ValueError:
            return True

    def __str__(self) -> str:
        if self.family == AF_INET:
            return f"{self.host}:{self.port}"
        if self.family == AF_INET6:
            return f"[{self.host}]:{self.port}"
        if self.family == AF_UNIX:
            return self.path
        return f"family {self.family}"

    def as_dict(self) -> dict[str, Any]:
        if self.is_inet:
            return {"family": "inet6" if self.family == AF_INET6 else "inet",
                    "host": self.host, "port": self.port}
        if self.family == AF_UNIX:
            return {"family": "unix", "path": self.path}
        return {"family": self.family}


def parse_sockaddr(raw: bytes | None) -> SockAddr | None:
    """Decode a ``struct sockaddr`` (:func:`decode`); None when unusable."""
    a = decode(raw)
    if a is None:
        return None
    if a.family in (AF_INET, AF_INET6):
        return SockAddr(a.family, a.host, a.port)
    if a.family == AF_UNIX:
        return SockAddr(AF_UNIX, path=a.host)
    return SockAddr(a.family)


def parse_addr_text(v: Any) -> SockAddr | None:
    """An address from the metadata fd snapshot.

    Accepts ``"1.2.3.4:80"``, ``"[::1]:80"``, ``"/run/x.sock"``, ``"@abstract"``,
    ``[host, port]`` and ``{"host"|"addr": ..., "port": ..., "path": ...}``.
    """
    if v is None or v == "":
        return None
    if isinstance(v, dict):
        if v.get("path") is not None:
            return SockAddr(AF_UNIX, path=str(v["path"]))
        host = v.get("host", v.get("addr", v.get("ip")))
        if host is None:
            return None
        return _inet(str(host), v.get("port", 0))
    if isinstance(v, (list, tuple)) and len(v) >= 2:
        return _inet(str(v[0]), v[1])
    if isinstance(v, str):
        if v.startswith("/") or v.startswith("@"):
            return SockAddr(AF_UNIX, path=v)
        if v.startswith("["):
            host, _, port = v[1:].partition("]:")
            return _inet(host, port)
        host, _, port = v.rpartition(":")
        if host:
            return _inet(host, port)
    return None


def _inet(host: str, port: Any) -> SockAddr | None:
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
        return SockAddr(AF_INET6 if ip.version == 6 else AF_INET, str(ip), int(port or 0))
    except (ValueError, TypeError):
        return None
