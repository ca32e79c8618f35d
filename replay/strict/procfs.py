"""What strict replay reads about tracee tasks from /proc (proc(5)): ids seen from
the sandbox's pid namespace, pending signals, parents, thread counts; and where
a command lives in the sandbox root."""

from __future__ import annotations

import os
import re
import signal
from typing import Callable, Iterable

#: Paths the supervisor never opens on the tracee's behalf (they describe the supervisor's host).
VIRTUAL_PREFIXES = ("/proc/", "/sys/", "/dev/")


def ns_ids(host_tid: int) -> tuple[int, int] | None:
    """(host tgid, innermost-namespace tid) of a task, from /proc/TID/status."""
    try:
        with open(f"/proc/{host_tid}/status") as f:
            tgid = nspid = None
            for line in f:
                if line.startswith("Tgid:"):
                    tgid = int(line.split()[1])
                elif line.startswith("NSpid:"):
                    nspid = int(line.split()[-1])
                    break
        if tgid is None or nspid is None:
            return None
        return tgid, nspid
    except (OSError, ValueError):
        return None


def pending(tid: int, sig: int) -> bool:
    """True when ``sig`` is pending for thread ``tid`` or its process (SigPnd/ShdPnd, proc(5))."""
    bit = 1 << (sig - 1)
    try:
        with open(f"/proc/{tid}/status") as f:
            for line in f:
                if line.startswith(("SigPnd:", "ShdPnd:")) and int(line.split()[1], 16) & bit:
                    return True
    except (OSError, ValueError):
        return False
    return False


def default_action(tid: int, sig: int) -> bool:
    """True when thread ``tid``'s process neither catches nor ignores ``sig`` (SigCgt/SigIgn,
    proc(5)): its delivery takes the default action. False when unknown."""
    bit = 1 << (sig - 1)
    seen = 0
    try:
        with open(f"/proc/{tid}/status") as f:
            for line in f:
                if line.startswith(("SigIgn:", "SigCgt:")):
                    seen += 1
                    if int(line.split()[1], 16) & bit:
                        return False
    except (OSError, ValueError):
        return False
    return seen == 2


def sigchld_pending(tgid: int) -> bool:
    """True when SIGCHLD is pending for process ``tgid`` (or it is gone)."""
    if not os.path.exists(f"/proc/{tgid}"):
        return True
    return pending(tgid, signal.SIGCHLD)


def ppid(tgid: int) -> int:
    try:
        with open(f"/proc/{tgid}/status") as f:
            for line in f:
                if line.startswith("PPid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return -1


def nthreads(tgid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{tgid}/task"))
    except OSError:
        return 1


def which_in_root(name: str, root: str) -> str:
    """``name`` looked up in the usual PATH directories of the sandbox root (a path inside it)."""
    for d in ("/usr/local/bin", "/usr/bin", "/bin", "/usr/local/sbin", "/usr/sbin", "/sbin"):
        cand = os.path.join(root, d.lstrip("/"), name)
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return os.path.join(d, name)
    return name


def is_virtual(path: str) -> bool:
    return any(path.startswith(v) or path == v.rstrip("/") for v in VIRTUAL_PREFIXES)


def task_exists(host_tid: int, nstid: int) -> bool:
    """True when task ``nstid`` of the sandbox's pid namespace exists (a zombie too),
    seen through the sandbox's own /proc from tracee task ``host_tid``'s root."""
    return os.path.exists(f"/proc/{host_tid}/root/proc/{nstid}")


def ended(pid: int) -> bool:
    """Whether process ``pid`` has ended (a zombie, or gone), from /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return True
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2:][:1] in (b"Z", b"X")


_MEM = re.compile(r"/proc/(self|thread-self|\d+)(?:/task/(\d+))?/mem")
_PROC_DIR = re.compile(r"/proc(?:/(?:self|thread-self|\d+)(?:/task(?:/\d+)?)?)?")


def is_proc_dir(path: str) -> bool:
    """/proc, /proc/PID, /proc/PID/task[/TID]: directories a program opens to reach a
    process's files relative to them (openat(dirfd, "PID/mem"))."""
    return bool(_PROC_DIR.fullmatch(path))


def mem_task(path: str, caller: tuple[int, int], host_of: Callable[[int], int | None]) -> int | None:
    """The host tid whose address space ``path`` (/proc/self/mem, /proc/PID/mem,
    /proc/PID/task/TID/mem) names, for a caller (host tgid, host tid) of the replay;
    ``host_of`` maps a recorded tid to a replayed task's host tid. None: not a mem file,
    or a process the replay does not run."""
    m = _MEM.fullmatch(path)
    if m is None:
        return None
    who, task = m.group(1), m.group(2)
    if task is not None:
        return host_of(int(task))
    if who == "self":
        return caller[0]
    if who == "thread-self":
        return caller[1]
    return host_of(int(who))


def child_by_nspid(tasks: Iterable[tuple[int, int]], nspid: int) -> int | None:
    """The host pid of the child of one of ``tasks`` (host tgid, host tid) whose pid in its
    innermost namespace is ``nspid`` (/proc/TGID/task/TID/children, proc(5))."""
    for tgid, tid in tasks:
        try:
            with open(f"/proc/{tgid}/task/{tid}/children") as f:
                kids = [int(k) for k in f.read().split()]
        except (OSError, ValueError):
            continue
        for k in kids:
            ids = ns_ids(k)
            if ids is not None and ids[1] == nspid:
                return k
    return None
