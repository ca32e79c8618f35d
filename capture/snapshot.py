"""The process snapshot written into a trace's metadata at capture start.

Reads only /proc and files (docs/internals.md, "Metadata"): never signals,
stops or otherwise touches the target. Sources: proc(5) for /proc/PID/{cmdline,
environ,cwd,exe,status,maps,fd,fdinfo,net/*}; elf(5) and the GNU build-id note
(NT_GNU_BUILD_ID = 3, owner "GNU") for build-ids.

Errors: :class:`dr.errors.TargetError` when the process does not exist (or
exits while being read).
"""

from __future__ import annotations

import hashlib
import os
import resource
import socket
import time
from functools import lru_cache

from dr import __version__
from dr.errors import TargetError
from dr.formats import elf, sockaddr
from dr.capture.cmdline import exec_argv

_RLIMITS = {name[7:].lower(): getattr(resource, name) for name in dir(resource)
            if name.startswith("RLIMIT_")}

# include/net/tcp_states.h
_TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
               6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN",
               11: "CLOSING"}


def read_build_id(path: str) -> str | None:
    """Hex GNU build-id of the ELF file at ``path``, or None (not ELF, no note, unreadable)."""
    try:
        return elf.build_id(path)
    except OSError:
        return None


@lru_cache(maxsize=512)
def _file_facts(path: str, ino: int, mtime_ns: int, size: int) -> tuple[str | None, str | None]:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        digest: str | None = h.hexdigest()
    except OSError:
        digest = None
    return read_build_id(path), digest


def file_facts(path: str) -> dict:
    """``{path, build_id, sha256}`` of a file (values None when unreadable)."""
    try:
        st = os.stat(path)
        bid, digest = _file_facts(path, st.st_ino, st.st_mtime_ns, st.st_size)
    except OSError:
        bid, digest = None, None
    return {"path": path, "build_id": bid, "sha256": digest}


def clock_offsets() -> dict:
    """Offsets to add to CLOCK_MONOTONIC ns: ``{realtime_ns, boottime_ns}``."""
    best = None
    for _ in range(5):  # keep the tightest bracket
        a = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        rt = time.clock_gettime_ns(time.CLOCK_REALTIME)
        bt = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        b = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        if best is None or b - a < best[0]:
            mid = (a + b) // 2
            best = (b - a, rt - mid, bt - mid)
    assert best is not None   # the loop ran
    return {"realtime_ns": best[1], "boottime_ns": best[2]}


def host_facts() -> dict:
    """Host, kernel, arch and the clocks, for the metadata."""
    u = os.uname()
    return {"host": socket.gethostname(), "hostname": u.nodename, "kernel": u.release,
            "arch": u.machine, "clock": clock_offsets(), "tool": "dr", "version": __version__}


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _split0(raw: bytes) -> list[str]:
    return [s.decode(errors="surrogateescape") for s in raw.split(b"\0") if s]


def thread_names(pid: int) -> list[dict]:
    """[{tid, name}]: each thread's comm (proc(5) /proc/PID/task/TID/comm), for dr stats."""
    out = []
    for tid in tids_of(pid):
        try:
            out.append({"tid": tid, "name": _read(f"/proc/{pid}/task/{tid}/comm").decode(
                "utf-8", "replace").rstrip("\n")})
        except OSError:
            pass  # the thread ended meanwhile
    return out


def tids_of(pid: int) -> list[int]:
    try:
        return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return []


def descendants(pid: int) -> list[tuple[int, int]]:
    """(pid, ppid) of every live descendant process of ``pid``, parents first.

    From ``/proc/PID/task/TID/children`` (proc(5)): children of every thread,
    since a thread other than the leader may have forked them.
    """
    out: list[tuple[int, int]] = []
    todo, seen = [pid], {pid}
    while todo:
        p = todo.pop(0)
        for tid in tids_of(p):
            try:
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    kids = [int(k) for k in f.read().split()]
            except (OSError, ValueError):
                continue
            for k in kids:
                if k not in seen:
                    seen.add(k)
                    out.append((k, p))
                    todo.append(k)
    return out


def _root(pid: int) -> dict:
    """The process's root directory: ``{path, dev, ino, same}``. ``path`` as this host
    sees it (a chroot's directory; "/" for a pivot_root container, which only ``dev``
    and ``ino`` tell apart), ``same`` whether it is the host's own root."""
    st, host = os.stat(f"/proc/{pid}/root"), os.stat("/")
    return {"path": os.readlink(f"/proc/{pid}/root"), "dev": st.st_dev, "ino": st.st_ino,
            "same": (st.st_dev, st.st_ino) == (host.st_dev, host.st_ino)}


def _status(pid: int) -> dict[str, str]:
    out = {}
    for line in _read(f"/proc/{pid}/status").decode(errors="replace").splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


def _maps(pid: int) -> list[dict]:
    seen: dict[str, dict] = {}
    for line in _read(f"/proc/{pid}/maps").decode(errors="surrogateescape").splitlines():
        parts = line.split(None, 5)
        if len(parts) < 6 or not parts[5].startswith("/"):
            continue
        path = parts[5]
        if path.endswith(" (deleted)") or path in seen:
            continue
        facts = file_facts(f"/proc/{pid}/root{path}" if os.path.exists(f"/proc/{pid}/root") else path)
        facts["path"] = path
        seen[path] = facts
    return list(seen.values())


