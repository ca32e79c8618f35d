"""Substitution and comparison, driven by the schema's argument kinds.

Inputs the tracee hands the kernel (paths, write payloads, addresses, scalar
arguments) are compared with the recording; outputs the kernel handed it (read
payloads, out-structures) are written into its memory from the trace. Every
size is checked against the tracee's own arguments before a byte is written.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dr import schema
from dr.replay import notify
from dr.replay.divergence import payload_diff
from dr.replay.notify import MemoryFault, Notif
from dr.replay.strict.core import (IOV_MAX, MAX_INPUT, NR, O_TMPFILE, SC, SOCKADDR_MAX, Status, StepResult,
                                   Stop, Thread, s32)
from dr.replay.strict.memio import (MMSG_ARG, compare_sent, gather, plan_messages, read_iov, scatter, too_long,
                                    unmask)
from dr.replay.strict.ptracecall import plan_iovec
from dr.replay.strict.script import cut_by, snaplen_remedy
from dr.schema import Beh, Kind, Rule, Sub, flagsets

if TYPE_CHECKING:
    from dr.replay.strict.session import ReplaySession

#: struct_in types whose bytes are deterministic (compared); others may hold pointers.
COMPARED_STRUCTS = frozenset({"timespec", "timeval", "itimerval", "itimerspec", "rlimit",
                              "sigset", "open_how", "int", "uint", "loff_t", "socklen", "fd_set",
                              "perf_event_attr"})
#: Structures that say their own size (a u32 at this offset; 0 means the default size): only
#: that many bytes are the tracee's, the capture's fixed-size copy may run past them
#: (perf_event_attr.size; 0 is PERF_ATTR_SIZE_VER0).
SELF_SIZED = {"perf_event_attr": (4, 64)}
#: Scalar-typed arguments that carry addresses (capget's header) and so differ run to run.
POINTER_LIKE = frozenset({"header", "dataptr", "data"})
#: open-like calls whose mode argument only counts with O_CREAT/O_TMPFILE: nr -> flags argument.
OPEN_MODE_FLAGS = {NR["open"]: 1, NR["openat"]: 2}
_MSGHDR = struct.Struct("<QI4xQQQQi4x")  # msghdr(3type): name, namelen, iov, iovlen, control, controllen, flags
_U32 = struct.Struct("<I")
#: Calls whose return value counts the bytes of their data stream they sent
#: (write, send*, pwrite*): a payload shorter than that was cut at snaplen.
STREAM_OUT = frozenset(sc.nr for sc in schema.all_syscalls() if sc.has(Beh.STREAM) and any(
    a.kind in (Kind.BUF_IN, Kind.IOV_IN, Kind.MSG_IN) for a in sc.args))


_RET_SIZE_ARG: dict[tuple[int, int], int | None] = {}


def capacity(sc: schema.Syscall, i: int, args: tuple[int, ...], pid: int | None = None) -> int | None:
    """Bytes the tracee's own arguments allow at argument ``i`` (the cap for any write)."""
    a = sc.args[i]
    if a.rule == Rule.RET:
        key = (sc.nr, i)
        j = _RET_SIZE_ARG.get(key, -1)
        if j == -1:
            j = _ret_size_arg(sc, i)
            _RET_SIZE_ARG[key] = j
        return None if j is None else (args[j] & 0xFFFFFFFF) * (a.elem or 1)
    elem = a.elem or 1
    if a.rule == Rule.CONST:
        return a.size
    if a.rule in (Rule.ARG, Rule.MIN_RET_ARG) and a.size < len(args):
        return (args[a.size] & 0xFFFFFFFF) * elem
    if a.rule == Rule.CNT and a.size < len(args):
        cnt = args[a.size] & 0xFFFFFFFF
        if a.kind in (Kind.IOV_IN, Kind.IOV_OUT, Kind.MMSG_IN, Kind.MMSG_OUT):
            cnt = min(cnt, IOV_MAX)  # the kernel refuses more (UIO_MAXIOV); poll's nfds may be larger
        return cnt * elem
    if a.rule == Rule.DEREF and a.size < len(args):
        if pid is None or not args[a.size]:
            return 0
        return _U32.unpack(notify.read_mem(pid, args[a.size], 4))[0]
    return None


