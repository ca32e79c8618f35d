"""Strict replay's handlers, registered by syscall name.

The schema's REGULAR calls are answered by :func:`regular` from the table
alone (argument kinds, size rules and behaviour flags); each IRREGULAR call
has a handler of its own here, registered with :func:`handles` under its
name, and ``tests/test_schema.py`` checks the two sets are the same. A
handler compares the call's inputs, answers it (substituted or run natively)
and returns False when the notification vanished (the cursor stays).
"""

from __future__ import annotations

import os
import stat as stat_mod
import struct
from typing import TYPE_CHECKING, Any, Callable

from dr import schema
from dr.replay import notify
from dr.replay.divergence import payload_diff
from dr.replay.notify import Notif
from dr.replay.strict import files as fmodel
from dr.replay.strict.core import (AT_FDCWD, CREATES_FD, I32PAIR, NATIVE_ON_OWNED, NR_EXIT_GROUP,
                                   SC, SENDERS, UNSUPPORTED_NRS, Status, StepResult, Stop, Thread, s32)
from dr.replay.strict.procfs import is_proc_dir, nthreads
from dr.replay.strict.rights import hold_sent_fds, install_passed_fds
from dr.replay.strict.substitute import (IOV_MAX, compare_inputs, gather, read_iov, scatter, show_writes,
                                         too_long, write_outputs)
from dr.schema import FdEffect

NR_RECVMSG = schema.by_name("recvmsg").nr
NR_SENDMSG = schema.by_name("sendmsg").nr

if TYPE_CHECKING:
    from dr.replay.strict.session import ReplaySession

__all__ = ["HANDLERS", "BY_NR", "handles", "handler_for", "regular"]

Handler = Callable[["ReplaySession", Notif, Thread, Any, int], bool]
#: syscall name -> its handler (the IRREGULAR calls of the schema)
HANDLERS: dict[str, Handler] = {}
F_DUPFD, F_DUPFD_CLOEXEC = 0, 1030


def handles(*names: str) -> Callable[[Handler], Handler]:
    """Register the decorated function as the handler of the syscalls ``names``."""
    def deco(f: Handler) -> Handler:
        for name in names:
            assert name not in HANDLERS, f"two handlers for {name}"
            schema.by_name(name)  # KeyError for a name the schema does not declare
            HANDLERS[name] = f
        return f
    return deco


def regular(s: ReplaySession, n: Notif, th: Thread, ev: Any, pos: int) -> bool:
    """Table-driven: compare inputs, write recorded outputs, return the recorded value.

    A call the schema says creates an fd gets an object at the recorded number
    (a memfd for memfd_create, else /dev/null), close-on-exec as the schema
    locates the flag; an unsupported call replays a recorded error, else stops."""
    sc = SC.get(ev.nr)
    if sc is None or sc.nr in UNSUPPORTED_NRS:
        if -4095 <= ev.ret < 0:
            return s.reply(n, th, pos, ev.ret)
        s.report.refuse(schema.name_of(ev.nr), th.tid, ev.index, "unsupported syscall")
        raise Stop(StepResult(Status.ERROR, f"replay does not support syscall "
                               f"{schema.name_of(ev.nr)} (recorded as syscall #{ev.index}, thread {th.tid})"))
    compare_inputs(s, n, th, ev, sc)
    if s.opts.show_output:
        show_writes(s, n, ev, sc)
    nr = sc.nr
    if nr in fmodel.MOVE_NRS:
        moved = fmodel.move(s, n, th, ev, pos)
        if moved is not None:
            return moved
    if nr in NATIVE_ON_OWNED:
        own = s.owned.get(th.host_tgid)
        if own and s32(n.args[0]) in own:
            return s.cont(n, th, pos)
    write_outputs(s, n, th, ev, sc)
    if nr == NR_RECVMSG and ev.ret >= 0:
        install_passed_fds(s, n, th, ev, 1, n.args[2])   # SCM_RIGHTS: real fds at the recorded numbers
    if nr == NR_SENDMSG and ev.ret >= 0:
        hold_sent_fds(s, th, ev, 1)   # owned fds passed keep their object for the receiver
    if nr in CREATES_FD and ev.ret >= 0:
        memfd = sc.beh.fd_kind == "memfd"
        src = os.memfd_create("dr-replay", os.MFD_CLOEXEC) if memfd else os.dup(s.devnull)
        try:
            ok = s.addfd_reply(n, th, pos, src, ev.ret, schema.cloexec_of(sc, n.args))
            if ok and memfd:
                # The program makes all of a memfd's content: its I/O runs natively
                # (so mmap, exec and sendfile of it see what was written).
                s.owned.setdefault(th.host_tgid, set()).add(ev.ret)
            if ok and sc.name in ("pidfd_open", "pidfd_getfd"):
                _pidfd_console(s, th, sc.name, n, ev.ret)
            return ok
        finally:
            os.close(src)
    if nr in fmodel.PATH_CALLS and ev.ret >= 0:
        s.files.on_path_call(s, th, ev)   # rename/link/unlink/truncate move names, not data
    if pos in s.script.signals or pos in s.script.proc_signals:
        s.deliver_signals(th, pos)
    return s.listener.reply(n.id, ev.ret)


