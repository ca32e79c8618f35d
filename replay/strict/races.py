"""Can a divergence be a user-space data race?

Strict replay orders what threads observe through the kernel (see
docs/ordering.md); it cannot order their plain loads and stores. When a thread
departs from its recording while other tasks that share memory with it ran
between its previous recorded call and this one, the departure may come from
an access order the recording never saw (two threads appending to one stdio
buffer, a counter incremented without a lock). The report then names those
tasks and what they share instead of a bare mismatch. It says "possibly":
other causes outside syscalls look the same (an address under a different
ASLR layout, rdtsc, cpuid), and a single-threaded program can have those too.

Shared memory is read off the recording: threads of one process share the
whole address space (CLONE_VM); separate processes share what they mapped
with MAP_SHARED (mmap's flags argument, include/uapi/linux/mman.h).
"""

from __future__ import annotations

from typing import Any

from dr import schema

__all__ = ["race_hint"]

NR_MMAP = schema.by_name("mmap").nr
MAP_SHARED = 0x01
MAP_ANONYMOUS = 0x20
WINDOW = 200_000   # most events scanned backwards for the previous call of the thread


def race_hint(all_events: list[Any], start: int, tid: int, index: int) -> str | None:
    """One line naming the tasks that may have raced with thread ``tid`` at trace
    event ``index``, or None. ``start`` is the position in ``all_events`` of the
    thread's last replayed event (-1: none), where the search for ``index`` begins.

    A task may race here when it was alive at that point in the recording: it has
    recorded calls both before and after it."""
    lo = max(start, 0)
    end = next((i for i in range(lo, min(len(all_events), lo + WINDOW)) if all_events[i].index == index), None)
    if end is None:
        return None
    me = all_events[end]
    tgid = me.tgid or me.tid
    before = {ev.tid for ev in all_events[:end]}
    alive = {ev.tid: ev.tgid or ev.tid for ev in all_events[end + 1:] if ev.tid in before and ev.tid != tid}
    threads = {t for t, g in alive.items() if g == tgid}
    shared = _map_shared(all_events[:end])
    mappers = sorted({g for g in alive.values() if g != tgid and g in shared}) if tgid in shared else []
    if not threads and not mappers:
        return None
    parts = []
    if threads:
        parts.append(f"thread{'s' if len(threads) > 1 else ''} {', '.join(map(str, sorted(threads)))} "
                     f"of process {tgid} (the whole address space, CLONE_VM)")
    if mappers:
        parts.append(f"process{'es' if len(mappers) > 1 else ''} {', '.join(map(str, mappers))} "
                     f"(MAP_SHARED mappings: {', '.join(shared[tgid])})")
    return (f"possibly a user-space data race: thread {tid} shares memory with {' and '.join(parts)}, "
            "running at this point of the recording; syscall replay does not order plain memory "
            "accesses between them")


def _map_shared(events: list[Any]) -> dict[int, list[str]]:
    """Recorded tgid -> its successful MAP_SHARED mmaps (fd or anonymous, at address)."""
    out: dict[int, list[str]] = {}
    for ev in events:
        if ev.nr == NR_MMAP and ev.ret >= 0 and ev.args[3] & MAP_SHARED:
            what = "anonymous" if ev.args[3] & MAP_ANONYMOUS else f"fd {ev.args[4] & 0xFFFFFFFF}"
            out.setdefault(ev.tgid or ev.tid, []).append(f"{what} at {ev.ret:#x}")
    return out
