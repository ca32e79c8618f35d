"""The value decoders of ``dr show``: strings, flags, enums and kernel structures as strace prints them.

Split from :mod:`dr.formats.strace` (which re-exports :func:`quote`,
:func:`format_flags` and :func:`decode_sockaddr`). Structure layouts are
x86_64 and cite their uapi header.
"""

from __future__ import annotations

import signal as _signal
import struct

from dr import schema

__all__ = ["quote", "format_flags", "decode_sockaddr", "STRUCTS"]

# --------------------------------------------------------------------------- strings


def quote(data: bytes, strsize: int, xflag: int = 0, more: bool = False) -> str:
    """``data`` as a strace string literal, cut at ``strsize`` bytes.

    ``more``: the bytes continue beyond ``data`` (a truncated capture), so
    ``...`` follows even when nothing was cut here.
    """
    cut = len(data) > strsize
    if cut:
        data = data[:strsize]
    usehex = xflag > 1
    if xflag == 1:
        for c in data:
            if c > 0x7E or (c < 0x20 and not 9 <= c <= 13):
                usehex = True
                break
    if usehex:
        body = "".join(f"\\x{c:02x}" for c in data)
    else:
        out = []
        n = len(data)
        for i, c in enumerate(data):
            if c == 0x22:
                out.append('\\"')
            elif c == 0x5C:
                out.append("\\\\")
            elif 0x20 <= c <= 0x7E:
                out.append(chr(c))
            elif c == 10:
                out.append("\\n")
            elif c == 9:
                out.append("\\t")
            elif c == 13:
                out.append("\\r")
            elif c == 12:
                out.append("\\f")
            elif c == 11:
                out.append("\\v")
            elif i + 1 < n and 0x30 <= data[i + 1] <= 0x37:
                out.append(f"\\{c:03o}")  # a following octal digit forces three digits
            else:
                out.append(f"\\{c:o}")
        body = "".join(out)
    return f'"{body}"' + ("..." if cut or more else "")


def format_flags(value: int, setname: str, accmode: bool = False) -> str:
    """Bit flags by name (``O_RDWR|O_CREAT``) in the set's order; unknown bits in hex.

    A value of 0 prints the set's name for 0 when it has one (``F_OK``), else
    ``0``. A multi-bit name (O_SYNC, STATX_BASIC_STATS) stands for all its bits
    and hides the names of its parts. ``accmode``: the value is open(2) flags,
    whose low two bits are the access mode (O_RDONLY is 0 and is printed).
    """
    table = schema.FLAGS.get(setname, {})
    parts = []
    rest = value
    if accmode:
        acc = value & 3
        name = table.get(acc)
        if name:
            parts.append(name)
            rest &= ~3
    elif setname == "sock_type":  # the low nibble is the socket type, an enum
        base = value & 0xF
        name = schema.ENUMS["sock_type_base"].get(base)
        if name:
            parts.append(name)
            rest &= ~0xF
    elif value == 0:
        return table.get(0, "0")
    hits = [(bit, name) for bit, name in table.items() if bit and rest & bit == bit]
    covered = 0
    for bit, name in hits:
        if any(b != bit and b & bit == bit for b, _ in hits):
            continue  # part of a larger name that matched (O_DSYNC within O_SYNC)
        parts.append(name)
        covered |= bit
    rest &= ~covered
    if rest:
        parts.append(hex(rest))
    return "|".join(parts) if parts else "0"


def _enum(value: int, setname: str) -> str:
    name = schema.ENUMS.get(setname, {}).get(value)
    if name:
        return name
    return hex(value) if setname == "ioctl" else str(value)


def _sig(v: int) -> str:
    try:
        return _signal.Signals(v).name
    except ValueError:
        return str(v)


def _ptr(v: int) -> str:
    return "NULL" if v == 0 else hex(v)


# --------------------------------------------------------------------------- structures
# Layouts: x86_64 kernel uapi headers named at each decoder.

