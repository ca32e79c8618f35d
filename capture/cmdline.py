"""The command line a running process was started with, before it rewrote it.

Services rewrite their command line to show a title (``setproctitle``):
redis-server shows ``redis-server *:6379``, nginx ``nginx: master process
...``. ``/proc/PID/cmdline`` then shows the title, not the command a replay
must run. The kernel keeps what is needed to tell, and often to recover, the
original (proc(5), ``/proc/PID/stat`` fields 28 and 48-51; the System V x86-64
ABI's initial process stack):

- ``start_stack`` points at ``argc``, followed by the ``argv[]`` pointers;
- ``arg_start``/``arg_end`` bound the strings the kernel wrote at exec;
- the auxiliary vector's ``AT_EXECFN`` points at the path execve was given
  (``/usr/bin/redis-server``, a symlink to ``redis-check-rdb``: multi-call
  binaries choose what to be by that name, so it, not ``/proc/PID/exe``, is
  what to run).

When the ``argv[]`` pointers still point at consecutive strings that fill the
argument area exactly, the command line is intact. Otherwise it was rewritten:
an argument whose pointer now leads out of the area (setproctitle implementations
copy the arguments to the heap before writing the title) is still the
original; ``argv[0]`` is taken from ``AT_EXECFN``; anything else is lost, and
:func:`exec_argv` says which.

Reads only (``/proc/PID/mem``, ``/proc/PID/auxv``): the target is not stopped
or changed. Needs the same privilege as reading the target's memory (root).
"""

from __future__ import annotations

import os
import struct

__all__ = ["exec_argv"]

_AT_EXECFN = 31
_MAX_ARGS = 4096
_MAX_STR = 8192


def _stat_fields(pid: int) -> list[str]:
    raw = open(f"/proc/{pid}/stat", "rb").read().decode("latin-1")
    return raw[raw.rindex(")") + 2:].split()  # fields from 3 (state) on


def _read(mem: int, addr: int, n: int) -> bytes:
    try:
        return os.pread(mem, n, addr)
    except OSError:
        return b""


def _cstr(mem: int, addr: int) -> bytes | None:
    data = _read(mem, addr, _MAX_STR)
    end = data.find(b"\0")
    return data[:end] if end >= 0 else None


def _execfn(pid: int, mem: int) -> str | None:
    try:
        auxv = open(f"/proc/{pid}/auxv", "rb").read()
    except OSError:
        return None
    for i in range(0, len(auxv) - 15, 16):
        key, val = struct.unpack_from("<QQ", auxv, i)
        if key == _AT_EXECFN and val:
            s = _cstr(mem, val)
            return s.decode("utf-8", "surrogateescape") if s else None
    return None


def exec_argv(pid: int) -> dict:
    """What process ``pid`` was started with, as far as its memory still shows.

    Returns ``{"execfn": path or None, "argv": list or None, "rewritten": bool,
    "lost": [argument indexes that cannot be recovered]}``: ``argv`` is the
    command line at exec (``argv[0]`` the execfn path when the original was
    overwritten), None when any argument is lost. Raises OSError when the
    process cannot be read (gone, or no permission).
    """
    f = _stat_fields(pid)
    start_stack, arg_start, arg_end = int(f[25]), int(f[45]), int(f[46])
    mem = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
    try:
        execfn = _execfn(pid, mem)
        head = _read(mem, start_stack, 8)
        argc = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
        if not 0 < argc <= _MAX_ARGS:
            return {"execfn": execfn, "argv": None, "rewritten": True, "lost": []}
        raw = _read(mem, start_stack + 8, 8 * argc)
        ptrs = list(struct.unpack(f"<{argc}Q", raw)) if len(raw) == 8 * argc else []
        area = _read(mem, arg_start, max(0, min(arg_end - arg_start, 1 << 20)))
        strs = [_cstr(mem, p) if p else None for p in ptrs]
        whole = [s for s in strs if s is not None]
        if len(ptrs) == argc and len(whole) == len(strs):   # every string readable
            expect, at = [], arg_start
            for p, w in zip(ptrs, whole):
                expect.append(p == at)
                at += len(w) + 1
            if all(expect) and b"\0".join(whole) + b"\0" == area:
                return {"execfn": execfn, "argv": [s.decode("utf-8", "surrogateescape") for s in whole],
                        "rewritten": False, "lost": []}
        out: list[str | None] = []
        lost = []
        for i in range(argc):
            p = ptrs[i] if i < len(ptrs) else 0
            s = strs[i] if i < len(strs) else None
            if p and s is not None and not arg_start <= p < arg_end:
                out.append(s.decode("utf-8", "surrogateescape"))  # a copy made before the rewrite
            elif i == 0 and execfn:
                out.append(execfn)
            else:
                out.append(None)
                lost.append(i)
        return {"execfn": execfn, "argv": None if lost else out, "rewritten": True, "lost": lost}
    finally:
        os.close(mem)
