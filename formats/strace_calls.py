"""Per-syscall argument layouts of ``dr show``: calls whose printed arguments
depend on other arguments, as strace's own decoders print them (futex, fcntl,
clone, socket options, ...). Each takes the :class:`dr.formats.strace_format.Formatter`
formatting the line and returns the argument texts, or None for the declared layout.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from dr import schema
from dr.formats.strace_decode import REQUEST_DECODERS, _clone_flags, _dec_int, _enum, _ptr, format_flags, quote
from dr.formats.trace import Event
from dr.schema import Sub
from dr.schema import s32 as _s32

if TYPE_CHECKING:   # strace_format imports this module: the Formatter type only, never at run time
    from dr.formats.strace_format import Formatter

__all__ = ["SPECIAL"]

_AF_INET, _AF_INET6 = 2, 10
_FUTEX_PRIVATE, _FUTEX_CLOCK_REALTIME = 128, 256
#: futex(2) commands -> the arguments after (uaddr, op) strace prints for them
#: (kernel/futex/syscalls.c; strace futex.c): val, utime/val2, uaddr2, val3.
_FUTEX_ARGS = {
    "FUTEX_WAIT": ("val", "utime"), "FUTEX_WAKE": ("val",), "FUTEX_FD": ("val",),
    "FUTEX_REQUEUE": ("val", "val2", "uaddr2"),
    "FUTEX_CMP_REQUEUE": ("val", "val2", "uaddr2", "val3"),
    "FUTEX_CMP_REQUEUE_PI": ("val", "val2", "uaddr2", "val3"),
    "FUTEX_WAKE_OP": ("val", "val2", "uaddr2", "val3"),
    "FUTEX_LOCK_PI": ("utime",), "FUTEX_LOCK_PI2": ("utime",),
    "FUTEX_UNLOCK_PI": (), "FUTEX_TRYLOCK_PI": (),
    "FUTEX_WAIT_BITSET": ("val", "utime", "bitset"), "FUTEX_WAKE_BITSET": ("val", "bitset"),
    "FUTEX_WAIT_REQUEUE_PI": ("val", "utime", "uaddr2"),
}


# --------------------------------------------------------------------------- per-syscall layouts
# Calls whose printed arguments depend on other arguments (strace's own decoders).


def _sp_futex(f: Formatter, ev: Event, sc) -> list[str] | None:
    a = ev.args
    op = a[1] & 0xFFFFFFFF
    cmd = schema.ENUMS["futex_op"].get(op & 0x7F)
    if cmd is None:
        return None  # unknown command: every argument as declared
    name = cmd + ("_PRIVATE" if op & _FUTEX_PRIVATE else "")
    if op & _FUTEX_CLOCK_REALTIME:
        name += "|FUTEX_CLOCK_REALTIME"
    if op & ~(0x7F | _FUTEX_PRIVATE | _FUTEX_CLOCK_REALTIME):
        name += f"|{hex(op & ~(0x7F | _FUTEX_PRIVATE | _FUTEX_CLOCK_REALTIME))}"
    out = [_ptr(a[0]), name]
    for what in _FUTEX_ARGS[cmd]:
        if what == "val":
            out.append(str(_s32(a[2])))
        elif what == "utime":
            out.append(_ptr(a[3]))
        elif what == "val2":
            out.append(str(a[3] & 0xFFFFFFFF))
        elif what == "uaddr2":
            out.append(_ptr(a[4]))
        elif what == "val3":
            out.append(str(_s32(a[5])))
        elif what == "bitset":
            b = a[5] & 0xFFFFFFFF
            out.append("FUTEX_BITSET_MATCH_ANY" if b == 0xFFFFFFFF else hex(b))
    return out


def _sp_arch_prctl(f: Formatter, ev: Event, sc) -> list[str]:
    opt = _enum(ev.args[0] & 0xFFFFFFFF, "arch_prctl")
    if opt == "ARCH_GET_CPUID":  # takes no second argument
        return [opt]
    return [opt, _ptr(ev.args[1])]


def _sp_socket(f: Formatter, ev: Event, sc) -> list[str]:
    out = [f._arg(ev, sc, i, a) for i, a in enumerate(sc.args)]
    if len(out) > 2 and _s32(ev.args[0]) in (_AF_INET, _AF_INET6):
        out[2] = _enum(ev.args[2] & 0xFFFFFFFF, "ipproto")  # 0 is IPPROTO_IP there
    return out


def _sp_rseq(f: Formatter, ev: Event, sc) -> list[str]:
    a = ev.args  # strace prints rseq_len and the signature in hex
    return [_ptr(a[0]), hex(a[1] & 0xFFFFFFFF), str(_s32(a[2])), hex(a[3] & 0xFFFFFFFF)]


def _sp_getrandom(f: Formatter, ev: Event, sc) -> list[str]:
    out = [f._arg(ev, sc, i, a) for i, a in enumerate(sc.args)]
    p = ev.payloads.get(0)
    if p is not None:  # random bytes: strace prints them in hex
        out[0] = quote(p.data, f.opts.strsize, 2, p.truncated)
    return out


def _sp_getdents(f: Formatter, ev: Event, sc) -> list[str]:
    out = [f._arg(ev, sc, i, a) for i, a in enumerate(sc.args)]
    p = ev.payloads.get(1)
    if ev.ret >= 0 and (p is not None or ev.ret == 0):
        n, off, data = 0, 0, p.data if p is not None else b""
        while off + 19 <= len(data):  # struct linux_dirent64: d_reclen (u16) at offset 16
            rl = struct.unpack_from("<H", data, off + 16)[0]
            if rl < 19:
                break
            n += 1
            off += rl
        more = "+" if p is not None and p.truncated else ""
        out[1] = f"{_ptr(ev.args[1])} /* {n}{more} entries */"
    return out


def _sp_statx(f: Formatter, ev: Event, sc) -> list[str]:
    out = [f._arg(ev, sc, i, a) for i, a in enumerate(sc.args)]
    fl = ev.args[2] & 0xFFFFFFFF
    if not fl & 0x6000:  # AT_STATX_SYNC_TYPE == 0: the default, named by strace
        rest = format_flags(fl, "at")
        out[2] = "AT_STATX_SYNC_AS_STAT" + ("" if rest == "0" else "|" + rest)
    return out


def _request_arg(ev: Event, req: str, slot: int) -> str | None:
    """The buffer of a request-sized argument, ``before => after`` for value-result ones."""
    dec = REQUEST_DECODERS.get(req, _dec_int)
    p = ev.payloads.get(slot)
    entry = ev.payloads.get(slot | Sub.ENTRY << 4)
    before = dec(entry.data) if entry is not None else None
    after = dec(p.data) if p is not None else None
    if before and after and before != after:
        return f"{before} => {after}"
    return before or after


#: fcntl(2) commands that take no third argument (strace prints two).
_FCNTL_NOARG = frozenset({"F_GETFD", "F_GETFL", "F_GETOWN", "F_GETSIG", "F_GETLEASE",
                          "F_GETPIPE_SZ", "F_GET_SEALS"})


def _sp_fcntl(f: Formatter, ev: Event, sc) -> list[str]:
    cmd = _enum(ev.args[1] & 0xFFFFFFFF, "fcntl")
    out = [f._arg(ev, sc, 0, sc.args[0]), cmd]
    v = ev.args[2]
    if cmd in _FCNTL_NOARG:
        return out
    if cmd == "F_SETFD":
        out.append(format_flags(v & 0xFFFFFFFF, "fd_flags"))
    elif cmd == "F_SETFL":
        out.append(format_flags(v & 0xFFFFFFFF, "open", True))
    elif cmd in ("F_DUPFD", "F_DUPFD_CLOEXEC", "F_SETOWN", "F_SETSIG", "F_SETPIPE_SZ"):
        out.append(str(_s32(v)))
    else:
        out.append(_request_arg(ev, cmd, 2) or _ptr(v))
    return out


def _ret_fcntl(ev: Event) -> str | None:
    """fcntl's decoded results: ``0x1 (flags FD_CLOEXEC)``, ``0x8002 (flags O_RDWR|O_LARGEFILE)``."""
    cmd = _enum(ev.args[1] & 0xFFFFFFFF, "fcntl")
    if ev.ret <= 0 or cmd not in ("F_GETFD", "F_GETFL"):
        return None
    names = format_flags(ev.ret, "fd_flags") if cmd == "F_GETFD" else format_flags(ev.ret, "open", True)
    return f"{hex(ev.ret)} (flags {names})"