_STAT = struct.Struct("<QQQIII4xQq")  # asm/stat.h struct stat: dev ino nlink mode uid gid rdev size
_STATX = struct.Struct("<IIQIIIH2xQQ")  # linux/stat.h struct statx: mask blksize attrs nlink uid gid mode ino size
_TS = struct.Struct("<qq")
_SOCKADDR_IN = struct.Struct("!H4s")  # linux/in.h: port and address in network order
_EPOLL = struct.Struct("<IQ")  # linux/eventpoll.h: packed on x86_64, 12 bytes
_POLLFD = struct.Struct("<ihh")  # asm-generic/poll.h


def _mode(m: int) -> str:
    fmt = schema.ENUMS["s_ifmt"].get(m & 0o170000)
    perm = f"0{m & 0o7777:03o}"
    return f"{fmt}|{perm}" if fmt else perm


def _makedev(dev: int) -> str:
    # glibc's gnu_dev_major/minor encoding (sys/sysmacros.h)
    major = ((dev >> 8) & 0xFFF) | ((dev >> 32) & ~0xFFF & 0xFFFFFFFF)
    minor = (dev & 0xFF) | ((dev >> 12) & ~0xFF & 0xFFFFFFFF)
    return f"makedev(0x{major:x}, 0x{minor:x})"


def _dec_stat(b: bytes) -> str | None:
    if len(b) < _STAT.size:
        return None
    _dev, _ino, _nlink, mode, _uid, _gid, rdev, size = _STAT.unpack_from(b)
    if mode & 0o170000 in (0o020000, 0o060000):
        return f"{{st_mode={_mode(mode)}, st_rdev={_makedev(rdev)}, ...}}"
    return f"{{st_mode={_mode(mode)}, st_size={size}, ...}}"


def _dec_statx(b: bytes) -> str | None:
    if len(b) < _STATX.size:
        return None
    mask, _bs, attr, _nlink, _uid, _gid, mode, _ino, size = _STATX.unpack_from(b)
    return (f"{{stx_mask={format_flags(mask, 'statx_mask')}, "
            f"stx_attributes={format_flags(attr, 'statx_attr')}, "
            f"stx_mode={_mode(mode)}, stx_size={size}, ...}}")


def _dec_timespec(b: bytes) -> str | None:
    if len(b) < 16:
        return None
    s, ns = _TS.unpack_from(b)
    return f"{{tv_sec={s}, tv_nsec={ns}}}"


def _dec_timeval(b: bytes) -> str | None:
    if len(b) < 16:
        return None
    s, us = _TS.unpack_from(b)
    return f"{{tv_sec={s}, tv_usec={us}}}"


def _dec_int(b: bytes) -> str | None:
    return f"[{struct.unpack_from('<i', b)[0]}]" if len(b) >= 4 else None


def _dec_uint(b: bytes) -> str | None:
    return f"[{struct.unpack_from('<I', b)[0]}]" if len(b) >= 4 else None


def _dec_i64(b: bytes) -> str | None:
    return f"[{struct.unpack_from('<q', b)[0]}]" if len(b) >= 8 else None


def _rlim(v: int) -> str:
    # strace's print_rlim64_t: multiples of 1024 as N*1024
    if v == (1 << 64) - 1:
        return "RLIM64_INFINITY"
    return f"{v // 1024}*1024" if v > 1024 and v % 1024 == 0 else str(v)


def _dec_rlimit(b: bytes) -> str | None:
    if len(b) < 16:  # linux/resource.h struct rlimit64
        return None
    cur, mx = struct.unpack_from("<QQ", b)
    return f"{{rlim_cur={_rlim(cur)}, rlim_max={_rlim(mx)}}}"