def _pidfd_console(s: ReplaySession, th: Thread, name: str, n: Notif, fd: int) -> None:
    """pidfd_getfd of another process's stdout/stderr is that console too (its
    bytes are shown with --show-output): remember each pidfd's process, and give
    the fd taken through it the console role it has in that process."""
    if name == "pidfd_open":
        # A child not seen yet (its first call still to come) has the fds it
        # inherited at fork: the caller's own console map stands for it.
        pid = s32(n.args[0])
        s.pidfd_target[(th.host_tgid, fd)] = next(
            (t.host_tgid for t in s.threads.values() if t.rec_tgid == pid and t.host_tgid in s.console),
            th.host_tgid)
        return
    target = s.pidfd_target.get((th.host_tgid, s32(n.args[0])))
    if target is not None:
        s.set_console(th, fd, s.console.get(target, {}).get(s32(n.args[1])))


SECCOMP_SET_MODE_STRICT, SECCOMP_SET_MODE_FILTER = 0, 1
SECCOMP_FILTER_FLAG_NEW_LISTENER = 8
PR_SET_SECCOMP = 22
NR_SECCOMP = schema.by_name("seccomp").nr


@handles("seccomp", "prctl")
def own_filter(s: ReplaySession, n: Notif, th: Thread, ev: Any, pos: int) -> bool:
    """A filter the program installs on itself (seccomp SET_MODE_*, prctl
    PR_SET_SECCOMP) is installed for real: it decides its later calls as it did at
    capture (SECCOMP_RET_ERRNO and RET_TRAP act before anything is recorded or
    notified; the kernel evaluates every filter and the most restrictive action wins
    over dr's notification). It can only restrict the tracee itself. A listener
    filter (its fd is the program's) and every other operation are answered as recorded."""
    op = n.args[0] & 0xFFFFFFFF
    if ev.nr == NR_SECCOMP:
        installs = (op in (SECCOMP_SET_MODE_STRICT, SECCOMP_SET_MODE_FILTER)
                    and not n.args[1] & SECCOMP_FILTER_FLAG_NEW_LISTENER)
    else:
        installs = op == PR_SET_SECCOMP
    if not (installs and ev.ret >= 0):
        return regular(s, n, th, ev, pos)
    sc = SC.get(ev.nr)
    assert sc is not None
    compare_inputs(s, n, th, ev, sc)
    return s.cont(n, th, pos)