def _ret_size_arg(sc: schema.Syscall, i: int) -> int | None:
    """For a RET-rule buffer, the argument holding its size: the nearest integer
    argument after it (read's count, epoll_wait's maxevents, getcwd's size), else
    before it (getgroups)."""
    order = list(range(i + 1, min(len(sc.args), 6))) + list(range(i - 1, -1, -1))
    for j in order:
        if sc.args[j].kind in (Kind.UINT, Kind.INT):
            return j
    return None


# ----------------------------------------------------------------------------- plans

_K_BUF_IN = Kind.BUF_IN
_R_ARG = Rule.ARG
_R_RET = Rule.RET
SCALAR_KINDS = frozenset({Kind.FD, Kind.FLAGS, Kind.ENUM, Kind.SIGNAL, Kind.INT, Kind.UINT})
INPUT_KINDS = frozenset({Kind.PATH, Kind.STR, Kind.BUF_IN, Kind.IOV_IN, Kind.SOCKADDR_IN, Kind.MSG_IN})
OUTPUT_KINDS = frozenset({Kind.BUF_OUT, Kind.INOUT, Kind.SOCKADDR_OUT, Kind.IOV_OUT, Kind.MSG_OUT,
                          Kind.MMSG_IN, Kind.MMSG_OUT})


@dataclass(frozen=True, slots=True)
class _Plan:
    """Per-syscall work list derived once from the schema (the hot path reads only this).

    ``ret_bounds``: (argument index, name) pairs whose value bounds a successful
    return value (read's count, epoll_wait's maxevents, poll's nfds): a recorded
    return value above it cannot be genuine. ``trunc_flags``: index of the flags
    argument whose MSG_TRUNC lets recv* return more than the buffer (recv(2)), or -1.
    """

    scalars: tuple[tuple[int, str], ...]
    inputs: tuple[tuple[int, Any], ...]
    outputs: tuple[tuple[int, Any], ...]
    shows: bool
    ret_bounds: tuple[tuple[int, str], ...] = ()
    trunc_flags: int = -1
    size_query: bool = False   # a zero size asks for the needed count (getgroups(2))


_PLANS: dict[int, _Plan] = {}
#: Calls returning the number of bytes they took from a BUF_IN buffer (write(2), send(2)).
BYTES_IN_COUNT = schema.with_flag(Beh.COUNTS_IN)
#: recv* calls whose flags argument may hold MSG_TRUNC: nr -> flags argument index.
TRUNC_FLAGS = {NR["recvfrom"]: 3, NR["recvmsg"]: 2, NR["recvmmsg"]: 3}
MSG_TRUNC = 0x20
SIZE_QUERY = schema.with_flag(Beh.SIZE_QUERY)


def plan_of(sc: schema.Syscall) -> _Plan:
    p = _PLANS.get(sc.nr)
    if p is None:
        args = sc.args[:6]
        bounds: list[tuple[int, str]] = []
        for i, a in enumerate(args):
            j: int | None = None
            if a.kind in OUTPUT_KINDS and a.rule == Rule.RET:
                j = _ret_size_arg(sc, i)
            elif a.kind == Kind.BUF_IN and a.rule == Rule.ARG and sc.nr in BYTES_IN_COUNT:
                j = a.size
            elif a.rule == Rule.CNT and a.kind in (Kind.INOUT, Kind.MMSG_IN, Kind.MMSG_OUT):
                j = a.size
            if j is not None and j < len(args) and (j, args[j].name) not in bounds:
                bounds.append((j, args[j].name))
        p = _Plan(
            tuple((i, a.name) for i, a in enumerate(args)
                  if a.kind in SCALAR_KINDS and a.name not in POINTER_LIKE),
            tuple((i, a) for i, a in enumerate(args) if a.kind in INPUT_KINDS and not (
                a.kind == Kind.BUF_IN and a.rule == Rule.CONST and a.ctype not in COMPARED_STRUCTS)),
            tuple((i, a) for i, a in enumerate(args) if a.kind in OUTPUT_KINDS),
            len(args) > 1 and args[0].kind == Kind.FD and args[1].kind in (Kind.BUF_IN, Kind.IOV_IN),
            tuple(bounds), TRUNC_FLAGS.get(sc.nr, -1), sc.nr in SIZE_QUERY)
        _PLANS[sc.nr] = p
    return p