def _dec_wait_status(b: bytes) -> str | None:
    """wait4's int status as strace prints it (the W* macros of sys/wait.h)."""
    if len(b) < 4:
        return None
    st = struct.unpack_from("<i", b)[0] & 0xFFFFFFFF
    sig = st & 0x7F
    if sig == 0:
        s = f"WIFEXITED(s) && WEXITSTATUS(s) == {(st >> 8) & 0xFF}"
    elif st == 0xFFFF:
        s = "WIFCONTINUED(s)"
    elif sig == 0x7F:
        s = f"WIFSTOPPED(s) && WSTOPSIG(s) == {_sig((st >> 8) & 0xFF)}"
        if st >> 16:
            s += f" && (s >> 16) == {st >> 16}"
    else:
        s = f"WIFSIGNALED(s) && WTERMSIG(s) == {_sig(sig)}"
        if st & 0x80:
            s += " && WCOREDUMP(s)"
    return f"[{{{s}}}]"


def _dec_rusage(b: bytes) -> str | None:
    if len(b) < 32:  # linux/resource.h struct rusage: ru_utime, ru_stime (timeval) first
        return None
    us, uu, ss, su = struct.unpack_from("<qqqq", b)
    return (f"{{ru_utime={{tv_sec={us}, tv_usec={uu}}}, "
            f"ru_stime={{tv_sec={ss}, tv_usec={su}}}, ...}}")


def _dec_cap_header(b: bytes) -> str | None:
    if len(b) < 8:  # linux/capability.h struct __user_cap_header_struct: u32 version, int pid
        return None
    ver, pid = struct.unpack_from("<Ii", b)
    return f"{{version={schema.ENUMS['cap_version'].get(ver, hex(ver))}, pid={pid}}}"


def _caps(mask: int) -> str:
    if not mask:
        return "0"
    names = schema.ENUMS["cap"]
    parts = [f"1<<{names[i]}" for i in range(64) if mask >> i & 1 and i in names]
    rest = mask & ~sum(1 << i for i in names)
    if rest:
        parts.append(hex(rest))
    return "|".join(parts)


def _dec_cap_data(b: bytes) -> str | None:
    """struct __user_cap_data_struct[2] (version 3): 32-bit halves of each set."""
    if len(b) < 24:
        return None
    e0, p0, i0, e1, p1, i1 = struct.unpack_from("<6I", b)
    return (f"{{effective={_caps(e0 | e1 << 32)}, permitted={_caps(p0 | p1 << 32)}, "
            f"inheritable={_caps(i0 | i1 << 32)}}}")


def _dec_fd_pair(b: bytes) -> str | None:
    if len(b) < 8:
        return None
    a, c = struct.unpack_from("<ii", b)
    return f"[{a}, {c}]"


def _cstr(b: bytes) -> str:
    return b.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")


def _dec_utsname(b: bytes) -> str | None:
    if len(b) < 130:  # linux/utsname.h: six fields of 65 bytes
        return None
    sysname, nodename = _cstr(b[0:65]), _cstr(b[65:130])
    return f'{{sysname="{sysname}", nodename="{nodename}", ...}}'


def decode_sockaddr(b: bytes, strsize: int = 108) -> str:
    """A struct sockaddr as strace prints it (linux/in.h, linux/in6.h, linux/un.h)."""
    if len(b) < 2:
        return "{...}"
    fam = struct.unpack_from("<H", b)[0]
    fname = schema.ENUMS["af"].get(fam, str(fam))
    if fname == "AF_INET" and len(b) >= 8:
        port, addr = _SOCKADDR_IN.unpack_from(b, 2)
        return (f"{{sa_family=AF_INET, sin_port=htons({port}), "
                f'sin_addr=inet_addr("{".".join(str(x) for x in addr)}")}}')
    if fname == "AF_INET6" and len(b) >= 28:
        import ipaddress
        port, flow = struct.unpack_from("!HI", b, 2)
        addr = ipaddress.IPv6Address(b[8:24])
        scope = struct.unpack_from("<I", b, 24)[0]
        return (f"{{sa_family=AF_INET6, sin6_port=htons({port}), sin6_flowinfo=htonl({flow}), "
                f'inet_pton(AF_INET6, "{addr}", &sin6_addr), sin6_scope_id={scope}}}')
    if fname == "AF_UNIX":
        path = b[2:]
        if not path:
            return "{sa_family=AF_UNIX}"
        if path[0] == 0:  # abstract socket: the name may hold NULs
            return f"{{sa_family=AF_UNIX, sun_path=@{quote(path[1:].rstrip(bytes(1)), strsize)}}}"
        return f"{{sa_family=AF_UNIX, sun_path={quote(path.split(bytes(1), 1)[0], strsize)}}}"
    return f"{{sa_family={fname}, ...}}"