@handles("open", "openat", "openat2", "creat")
def open_(s: ReplaySession, n: Notif, th: Thread, ev: Any, pos: int) -> bool:
    sc = SC.get(ev.nr)
    assert sc is not None
    compare_inputs(s, n, th, ev, sc)
    if ev.ret < 0:
        return s.reply(n, th, pos, ev.ret)
    name = sc.name
    if name == "openat2":
        dirfd, path_arg = n.args[0], n.args[1]
        how = ev.payload(2) or b""
        flags = struct.unpack_from("<Q", how)[0] if len(how) >= 8 else 0
    elif name == "openat":
        dirfd, path_arg, flags = n.args[0], n.args[1], n.args[2]
    elif name == "creat":
        dirfd, path_arg, flags = AT_FDCWD, n.args[0], os.O_WRONLY
    else:
        dirfd, path_arg, flags = AT_FDCWD, n.args[0], n.args[1]
    path = notify.read_cstr(n.pid, path_arg) if path_arg else b""
    s.gone_check(n)
    flags &= 0xFFFFFFFF
    fm = s.files
    p = fm.resolve(s, th, dirfd, path)
    node = fm.lookup(p)
    if node is not None and flags & os.O_CREAT and flags & os.O_EXCL:
        node = None   # the recording created it anew: the name we hold is stale
    if node is None and fm.may_model(p) and (
            (flags & fmodel.O_TMPFILE_FULL) == fmodel.O_TMPFILE_FULL or (flags & os.O_CREAT and (
                flags & (os.O_EXCL | os.O_TRUNC) or fmodel.fresh_in_recording(s, th, ev.ret)))):
        # The run makes this file: a node of the file model (one memfd, found again by
        # its names), its I/O native, so reads, mmap, sendfile and exec see its writes.
        node = fm.create("" if flags & fmodel.O_TMPFILE_FULL == fmodel.O_TMPFILE_FULL else p)
    if node is not None:
        src = fm.open_fd(node, flags)
        s.last_open_path = ""
    else:
        src = s.open_source(th, dirfd, path, flags)
    try:
        ok = s.addfd_reply(n, th, pos, src, ev.ret, schema.cloexec_of(sc, n.args, ev.payload(2)))
        if ok and (node is not None or s.last_open_native):
            s.owned.setdefault(th.host_tgid, set()).add(ev.ret)
        if ok and s.last_open_path and (stat_mod.S_ISDIR(os.fstat(src).st_mode)
                                        or is_proc_dir(s.last_open_path)):
            s.dirpaths[(th.host_tgid, ev.ret)] = s.last_open_path  # for later openat(dirfd, ...)
        return ok
    finally:
        os.close(src)


@handles("pipe", "pipe2", "socketpair")
def pipe(s: ReplaySession, n: Notif, th: Thread, ev: Any, pos: int) -> bool:
    """pipe, pipe2, socketpair: two fds at the recorded numbers, written into the tracee."""
    sc = SC.get(ev.nr)
    assert sc is not None
    compare_inputs(s, n, th, ev, sc)
    arg = 3 if sc.name == "socketpair" else 0
    rec = ev.payload(arg)
    if ev.ret < 0 or rec is None or len(rec) < 8:
        return s.reply(n, th, pos, ev.ret)
    if len(rec) > 8:
        too_long(s, th, ev, sc.args[arg], len(rec), 8)
    fds = I32PAIR.unpack_from(rec)
    cloexec = schema.cloexec_of(sc, n.args)
    s.gone_check(n)
    for fd in fds:
        if not 0 <= fd < (1 << 20):
            s.refuse(ev, th.tid, "absurd fd number", f"holds an absurd fd number {fd}")
        if s.sb.listener.addfd(n.id, s.devnull, fd, cloexec=cloexec) is None:  # type: ignore[union-attr]
            return False
        s.set_console(th, fd, None)
    notify.write_mem(n.pid, n.args[arg], rec[:8])
    s.report.substituted_bytes += 8
    return s.reply(n, th, pos, ev.ret)


@handles("dup", "dup2", "dup3", "fcntl")
def dup(s: ReplaySession, n: Notif, th: Thread, ev: Any, pos: int) -> bool:
    """dup, dup2, dup3, fcntl(F_DUPFD*): the tracee's own object at the recorded number."""
    sc = SC.get(ev.nr)
    assert sc is not None
    if sc.fd_effect == FdEffect.DUP_CMD and (n.args[1] & 0xFFFFFFFF) not in (F_DUPFD, F_DUPFD_CLOEXEC):
        # fcntl(F_GETLK, ...): the kernel's answer is the recorded struct (file locks on
        # the model's files are answered from the recording, as sqlite's WAL reads them).
        kind = schema.REQUEST_BUFFERS.get((sc.nr, n.args[1] & 0xFFFFFFFF))
        rec = ev.payload(2)
        if kind is not None and kind[0] in ("out", "inout") and rec is not None and n.args[2] \
                and ev.ret >= 0:
            if len(rec) > kind[1]:
                too_long(s, th, ev, sc.args[2], len(rec), kind[1])
            s.gone_check(n)
            notify.write_mem(n.pid, n.args[2], rec)
            s.report.substituted_bytes += len(rec)
        return regular(s, n, th, ev, pos)
    compare_inputs(s, n, th, ev, sc)
    if ev.ret < 0:
        return s.reply(n, th, pos, ev.ret)
    old = s32(n.args[0])
    if sc.name in ("dup2", "dup3") and old == ev.ret:
        return s.reply(n, th, pos, ev.ret)
    src = None
    pfd = s._pidfd(th.host_tgid)
    if pfd is not None and old >= 0:
        try:
            src = notify.pidfd_getfd(pfd, old)
        except OSError:
            src = None
    if src is None:
        src = os.dup(s.devnull)
    try:
        cloexec = schema.cloexec_of(sc, n.args) or (
            sc.fd_effect == FdEffect.DUP_CMD and (n.args[1] & 0xFFFFFFFF) == F_DUPFD_CLOEXEC)
        owned = s.is_owned(th, old)
        ok = s.addfd_reply(n, th, pos, src, ev.ret, cloexec)
        if ok:
            s.set_console(th, ev.ret, s.console.get(th.fdt, {}).get(old))
            if owned:
                s.owned.setdefault(th.host_tgid, set()).add(ev.ret)
        return ok
    finally:
        os.close(src)


