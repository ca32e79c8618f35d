"""fds passed over unix sockets (SCM_RIGHTS) in strict replay.

recvmsg's control data is written into the tracee from the recording, so the
program reads the fd numbers the kernel gave it at capture. Those numbers must
name real fds in the replayed process too: a later call on one is then matched
and answered like any other call on an fd (close, fstat, dup), and a call that
runs natively (mmap, fcntl's native cases) finds an fd instead of EBADF. Each
gets a stand-in (/dev/null, as for other fd-creating calls whose object replay
does not rebuild), installed with SECCOMP_IOCTL_NOTIF_ADDFD before the answer.
The control bytes are untrusted: a malformed header ends the walk, an absurd fd
number stops replay (refused), never an out-of-range install."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from dr.replay.notify import Notif
from dr.replay.strict.core import Thread
from dr.schema import Sub

if TYPE_CHECKING:
    from dr.replay.strict.session import ReplaySession

__all__ = ["passed_fds", "install_passed_fds"]

SOL_SOCKET = 1
SCM_RIGHTS = 1
MSG_CMSG_CLOEXEC = 0x40000000
_CMSG = struct.Struct("<QiI")   # struct cmsghdr: cmsg_len (size_t), cmsg_level, cmsg_type
MAX_FD = 1 << 20


def passed_fds(control: bytes) -> list[int]:
    """The fd numbers in the SCM_RIGHTS messages of recorded control data."""
    out: list[int] = []
    off = 0
    while off + _CMSG.size <= len(control):
        clen, level, typ = _CMSG.unpack_from(control, off)
        if clen < _CMSG.size or off + clen > len(control):
            break   # malformed or cut (MSG_CTRUNC): nothing more to trust
        if level == SOL_SOCKET and typ == SCM_RIGHTS:
            body = control[off + _CMSG.size:off + clen]
            out.extend(struct.unpack_from(f"<{len(body) // 4}i", body))
        off += (clen + 7) & ~7   # CMSG_ALIGN
    return out


def install_passed_fds(s: ReplaySession, n: Notif, th: Thread, ev: Any, msg_arg: int, flags: int) -> None:
    """Install stand-ins at the fd numbers recvmsg received at capture (before its answer)."""
    ctl = ev.payloads.get(msg_arg | (Sub.CONTROL << 4))
    if ctl is None or ev.ret < 0:
        return
    fds = passed_fds(ctl.data)
    for fd in fds:
        if not 0 <= fd < MAX_FD:
            s.refuse(ev, th.tid, "absurd fd number", f"passes an absurd fd number {fd} (SCM_RIGHTS)")
    cloexec = bool(flags & MSG_CMSG_CLOEXEC)
    for fd in fds:
        if s.sb.listener.addfd(n.id, s.devnull, fd, cloexec=cloexec) is None:  # type: ignore[union-attr]
            return   # the call was interrupted: it is notified again
        s.set_console(th, fd, None)
        own = s.owned.get(th.host_tgid)
        if own is not None:
            own.discard(fd)