def _dec_pollfds(b: bytes, revents: bool, fdtext=str) -> str:
    out = []
    for i in range(0, len(b) - _POLLFD.size + 1, _POLLFD.size):
        fd, ev, rev = _POLLFD.unpack_from(b, i)
        if revents:
            if rev:
                out.append(f"{{fd={fd}, revents={format_flags(rev & 0xFFFF, 'poll')}}}")
        else:
            out.append(f"{{fd={fdtext(fd) if fd >= 0 else fd}, "
                       f"events={format_flags(ev & 0xFFFF, 'poll')}}}")
    return "[" + ", ".join(out) + "]"


def _dec_epoll(b: bytes) -> str:
    out = []
    for i in range(0, len(b) - _EPOLL.size + 1, _EPOLL.size):
        ev, data = _EPOLL.unpack_from(b, i)
        out.append(f"{{events={format_flags(ev, 'epoll_events')}, "
                   f"data={{u32={data & 0xFFFFFFFF}, u64={data}}}}}")
    return "[" + ", ".join(out) + "]"


def _signame_short(n: int) -> str:
    """A signal in a sigset as strace prints it: ``CHLD``, ``RTMIN``, ``RT_3``."""
    if n == 32:
        return "RTMIN"
    if n > 32:
        return f"RT_{n - 32}"
    s = _sig(n)
    return s[3:] if s.startswith("SIG") else s


def _sigset(mask: int, nbits: int = 64) -> str:
    """A kernel sigset_t (bit n-1 is signal n): ``[INT CHLD]``, or ``~[...]`` when most are set."""
    sigs = [n for n in range(1, nbits + 1) if mask >> (n - 1) & 1]
    if len(sigs) > nbits // 2:
        rest = [n for n in range(1, nbits + 1) if not mask >> (n - 1) & 1]
        return "~[" + " ".join(_signame_short(n) for n in rest) + "]"
    return "[" + " ".join(_signame_short(n) for n in sigs) + "]"


def _dec_sigset(b: bytes) -> str | None:
    return _sigset(struct.unpack_from("<Q", b)[0]) if len(b) >= 8 else None


def _dec_sigaction(b: bytes) -> str | None:
    """Kernel struct sigaction on x86_64 (arch/x86/include/asm/signal.h: handler, flags,
    restorer, mask) as strace prints it."""
    if len(b) < 32:
        return None
    handler, fl, restorer, mask = struct.unpack_from("<QQQQ", b)
    h = {0: "SIG_DFL", 1: "SIG_IGN"}.get(handler, hex(handler))
    s = f"{{sa_handler={h}, sa_mask={_sigset(mask)}, sa_flags={format_flags(fl & 0xFFFFFFFF, 'sa_flags')}"
    if fl & 0x04000000:
        s += f", sa_restorer={_ptr(restorer)}"
    return s + "}"


def _dec_itimerval(b: bytes) -> str | None:
    if len(b) < 32:  # linux/time.h struct itimerval: two timevals
        return None
    i = _dec_timeval(b[:16])
    v = _dec_timeval(b[16:32])
    return f"{{it_interval={i}, it_value={v}}}"


def _dec_sysinfo(b: bytes) -> str | None:
    if len(b) < 108:  # linux/sysinfo.h struct sysinfo, x86_64 offsets
        return None
    up, l1, l2, l3, tot, free, shared, buf, tswap, fswap = struct.unpack_from("<q9Q", b)
    procs = struct.unpack_from("<H", b, 80)[0]
    thigh, fhigh = struct.unpack_from("<QQ", b, 88)
    unit = struct.unpack_from("<I", b, 104)[0]
    return (f"{{uptime={up}, loads=[{l1}, {l2}, {l3}], totalram={tot}, freeram={free}, "
            f"sharedram={shared}, bufferram={buf}, totalswap={tswap}, freeswap={fswap}, "
            f"procs={procs}, totalhigh={thigh}, freehigh={fhigh}, mem_unit={unit}}}")