def _sp_ioctl(f: Formatter, ev: Event, sc) -> list[str] | None:
    req = _enum(ev.args[1] & 0xFFFFFFFF, "ioctl")
    if req in ("FIOCLEX", "FIONCLEX"):  # no argument
        return [f._arg(ev, sc, 0, sc.args[0]), req]
    shown = _request_arg(ev, req, 2)
    if shown is None:
        return None
    return [f._arg(ev, sc, 0, sc.args[0]), req, shown]


def _sp_prctl(f: Formatter, ev: Event, sc) -> list[str]:
    out = [f._arg(ev, sc, i, a) for i, a in enumerate(sc.args)]
    shown = _request_arg(ev, out[0], 1) if 1 in ev.payloads else None
    if shown is not None:
        out[1] = shown
    return out


def _sp_getcwd(f: Formatter, ev: Event, sc) -> list[str]:
    out = [f._arg(ev, sc, i, a) for i, a in enumerate(sc.args)]
    p = ev.payloads.get(0)
    if p is not None:  # a path: whole, without its NUL
        data = p.data.split(b"\0", 1)[0]
        out[0] = quote(data, len(data), f.opts.xflag)
    return out


def _sp_clone(f: Formatter, ev: Event, sc) -> list[str]:
    a = ev.args  # x86_64 order: flags, newsp, parent_tidptr, child_tidptr, tls
    fl = a[0]
    out = [f"child_stack={_ptr(a[1])}", f"flags={_clone_flags(fl)}"]
    if fl & (0x100000 | 0x1000):  # CLONE_PARENT_SETTID | CLONE_PIDFD
        out.append(f"parent_tid={_ptr(a[2])}")
    if fl & (0x1000000 | 0x200000):  # CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID
        out.append(f"child_tidptr={_ptr(a[3])}")
    if fl & 0x80000:  # CLONE_SETTLS
        out.append(f"tls={_ptr(a[4])}")
    return out


