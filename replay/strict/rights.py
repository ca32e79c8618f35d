"""fds passed over unix sockets (SCM_RIGHTS) in strict replay.

recvmsg's control data is written into the tracee from the recording, so the
program reads the fd numbers the kernel gave it at capture. Those numbers must
name real fds in the replayed process too: a later call on one is then matched
and answered like any other call on an fd (close, fstat, dup), and a call that
runs natively (mmap, fcntl's native cases) finds an fd instead of EBADF. Each
gets a stand-in (/dev/null, as for other fd-creating calls whose object replay
does not rebuild), installed with SECCOMP_IOCTL_NOTIF_ADDFD before the answer.
An fd whose I/O replay runs natively (an owned file: /proc/PID/mem of a replayed
process, a memfd, a file of the file model) would lose that on the way, so a
sendmsg passing one takes a duplicate of the sender's real object (pidfd_getfd),
and the recvmsg that receives as many fds installs it instead, owned again: a
write through the received fd then changes what it changed at capture.
Sends are matched to receives in order (the first held send with the same count
of fds); a wrong pairing hands a different object, which the next compared call
on it shows as a divergence.
The control bytes are untrusted: a malformed header ends the walk, an absurd fd
number stops replay (refused), never an out-of-range install."""

from __future__ import annotations

import os
import struct
from typing import TYPE_CHECKING, Any

from dr.replay import notify
from dr.replay.notify import Notif
from dr.replay.strict.core import Thread
from dr.schema import Sub

if TYPE_CHECKING:
    from dr.replay.strict.session import ReplaySession

__all__ = ["passed_fds", "install_passed_fds", "hold_sent_fds", "drop_held"]

SOL_SOCKET = 1
SCM_RIGHTS = 1
MSG_CMSG_CLOEXEC = 0x40000000
_CMSG = struct.Struct("<QiI")   # struct cmsghdr: cmsg_len (size_t), cmsg_level, cmsg_type
MAX_FD = 1 << 20
MAX_HELD = 64   # sends whose receive never came: the oldest are dropped (their fds closed)


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
    held = _take_held(s, len(fds))
    for i, fd in enumerate(fds):
        src = held[i] if held is not None and held[i] >= 0 else s.devnull
        if s.sb.listener.addfd(n.id, src, fd, cloexec=cloexec) is None:  # type: ignore[union-attr]
            # The call was interrupted: it is notified again, and takes the objects then.
            if held is not None:
                s.held_fds.appendleft(held)
            return
        s.set_console(th, fd, None)
        own = s.owned.get(th.host_tgid)
        if own is not None:
            own.discard(fd)
        if src != s.devnull:
            s.owned.setdefault(th.host_tgid, set()).add(fd)
    if held is not None:
        _close(held)


def hold_sent_fds(s: ReplaySession, th: Thread, ev: Any, msg_arg: int) -> None:
    """Keep duplicates of the owned fds a successful sendmsg passes (SCM_RIGHTS), in order,
    for the recvmsg that receives them. The recorded control data names the fds: the
    sender's fds are at their recorded numbers, so they name the same objects here."""
    ctl = ev.payloads.get(msg_arg | (Sub.CONTROL << 4))
    if ctl is None or ev.ret < 0:
        return
    fds = passed_fds(ctl.data)
    if not fds:
        return
    pidfd = s._pidfd(th.host_tgid)
    objs: list[int] = []
    for fd in fds:
        dup = -1
        if pidfd is not None and 0 <= fd < MAX_FD and s.is_owned(th, fd):
            try:
                dup = notify.pidfd_getfd(pidfd, fd)
            except OSError:
                dup = -1
        objs.append(dup)
    s.held_fds.append(objs)
    while len(s.held_fds) > MAX_HELD:
        _close(s.held_fds.popleft())


def drop_held(s: ReplaySession) -> None:
    """Close the duplicates no receive took (end of the session)."""
    while s.held_fds:
        _close(s.held_fds.popleft())


def _take_held(s: ReplaySession, count: int) -> list[int] | None:
    for i, objs in enumerate(s.held_fds):
        if len(objs) == count:
            del s.held_fds[i]
            if any(o >= 0 for o in objs):
                return objs
            return None   # nothing owned was passed: stand-ins, as for any received fd
    return None


def _close(objs: list[int]) -> None:
    for o in objs:
        if o >= 0:
            try:
                os.close(o)
            except OSError:
                pass