def _clone_flags(fl: int) -> str:
    """clone(2) flags; the low byte is the exit signal (strace: ``...|SIGCHLD``)."""
    sig = fl & 0xFF
    parts = []
    rest = fl & ~0xFF
    if rest:
        parts.append(format_flags(rest, "clone"))
    if sig:
        parts.append(_sig(sig))
    return "|".join(parts) if parts else "0"


def _dec_clone_args(b: bytes) -> str | None:
    """linux/sched.h struct clone_args: eleven u64 (88 bytes, CLONE_ARGS_SIZE_VER2)."""
    if len(b) < 64:
        return None
    v = list(struct.unpack_from(f"<{min(len(b), 88) // 8}Q", b)) + [0] * 11
    fl, pidfd, ctid, ptid, esig, stack, ssize, tls, set_tid, set_tid_size, cgroup = v[:11]
    parts = [f"flags={format_flags(fl, 'clone')}"]
    if fl & 0x1000:  # CLONE_PIDFD
        parts.append(f"pidfd={_ptr(pidfd)}")
    if fl & (0x1000000 | 0x200000):  # CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID
        parts.append(f"child_tid={_ptr(ctid)}")
    if fl & 0x100000:  # CLONE_PARENT_SETTID
        parts.append(f"parent_tid={_ptr(ptid)}")
    parts.append(f"exit_signal={_sig(esig) if esig else 0}")
    parts.append(f"stack={_ptr(stack)}")
    parts.append(f"stack_size={hex(ssize)}")
    if fl & 0x80000:  # CLONE_SETTLS
        parts.append(f"tls={_ptr(tls)}")
    if set_tid_size:
        parts.append(f"set_tid={_ptr(set_tid)}, set_tid_size={set_tid_size}")
    if cgroup:
        parts.append(f"cgroup={cgroup}")
    return "{" + ", ".join(parts) + "}"


def _dec_fd_set(b: bytes) -> str | None:
    """select's fd_set (a bit per fd, any length): ``[3 2000]`` as strace prints it."""
    fds = [i * 8 + k for i, byte in enumerate(b) for k in range(8) if byte >> k & 1]
    return "[" + " ".join(map(str, fds)) + "]"


def _dec_itimerspec(b: bytes) -> str | None:
    if len(b) < 32:  # include/uapi/linux/time.h struct itimerspec: two timespecs
        return None
    return f"{{it_interval={_dec_timespec(b[:16])}, it_value={_dec_timespec(b[16:32])}}}"


_LOCK_TYPES = {0: "F_RDLCK", 1: "F_WRLCK", 2: "F_UNLCK"}


def _dec_flock(b: bytes) -> str | None:
    """struct flock (include/uapi/asm-generic/fcntl.h, x86_64: short, short, off_t, off_t, pid_t)."""
    if len(b) < 32:
        return None
    typ, whence, start, length, pid = struct.unpack_from("<hhxxxxqqi", b)
    return (f"{{l_type={_LOCK_TYPES.get(typ, typ)}, l_whence={_enum(whence, 'whence')}, "
            f"l_start={start}, l_len={length}, l_pid={pid}}}")


def _dec_f_owner_ex(b: bytes) -> str | None:
    if len(b) < 8:  # struct f_owner_ex: int type, pid_t pid
        return None
    typ, pid = struct.unpack_from("<ii", b)
    name = {0: "F_OWNER_TID", 1: "F_OWNER_PID", 2: "F_OWNER_PGRP"}.get(typ, str(typ))
    return f"{{type={name}, pid={pid}}}"


