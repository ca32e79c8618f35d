"""Which bytes an event moved across which fd: :func:`transfers` (used by ``dr stats``,
``dr export pcap`` and ``dr show``), from the schema's declaration of each I/O
syscall's fd, direction and buffer.

Layouts: struct msghdr / mmsghdr (recvmsg(2), recvmmsg(2)), struct iovec (readv(2)).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from dr import schema
from dr.formats.sockaddr import SockAddr, parse_sockaddr
from dr.schema import Sub
from dr.schema import s32 as _s32

__all__ = ["Transfer", "transfers", "io_syscalls"]

# --------------------------------------------------------------------------- transfers


@dataclass(frozen=True, slots=True)
class Transfer:
    """Bytes one syscall moved across one fd.

    ``direction``: "in" (the kernel handed bytes to the tracee: read, recv) or
    "out" (write, send). ``nbytes``: the true count (from the return value).
    ``data``: the bytes captured (may be shorter than nbytes when the payload
    was truncated at snaplen; None when the call moves bytes dr does not copy,
    as sendfile and splice). ``addr``: the datagram's address when the call
    names one (sendto/recvfrom, msg_name). ``messages``: for sendmmsg/recvmmsg,
    the byte count of each message.
    """

    fd: int
    direction: str
    nbytes: int
    data: bytes | None
    addr: SockAddr | None = None
    messages: tuple[int, ...] = ()

    @property
    def complete(self) -> bool:
        return self.data is not None and len(self.data) >= self.nbytes


_IN_KINDS = {schema.Kind.BUF_OUT, schema.Kind.IOV_OUT, schema.Kind.MSG_OUT, schema.Kind.MMSG_OUT}
_OUT_KINDS = {schema.Kind.BUF_IN, schema.Kind.IOV_IN, schema.Kind.MSG_IN, schema.Kind.MMSG_IN}
_ADDR_KINDS = (schema.Kind.SOCKADDR_IN, schema.Kind.SOCKADDR_OUT)


def _io_table() -> dict[int, tuple[int, str, int, int]]:
    """nr -> (fd arg, direction, data arg, kind) for the calls whose payload is
    the data stream of their fd (schema flag STREAM), read off the schema."""
    out = {}
    for sc in schema.all_syscalls():
        if not sc.has(schema.Beh.STREAM):
            continue
        addr = [i for i, a in enumerate(sc.args) if a.kind in _ADDR_KINDS]
        if addr:
            _ADDR_NR[sc.nr] = addr[0]
        fds = [i for i, a in enumerate(sc.args) if a.kind == schema.Kind.FD]
        data = [i for i, a in enumerate(sc.args) if a.kind in _IN_KINDS or a.kind in _OUT_KINDS]
        if fds and data:
            a = sc.args[data[0]]
            out[sc.nr] = (fds[0], "in" if a.kind in _IN_KINDS else "out", data[0], int(a.kind))
            msg = [i for i, x in enumerate(sc.args) if x.kind == schema.Kind.FLAGS and x.ctype == "msg"]
            if msg and a.kind in _IN_KINDS:
                _PEEK_ARG[sc.nr] = msg[0]
    return out


#: nr -> index of the MSG_* flags argument of receiving calls (MSG_PEEK leaves the bytes queued).
_PEEK_ARG: dict[int, int] = {}
MSG_PEEK = 0x2


_IO: dict[int, tuple[int, str, int, int]] | None = None
#: Calls that move bytes between two fds without a user buffer: nr -> (in fd arg, out fd arg).
_FD_TO_FD_NR = {s.nr: s.beh.moves for s in schema.all_syscalls() if s.beh.moves}
#: nr -> the argument holding the datagram's address (sendto, recvfrom).
_ADDR_NR: dict[int, int] = {}
_MMSG = (int(schema.Kind.MMSG_IN), int(schema.Kind.MMSG_OUT))
_MSG = (int(schema.Kind.MSG_IN), int(schema.Kind.MSG_OUT))
#: sizeof(struct mmsghdr) on x86_64: struct msghdr (56) + unsigned msg_len + padding.
MMSGHDR_SIZE, MMSG_LEN_OFF = 64, 56


def io_syscalls() -> dict[str, str]:
    """Names of the calls :func:`transfers` reports, with their direction ("in"/"out")."""
    global _IO
    if _IO is None:
        _IO = _io_table()
    names = {schema.name_of(nr): d for nr, (_f, d, _a, _k) in _IO.items()}
    names.update({schema.name_of(nr): "in+out" for nr in _FD_TO_FD_NR})
    return names


def transfers(ev: Any) -> list[Transfer]:
    """The bytes ``ev`` moved across fds: [] for calls that move none or failed.

    read/write/pread64/readv/writev/recvfrom/sendto/recvmsg/sendmsg/
    recvmmsg/sendmmsg and friends give one Transfer (none for a MSG_PEEK
    receive, whose bytes are received again); sendfile/splice/tee/
    copy_file_range give two (in on the source fd, out on the target, no data).
    """
    global _IO
    if _IO is None:
        _IO = _io_table()
    if ev.ret <= 0 or ev.flags & schema.EVENT_FLAGS["NO_EXIT"]:
        return []
    spec = _IO.get(ev.nr)
    if spec is None:
        pair = _FD_TO_FD_NR.get(ev.nr)
        if pair is None:
            return []
        # the bytes, when capture read them from the source file (Sub.MOVED)
        moved = ev.payload(pair[0], schema.Sub.MOVED)
        return [Transfer(_s32(ev.args[pair[0]]), "in", ev.ret, moved),
                Transfer(_s32(ev.args[pair[1]]), "out", ev.ret, moved)]
    fd_arg, direction, data_arg, kind = spec
    peek = _PEEK_ARG.get(ev.nr)
    if peek is not None and ev.args[peek] & MSG_PEEK:
        return []  # recv(MSG_PEEK): the same bytes are received again later
    data = ev.payload(data_arg)
    addr = None
    addr_arg = _ADDR_NR.get(ev.nr)
    if addr_arg is not None:
        addr = parse_sockaddr(ev.payload(addr_arg))
    elif kind in _MSG or kind in _MMSG:
        addr = parse_sockaddr(ev.payload(data_arg, Sub.NAME))
    if kind in _MMSG:
        # ret counts messages; each mmsghdr's msg_len holds its byte count.
        hdr = ev.payload(data_arg, Sub.HEADER) or b""
        lens = []
        for i in range(ev.ret):
            off = i * MMSGHDR_SIZE + MMSG_LEN_OFF
            if off + 4 > len(hdr):
                break
            lens.append(struct.unpack_from("<I", hdr, off)[0])
        if data is None:
            # the messages' bytes, one payload per message (Sub.MESSAGE), in order
            parts = [ev.payloads.get(schema.message_slot(data_arg, m)) for m in range(len(lens))]
            if any(p is not None for p in parts):
                data = b"".join(p.data if p is not None else b"" for p in parts)
        if len(lens) != ev.ret:
            lens = [len(data or b"")]
        return [Transfer(_s32(ev.args[fd_arg]), direction, sum(lens), data, addr, tuple(lens))]
    return [Transfer(_s32(ev.args[fd_arg]), direction, ev.ret, data, addr)]
