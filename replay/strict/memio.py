"""The tracee's memory as iovec arrays, and recvmmsg/sendmmsg's messages.

Split from substitute.py (which keeps the per-kind plans): reading and writing
scattered buffers, and the per-message bytes of an mmsghdr array (recvmmsg(2),
sendmmsg(2)), which capture records as one ``Sub.MESSAGE`` payload per message.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from dr import schema
from dr.replay import notify
from dr.replay.divergence import payload_diff
from dr.replay.notify import Notif
from dr.replay.strict.core import IOV_MAX, Thread
from dr.schema import Kind, Sub

if TYPE_CHECKING:
    from dr.replay.strict.session import ReplaySession

_IOVEC = struct.Struct("<QQ")
#: struct mmsghdr: struct msghdr (56: name, namelen, iov, iovlen, control, controllen,
#: flags), then unsigned msg_len, padded to 64.
_MMSGHDR = struct.Struct("<QI4xQQQQi4xI4x")
MMSGHDR = _MMSGHDR.size
MSG_LEN_OFF = 56


def read_iov(pid: int, addr: int, cnt: int) -> list[tuple[int, int]]:
    cnt = min(cnt, IOV_MAX)
    if not addr or cnt <= 0:
        return []
    raw = notify.read_mem(pid, addr, cnt * _IOVEC.size)
    return [_IOVEC.unpack_from(raw, k * _IOVEC.size) for k in range(cnt)]


def gather(pid: int, iov: list[tuple[int, int]], limit: int) -> bytes:
    out = bytearray()
    for base, ln in iov:
        if len(out) >= limit:
            break
        take = min(ln, limit - len(out))
        if take:
            out += notify.read_mem(pid, base, take)
    return bytes(out)


def scatter(pid: int, iov: list[tuple[int, int]], data: bytes) -> int:
    off = 0
    for base, ln in iov:
        if off >= len(data):
            break
        chunk = data[off:off + ln]
        notify.write_mem(pid, base, chunk)
        off += len(chunk)
    return off


def too_long(s: ReplaySession, th: Thread, ev: Any, a: Any, have: int, cap: int) -> None:
    s.refuse(ev, th.tid, "payload larger than the tracee's buffer",
             f"holds {have} bytes of {a.name} for the tracee's {cap}-byte buffer")


def unmask(cur: bytes, rec: bytes, spans: list[tuple[int, int]]) -> bytes:
    """``cur`` with the redacted byte ranges taken from the recording: masked bytes are
    unknown, never a divergence. Spans are clipped to both buffers."""
    out = bytearray(cur)
    for st, ln in spans:
        end = min(st + ln, len(out), len(rec))
        if st < end:
            out[st:end] = rec[st:end]
    return bytes(out)


#: Calls with an mmsghdr array: nr -> (argument, kind).
MMSG_ARG = {sc.nr: (i, a.kind) for sc in schema.all_syscalls() for i, a in enumerate(sc.args[:6])
            if a.kind in (Kind.MMSG_IN, Kind.MMSG_OUT)}


def _messages(s: ReplaySession, n: Notif, ev: Any, i: int, cap_cnt: int) -> int:
    """How many messages of the recording's result the tracee's array holds."""
    hdr = ev.payloads.get(i | (Sub.HEADER << 4))
    have = len(hdr.data) // MMSGHDR if hdr is not None else 0
    return max(0, min(ev.ret, cap_cnt, have))


def compare_sent(s: ReplaySession, n: Notif, th: Thread, ev: Any, i: int) -> None:
    """sendmmsg: each sent message's bytes (msg_len of them, recorded per message)
    against what the tracee's iovecs hold now."""
    addr = n.args[i]
    if ev.ret <= 0 or not addr:
        return
    cnt = min(ev.ret, n.args[i + 1] & 0xFFFFFFFF, IOV_MAX)
    for m in range(cnt):
        rec = ev.payloads.get(schema.message_slot(i, m))
        if rec is None:
            continue
        _n, _nl, iov, iovlen, _c, _cl, _f, _len = _MMSGHDR.unpack(
            notify.read_mem(n.pid, addr + m * MMSGHDR, MMSGHDR))
        cur = gather(n.pid, read_iov(n.pid, iov, iovlen), len(rec.data))
        s.report.compared_bytes += len(cur)
        spans = s.script.redacted.get((ev.tid, ev.seq, rec.slot)) if s.script.redacted else None
        if spans:
            cur = unmask(cur, rec.data, spans)
        if cur != rec.data:
            s.diverge("payload", f"{ev.name} of thread {th.tid}: the bytes of message {m} differ "
                      "from the recording", th, ev, n, payload_diff(rec.data, cur))
            return


def plan_messages(s: ReplaySession, n: Notif, th: Thread, ev: Any, i: int, a: Any,
                  plan: list[tuple[int, bytes]], iov_plan: list) -> None:
    """Each message's recorded msg_len (both calls) and, for recvmmsg, its recorded
    bytes scattered over the tracee's own iovecs of that message (and its msg_flags,
    MSG_TRUNC included), every size checked against the tracee's buffers first."""
    addr = n.args[i]
    if not addr or ev.ret <= 0:
        return
    cnt = _messages(s, n, ev, i, min(n.args[i + 1] & 0xFFFFFFFF, IOV_MAX))
    hdr = ev.payloads[i | (Sub.HEADER << 4)].data if cnt else b""
    missing = 0
    for m in range(cnt):
        base = m * MMSGHDR
        plan.append((addr + base + MSG_LEN_OFF, hdr[base + MSG_LEN_OFF:base + MSG_LEN_OFF + 4]))
        if a.kind != Kind.MMSG_OUT:
            continue
        rlen = _MMSGHDR.unpack_from(hdr, base)[7]
        rec = ev.payloads.get(schema.message_slot(i, m))
        if rec is None:
            missing += rlen > 0
            continue
        _n, _nl, iov, iovlen, _c, _cl, _f, _len = _MMSGHDR.unpack(
            notify.read_mem(n.pid, addr + base, MMSGHDR))
        vec = read_iov(n.pid, iov, iovlen)
        room = sum(ln for _b, ln in vec)
        if len(rec.data) > room:
            too_long(s, th, ev, a, len(rec.data), room)
        iov_plan.append((vec, rec.data))
        plan.append((addr + base + 48, hdr[base + 48:base + 52]))   # msg_flags
    if missing and not s.warned_mmsg:
        s.warned_mmsg = True
        s.report.notes.append(f"{ev.name}: {missing} message(s) without recorded bytes (a trace "
                              "made before capture kept them, or more messages than it follows): "
                              "the replayed messages hold no recorded bytes")