@handles("close")
def close(s: ReplaySession, n: Notif, th: Thread, ev: Any, pos: int) -> bool:
    sc = SC.get(ev.nr)
    assert sc is not None
    compare_inputs(s, n, th, ev, sc)
    fd = s32(n.args[0])
    if ev.ret == 0:
        s.set_console(th, fd, None)
    if ev.ret == 0 and fd >= 0 and os.path.lexists(f"/proc/{th.host_tid}/fd/{fd}"):
        return s.cont(n, th, pos)  # really close it, so fd numbers stay as recorded
    return s.reply(n, th, pos, ev.ret)


@handles("close_range")
def close_range(s: ReplaySession, n: Notif, th: Thread, ev: Any, pos: int) -> bool:
    if ev.ret == 0 and (n.args[2] & 0xFFFFFFFF) in (0, 4):
        return s.cont(n, th, pos)
    return s.reply(n, th, pos, ev.ret)


@handles("clone", "clone3", "fork", "vfork")
def clone(s: ReplaySession, n: Notif, th: Thread, ev: Any, pos: int) -> bool:
    """clone, clone3, fork, vfork run natively; the child gets the recorded tid."""
    if ev.ret < 0:
        return s.reply(n, th, pos, ev.ret)
    if ev.ret > 0:
        # The child gets the pid clone returned (the program sees it natively); its events are
        # under its recorded tid, another number when it was born in a pid namespace of the
        # program's own (matched to it in creation order, session._thread).
        child = s.script.clone_child.get(pos, ev.ret)
        s.sb.set_next_pid(ev.ret)  # type: ignore[union-attr]
        s.children.append(child)
        th.native_clone = (n.nr, n.args, n.ip, ev.ret)
        s.forked[child] = th.host_tgid
        if _vfork(SC[ev.nr].name, n.args, ev):
            s.vforked.add(child)
    return s.cont(n, th, pos)


CLONE_VFORK = 0x4000


def _vfork(name: str, args: tuple[int, ...], ev: Any) -> bool:
    """Whether the parent waits in the kernel until the child execs or exits."""
    if name == "vfork":
        return True
    if name == "clone":
        return bool(args[0] & CLONE_VFORK)
    if name == "clone3":
        raw = ev.payload(0)   # struct clone_args: u64 flags first
        return bool(raw and len(raw) >= 8 and int.from_bytes(raw[:8], "little") & CLONE_VFORK)
    return False


@handles("execve", "execveat")
def execve(s: ReplaySession, n: Notif, th: Thread, ev: Any, pos: int) -> bool:
    sc = SC.get(ev.nr)
    assert sc is not None
    if sc.name == "execve":
        rec = ev.payload(0)
        cur = notify.read_cstr(n.pid, n.args[0]) if n.args[0] else b""
        if rec is not None and cur != rec.rstrip(b"\0"):
            s.diverge("argument", f"execve of thread {th.tid}: the path differs", th, ev, n,
                       payload_diff(rec.rstrip(b"\0"), cur))
    if ev.ret < 0:
        return s.reply(n, th, pos, ev.ret)
    s.need_vdso.add(th.host_tgid)
    s.vforked.discard(th.rec_tgid)
    rec = ev.payload(0) if sc.name == "execve" else None
    if rec:
        path = rec.rstrip(b"\0").decode(errors="surrogateescape")
        s.exe[th.host_tgid] = os.path.normpath(os.path.join(s.cwd.get(th.host_tgid, "/"), path))
        node = s.files.lookup(s.exe[th.host_tgid])
        if node is not None:
            # A file the run wrote: the kernel execs a copy at its path in the sandbox.
            s.files.materialize(node, s.exe[th.host_tgid], th.host_tgid)
        else:
            s.files.exec_check(s.exe[th.host_tgid], s.rootfd)
    ok = s.cont(n, th, pos)
    if ok and th.host_tid != th.host_tgid:
        s.exec_from_thread(th)
    return ok


