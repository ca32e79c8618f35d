"""The replay sandbox's cgroup: hard limits on the memory and the tasks of the whole sandbox tree.

A hostile bundle's program may malloc and touch memory, or fill the sandbox's
tmpfs mounts, until the host runs out. The whole sandbox tree (stage 2, init,
the tracee and its descendants) therefore runs in a memory cgroup of its own,
created below dr's own memory cgroup and named ``dr-replay-<pid>-<n>``:

- cgroup v2 when dr's own cgroup is on a cgroup2 hierarchy with the memory
  controller (``memory.max``, ``memory.swap.max`` 0); beside dr's cgroup when
  that one holds processes and so may not give controllers to a child;
- else cgroup v1's memory hierarchy (``memory.limit_in_bytes``, and
  ``memory.memsw.limit_in_bytes`` when swap accounting exists, so swapping out
  does not lift the limit).

tmpfs pages are charged to the memory cgroup of the task that writes them, so
the limit covers the scratch and private tmpfs too (they also have their own
``size=``: :func:`tmpfs_budget`). When no memory cgroup can be made, the
replay stops with one line saying why (:class:`CgroupUnavailable`), unless the
user chose ``--no-memory-limit``. docs/security.md, "Memory".

The same cgroup (on v1, a sibling of the same name in the pids hierarchy) caps
the tree's tasks with ``pids.max`` (:func:`default_tasks`): a fork or thread
bomb gets EAGAIN there instead of taking the host's pids (``kernel.pid_max`` is
often 32768 for the whole machine, reached long before a memory limit of GiBs).
"""

from __future__ import annotations

import errno
import itertools
import os
import signal
import time

from dr.errors import ReplayError

__all__ = ["MemoryCgroup", "CgroupUnavailable", "find_parent", "default_limit", "tmpfs_budget", "oom_line", "format_size",
           "sweep_stale_cgroups", "default_tasks", "CGROUP_PREFIX", "MIN_LIMIT", "MAX_LIMIT", "MIN_TASKS",
           "MAX_TASKS"]

#: Name of each sandbox's cgroup: the owning dr's pid, then a counter (see sweep_stale_cgroups).
CGROUP_PREFIX = "dr-replay-"
#: The default limit is min(DEFAULT_CAP, half of MemTotal): enough for the services
#: dr replays (nginx, redis, sqlite, git use tens of MiB), never the whole machine.
DEFAULT_CAP = 4 << 30
#: Below this, the sandbox's own set-up (stage 2 and init are forks of dr) does not fit.
MIN_LIMIT = 32 << 20
MAX_LIMIT = 1 << 50
#: The default task limit is min(DEFAULT_TASKS, a quarter of kernel.pid_max): more than
#: the threads of the services dr replays, and it leaves the host most of its pids.
DEFAULT_TASKS = 4096
#: Stage 2, init and the tracee are three tasks; fewer than this starts nothing useful.
MIN_TASKS = 16
MAX_TASKS = 1 << 22
_counter = itertools.count()


class CgroupUnavailable(ReplayError):
    """No memory cgroup could be made for the sandbox; the message says why."""


