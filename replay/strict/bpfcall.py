"""bpf(2) answered from the recording.

The kernel's objects (maps, programs) do not exist in the replay: every fd bpf
made is stood in by a /dev/null fd at the recorded number, and what the kernel
wrote is written back from the trace -- the attr fields it changed (the bytes
where capture's copies at entry and exit differ) and the buffers the attr points
at (flagsets.BPF_POINTED: a map value, a verifier log, prog ids). The buffers the
tracee hands in (keys, values, instructions, license) are compared. A command
whose pointers are not declared is refused: it cannot be answered faithfully.
"""

from __future__ import annotations

import os
import struct
from typing import TYPE_CHECKING, Any

from dr import schema
from dr.replay import notify
from dr.replay.divergence import payload_diff
from dr.replay.notify import Notif
from dr.replay.strict.core import SC, Status, StepResult, Stop, Thread
from dr.replay.strict.handlers import handles
from dr.replay.strict.memio import too_long
from dr.replay.strict.substitute import compare_inputs
from dr.schema import Sub, flagsets

if TYPE_CHECKING:
    from dr.replay.strict.session import ReplaySession

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
ATTR_ARG = 1


def _pointed_slot(k: int) -> int:
    return ATTR_ARG | Sub.POINTED << 4 | k << 8


def _changed(before: bytes, after: bytes) -> list[tuple[int, bytes]]:
    """The byte runs where ``after`` differs from ``before`` (what the kernel wrote)."""
    runs: list[tuple[int, bytes]] = []
    i, n = 0, min(len(before), len(after))
    while i < n:
        if before[i] == after[i]:
            i += 1
            continue
        j = i
        while j < n and before[j] != after[j]:
            j += 1
        runs.append((i, after[i:j]))
        i = j
    return runs


@handles("bpf")
def bpf_call(s: ReplaySession, n: Notif, th: Thread, ev: Any, pos: int) -> bool:
    sc = SC[ev.nr]
    compare_inputs(s, n, th, ev, sc)   # cmd and size
    if ev.ret < 0:
        return s.reply(n, th, pos, ev.ret)
    cmd = n.args[0] & 0xFFFFFFFF
    bufs = flagsets.BPF_POINTED.get(cmd)
    if bufs is None:
        s.report.refuse(ev.name, th.tid, ev.index, f"bpf command {cmd} not modelled")
        raise Stop(StepResult(Status.ERROR, f"replay does not support bpf command {cmd} (its attr's "
                              f"pointers are not recorded; syscall #{ev.index}, thread {th.tid})"))
    attr, asz = n.args[1], n.args[2] & 0xFFFFFFFF
    cur = notify.read_mem(n.pid, attr, min(asz, 4096)) if attr else b""
    plan: list[tuple[int, bytes]] = []
    for k, (off, direction, size, size_off, elem) in enumerate(bufs):
        if off + 8 > len(cur):
            continue
        ptr = _U64.unpack_from(cur, off)[0]
        rec = ev.payloads.get(_pointed_slot(k))
        if not ptr:
            continue
        if rec is None:
            if direction == "out" and size in ("key", "value"):
                s.refuse(ev, th.tid, "bpf map sizes not recorded",
                         "reads a map whose key and value sizes capture did not see (its "
                         "BPF_MAP_CREATE is not in this process's recording)")
            continue
        if direction == "in":
            got = notify.read_mem(n.pid, ptr, len(rec.data))
            if size == "str":
                got = notify.read_cstr(n.pid, ptr, len(rec.data) + 1) or b""
            s.report.compared_bytes += len(got)
            if got != rec.data:
                s.diverge("payload", f"bpf of thread {th.tid}: the bytes at attr offset {off} differ "
                          "from the recording", th, ev, n, payload_diff(rec.data, got))
            continue
        if size == "field" and size_off + 4 <= len(cur):
            # the tracee's own capacity, as it passed it (the kernel writes no more)
            cap = _U32.unpack_from(cur, size_off)[0] * elem
            if len(rec.data) > cap:
                too_long(s, th, ev, sc.args[ATTR_ARG], len(rec.data), cap)
        plan.append((ptr, rec.data))
    entry = ev.payloads.get(ATTR_ARG | Sub.ENTRY << 4)
    done = ev.payloads.get(ATTR_ARG)
    if entry is not None and done is not None:
        for off, data in _changed(entry.data, done.data):
            if off + len(data) <= asz:
                plan.append((attr + off, data))
    s.gone_check(n)
    for addr, data in plan:
        notify.write_mem(n.pid, addr, data)
        s.report.substituted_bytes += len(data)
    if cmd in flagsets.BPF_FD_COMMANDS:
        src = os.dup(s.devnull)
        try:
            return s.addfd_reply(n, th, pos, src, ev.ret, True)   # bpf fds are O_CLOEXEC
        finally:
            os.close(src)
    return s.reply(n, th, pos, ev.ret)


assert schema.by_name("bpf").cls == schema.Class.IRREGULAR