@handles("exit", "exit_group")
def exit_(s: ReplaySession, n: Notif, th: Thread, ev: Any, pos: int) -> bool:
    sc = SC.get(ev.nr)
    assert sc is not None
    compare_inputs(s, n, th, ev, sc)
    # the call made, not the one recorded: they differ for a process's last thread
    # (session._same_exit), where exit_group and exit end the process alike
    whole = n.nr == NR_EXIT_GROUP or nthreads(th.host_tgid) <= 1
    if whole:
        s.release_exits(th.host_tgid)  # its own children: the parent no longer waits
        if th.host_tgid != s.sb.pid and s.hold_exit(n, th):  # type: ignore[union-attr]
            s.deliver_signals(th, pos)
            return True
    return s.cont(n, th, pos)


@handles("chdir")
def chdir(s: ReplaySession, n: Notif, th: Thread, ev: Any, pos: int) -> bool:
    ok = regular(s, n, th, ev, pos)
    if ok and ev.ret == 0:
        p = ev.payload(0)
        if p:
            path = p.rstrip(b"\0").decode(errors="surrogateescape")
            s.cwd[th.host_tgid] = os.path.normpath(os.path.join(s.cwd.get(th.host_tgid, "/"), path))
    return ok


@handles("ioctl")
def ioctl(s: ReplaySession, n: Notif, th: Thread, ev: Any, pos: int) -> bool:
    cmd = n.args[1] & 0xFFFFFFFF
    if (ev.args[1] ^ n.args[1]) & 0xFFFFFFFF or (ev.args[0] ^ n.args[0]) & 0xFFFFFFFF:
        s.diverge("argument", f"ioctl of thread {th.tid}: fd/request differ", th, ev, n)
    rec = ev.payload(2)
    if rec is not None and n.args[2] and ev.ret >= 0:
        kind = schema.IOCTL_BUFFERS.get(cmd)
        counted = schema.IOCTL_COUNTED.get(cmd)
        if counted is not None:
            # header + the array the caller made room for (its capacity field)
            hdr, _count_off, cap_off, elem = counted
            room = struct.unpack("<I", notify.read_mem(n.pid, n.args[2] + cap_off, 4))[0]
            cap = hdr + room * elem
        elif kind is not None:
            cap = kind[1] if kind[0] == "out" else 0
        else:
            # _IOC_READ requests carry their size in bits 16-29 (include/uapi/asm-generic/ioctl.h).
            cap = (cmd >> 16) & 0x3FFF if (cmd >> 30) & 2 else 0
        if cap:
            if len(rec) > cap:
                too_long(s, th, ev, SC[ev.nr].args[2], len(rec), cap)
            s.gone_check(n)
            data = rec[:cap]
            notify.write_mem(n.pid, n.args[2], data)
            s.report.substituted_bytes += len(data)
    return s.reply(n, th, pos, ev.ret)


