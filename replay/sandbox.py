"""The replay sandbox: a tracee in fresh namespaces, under a seccomp notification filter.

Process tree (ids in the supervisor's pid namespace on the left)::

    supervisor (dr)                     holds the listener fd (taken with pidfd_getfd)
     └─ stage 2  "S"                    unshare(user|mnt|pid|net|uts|ipc), maps ids,
         │                              hostname, loopback up (pyroute2), root, pivot_root
         ├─ init "A"  (pid 1 inside)    mounts /proc, reaps orphans, writes ns_last_pid
         └─ tracee "B"                  no-new-privs, ADDR_NO_RANDOMIZE, PDEATHSIG,
                                        seccomp(NEW_LISTENER), execve at once

What runs is a :class:`SandboxSpec`, validated before anything forks
(:mod:`dr.replay.sandbox_spec`). The supervisor maps the namespace's ids to an
unprivileged host range (``id_maps``), so uid 0 inside is not host root. The
root (default ``/``) is rebuilt from overlays whose upper layer is a scratch
tmpfs, so the tracee may write but nothing reaches the host; /tmp, /run and the
other PRIVATE_DIRS are empty (:mod:`dr.replay.sandbox_fs`). There is no
fallback: a part that cannot be set up stops the replay with one line. Every
stage sets PR_SET_PDEATHSIG(SIGKILL), so the whole tree dies with the supervisor.
Stage 2 joins a cgroup with a hard memory limit and a task limit before it
unshares or forks, so the whole tree, the tmpfs pages it writes and the tasks
it forks are bounded (:mod:`dr.replay.cgroup`).

The seccomp filter is :func:`dr.replay.seccomp_filter.build_filter`'s.

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
import tempfile
import time

from dr.errors import ReplayError
from dr.replay import notify
from dr.replay.cgroup import MemoryCgroup, default_limit, tmpfs_budget
from dr.replay.sandbox_fs import (LOG_PREFIX, MNT_DETACH, MS_NODEV, MS_NOEXEC, MS_NOSUID, SCRATCH_PREFIX,
                                  cerr as _cerr, make_root, mount as _mount, open_exposed, own_dirs,
                                  sweep_stale)
from dr.replay.sandbox_spec import (HOST_ID_BASE, ID_COUNT, PRIVATE_DIRS, SandboxSpec, check_spec, id_maps,
                                    private_dir_of)
from dr.replay.seccomp_filter import (INSN_SIZE, SECCOMP_FILTER_FLAG_NEW_LISTENER, SECCOMP_FLAGS,
                                      SECCOMP_SET_MODE_FILTER, build_filter)

__all__ = ["SandboxSpec", "Sandbox", "build_filter", "check_spec", "sweep_stale", "SECCOMP_FLAGS",
           "HOST_ID_BASE", "ID_COUNT", "PRIVATE_DIRS", "SCRATCH_PREFIX", "LOG_PREFIX", "id_maps"]

_libc = ctypes.CDLL(None, use_errno=True)

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
ADDR_NO_RANDOMIZE = 0x0040000

SYNC_FD = 1000


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
        self.cgroup: MemoryCgroup | None = None
        #: The tracee waits killably once its notification was received (Linux >= 5.19):
        #: a signal sent then stays pending until the supervisor answers.
        self.killable_wait = _kernel_at_least(5, 19)

    # ------------------------------------------------------------ supervisor side
    def start(self, timeout: float = 10.0) -> None:
        """Set the sandbox up and start the tracee; ReplayError (one line) when any part fails.

        Nothing runs unless every part is in place: there is no fallback.
        """
        spec = self.spec
        check_spec(spec)
        notify.check_support()
        prog = build_filter(spec.passthrough)
        # Imported here, before fork, so each stage does not pay for it.
        from pyroute2 import IPRoute  # noqa: F401
        sweep_stale()
        if spec.memory_limit is not None:  # None: --no-memory-limit (the CLI warned)
            self.cgroup = MemoryCgroup.create(spec.memory_limit or default_limit(), spec.max_tasks)
        sync_r, sync_w = os.pipe2(os.O_CLOEXEC)
        ctl_r, ctl_w = os.pipe2(os.O_CLOEXEC)
        rep_r, rep_w = os.pipe2(os.O_CLOEXEC)
        status_r, status_w = os.pipe2(os.O_CLOEXEC)
        me = os.getpid()
        try:
            self._scratch = tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-")
            pid = os.fork()
        except OSError as e:
            for fd in (sync_r, sync_w, ctl_r, ctl_w, rep_r, rep_w, status_r, status_w):
                os.close(fd)
            self.close()
            raise ReplayError(f"sandbox set-up failed: {e.strerror or e}") from None
        if pid == 0:  # stage 2
            code = 127
            try:
                for fd in (sync_r, ctl_w, rep_r, status_r):
                    os.close(fd)
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
                if word == "maps":
                    self._write_id_maps()
                elif word == "pid":
                    tracee = int(rest)
                elif word == "ready":
                    ready = True
        self.pid = tracee
        self.pidfd = notify.pidfd_open(tracee)
        fd = self._take_listener(deadline)
        self.listener = notify.Listener(fd)
        self.listener.enable_sync_wakeup()

    def _write_id_maps(self) -> None:
        """Map stage 2's fresh user namespace from out here, then let it go on.

        Only a process with CAP_SETUID in the parent namespace may map a range
        of ids, and stage 2 has given that up by unsharing: dr writes the maps.
        """
        uid_map, gid_map = id_maps(self.spec.uid, self.spec.gid)
        try:
            if os.geteuid() != 0:
                _write_file(f"/proc/{self.stage2}/setgroups", "deny")
            _write_file(f"/proc/{self.stage2}/uid_map", uid_map)
            _write_file(f"/proc/{self.stage2}/gid_map", gid_map)
        except OSError as e:
            raise ReplayError(f"sandbox set-up failed: cannot map the user namespace's ids "
                              f"({uid_map.strip()}): {e.strerror}") from None
        os.write(self._ctl_w, b"go\n")

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
                raise ReplayError(f"cannot start the tracee: {data[4:]}{self.unreachable_hint()}")
        return False

    def unreachable_hint(self) -> str:
        """Why the program may not be there for the sandbox: under a private directory
        (an empty /tmp, /run, ... where only a regular executable file is exposed, not
        a symlink, an interpreter's environment or the files it needs), or below a host
        directory closed to others (/root is 0700; the sandbox's root is not host root)."""
        exe = os.path.normpath(os.path.join(self.spec.cwd, self.spec.exe or (self.spec.argv[0] if self.spec.argv else "")))
        if not exe.startswith("/"):
            return ""
        hidden = private_dir_of(exe.lstrip("/"))
        if hidden is not None:
            return (f" (replay gives the program an empty private /{hidden}, where only a regular "
                    "executable file is shown: keep the program, its interpreter's environment "
                    "and its files outside /tmp, /run, /var/tmp and /dev/shm when capturing)")
        d = os.path.dirname(exe)
        while d != "/":
            try:
                mode = os.stat(d).st_mode
            except OSError:
                return ""
            if not mode & 0o001:
                return (f" ({d} is closed to other users (mode {mode & 0o777:o}) and the sandbox's root "
                        "is not the host's root: install the program, its interpreter and its files "
                        "where every user may read them, e.g. /usr/bin/python3 rather than a pyenv "
                        "or virtualenv under /root)")
            d = os.path.dirname(d)
        return ""

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
        # Stage 2 is not reaped here: it lives on while orphans run (reaped by close()).
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
        # Stage 2 outlives the tracee while orphans run; the replay is over now, so
        # the namespace goes (SIGKILL of stage 2: init and every orphan die with it).
        if self.stage2 > 0:
            try:
                os.kill(self.stage2, signal.SIGKILL)
            except OSError:
                pass
        self._reap_stage2()
        if self._scratch:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
        if self.cgroup is not None:
            self.cgroup.remove()  # keeps its OOM count for oom_message()

    def oom_message(self) -> str:
        """The verdict's one line when the sandbox reached its memory limit (an OOM kill), else ""."""
        return self.cgroup.oom_message() if self.cgroup is not None else ""

    # ------------------------------------------------------------ stage 2 (forked)
    def _stage2(self, parent: int, prog: bytes, sync_w: int, ctl_r: int, rep_w: int,
                status_w: int) -> int:
        spec = self.spec
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            return 1
        if self.cgroup is not None:
            # First, while nothing is unshared or forked: all that follows is charged there
            # (on cgroup v1 the memory and the pids hierarchies are two cgroups to join).
            for procs in self.cgroup.all_procs:
                _write_file(procs, str(os.getpid()))
        euid = os.geteuid()
        flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC
        if _libc.unshare(flags) != 0:
            e = ctypes.get_errno()
            hint = ("; unprivileged user namespaces may be disabled "
                    "(sysctl kernel.unprivileged_userns_clone / user.max_user_namespaces)"
                    if e in (errno.EPERM, errno.ENOSPC, errno.EINVAL) else "")
            raise OSError(e, f"unshare of the namespaces: {os.strerror(e)}{hint}")
        # dr maps our ids from the parent namespace (Sandbox._write_id_maps); wait for it.
        _say(sync_w, "maps")
        if _read_exact(ctl_r, 3) != b"go\n":
            return 1
        # Opened while we still have the caller's ids (the root may lie below a
        # directory the sandbox's ids cannot search, a 0700 /tmp/pytest-of-root),
        # and after unshare: overlay takes lower layers of our mount namespace only.
        rootfd = os.open(os.path.realpath(spec.root), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        exposed = open_exposed(rootfd, spec)
        # Become the namespace's own root (a host id of the unprivileged range):
        # until now our host uid was the caller's, which owned host files.
        inside = 0 if euid == 0 else spec.uid
        os.setresgid(0 if euid == 0 else spec.gid, 0 if euid == 0 else spec.gid, 0 if euid == 0 else spec.gid)
        if euid == 0:
            os.setgroups([])
        os.setresuid(inside, inside, inside)
        # Changing ids cleared "dumpable", which makes /proc/self/fd (our way to
        # the root, opened above) the host root's: take it back.
        _prctl(PR_SET_DUMPABLE, 1)
        socket.sethostname(spec.hostname)
        _loopback_up()
        assert self._scratch
        make_root(self._scratch, f"/proc/self/fd/{rootfd}", exposed, spec.cwd, (spec.uid, spec.gid),
                  own_dirs(spec.argv, spec.cwd), tmpfs_budget(spec.memory_limit))
        os.close(rootfd)
        for fd in exposed.values():
            os.close(fd)
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
        os.close(ctl_r)
        os.close(rep_w)
        _, status = os.waitpid(tracee, 0)
        try:
            os.write(status_w, f"exit {status}\n".encode())
        except OSError:
            pass
        # Not init's end yet: an orphan the tracee left (reparented to init) may
        # still have recorded calls to make, and killing init tears the whole pid
        # namespace down. Init ends when dr closes its control pipe (Sandbox.close).
        os.waitpid(init, 0)
        return 0

def _read_exact(fd: int, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


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
    # At the limit, the OOM killer takes the program (or a child: they inherit
    # this), not stage 2 or init, whose forked Python heaps may have more RSS.
    _write_file("/proc/self/oom_score_adj", "1000")
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
    if os.geteuid() == 0 and (spec.uid or spec.gid):
        # The recorded ids, inside the mapped range (capabilities go with uid 0).
        os.setgroups([])
        os.setresgid(spec.gid, spec.gid, spec.gid)
        os.setresuid(spec.uid, spec.uid, spec.uid)
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    pers = _libc.personality(ctypes.c_ulong(0xFFFFFFFF))
    _libc.personality(ctypes.c_ulong((pers | ADDR_NO_RANDOMIZE) & 0xFFFFFFFF))
    exe = spec.exe or spec.argv[0]
    env = dict(spec.env)
    filt = ctypes.create_string_buffer(prog, len(prog))

    class _Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = _Fprog(len(prog) // INSN_SIZE, ctypes.addressof(filt))
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