def _dec_siginfo(b: bytes) -> str | None:
    """siginfo_t's common head (include/uapi/asm-generic/siginfo.h): signo, errno, code,
    and for SIGCHLD-like codes pid, uid, status."""
    if len(b) < 28:
        return None
    signo, errno_, code, pid, uid, status = struct.unpack_from("<iiixxxxiIi", b)
    if signo == 0:
        return "{}"
    return (f"{{si_signo={_sig(signo)}, si_code={code}, si_errno={errno_}, si_pid={pid}, "
            f"si_uid={uid}, si_status={status}}}")


def _dec_winsize(b: bytes) -> str | None:
    if len(b) < 8:
        return None
    row, col, xp, yp = struct.unpack_from("<HHHH", b)
    return f"{{ws_row={row}, ws_col={col}, ws_xpixel={xp}, ws_ypixel={yp}}}"


def _dec_termios(b: bytes) -> str | None:
    if len(b) < 17:  # struct termios: 4 tcflag_t then c_line
        return None
    i, o, c, l_ = struct.unpack_from("<IIII", b)
    return f"{{c_iflag={i:#o}, c_oflag={o:#o}, c_cflag={c:#o}, c_lflag={l_:#o}, ...}}"


def _dec_ifreq(b: bytes) -> str | None:
    """struct ifreq (include/uapi/linux/if.h): the name, then the union as int and bytes."""
    if len(b) < 20:
        return None
    name = b[:16].split(b"\0", 1)[0]
    val = struct.unpack_from("<i", b, 16)[0]
    return f"{{ifr_name={quote(name, 16)}, ifr_ifru=[{val}] {quote(b[16:40], 24, 1)}}}"


def _dec_cstr16(b: bytes) -> str | None:
    data = b.split(b"\0", 1)[0]
    return quote(data, len(data))


STRUCTS = {
    "stat": _dec_stat, "statx": _dec_statx, "timespec": _dec_timespec,
    "timeval": _dec_timeval, "int": _dec_int, "uint": _dec_uint, "socklen": _dec_uint,
    "loff_t": _dec_i64, "time_t": _dec_i64, "fd_pair": _dec_fd_pair, "utsname": _dec_utsname, "rlimit": _dec_rlimit,
    "wait_status": _dec_wait_status, "rusage": _dec_rusage, "cap_user_header": _dec_cap_header,
    "cap_user_data": _dec_cap_data, "sigset": _dec_sigset, "sigaction": _dec_sigaction,
    "itimerval": _dec_itimerval, "sysinfo": _dec_sysinfo, "clone_args": _dec_clone_args,
    "fd_set": _dec_fd_set, "itimerspec": _dec_itimerspec, "siginfo": _dec_siginfo,
}

#: Buffers sized by a request (ioctl, fcntl, prctl: Rule.REQ) -> their decoder, by request name.
REQUEST_DECODERS = {
    "F_GETLK": _dec_flock, "F_SETLK": _dec_flock, "F_SETLKW": _dec_flock, "F_OFD_GETLK": _dec_flock,
    "F_OFD_SETLK": _dec_flock, "F_OFD_SETLKW": _dec_flock, "F_GETOWN_EX": _dec_f_owner_ex,
    "F_SETOWN_EX": _dec_f_owner_ex, "F_GET_RW_HINT": _dec_i64, "F_SET_RW_HINT": _dec_i64,
    "PR_GET_NAME": _dec_cstr16, "PR_SET_NAME": _dec_cstr16, "PR_GET_TID_ADDRESS": lambda b: (
        f"[{_ptr(struct.unpack_from('<Q', b)[0])}]" if len(b) >= 8 else None),
    "TIOCGWINSZ": _dec_winsize, "TIOCSWINSZ": _dec_winsize, "TCGETS": _dec_termios,
    "TCSETS": _dec_termios, "TCSETSW": _dec_termios, "TCSETSF": _dec_termios, "TCGETS2": _dec_termios,
    **{name: _dec_ifreq for name in ("SIOCGIFNAME", "SIOCGIFFLAGS", "SIOCGIFADDR", "SIOCGIFBRDADDR",
                                     "SIOCGIFNETMASK", "SIOCGIFMTU", "SIOCGIFHWADDR", "SIOCGIFINDEX")},
}