@handles("kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "pidfd_send_signal")
def send_signal(s: ReplaySession, n: Notif, th: Thread, ev: Any, pos: int) -> bool:
    """A signal sent to a traced task is answered from the recording (the target's
    handler runs where the recording shows its delivery). When the target process
    died of this signal in the recording (it ended without exit_group), the signal
    is sent for real, so it ends here as it ended there."""
    sc = SC[ev.nr]
    compare_inputs(s, n, th, ev, sc)
    if ev.ret == 0:
        target = _signal_target(s, sc.name, ev.args)
        sig = s32(ev.args[SENDERS[ev.nr]])
        if target is not None and s.script.deaths.get(target) == sig:
            s.kill_process(target, sig)
    return s.reply(n, th, pos, ev.ret)


def _signal_target(s: ReplaySession, name: str, args: tuple[int, ...]) -> int | None:
    """The recorded tgid a kill-family call aimed at (None: a group, or unknown)."""
    if name in ("kill", "rt_sigqueueinfo", "tgkill", "rt_tgsigqueueinfo"):
        pid = s32(args[0])
        return pid if pid > 0 else None
    if name == "tkill":
        return s.script.tgid_of.get(s32(args[0]))
    return None


@handles("process_vm_writev")
def vm_writev(s: ReplaySession, n: Notif, th: Thread, ev: Any, pos: int) -> bool:
    """process_vm_writev(2) is answered from the recording, and its effect is made by the
    supervisor: the bytes the tracee hands in (compared with the recording) are copied into
    the target's memory along its remote iovecs, as many as the recorded count. Only a
    process of the replayed tree can be a target (its recorded pid names it); any other is
    outside the sandbox and is never written (its memory is not the program's to replay)."""
    sc = SC[ev.nr]
    compare_inputs(s, n, th, ev, sc)
    if ev.ret > 0:
        pid = s32(ev.args[0])
        target = next((t for t in s.threads.values() if not t.dead and pid in (t.rec_tgid, t.tid)), None)
        if target is None:
            s.report.not_compared.append(f"process_vm_writev of thread {th.tid} (syscall #{ev.index}) "
                                         f"wrote into process {pid}, which is not replayed")
        else:
            a = n.args
            liov = read_iov(n.pid, a[1], min(a[2] & 0xFFFFFFFF, IOV_MAX))
            riov = read_iov(n.pid, a[3], min(a[4] & 0xFFFFFFFF, IOV_MAX))
            data = gather(n.pid, liov, ev.ret)
            if len(data) < ev.ret or ev.ret > sum(ln for _b, ln in riov):
                s.refuse(ev, th.tid, "return value larger than the call's buffers",
                         f"returns {ev.ret} where the tracee's iovecs hold fewer bytes")
            s.gone_check(n)
            s.report.substituted_bytes += scatter(target.host_tid, riov, data)
    return s.reply(n, th, pos, ev.ret)


CLONE_FS, CLONE_FILES, CLONE_SYSVSEM = 0x200, 0x400, 0x40000


@handles("unshare")
def unshare(s: ReplaySession, n: Notif, th: Thread, ev: Any, pos: int) -> bool:
    """unshare of only the caller's own shared state (its fd table, root/cwd/umask, SysV
    semaphore undo list) runs natively: it changes nothing outside the process, and what the
    program does next depends on it (a thread that closes stdout in its own fd table leaves
    its process's open). New namespaces are answered from the recording: the sandbox's stay the
    program's only ones (mount and the like are answered from the recording too)."""
    flags = n.args[0] & 0xFFFFFFFF
    if not (ev.ret == 0 and flags and not flags & ~(CLONE_FS | CLONE_FILES | CLONE_SYSVSEM)):
        return regular(s, n, th, ev, pos)
    compare_inputs(s, n, th, ev, SC[ev.nr])
    if flags & CLONE_FILES and not th.own_fdt:
        th.own_fdt = -th.host_tid   # a key no process's table has
        s.console[th.own_fdt] = dict(s.console.get(th.host_tgid, {}))
    return s.cont(n, th, pos)


# Handlers kept in their own modules register here; then the table is complete. (It was
# built above the signal senders, which so never ran: a kill went to `regular`.)
from dr.replay.strict import limits as _limits  # noqa: E402,F401
from dr.replay.strict import sigwait as _sigwait  # noqa: E402,F401
from dr.replay.strict import reap as _reap  # noqa: E402,F401
from dr.replay.strict import bpfcall as _bpfcall  # noqa: E402,F401
from dr.replay.strict import sysvipc as _sysvipc  # noqa: E402,F401

#: x86_64 number -> handler, for the hot path: built after every handler registered
#: (the signal senders were defined below it and never reached).
BY_NR: dict[int, Handler] = {schema.by_name(name).nr: f for name, f in HANDLERS.items()}


def handler_for(nr: int) -> Handler:
    """The handler of syscall ``nr``: its own when IRREGULAR, else :func:`regular`."""
    return BY_NR.get(nr, regular)
