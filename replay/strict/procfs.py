"""What strict replay reads about tracee tasks from /proc (proc(5)): ids seen from
the sandbox's pid namespace, pending signals, parents, thread counts; and where
a command lives in the sandbox root."""

from __future__ import annotations

import os
import signal

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
