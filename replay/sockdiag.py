"""How many bytes a TCP socket holds unread: one exact sock_diag lookup.

Streams replay holds the recorded order across connections by waiting until
the replayed program has read a request before sending the next connection's
(see :meth:`dr.replay.streams_delivery.Delivery._wait_read`). The program's end
of a connection lives in the sandbox's network namespace; its receive queue
(``idiag_rqueue``: bytes received and not yet read) is asked of the kernel
with one ``SOCK_DIAG_BY_FAMILY`` request naming the socket by its four-tuple
— a direct lookup, where reading /proc/PID/net/tcp walks the host's whole
connection table on every call.

Layouts (include/uapi/linux/inet_diag.h, netlink.h): ``struct nlmsghdr``
(u32 len, u16 type, u16 flags, u32 seq, u32 pid); ``struct inet_diag_req_v2``
(u8 family, u8 protocol, u8 ext, u8 pad, u32 states, struct inet_diag_sockid);
``struct inet_diag_sockid`` (be16 sport, be16 dport, be32 src[4], be32 dst[4],
u32 if, u32 cookie[2]); the reply's ``struct inet_diag_msg`` (u8 family,
state, timer, retrans, sockid, u32 expires, rqueue, wqueue, uid, inode).
"""

from __future__ import annotations

import socket
import struct
from typing import Callable

__all__ = ["SockDiag"]

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 1
NLMSG_ERROR = 2
_HDR = struct.Struct("=IHHII")
_REQ = struct.Struct("=BBBBI")
_ID = struct.Struct(">HH16s16s")
_ID_TAIL = struct.Struct("=III")   # if, cookie[2] (INET_DIAG_NOCOOKIE: both ~0)
_MSG_HEAD = 4 + _ID.size + _ID_TAIL.size   # inet_diag_msg up to expires


def _addr(fam: int, host: str) -> bytes:
    raw = socket.inet_pton(fam, host)
    return raw + b"\0" * (16 - len(raw))


class SockDiag:
    """Exact lookups of TCP sockets in one network namespace.

    ``make_socket``: creates a socket in that namespace (``NetNS.socket``).
    """

    def __init__(self, make_socket: Callable[..., socket.socket]) -> None:
        self.sk = make_socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG)
        self.sk.settimeout(2.0)
        self._seq = 0

    def rqueue(self, local: tuple[str, int], remote: tuple[str, int]) -> int | None:
        """Unread bytes of the TCP socket bound to ``local`` and connected to
        ``remote`` ((host, port) each); None when there is no such socket."""
        fam = socket.AF_INET6 if ":" in local[0] else socket.AF_INET
        self._seq += 1
        body = (_REQ.pack(fam, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF)
                + _ID.pack(local[1], remote[1], _addr(fam, local[0]), _addr(fam, remote[0]))
                + _ID_TAIL.pack(0, 0xFFFFFFFF, 0xFFFFFFFF))
        self.sk.send(_HDR.pack(_HDR.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, self._seq, 0) + body)
        while True:
            data = self.sk.recv(65536)
            ln, typ, _fl, seq, _pid = _HDR.unpack_from(data)
            if seq != self._seq:
                continue  # the answer to an earlier request that timed out
            if typ == NLMSG_ERROR or ln < _HDR.size + _MSG_HEAD + 8:
                return None
            return struct.unpack_from("=I", data, _HDR.size + _MSG_HEAD + 4)[0]

    def close(self) -> None:
        self.sk.close()