def check_ret(s: ReplaySession, n: Notif, th: Thread, ev: Any, plan: _Plan) -> None:
    """Refuse a recorded return value the tracee's own arguments make impossible
    (read(fd, buf, 200) returning 2**40): the tracee would act on it."""
    ret = ev.ret
    if ret <= 0 or not plan.ret_bounds:
        return
    args = n.args
    if plan.trunc_flags >= 0 and args[plan.trunc_flags] & MSG_TRUNC:
        return  # recv(2): with MSG_TRUNC the real length of a longer datagram
    for j, name in plan.ret_bounds:
        bound = args[j] & 0xFFFFFFFF
        if ret > bound and not (plan.size_query and bound == 0):
            s.refuse(ev, th.tid, "return value larger than the call's size argument",
                     f"returns {ret} where the tracee's {name} argument is {bound}")


def compare_inputs(s: ReplaySession, n: Notif, th: Thread, ev: Any, sc: schema.Syscall) -> None:
    """Compare everything the tracee hands the kernel with the recording."""
    args = n.args
    plan = _PLANS.get(sc.nr) or plan_of(sc)
    rargs = ev.args
    for i, name in plan.scalars:
        if (rargs[i] ^ args[i]) & 0xFFFFFFFF:
            if name == "mode" and sc.nr in OPEN_MODE_FLAGS and not (
                    args[OPEN_MODE_FLAGS[sc.nr]] & (os.O_CREAT | O_TMPFILE)):
                continue  # open(2): mode is not passed without O_CREAT/O_TMPFILE: register garbage
            s.diverge("argument", f"{ev.name} of thread {th.tid}: argument {name} is "
                       f"{s32(args[i])}, recorded {s32(rargs[i])}", th, ev, n)
    if sc.nr in REQUEST_ARGS:
        _compare_request_in(s, n, th, ev, sc)
    mm = MMSG_ARG.get(sc.nr)
    if mm is not None and mm[1] == Kind.MMSG_IN:
        compare_sent(s, n, th, ev, mm[0])
    if not plan.inputs:
        return
    payloads = ev.payloads
    stream = sc.nr in STREAM_OUT
    for i, a in plan.inputs:
        k = a.kind
        cur_v = args[i]
        rec = payloads.get(i)
        if stream and rec is not None and ev.ret > len(rec.data) and cur_v:
            # The capture kept only the first snaplen bytes of this output: the rest is
            # compared with what the reader of its pipe/socketpair received, when known.
            if not _compare_tail(s, n, th, ev, k, i, cur_v, len(rec.data)):
                s.report.uncompared_bytes += ev.ret - len(rec.data)
        if k == _K_BUF_IN:
            if rec is None or not cur_v:
                continue
            data = rec.data
            if a.rule == Rule.CONST and _aliased(sc, i, args):
                # The same memory is also an out-argument (nanosleep(&ts, &ts)):
                # capture read it at exit, after the kernel wrote its result there,
                # so the recording holds the kernel's output: not compared, written
                # back where the call failed (an interrupted sleep's remaining time).
                if ev.ret < 0 and len(data) <= a.size:
                    s.gone_check(n)
                    notify.write_mem(n.pid, cur_v, data)
                    s.report.substituted_bytes += len(data)
                continue
            want = len(data)
            sized = SELF_SIZED.get(a.ctype)
            if sized is not None and len(data) >= sized[0] + 4:
                want = min(want, _U32.unpack_from(data, sized[0])[0] or sized[1])
                data = data[:want]
            if a.rule == _R_ARG:
                cap: int | None = (args[a.size] & 0xFFFFFFFF) * (a.elem or 1)
            else:
                cap = capacity(sc, i, args, n.pid)
                if a.rule == _R_RET and 0 <= ev.ret < want:
                    want = ev.ret
            if cap is not None and cap < want:
                want = cap
            got = notify.read_mem(n.pid, cur_v, want if want < MAX_INPUT else MAX_INPUT)
            s.report.compared_bytes += len(got)
            if s.script.redacted:
                spans = s.script.redacted.get((ev.tid, ev.seq, i))
                if spans:
                    got = unmask(got, data, spans)
                    s.report.redacted_bytes += sum(min(ln, max(0, len(got) - st)) for st, ln in spans)
            if got != data:
                s.diverge("payload", f"{ev.name} of thread {th.tid}: the {a.name} bytes differ from "
                           "the recording", th, ev, n, payload_diff(data, got))
            continue
        if k in (Kind.PATH, Kind.STR):
            cur = notify.read_cstr(n.pid, cur_v, 4096) if cur_v else None
            recb = rec.data.rstrip(b"\0") if rec is not None else None
            if rec is not None and cur != recb:
                s.diverge("argument", f"{ev.name} of thread {th.tid}: {a.name} differs",
                           th, ev, n, payload_diff(recb or b"", cur or b""))
            continue
        if rec is None:
            continue
        cur_b: bytes | None = None
        if k == Kind.BUF_IN and cur_v:
            cap = capacity(sc, i, args, n.pid)
            want = len(rec.data)
            if a.rule == Rule.RET and ev.ret >= 0:
                want = min(want, ev.ret)
            cur_b = notify.read_mem(n.pid, cur_v, min(want, cap if cap is not None else want, MAX_INPUT))
        elif k == Kind.IOV_IN and cur_v:
            c = capacity(sc, i, args)
            iov = read_iov(n.pid, cur_v, c // 16 if c else 0)
            check_iov(s, n, th, ev, a, iov, 0)
            cur_b = gather(n.pid, iov, len(rec.data))
        elif k == Kind.SOCKADDR_IN and cur_v:
            cap = min(capacity(sc, i, args) or 0, SOCKADDR_MAX)
            cur_b = notify.read_mem(n.pid, cur_v, cap)
        elif k == Kind.MSG_IN and cur_v:
            cur_b = _msg_in(n.pid, cur_v, ev, i, s, th, a)
            if cur_b is None:
                continue
        else:
            continue
        s.report.compared_bytes += len(cur_b)
        spans = s.script.redacted.get((ev.tid, ev.seq, i)) if s.script.redacted else None
        if spans:
            cur_b = unmask(cur_b, rec.data, spans)
            s.report.redacted_bytes += sum(min(ln, max(0, len(cur_b) - st)) for st, ln in spans)
        same = (_sockaddr_key(cur_b) == _sockaddr_key(rec.data)) if k == Kind.SOCKADDR_IN else (
            cur_b == rec.data)
        if not same:
            s.diverge("payload", f"{ev.name} of thread {th.tid}: the {a.name} bytes differ from "
                       "the recording", th, ev, n, payload_diff(rec.data, cur_b))


def _compare_tail(s: ReplaySession, n: Notif, th: Thread, ev: Any, k: Kind, i: int, addr: int,
                  have: int) -> bool:
    """Compare the bytes [have, ret) of a cut write (a buffer or an iovec) with the tail the
    reader at the other end received at capture (Script.cut_tails); False when unknown."""
    tail = s.script.cut_tails.get((ev.tid, ev.seq))
    if tail is None or len(tail) != ev.ret - have or k not in (_K_BUF_IN, Kind.IOV_IN):
        return False
    if k == _K_BUF_IN:
        got = notify.read_mem(n.pid, addr + have, len(tail))
    else:
        c = capacity(SC[ev.nr], i, n.args)
        got = gather(n.pid, read_iov(n.pid, addr, c // 16 if c else 0), ev.ret)[have:]
    s.report.compared_bytes += len(got)
    if got != tail:
        s.diverge("payload", f"{ev.name} of thread {th.tid}: the bytes past the capture's snaplen "
                  "differ from what the reader received at capture", th, ev, n, payload_diff(tail, got))
    return True


def _aliased(sc: schema.Syscall, i: int, args: tuple[int, ...]) -> bool:
    """Whether in-argument ``i`` points at the same memory as an out-argument."""
    for j, o in enumerate(sc.args[:6]):
        if j != i and o.kind in (Kind.BUF_OUT, Kind.INOUT) and args[j] == args[i]:
            return True
    return False


def _sockaddr_key(b: bytes) -> bytes:
    """The meaningful bytes of a struct sockaddr (unix(7), ip(7), ipv6(7)): padding and
    the bytes after a sun_path's NUL are uninitialised memory and differ run to run."""
    if len(b) < 2:
        return b
    fam = struct.unpack_from("<H", b)[0]
    if fam == 1:  # AF_UNIX: the path up to its NUL (abstract names start with NUL: keep all)
        path = b[2:]
        if path[:1] != b"\0":
            z = path.find(b"\0")
            path = path if z < 0 else path[:z]
        return b[:2] + path
    if fam == 2:  # AF_INET: family, port, address; sin_zero is padding
        return b[:8]
    return b


def _msg_in(pid: int, addr: int, ev: Any, i: int, s: ReplaySession, th: Thread, a: Any) -> bytes | None:
    name, namelen, iov, iovlen, _c, _cl, _f = _MSGHDR.unpack(notify.read_mem(pid, addr, _MSGHDR.size))
    vec = read_iov(pid, iov, iovlen)
    rec_name = ev.payloads.get(i | (Sub.NAME << 4))
    if rec_name is not None and name:
        cur = notify.read_mem(pid, name, min(namelen, SOCKADDR_MAX))
        if _sockaddr_key(cur) != _sockaddr_key(rec_name.data):
            return cur  # reported as a payload difference of the whole message
    rec = ev.payloads.get(i)
    if ev.ret > 0:
        room = sum(ln for _b, ln in vec)
        if ev.ret > room:
            s.refuse(ev, th.tid, "return value larger than the call's buffers",
                     f"returns {ev.ret} where the tracee's {a.name} holds {room} bytes")
    return gather(pid, vec, len(rec.data) if rec is not None else 0)


def write_outputs(s: ReplaySession, n: Notif, th: Thread, ev: Any, sc: schema.Syscall) -> None:
    """Write the recorded out-payloads into the tracee.

    Every size is checked against the tracee's own arguments first: a return value
    or a payload no genuine call could produce (more bytes than the buffer) is
    refused (ReplayError naming the event) before anything is written. Only
    sockaddr and msghdr name/control bytes are cut to the tracee's length, as the
    kernel itself truncates them (accept(2), recvmsg(2) MSG_CTRUNC).
    """
    args = n.args
    splan = plan_of(sc)
    if ev.ret > 0 and splan.ret_bounds:
        check_ret(s, n, th, ev, splan)
    plan: list[tuple[int, bytes]] = []
    if sc.nr in REQUEST_ARGS:
        _plan_request(s, n, th, ev, sc, plan)
    elif sc.nr == NR_SETSOCKOPT:
        _plan_pointed(s, n, th, ev, sc, plan)
    elif not splan.outputs:
        return
    iov_plan: list[tuple[list[tuple[int, int]], bytes]] = []
    for i, a in splan.outputs:
        k = a.kind
        addr = args[i]
        if k in (Kind.MMSG_IN, Kind.MMSG_OUT):
            plan_messages(s, n, th, ev, i, a, plan, iov_plan)
            continue
        rec = ev.payloads.get(i)
        if rec is None or not addr:
            continue
        data = rec.data
        if rec.total > len(data):
            # Cut at the capture's snaplen: the program read bytes the trace does not hold,
            # and what it does with them cannot be compared (output bytes, below, can).
            snaplen = s.script.meta.get("snaplen")
            why = (f"{ev.name} of thread {th.tid} read {rec.total} bytes and the trace holds the first "
                   f"{len(data)} ({cut_by(len(data), snaplen)}): replay stops there; "
                   f"{snaplen_remedy(s.script.all_events, snaplen)}")
            s.report.not_compared.append(why)
            raise Stop(StepResult(Status.EXITED, why))
        if k == Kind.IOV_OUT:
            cnt = capacity(sc, i, args) or 0
            iov = read_iov(n.pid, addr, cnt // 16)
            check_iov(s, n, th, ev, a, iov, len(data))
            iov_plan.append((iov, data))
            continue
        if k == Kind.MSG_OUT:
            _plan_msg_out(s, n, th, ev, i, a, plan, iov_plan)
            continue
        cap = capacity(sc, i, args, n.pid)
        if cap is None:
            continue
        if k == Kind.SOCKADDR_OUT:
            cap = min(cap, SOCKADDR_MAX)
        elif a.rule != Rule.DEREF and len(data) > cap:
            too_long(s, th, ev, a, len(data), cap)
        plan.append((addr, data[:cap]))
    if not plan and not iov_plan:
        return
    s.gone_check(n)  # the task is still the one the notification names (and so were our reads)
    for addr, data in plan:
        notify.write_mem(n.pid, addr, data)
        s.report.substituted_bytes += len(data)
    for iov, data in iov_plan:
        s.report.substituted_bytes += scatter(n.pid, iov, data)


#: Calls whose buffer's size and direction come with a request argument (fcntl, prctl,
#: ptrace; ioctl has its own handler): nr -> (request argument, buffer argument).
REQUEST_ARGS = {schema.by_name(name).nr: (r, b) for name, (r, b, _t) in flagsets.REQUEST_BUFFERS.items()
                if name != "ioctl"}


def _plan_request(s: ReplaySession, n: Notif, th: Thread, ev: Any, sc: schema.Syscall,
                  plan: list[tuple[int, bytes]]) -> None:
    """The out-buffer of a request the schema sizes (F_GETLK's struct flock, PR_GET_NAME's
    name, PTRACE_GETREGS's registers): the bytes the kernel wrote, from the recording."""
    ra, ba = REQUEST_ARGS[sc.nr]
    req = n.args[ra] & 0xFFFFFFFF
    want = schema.REQUEST_BUFFERS.get((sc.nr, req))
    if want is not None and want[0] == "sub":   # the next argument picks the buffer (PR_SET_MM)
        subw = schema.REQUEST_SUB_BUFFERS.get((sc.nr, req, n.args[ra + 1] & 0xFFFF))
        want, ba = ((subw[0], subw[1]), subw[2]) if subw is not None else (None, ba)
    if want is not None and want[0] == "iov" and ev.ret >= 0 and n.args[ba]:
        plan_iovec(s, n, th, ev, sc.args[ba], ba, want[1], plan)   # PTRACE_GETREGSET
        return
    if want is None or want[0] not in ("out", "inout", "outret", "ret") or ev.ret < 0 or not n.args[ba]:
        return
    cap = want[1]
    if want[0] == "ret":
        # As many bytes as the call returns (syslog READ_ALL), within the tracee's size argument.
        j = _ret_size_arg(sc, ba)
        room = n.args[j] & 0xFFFFFFFF if j is not None else 0
        if ev.ret > room:
            s.refuse(ev, th.tid, "return value larger than the call's size argument",
                     f"returns {ev.ret} where the tracee's {sc.args[j].name if j is not None else 'size'} "
                     f"argument is {room}")
        cap = ev.ret
    elif want[0] == "outret":  # min(return value, the buffer's length in the next argument)
        cap = min(ev.ret, n.args[ba + 1] & 0xFFFFFFFF)
    rec = ev.payloads.get(ba)
    if rec is None:
        return
    if len(rec.data) > cap:
        too_long(s, th, ev, sc.args[ba], len(rec.data), cap)
    plan.append((n.args[ba], rec.data))


def _compare_request_in(s: ReplaySession, n: Notif, th: Thread, ev: Any, sc: schema.Syscall) -> None:
    """The in-buffer a request sizes (landlock_add_rule's rule, F_SETLK's struct flock,
    PR_SET_NAME's name) is compared with the recording like any other input."""
    ra, ba = REQUEST_ARGS[sc.nr]
    want = schema.REQUEST_BUFFERS.get((sc.nr, n.args[ra] & 0xFFFFFFFF))
    rec = ev.payloads.get(ba)
    if want is None or want[0] != "in" or rec is None or not n.args[ba]:
        return
    want_data = rec.data
    req = n.args[ra] & 0xFFFFFFFF
    if (sc.nr, req) in _IN_STRINGS and b"\0" in want_data:
        want_data = want_data[:want_data.index(b"\0") + 1]   # read to its NUL, no further
    got = notify.read_mem(n.pid, n.args[ba], min(len(want_data), want[1]))
    spans = s.script.redacted.get((ev.tid, ev.seq, ba)) if s.script.redacted else None
    if spans:
        got = unmask(got, want_data, spans)
    unread = _IN_UNREAD.get((sc.nr, req))
    if unread:   # padding and ignored fields: the program's stack garbage, not an input
        got, want_data = _blank(got, unread), _blank(want_data, unread)
    s.report.compared_bytes += len(got) - sum(min(e, len(got)) - min(b, len(got)) for b, e in unread or ())
    if got != want_data:
        s.diverge("payload", f"{ev.name} of thread {th.tid}: the {sc.args[ba].name} bytes differ from "
                   "the recording", th, ev, n, payload_diff(want_data, got))


_IN_UNREAD = {(schema.by_name(name).nr, req): r for (name, req), r in flagsets.REQUEST_IN_UNREAD.items()}
_IN_STRINGS = frozenset((schema.by_name(name).nr, req) for name, req in flagsets.REQUEST_IN_STRINGS)


def _blank(data: bytes, ranges: tuple[tuple[int, int], ...]) -> bytes:
    b = bytearray(data)
    for start, end in ranges:
        b[start:end] = bytes(len(b[start:end]))
    return bytes(b)


NR_SETSOCKOPT = schema.by_name("setsockopt").nr


def _plan_pointed(s: ReplaySession, n: Notif, th: Thread, ev: Any, sc: schema.Syscall,
                  plan: list[tuple[int, bytes]]) -> None:
    """The array a setsockopt option's structure points at, filled by the kernel
    (IPT_SO_SET_REPLACE's counters): written where the tracee's own structure points,
    at most as many elements as it says."""
    rec = ev.payloads.get(3 | (Sub.POINTED << 4))
    want = schema.SOCKOPT_POINTED.get((n.args[1] & 0xFFFFFFFF, n.args[2] & 0xFFFFFFFF))
    if rec is None or want is None or ev.ret != 0 or not n.args[3]:
        return
    count_off, ptr_off, elem = want
    cnt = _U32.unpack(notify.read_mem(n.pid, n.args[3] + count_off, 4))[0]
    ptr = struct.unpack("<Q", notify.read_mem(n.pid, n.args[3] + ptr_off, 8))[0]
    if not ptr:
        return
    if len(rec.data) > cnt * elem:
        too_long(s, th, ev, sc.args[3], len(rec.data), cnt * elem)
    plan.append((ptr, rec.data))


def check_iov(s: ReplaySession, n: Notif, th: Thread, ev: Any, a: Any, iov: list[tuple[int, int]],
               have: int) -> None:
    """Refuse a payload or a byte count larger than the tracee's iovec array holds."""
    room = sum(ln for _b, ln in iov)
    if have > room:
        too_long(s, th, ev, a, have, room)
    tf = plan_of(SC[ev.nr]).trunc_flags
    if ev.ret > room and not (tf >= 0 and n.args[tf] & MSG_TRUNC):
        s.refuse(ev, th.tid, "return value larger than the call's buffers",
                 f"returns {ev.ret} where the tracee's {a.name} holds {room} bytes")


def _plan_msg_out(s: ReplaySession, n: Notif, th: Thread, ev: Any, i: int, a: Any, plan: list,
                  iov_plan: list) -> None:
    pid, addr = n.pid, n.args[i]
    name, namelen, iov, iovlen, control, controllen, _f = _MSGHDR.unpack(
        notify.read_mem(pid, addr, _MSGHDR.size))
    data = ev.payloads.get(i)
    vec = read_iov(pid, iov, iovlen)
    check_iov(s, n, th, ev, a, vec, len(data.data) if data is not None else 0)
    if data is not None:
        iov_plan.append((vec, data.data))
    nm = ev.payloads.get(i | (Sub.NAME << 4))
    if nm is not None and name:
        plan.append((name, nm.data[:min(namelen, SOCKADDR_MAX)]))
    ctl = ev.payloads.get(i | (Sub.CONTROL << 4))
    if ctl is not None and control:
        plan.append((control, ctl.data[:controllen]))
    hdr = ev.payloads.get(i | (Sub.HEADER << 4))
    if hdr is not None and len(hdr.data) >= _MSGHDR.size:
        _n, rnamelen, _i, _il, _c, rcontrollen, rflags = _MSGHDR.unpack_from(hdr.data)
        plan.append((addr + 8, _U32.pack(min(rnamelen, namelen))))
        plan.append((addr + 40, struct.pack("<Q", min(rcontrollen, controllen))))
        plan.append((addr + 48, struct.pack("<i", rflags)))



def show_writes(s: ReplaySession, n: Notif, ev: Any, sc: schema.Syscall) -> None:
    if not s.opts.show_output or ev.ret <= 0 or not plan_of(sc).shows:
        return
    th = s.threads.get(n.pid)
    which = s.console.get(th.fdt, {}).get(s32(n.args[0])) if th is not None else None
    if which is None:
        return
    fd = which
    a = sc.args[1] if len(sc.args) > 1 else None
    if a is None:
        return
    try:
        if a.kind == Kind.BUF_IN:
            s.show(fd, notify.read_mem(n.pid, n.args[1], min(ev.ret, n.args[2] & 0xFFFFFFFF, MAX_INPUT)))
        elif a.kind == Kind.IOV_IN:
            s.show(fd, gather(n.pid, read_iov(n.pid, n.args[1], n.args[2] & 0xFFFFFFFF), ev.ret))
    except MemoryFault:
        pass