def format_size(n: int) -> str:
    """1073741824 -> '1 GiB', 67108864 -> '64 MiB' (whole units when exact)."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            v = n / (1 << shift)
            return f"{v:.0f} {unit}" if v == int(v) else f"{v:.1f} {unit}"
    return f"{n} B"


def _mem_total() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 2 * DEFAULT_CAP


def default_limit() -> int:
    """The sandbox's memory limit when the user gives none: min(4 GiB, half of MemTotal)."""
    return max(MIN_LIMIT, min(DEFAULT_CAP, _mem_total() // 2))


def default_tasks() -> int:
    """The sandbox's task limit: min(4096, a quarter of kernel.pid_max), at least MIN_TASKS."""
    try:
        with open("/proc/sys/kernel/pid_max") as f:
            pid_max = int(f.read())
    except (OSError, ValueError):
        pid_max = 32768
    return max(MIN_TASKS, min(DEFAULT_TASKS, pid_max // 4))


def tmpfs_budget(limit: int | None) -> tuple[int, int]:
    """(size, nr_inodes) of the scratch tmpfs, which every writable directory of the
    sandbox shares (overlay upper, /tmp, /run, /var/tmp, /dev/shm, /var/log, ...).

    Half the memory limit (of the default limit under --no-memory-limit): a full
    scratch gives the program ENOSPC before the cgroup's OOM killer has to act,
    and leaves it the other half to run in. One inode per 8 KiB, at least 4096.
    """
    size = (limit or default_limit()) // 2
    return size, max(4096, size // 8192)


def oom_line(limit: int) -> str:
    """The verdict's line when the cgroup's OOM killer killed a task of the sandbox."""
    return (f"the program was killed: the sandbox's memory limit ({format_size(limit)}) was reached "
            "(raise it with dr replay --memory-limit SIZE)")


# ------------------------------------------------------------------ where to create it
def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo (fs/proc_namespace.c).
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and len(field[i + 1:i + 4]) == 3 and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _mounts() -> list[tuple[str, str, str, set[str]]]:
    """(root, mount point, fstype, super options) of each mount in /proc/self/mountinfo."""
    out = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                a, b = left.split(), right.split()
                if len(a) >= 5 and len(b) >= 3:
                    out.append((_unescape(a[3]), _unescape(a[4]), b[0], set(b[2].split(","))))
    except OSError:
        pass
    return out


def _own_cgroups() -> dict[str, str]:
    """Controller (or "" for the v2 hierarchy) -> this process's cgroup path (/proc/self/cgroup)."""
    out: dict[str, str] = {}
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                parts = line.rstrip("\n").split(":", 2)
                if len(parts) == 3:
                    for c in parts[1].split(",") if parts[1] else [""]:
                        out[c] = parts[2]
    except OSError:
        pass
    return out


def _below(mount_root: str, mount_point: str, path: str) -> str | None:
    """The directory of cgroup ``path`` under a hierarchy mounted at ``mount_point``."""
    rel = os.path.relpath(path, mount_root)
    if rel.startswith(".."):
        return None  # our cgroup is outside what this mount shows
    return os.path.normpath(os.path.join(mount_point, rel))


#: Controllers the sandbox's cgroup2 cgroup needs: its memory limit and its task limit.
_V2_CONTROLLERS = ("memory", "pids")


def _v2_parent(own: dict[str, str], mounts: list) -> tuple[str | None, str]:
    """Where to make the sandbox's cgroup on cgroup2: dr's own cgroup when its children
    may get the memory controller, else its parent's (beside dr's); None and why."""
    path = own.get("")
    if path is None:
        return None, "dr is in no cgroup2 hierarchy"
    for root, point, fstype, _ in mounts:
        if fstype != "cgroup2":
            continue
        d = _below(root, point, path)
        if d is None or not os.path.isdir(d):
            continue
        try:
            with open(os.path.join(d, "cgroup.controllers")) as f:
                offered = f.read().split()
            for c in _V2_CONTROLLERS:
                if c not in offered:
                    return None, f"cgroup2 at {point} offers no {c} controller to dr's cgroup {path}"
            with open(os.path.join(d, "cgroup.subtree_control")) as f:
                if set(_V2_CONTROLLERS) <= set(f.read().split()):
                    return d, ""
        except OSError as e:
            return None, f"cannot read dr's cgroup2 {d}: {e.strerror}"
        try:
            with open(os.path.join(d, "cgroup.subtree_control"), "w") as f:
                f.write(" ".join("+" + c for c in _V2_CONTROLLERS))
            return d, ""
        except OSError as e:
            # EBUSY: dr's cgroup holds processes (a login session's scope), and v2 lets
            # no populated non-root cgroup give controllers to children. Its parent does
            # give memory (dr's cgroup has it), and holds no process by the same rule:
            # the sandbox's cgroup goes beside dr's, below the same ancestors' bounds.
            parent = os.path.dirname(d)
            if os.path.normpath(d) != os.path.normpath(point) and os.access(parent, os.W_OK):
                return parent, ""
            return None, (f"cannot enable the memory controller below dr's cgroup2 {d}: {e.strerror} "
                          "(run dr in a cgroup of its own, e.g. systemd-run --scope -p Delegate=yes)")
    return None, "no cgroup2 hierarchy is mounted"


def _v1_parent(own: dict[str, str], mounts: list, controller: str = "memory",
               probe: str = "memory.limit_in_bytes") -> tuple[str | None, str]:
    path = own.get(controller)
    if path is None:
        return None, f"dr is in no cgroup v1 {controller} hierarchy"
    for root, point, fstype, opts in mounts:
        if fstype == "cgroup" and controller in opts:
            d = _below(root, point, path)
            if d is not None and os.path.isfile(os.path.join(d, probe)):
                return d, ""
    return None, f"no cgroup v1 {controller} hierarchy is mounted"


def find_pids_parent(version: int, memory_parent: str) -> str:
    """Directory below which the sandbox's task limit goes: on cgroup2 the memory
    cgroup's own parent (both controllers were enabled there), on v1 dr's cgroup of
    the pids hierarchy. CgroupUnavailable (one line) when there is none."""
    if version == 2:
        return memory_parent
    parent, why = _v1_parent(_own_cgroups(), _mounts(), "pids", "cgroup.procs")
    if parent is None:
        raise CgroupUnavailable(f"cannot bound the replay's tasks: {why}; nothing was run "
                                "(dr replay --no-memory-limit runs without a cgroup)")
    return parent


def find_parent() -> tuple[str, int]:
    """(directory, cgroup version) below which the sandbox's cgroups are made: dr's own
    memory cgroup, v2 first. CgroupUnavailable (one line, both reasons) when there is none."""
    own, mounts = _own_cgroups(), _mounts()
    parent, why2 = _v2_parent(own, mounts)
    if parent is not None:
        return parent, 2
    parent, why1 = _v1_parent(own, mounts)
    if parent is not None:
        return parent, 1
    raise CgroupUnavailable(f"cannot bound the replay's memory: {why2}; {why1}; nothing was run "
                            "(dr replay --no-memory-limit runs without the bound)")


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _read_counter(path: str, key: str) -> int:
    """``key N`` of a flat-keyed cgroup file (memory.events, memory.oom_control); 0 when absent."""
    try:
        with open(path) as f:
            for line in f:
                k, _, v = line.partition(" ")
                if k == key:
                    return int(v)
    except (OSError, ValueError):
        pass
    return 0


class MemoryCgroup:
    """A memory cgroup with a hard limit, for one sandbox tree.

    :meth:`create` makes it (CgroupUnavailable: one line saying why); a process
    joins by writing its pid to :attr:`procs` (stage 2 does, before it unshares
    or forks, so everything after is inside); :meth:`oom_kills` counts the
    kernel's OOM kills in it; :meth:`remove` deletes it once the tree is dead.
    """

    def __init__(self, path: str, version: int, limit: int, tasks: int = 0) -> None:
        self.path = path
        self.version = version
        self.limit = limit
        self.tasks = tasks  # pids.max (0: not set yet)
        self.procs = os.path.join(path, "cgroup.procs")
        #: cgroup v1: the same-named cgroup of the pids hierarchy (v2: ``path`` itself).
        self.pids_path: str | None = None
        #: Every cgroup.procs a sandbox process joins (stage 2 writes its pid to each).
        self.all_procs = [self.procs]
        self._oom_file = os.path.join(path, "memory.events" if version == 2 else "memory.oom_control")
        self._ooms: int | None = None  # kept by remove()

    @classmethod
    def create(cls, limit: int, tasks: int = 0) -> MemoryCgroup:
        """A cgroup of ``limit`` bytes and ``tasks`` tasks (0: :func:`default_tasks`)."""
        parent, version = find_parent()
        pids_parent = find_pids_parent(version, parent)
        sweep_stale_cgroups(parent)
        if pids_parent != parent:
            sweep_stale_cgroups(pids_parent)
        name = f"{CGROUP_PREFIX}{os.getpid()}-{next(_counter)}"
        path = os.path.join(parent, name)
        try:
            os.mkdir(path)
        except OSError as e:
            raise CgroupUnavailable(f"cannot bound the replay's memory: cannot create the cgroup {path}: "
                                    f"{e.strerror}; nothing was run (dr replay --no-memory-limit runs "
                                    "without the bound)") from None
        cg = cls(path, version, limit, tasks or default_tasks())
        try:
            cg._limit_tasks(os.path.join(pids_parent, name))
        except OSError as e:
            cg.remove()
            raise CgroupUnavailable(f"cannot bound the replay's tasks: {e.filename}: {e.strerror}; "
                                    "nothing was run") from None
        try:
            if version == 2:
                _write(os.path.join(path, "memory.max"), str(limit))
                if os.path.exists(os.path.join(path, "memory.swap.max")):
                    _write(os.path.join(path, "memory.swap.max"), "0")
            else:
                # memsw (memory + swap) must stay >= the memory limit: set memory first.
                _write(os.path.join(path, "memory.limit_in_bytes"), str(limit))
                if os.path.exists(os.path.join(path, "memory.memsw.limit_in_bytes")):
                    _write(os.path.join(path, "memory.memsw.limit_in_bytes"), str(limit))
        except OSError as e:
            cg.remove()
            raise CgroupUnavailable(f"cannot bound the replay's memory: cannot set the limit in {path}: "
                                    f"{e.strerror}; nothing was run") from None
        return cg

    def _limit_tasks(self, pids_path: str) -> None:
        if pids_path != self.path:  # v1: a cgroup of the pids hierarchy, joined too
            os.mkdir(pids_path)
            self.pids_path = pids_path
            self.all_procs.append(os.path.join(pids_path, "cgroup.procs"))
        _write(os.path.join(pids_path, "pids.max"), str(self.tasks))

    def oom_kills(self) -> int:
        """How many tasks the kernel's OOM killer killed in this cgroup so far."""
        if self._ooms is not None:
            return self._ooms
        return _read_counter(self._oom_file, "oom_kill")

    def oom_message(self) -> str:
        """:func:`oom_line` once the OOM killer killed a task here, else ""."""
        return oom_line(self.limit) if self.oom_kills() > 0 else ""

    def remove(self, timeout: float = 2.0) -> bool:
        """Delete the cgroup once its tasks are gone (bounded wait); False when it stays.

        Called after the sandbox tree was killed: the pid namespace's tasks may take
        a moment to exit. Those still listed after half the wait are killed (they
        are the sandbox's: nothing else is ever put in this cgroup).
        """
        if self._ooms is None:  # a second call finds no file to read
            self._ooms = _read_counter(self._oom_file, "oom_kill")
        gone = self._remove(self.path, self.procs, timeout)
        if self.pids_path is not None:  # emptied with the memory one: the same tasks
            gone = self._remove(self.pids_path, self.all_procs[-1], timeout) and gone
        return gone

    @staticmethod
    def _remove(path: str, procs: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        delay = 0.001
        killed = False
        while True:
            try:
                os.rmdir(path)
                return True
            except FileNotFoundError:
                return True
            except OSError as e:
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    return False
            if not killed and time.monotonic() > deadline - timeout / 2:
                killed = True
                _kill_all(procs)
            time.sleep(delay)
            delay = min(0.05, delay * 2)


def _kill_all(procs: str) -> None:
    try:
        with open(procs) as f:
            pids = [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        return
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass


def sweep_stale_cgroups(parent: str) -> list[str]:
    """Remove ``dr-replay-PID-N`` cgroups below ``parent`` whose dr is gone and that hold
    no task (a dr killed by SIGKILL never reached close()). Never raises."""
    removed: list[str] = []
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    for name in names:
        if not name.startswith(CGROUP_PREFIX):
            continue
        pid_s = name[len(CGROUP_PREFIX):].split("-", 1)[0]
        if not pid_s.isdigit() or _alive(int(pid_s)):
            continue
        try:
            os.rmdir(os.path.join(parent, name))  # EBUSY while tasks remain: left alone
            removed.append(os.path.join(parent, name))
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True
