"""The replay sandbox: a tracee in fresh namespaces, under a seccomp notification filter.

Process tree (ids in the supervisor's pid namespace on the left)::

    supervisor (dr)                     holds the listener fd (taken with pidfd_getfd)
     └─ stage 2  "S"                    unshare(user|mnt|pid|net|uts|ipc), maps ids,
         │                              hostname, loopback up (pyroute2), root, pivot_root
         ├─ init "A"  (pid 1 inside)    mounts /proc, reaps orphans, writes ns_last_pid
         └─ tracee "B"                  no-new-privs, ADDR_NO_RANDOMIZE, PDEATHSIG,
                                        seccomp(NEW_LISTENER), execve at once

The root (default ``/``) is the lower layer of an overlay whose upper layer is a
tmpfs, so the tracee may write but nothing reaches the chosen root; /dev holds
only null, zero, full, random, urandom and tty. Every stage sets
PR_SET_PDEATHSIG(SIGKILL), so the whole tree dies with the supervisor.

The filter is a hand-made classic BPF program installed with seccomp(2)
(:func:`build_filter`), not libseccomp: Debian 12's libseccomp 2.5.4 cannot set
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV, and the program is twenty lines we can
read: the schema's PASSTHROUGH syscalls are allowed, every other syscall
(32-bit and x32 calls and unknown numbers too) is notified.

The tracee gets the pid recorded in the trace: init writes
``/proc/sys/kernel/ns_last_pid`` before the tracee is forked, and
:meth:`Sandbox.set_next_pid` does the same before each recorded clone, so
clone() natively returns the recorded child tid. Nothing here knows about
traces: strict and streams replay both drive a :class:`Sandbox`.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import shutil
import signal
import socket
import struct
import tempfile
import time
from dataclasses import dataclass, field
from typing import Iterable

from dr.errors import ReplayError
from dr.replay import notify

__all__ = ["SandboxSpec", "Sandbox", "build_filter", "SECCOMP_FLAGS"]

_libc = ctypes.CDLL(None, use_errno=True)

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
ADDR_NO_RANDOMIZE = 0x0040000
NR_PIVOT_ROOT = 155

# seccomp(2): include/uapi/linux/seccomp.h
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV = 1 << 5
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_USER_NOTIF = 0x7FC00000
SECCOMP_RET_ALLOW = 0x7FFF0000
X32_SYSCALL_BIT = 0x40000000

# Classic BPF opcodes: include/uapi/linux/filter.h, bpf_common.h.
BPF_LD_W_ABS = 0x20
BPF_JEQ_K = 0x15
BPF_JGE_K = 0x35
BPF_RET_K = 0x06
_INSN = struct.Struct("<HBBI")

SECCOMP_FLAGS = SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV

DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
SYNC_FD = 1000


def build_filter(passthrough: Iterable[int]) -> bytes:
    """The classic BPF program (struct sock_filter[]) of the replay filter.

    ``passthrough`` x86_64 numbers are SECCOMP_RET_ALLOW; everything else
    (other ``seccomp_data.arch`` values and x32 numbers included) is
    SECCOMP_RET_USER_NOTIF.
    """
    nrs = sorted(set(int(n) for n in passthrough))
    if len(nrs) > 250:
        raise ReplayError("too many passthrough syscalls for one BPF jump table")
    # A 32-bit call (int 0x80: another seccomp_data.arch), an x32 number or one the
    # kernel does not know (syscall(-1)) is notified, never killed: the program ran
    # natively, so the supervisor answers what the recording shows (ENOSYS mostly).
    prog = [
        (BPF_LD_W_ABS, 0, 0, 4),                          # A = seccomp_data.arch
        (BPF_JEQ_K, 1, 0, notify.AUDIT_ARCH_X86_64),
        (BPF_RET_K, 0, 0, SECCOMP_RET_USER_NOTIF),
        (BPF_LD_W_ABS, 0, 0, 0),                          # A = seccomp_data.nr
        (BPF_JGE_K, 0, 1, X32_SYSCALL_BIT),
        (BPF_RET_K, 0, 0, SECCOMP_RET_USER_NOTIF),
    ]
    n = len(nrs)
    for j, nr in enumerate(nrs):
        prog.append((BPF_JEQ_K, n - j, 0, nr))
    prog.append((BPF_RET_K, 0, 0, SECCOMP_RET_USER_NOTIF))
    prog.append((BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW))
    return b"".join(_INSN.pack(*i) for i in prog)


@dataclass(frozen=True, slots=True)
class SandboxSpec:
    """What to run and how.

    ``argv``/``env`` are given to execve as they are (``exe`` defaults to
    argv[0]); ``cwd`` is used when it exists inside the root, else ``/``;
    ``uid``/``gid`` are the ids inside the user namespace (mapped to the
    supervisor's own); ``first_pid`` the pid the tracee gets inside its pid
    namespace (None: whatever comes); ``stdio`` "null" (fds 0-2 on /dev/null)
    or "inherit"; ``passthrough`` the syscall numbers the filter allows.
    """

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    exe: str | None = None
    cwd: str = "/"
    root: str = "/"
    hostname: str = "dr-replay"
    uid: int = 0
    gid: int = 0
    first_pid: int | None = None
    stdio: str = "null"
    passthrough: frozenset[int] = field(default_factory=frozenset)


def _cerr(what: str) -> OSError:
    e = ctypes.get_errno()
    return OSError(e, f"{what}: {os.strerror(e)}")


def _mount(src: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = (lambda s: s.encode() if s is not None else None)
    if _libc.mount(enc(src), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        raise _cerr(f"mount {fstype or src} on {target}")


def _prctl(opt: int, arg: int) -> None:
    if _libc.prctl(opt, ctypes.c_ulong(arg), 0, 0, 0) != 0:
        raise _cerr(f"prctl({opt})")


def _write_file(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


class Sandbox:
    """One sandboxed tracee and the supervisor's handles on it.

    After :meth:`start`: ``listener`` (:class:`dr.replay.notify.Listener`),
    ``pid`` (the tracee's pid in the supervisor's namespace), ``pidfd``.
    :meth:`exit_status` returns the tracee's wait status once it ended.
    Raises ReplayError when the sandbox cannot be set up (one line, with the
    failing step), NotSupported when the kernel lacks a feature.
    """

    def __init__(self, spec: SandboxSpec) -> None:
        self.spec = spec
        self.listener: notify.Listener | None = None
        self.pid = -1
        self.pidfd = -1
        self.stage2 = -1
        self._scratch: str | None = None
        self._sync_r = self._ctl_w = self._rep_r = self._status_r = -1
        self._status: int | None = None
        self._exec_pipe_open = True
        #: The tracee waits killably once its notification was received (Linux >= 5.19):
        #: a signal sent then stays pending until the supervisor answers.
        self.killable_wait = _kernel_at_least(5, 19)

    # ------------------------------------------------------------ supervisor side
    def start(self, timeout: float = 10.0) -> None:
        notify.check_support()
        spec = self.spec
        prog = build_filter(spec.passthrough)
        self._scratch = tempfile.mkdtemp(prefix="dr-replay-")
        # Imported here, before fork, so each stage does not pay for it.
        from pyroute2 import IPRoute  # noqa: F401
        sync_r, sync_w = os.pipe2(os.O_CLOEXEC)
        ctl_r, ctl_w = os.pipe2(os.O_CLOEXEC)
        rep_r, rep_w = os.pipe2(os.O_CLOEXEC)
        status_r, status_w = os.pipe2(os.O_CLOEXEC)
        me = os.getpid()
        pid = os.fork()
        if pid == 0:  # stage 2
            code = 127
            try:
                os.close(sync_r), os.close(ctl_w), os.close(rep_r), os.close(status_r)
                code = self._stage2(me, prog, sync_w, ctl_r, rep_w, status_w)
            except BaseException as e:  # noqa: BLE001 - report any failure as one line
                _say(sync_w, f"err {_describe(e)}")
            finally:
                os._exit(code)
        self.stage2 = pid
        for fd in (sync_w, ctl_r, rep_w, status_w):
            os.close(fd)
        self._sync_r, self._ctl_w, self._rep_r, self._status_r = sync_r, ctl_w, rep_r, status_r
        try:
            self._handshake(timeout)
        except BaseException:
            self.kill()
            self.close()
            raise

    def _handshake(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        buf = b""
        tracee = None
        ready = False
        while not (tracee and ready):
            left = deadline - time.monotonic()
            if left <= 0:
                raise ReplayError("the sandbox did not start within "
                                  f"{int(timeout)} s; is something blocking user namespaces?")
            r, _, _ = select.select([self._sync_r], [], [], left)
            if not r:
                continue
            chunk = os.read(self._sync_r, 4096)
            if not chunk:
                raise ReplayError("the sandbox exited during set-up")
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                word, _, rest = line.decode(errors="replace").partition(" ")
                if word == "err":
                    raise ReplayError(f"sandbox set-up failed: {rest}")
                if word == "pid":
                    tracee = int(rest)
                elif word == "ready":
                    ready = True
        self.pid = tracee
        self.pidfd = notify.pidfd_open(tracee)
        fd = self._take_listener(deadline)
        self.listener = notify.Listener(fd)
        self.listener.enable_sync_wakeup()

    def _take_listener(self, deadline: float) -> int:
        """pidfd_getfd the tracee's seccomp listener as soon as it exists."""
        while True:
            try:
                for name in os.listdir(f"/proc/{self.pid}/fd"):
                    try:
                        link = os.readlink(f"/proc/{self.pid}/fd/{name}")
                    except OSError:
                        continue
                    if link == "anon_inode:seccomp notify":
                        return notify.pidfd_getfd(self.pidfd, int(name))
            except OSError as e:
                if e.errno not in (errno.ENOENT, errno.ESRCH):
                    raise ReplayError(f"cannot take the seccomp listener of tid {self.pid}: "
                                      f"{e.strerror}") from None
            if select.select([self.pidfd, self._sync_r], [], [], 0)[0]:
                # The tracee died before installing its filter, or said why.
                line = _drain(self._sync_r)
                raise ReplayError(f"sandbox set-up failed: {line or 'the tracee exited'}")
            if time.monotonic() > deadline:
                raise ReplayError("the tracee never installed its seccomp filter")
            time.sleep(0.0005)

    def exec_done(self) -> bool:
        """True once the tracee's execve succeeded (its CLOEXEC sync pipe end closed)."""
        if not self._exec_pipe_open:
            return True
        r, _, _ = select.select([self._sync_r], [], [], 0)
        if r:
            data = _drain(self._sync_r, eof_ok=True)
            if data is None:
                self._exec_pipe_open = False
                return True
            if data.startswith("err "):
                raise ReplayError(f"cannot start the tracee: {data[4:]}")
        return False

    def set_next_pid(self, pid: int) -> bool:
        """Make the next task created in the sandbox get ``pid`` (ns_last_pid = pid - 1)."""
        if self._ctl_w < 0 or pid < 2:
            return False
        try:
            os.write(self._ctl_w, f"{pid - 1}\n".encode())
            # init answers each request with one 3-byte line; wait for it however
            # loaded the machine is, so an answer never pairs with a later request.
            r, _, _ = select.select([self._rep_r], [], [], 30.0)
            return bool(r) and os.read(self._rep_r, 3).startswith(b"ok")
        except OSError:
            return False

    def exit_status(self, timeout: float | None = None) -> int | None:
        """The tracee's wait status (os.waitstatus_to_exitcode style), None when unknown yet."""
        if self._status is not None:
            return self._status
        if self._status_r < 0:
            return None
        r, _, _ = select.select([self._status_r], [], [], timeout)
        if not r:
            return None
        data = os.read(self._status_r, 64).decode(errors="replace").split()
        if len(data) == 2 and data[0] == "exit":
            self._status = int(data[1])
        else:
            self._status = -int(signal.SIGKILL)
        self._reap_stage2()
        return self._status

    def _reap_stage2(self) -> None:
        if self.stage2 > 0:
            try:
                os.waitpid(self.stage2, 0)
            except ChildProcessError:
                pass
            self.stage2 = -1

    def kill(self) -> None:
        """SIGKILL the stage-2 process; init and the tracee die with it (PDEATHSIG)."""
        for p in (self.pid, self.stage2):
            if p > 0:
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
        self._reap_stage2()

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        for attr in ("_sync_r", "_ctl_w", "_rep_r", "_status_r", "pidfd"):
            fd = getattr(self, attr)
            if fd >= 0:
                os.close(fd)
                setattr(self, attr, -1)
        self._reap_stage2()
        if self._scratch:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    # ------------------------------------------------------------ stage 2 (forked)
    def _stage2(self, parent: int, prog: bytes, sync_w: int, ctl_r: int, rep_w: int,
                status_w: int) -> int:
        spec = self.spec
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            return 1
        euid, egid = os.geteuid(), os.getegid()
        flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC
        if _libc.unshare(flags) != 0:
            e = ctypes.get_errno()
            hint = ("; unprivileged user namespaces may be disabled "
                    "(sysctl kernel.unprivileged_userns_clone / user.max_user_namespaces)"
                    if e in (errno.EPERM, errno.ENOSPC, errno.EINVAL) else "")
            raise OSError(e, f"unshare of the namespaces: {os.strerror(e)}{hint}")
        _write_file("/proc/self/setgroups", "deny")
        _write_file("/proc/self/uid_map", f"{spec.uid} {euid} 1\n")
        _write_file("/proc/self/gid_map", f"{spec.gid} {egid} 1\n")
        socket.sethostname(spec.hostname[:64] or "dr-replay")
        _loopback_up()
        self._make_root()
        r0, w0 = os.pipe()
        init = os.fork()
        if init == 0:  # A: pid 1 of the new pid namespace
            code = 1
            try:
                os.close(r0)
                code = _init_main(sync_w, ctl_r, rep_w, w0, spec.first_pid)
            except BaseException as e:  # noqa: BLE001
                _say(sync_w, f"err init: {_describe(e)}")
            finally:
                os._exit(code)
        os.close(w0)
        ok = os.read(r0, 16)
        os.close(r0)
        if not ok.startswith(b"ok"):
            os.kill(init, signal.SIGKILL)
            return 1
        tracee = os.fork()
        if tracee == 0:  # B
            code = 127
            try:
                _tracee_main(spec, prog, sync_w)
            except BaseException as e:  # noqa: BLE001
                _say(SYNC_FD if _fd_ok(SYNC_FD) else sync_w, f"err {_describe(e)}")
            finally:
                os._exit(code)
        _say(sync_w, f"pid {tracee}")
        os.close(sync_w)
        os.close(ctl_r), os.close(rep_w)
        _, status = os.waitpid(tracee, 0)
        try:
            os.write(status_w, f"exit {status}\n".encode())
        except OSError:
            pass
        os.kill(init, signal.SIGKILL)
        os.waitpid(init, 0)
        return 0

    def _make_root(self) -> None:
        """Build the tracee's root under the scratch tmpfs and pivot into it.

        An overlay of the whole root fails in a user namespace when the root
        has locked submounts (clone_private_mount refuses them), so each
        top-level directory gets its own overlay (lower: the chosen root's
        directory, upper: the scratch tmpfs); one that cannot be overlaid is
        bound read-only. /proc is mounted by init, /dev holds a few nodes,
        /tmp and the top level itself are scratch tmpfs.
        """
        spec = self.spec
        scratch = self._scratch
        assert scratch
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
        _mount("tmpfs", scratch, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
        upper, work, new = (os.path.join(scratch, d) for d in ("upper", "work", "root"))
        for d in (upper, work, new):
            os.mkdir(d)
        root = os.path.realpath(spec.root)
        for name in sorted(os.listdir(root)):
            src, dst = os.path.join(root, name), os.path.join(new, name)
            if os.path.islink(src):
                os.symlink(os.readlink(src), dst)
            elif name in ("proc", "sys", "dev") or not os.path.isdir(src):
                if os.path.isdir(src):
                    os.mkdir(dst)
                elif os.path.isfile(src):
                    open(dst, "w").close()
                    _bind_ro(src, dst)
            else:
                os.mkdir(dst)
                os.mkdir(os.path.join(upper, name))
                os.mkdir(os.path.join(work, name))
                try:
                    _mount("overlay", dst, "overlay", 0,
                           f"lowerdir={_ovl_escape(src)},upperdir={os.path.join(upper, name)},"
                           f"workdir={os.path.join(work, name)},userxattr")
                except OSError:
                    try:
                        _bind_ro(src, dst, rec=True)
                    except OSError:
                        pass  # left as an empty directory: nothing of it is visible
        dev = os.path.join(new, "dev")
        if not os.path.isdir(dev):
            os.mkdir(dev)
        _mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755")
        for n in DEV_NODES:
            host = f"/dev/{n}"
            if not os.path.exists(host):
                continue
            target = os.path.join(dev, n)
            open(target, "w").close()
            try:
                _mount(host, target, None, MS_BIND)
            except OSError:
                os.unlink(target)
        for d in ("proc", "tmp"):
            if not os.path.isdir(os.path.join(new, d)):
                os.mkdir(os.path.join(new, d))
        old = os.path.join(new, ".dr-oldroot")
        os.mkdir(old)
        _mount(new, new, None, MS_BIND | MS_REC)  # pivot_root wants a mount point
        if notify._syscall(ctypes.c_long(NR_PIVOT_ROOT), ctypes.c_char_p(new.encode()),
                           ctypes.c_char_p(old.encode())) != 0:
            raise _cerr("pivot_root")
        os.chdir("/")
        # The old root stays until init has mounted /proc: the kernel lets a
        # user namespace mount proc only while a full proc mount is visible.


def _bind_ro(src: str, dst: str, rec: bool = False) -> None:
    _mount(src, dst, None, MS_BIND | (MS_REC if rec else 0))
    _mount(None, dst, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID)


def _ovl_escape(path: str) -> str:
    # overlay's option parser splits on ',' and ':' (fs/overlayfs/params.c).
    return path.replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")


def _init_main(sync_w: int, ctl_r: int, rep_w: int, ready_w: int, first_pid: int | None) -> int:
    """pid 1 inside: /proc, ns_last_pid on request, reap orphans."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    if _libc.umount2(b"/.dr-oldroot", MNT_DETACH) != 0:
        raise _cerr("umount of the old root")
    os.rmdir("/.dr-oldroot")

    def set_last(n: int) -> bool:
        try:
            _write_file("/proc/sys/kernel/ns_last_pid", str(n))
            return True
        except OSError:
            return False

    if first_pid and first_pid > 2:
        set_last(first_pid - 1)
    os.write(ready_w, b"ok")
    os.close(ready_w)
    os.close(sync_w)

    def reap(*_a: object) -> None:
        while True:
            try:
                p, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if p == 0:
                return

    signal.signal(signal.SIGCHLD, reap)
    buf = b""
    while True:
        chunk = os.read(ctl_r, 256)
        if not chunk:
            return 0
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            ok = line.strip().isdigit() and set_last(int(line))
            os.write(rep_w, b"ok\n" if ok else b"no\n")


def _tracee_main(spec: SandboxSpec, prog: bytes, sync_w: int) -> None:
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    os.dup2(sync_w, SYNC_FD, inheritable=False)
    cwd = spec.cwd if spec.cwd and os.path.isdir(spec.cwd) else "/"
    os.chdir(cwd)
    if spec.stdio == "null":
        null = os.open("/dev/null", os.O_RDWR)
        for i in (0, 1, 2):
            os.dup2(null, i)
        if null > 2:
            os.close(null)
    os.closerange(3, SYNC_FD)
    os.closerange(SYNC_FD + 1, 65536)
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    pers = _libc.personality(ctypes.c_ulong(0xFFFFFFFF))
    _libc.personality(ctypes.c_ulong((pers | ADDR_NO_RANDOMIZE) & 0xFFFFFFFF))
    exe = spec.exe or spec.argv[0]
    env = dict(spec.env)
    filt = ctypes.create_string_buffer(prog, len(prog))

    class _Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = _Fprog(len(prog) // _INSN.size, ctypes.addressof(filt))
    os.write(SYNC_FD, b"ready\n")
    flags = SECCOMP_FLAGS
    res = notify._syscall(ctypes.c_long(notify.NR_SECCOMP), ctypes.c_long(SECCOMP_SET_MODE_FILTER),
                          ctypes.c_long(flags), ctypes.byref(fprog))
    if res < 0 and ctypes.get_errno() == errno.EINVAL:
        # Kernels before 5.19 lack WAIT_KILLABLE_RECV.
        res = notify._syscall(ctypes.c_long(notify.NR_SECCOMP),
                              ctypes.c_long(SECCOMP_SET_MODE_FILTER),
                              ctypes.c_long(SECCOMP_FILTER_FLAG_NEW_LISTENER), ctypes.byref(fprog))
    if res < 0:
        raise _cerr("seccomp(SECCOMP_SET_MODE_FILTER)")
    os.execve(exe, list(spec.argv), env)


def _kernel_at_least(major: int, minor: int) -> bool:
    try:
        parts = os.uname().release.split(".")
        return (int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)) >= (major, minor)
    except (ValueError, IndexError):
        return False


def _loopback_up() -> None:
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname="lo")
        if idx:
            ipr.link("set", index=idx[0], state="up")


def _say(fd: int, line: str) -> None:
    try:
        os.write(fd, (line.replace("\n", " ") + "\n").encode())
    except OSError:
        pass


def _fd_ok(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def _drain(fd: int, eof_ok: bool = False) -> str | None:
    try:
        data = os.read(fd, 4096)
    except OSError:
        return None if eof_ok else ""
    if not data:
        return None if eof_ok else ""
    return data.decode(errors="replace").strip()


def _describe(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror if not e.filename else f"{e.filename}: {e.strerror}"
    return str(e) or type(e).__name__