def _sp_clone3(f: Formatter, ev: Event, sc) -> list[str]:
    out = [f._arg(ev, sc, i, a) for i, a in enumerate(sc.args)]
    p = ev.payloads.get(0)
    if p is not None and len(p.data) >= 8 and ev.ret > 0 \
            and struct.unpack_from("<Q", p.data)[0] & 0x100000:  # the kernel wrote parent_tid
        out[0] += f" => {{parent_tid=[{ev.ret}]}}"
    return out


def _sp_itimer(f: Formatter, ev: Event, sc) -> list[str]:
    out = [f._arg(ev, sc, i, a) for i, a in enumerate(sc.args)]
    out[0] = _enum(ev.args[0] & 0xFFFFFFFF, "itimer")
    return out


def _sp_madvise(f: Formatter, ev: Event, sc) -> list[str]:
    out = [f._arg(ev, sc, i, a) for i, a in enumerate(sc.args)]
    out[2] = _enum(ev.args[2] & 0xFFFFFFFF, "madvise")
    return out


_SOCKOPT_SETS = {1: "so_opt", 6: "tcp_opt"}  # SOL_SOCKET, SOL_TCP


def _sp_sockopt(f: Formatter, ev: Event, sc) -> list[str]:
    out = [f._arg(ev, sc, i, a) for i, a in enumerate(sc.args)]
    level = ev.args[1] & 0xFFFFFFFF
    if level in _SOCKOPT_SETS:
        out[2] = _enum(ev.args[2] & 0xFFFFFFFF, _SOCKOPT_SETS[level])
    p = ev.payloads.get(3)
    if p is not None and len(p.data) == 4:  # an int option, as strace prints it
        out[3] = f"[{struct.unpack('<i', p.data)[0]}]"
    return out


def _sp_close_range(f: Formatter, ev: Event, sc) -> list[str]:
    a = ev.args  # strace prints the bounds as plain unsigned numbers, never decorated
    return [str(a[0] & 0xFFFFFFFF), str(a[1] & 0xFFFFFFFF), format_flags(a[2] & 0xFFFFFFFF, "close_range")]


SPECIAL = {
    "futex": _sp_futex, "arch_prctl": _sp_arch_prctl, "socket": _sp_socket,
    "socketpair": _sp_socket, "rseq": _sp_rseq, "getrandom": _sp_getrandom,
    "getdents64": _sp_getdents, "statx": _sp_statx, "fcntl": _sp_fcntl, "ioctl": _sp_ioctl,
    "getcwd": _sp_getcwd, "clone": _sp_clone, "clone3": _sp_clone3, "setitimer": _sp_itimer,
    "getitimer": _sp_itimer, "madvise": _sp_madvise, "setsockopt": _sp_sockopt,
    "getsockopt": _sp_sockopt, "close_range": _sp_close_range, "prctl": _sp_prctl,
}