def _inet_addr(hexaddr: str) -> str:
    a = sockaddr.proc_net(hexaddr)
    return f"{a.host}:{a.port}" if a.family == sockaddr.AF_INET else f"[{a.host}]:{a.port}"


def _sockets(pid: int) -> dict[int, dict]:
    """socket inode -> {proto, local, peer, state} from the target's /proc/PID/net."""
    out: dict[int, dict] = {}
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        try:
            lines = _read(f"/proc/{pid}/net/{proto}").decode().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) < 10:
                continue
            st = int(f[3], 16)
            state = _TCP_STATES.get(st, str(st)) if proto.startswith("tcp") else (
                "ESTABLISHED" if st == 1 else "UNCONN")
            out[int(f[9])] = {"proto": proto, "local": _inet_addr(f[1]), "peer": _inet_addr(f[2]),
                              "state": state}
    try:
        lines = _read(f"/proc/{pid}/net/unix").decode(errors="replace").splitlines()[1:]
    except OSError:
        lines = []
    for line in lines:
        f = line.split()
        if len(f) < 7:
            continue
        ustate = {"01": "UNCONNECTED", "02": "CONNECTING", "03": "CONNECTED", "04": "DISCONNECTING"}
        out[int(f[6])] = {"proto": "unix", "local": f[7] if len(f) > 7 else "", "peer": "",
                          "state": "LISTEN" if f[3] == "00010000" else ustate.get(f[5], f[5])}
    return out


def _fds(pid: int) -> list[dict]:
    base = f"/proc/{pid}/fd"
    socks = None
    out = []
    for name in sorted(os.listdir(base), key=int):
        fd = int(name)
        try:
            target = os.readlink(f"{base}/{name}")
        except OSError:
            continue
        ent: dict = {"fd": fd, "type": "file", "path": target, "offset": None, "flags": None,
                     "local": None, "peer": None, "state": None}
        try:
            for line in _read(f"/proc/{pid}/fdinfo/{name}").decode().splitlines():
                k, _, v = line.partition(":")
                if k == "pos":
                    ent["offset"] = int(v)
                elif k == "flags":
                    ent["flags"] = int(v.strip(), 8)
        except OSError:
            pass
        if target.startswith("socket:["):
            if socks is None:
                socks = _sockets(pid)
            ino = int(target[8:-1])
            ent["type"] = "socket"
            s = socks.get(ino)
            if s:
                ent.update(local=s["local"], peer=s["peer"], state=s["state"], proto=s["proto"])
        elif target.startswith("pipe:["):
            ent["type"] = "pipe"
        elif target.startswith("anon_inode:"):
            ent["type"] = "anon_inode"
        out.append(ent)
    return out


def process_facts(pid: int) -> dict:
    """Everything the metadata records about process ``pid``.

    Returns ``{pid, tids, threads, exe, argv, env, cwd, uid, gid, rlimits, maps, fds,
    snapshot_errors}``; a part that cannot be read (a protected process) is
    None and named in ``snapshot_errors``. Raises TargetError when the process
    does not exist or vanished meanwhile.
    """
    if not os.path.exists(f"/proc/{pid}"):
        raise TargetError(f"no process with pid {pid}; check the pid")
    errors: list[str] = []

    def part(name, fn):
        try:
            return fn()
        except (FileNotFoundError, ProcessLookupError):
            raise TargetError(f"process {pid} exited while dr read its state") from None
        except (PermissionError, OSError, ValueError) as e:
            errors.append(f"{name}: {getattr(e, 'strerror', None) or e}")
            return None

    def exe():
        facts = file_facts(f"/proc/{pid}/exe")
        facts["path"] = os.readlink(f"/proc/{pid}/exe")
        return facts

    def rlimits():
        rl = {}
        for name, res in _RLIMITS.items():
            try:
                soft, hard = resource.prlimit(pid, res)
                rl[name] = [soft, hard]
            except (OSError, ValueError):
                pass
        return rl

    status = part("status", lambda: _status(pid)) or {}
    facts = {
        "pid": pid,
        "tids": tids_of(pid),
        "threads": thread_names(pid),
        "exe": part("exe", exe),
        "argv": part("argv", lambda: _split0(_read(f"/proc/{pid}/cmdline"))),
        # The command line at exec, for replay: /proc shows a title once a service rewrote it.
        "exec": part("exec", lambda: exec_argv(pid)),
        # A process in a container: its root filesystem and its pids in its own pid namespaces.
        "root": part("root", lambda: _root(pid)),
        "nspid": [int(x) for x in status.get("NSpid", str(pid)).split()],
        "env": part("env", lambda: _split0(_read(f"/proc/{pid}/environ"))),
        "cwd": part("cwd", lambda: os.readlink(f"/proc/{pid}/cwd")),
        "uid": int(status.get("Uid", "-1").split()[0]),
        "gid": int(status.get("Gid", "-1").split()[0]),
        "rlimits": part("rlimits", rlimits),
        "maps": part("maps", lambda: _maps(pid)),
        "fds": part("fds", lambda: _fds(pid)),
        "snapshot_errors": errors,
    }
    return facts


__all__ = ["process_facts", "host_facts", "clock_offsets", "file_facts", "read_build_id", "tids_of",
           "descendants"]
