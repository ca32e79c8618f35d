"""The records the BPF probes emit, declared once.

Each record is a fixed-layout little-endian C struct; the generator emits the C
``struct`` into ``bpf/dr_schema.h`` and a :mod:`struct` format plus field names
into ``dr/schema/_tables.py``. Every record starts with ``u16 kind``, so a
reader can dispatch on the first two bytes. Payload records are followed by
``len`` bytes of data.

Evolution rule (as falco's event table): a record only gains fields at its
end, and any change bumps ``dr.formats.trace.FORMAT_VERSION``.
"""

from __future__ import annotations

from dataclasses import dataclass

# C type -> (struct code, size). Natural alignment is kept by ordering fields.
CTYPES = {
    "u8": ("B", 1), "u16": ("H", 2), "u32": ("I", 4), "s32": ("i", 4),
    "u64": ("Q", 8), "s64": ("q", 8),
}


@dataclass(frozen=True, slots=True)
class Record:
    """One record kind: ``kind`` is its tag, ``fields`` (name, C type, count)."""

    name: str
    kind: int
    fields: tuple[tuple[str, str, int], ...]
    doc: str
    has_data: bool = False


# Syscall event flags (dr_syscall_event.flags).
EVENT_FLAGS = {
    "NO_EXIT": 1,       # emitted at entry: the call does not return (exit, exit_group) or
                        # the thread died inside it; ret and ts_exit are 0
    "TRUNCATED": 2,     # at least one payload was longer than snaplen
    "COPY_FAILED": 4,   # at least one payload could not be read from the tracee
    "PAYLOAD_LOST": 8,  # at least one payload record could not be reserved in the ring
    "ENTRY_LOST": 16,   # the entry state was missing at exit (args unknown)
}

# Process event types (dr_proc_event.what).
PROC_EVENTS = {"FORK": 1, "EXEC": 2, "EXIT": 3, "SIGNAL": 4}

# Where a clock_read record's value was read (dr_clock_read.source): uprobes on the
# target's own code, attach mode (bpf/dr_clock.c, dr/capture/clocks.py).
CLOCK_SOURCES = {
    "LIBC_CLOCK_GETTIME": 1,   # libc's clock_gettime returned (uretprobe): clockid, ret, sec, nsec
    "GO_TIME_NOW": 2,          # Go's time.now returned (uprobe at its RET): REALTIME sec, nsec, and mono
}

# Loss causes (index into the per-CPU loss counter map).
LOSS_CAUSES = {
    "RINGBUF_EVENT": 0,    # a syscall event could not be reserved
    "RINGBUF_PAYLOAD": 1,  # a payload record could not be reserved
    "COPY_FAULT": 2,       # bpf_probe_read_user failed on a payload
    "TRUNCATED": 3,        # payload longer than snaplen (bytes kept up to snaplen)
    "ENTRY_MAP_FULL": 4,   # too many threads inside syscalls at once
    "RINGBUF_PROC": 5,     # a process event (or a clock_read record) could not be reserved
    "COPY_STEPS": 6,       # the copier ran out of steps before a syscall's buffers were all copied
}

RECORDS = (
    Record("syscall_event", 1, (
        ("kind", "u16", 1),
        ("flags", "u16", 1),
        ("cpu", "u32", 1),
        ("tgid", "u32", 1),
        ("tid", "u32", 1),
        ("seq", "u64", 1),        # per-thread syscall sequence number, from 1
        ("nr", "s64", 1),
        ("args", "u64", 6),
        ("ret", "s64", 1),
        ("ts_enter", "u64", 1),   # ns, CLOCK_MONOTONIC (bpf_ktime_get_ns)
        ("ts_exit", "u64", 1),
    ), "One completed syscall: emitted at sys_exit (at sys_enter for NO_EXIT)."),
    Record("payload", 2, (
        ("kind", "u16", 1),
        ("slot", "u16", 1),       # argument index | Sub << 4
        ("tid", "u32", 1),
        ("seq", "u64", 1),        # seq of the syscall event it belongs to
        ("offset", "u32", 1),     # offset of this chunk in the whole buffer
        ("len", "u32", 1),        # bytes of data following this header
        ("total", "u64", 1),      # true length of the whole buffer (> snaplen: truncated)
    ), "A chunk of the bytes behind a pointer argument; emitted before its event.",
        has_data=True),
    Record("syscall_event_data", 4, (
        ("kind", "u16", 1),
        ("flags", "u16", 1),
        ("cpu", "u32", 1),
        ("tgid", "u32", 1),
        ("tid", "u32", 1),
        ("seq", "u64", 1),
        ("nr", "s64", 1),
        ("args", "u64", 6),
        ("ret", "s64", 1),
        ("ts_enter", "u64", 1),
        ("ts_exit", "u64", 1),
        ("slot", "u16", 1),       # the payload's slot (argument index | Sub << 4)
        ("pad", "u16", 1),        # 0
        ("len", "u32", 1),        # bytes of data following this header (<= CHUNK)
        ("total", "u64", 1),      # true length of the buffer (> len: truncated)
    ), "A syscall_event with its one payload (from offset 0) inline: one ring-buffer "
       "record for the common case of one small buffer.", has_data=True),
    Record("proc_event", 3, (
        ("kind", "u16", 1),
        ("what", "u16", 1),       # PROC_EVENTS
        ("cpu", "u32", 1),
        ("tgid", "u32", 1),
        ("tid", "u32", 1),
        ("ts", "u64", 1),         # ns, CLOCK_MONOTONIC
        ("arg0", "s64", 1),       # FORK: child tid; EXIT: exit code; SIGNAL: signo
        ("arg1", "s64", 1),       # FORK: child tgid; SIGNAL: sa_handler class
    ), "Fork, exec, exit of a traced task, or a signal delivered to it."),
    Record("signal_regs", 5, (
        ("kind", "u16", 1),
        ("sig", "u16", 1),        # the signal delivered
        ("cpu", "u32", 1),
        ("tgid", "u32", 1),
        ("tid", "u32", 1),
        ("regs", "u64", 21),      # SIGNAL_REGS names, in this order
    ), "The user registers of a thread where a signal interrupted it (the task's struct pt_regs "
       "at signal:signal_deliver, read with bpf_task_pt_regs); follows that signal's proc_event. "
       "orig_ax >= 0: delivered as a syscall returned; -1: between syscalls (an interrupt "
       "or exception), so replay must deliver it at that instruction."),
    Record("clock_read", 6, (
        ("kind", "u16", 1),
        ("source", "u16", 1),     # CLOCK_SOURCES
        ("cpu", "u32", 1),
        ("tgid", "u32", 1),
        ("tid", "u32", 1),
        ("clockid", "s32", 1),    # the clock read (include/uapi/linux/time.h): 0 REALTIME, 1 MONOTONIC, ...
        ("ret", "s32", 1),        # the function's return value (libc: 0, or -1 when it failed)
        ("ts", "u64", 1),         # ns, CLOCK_MONOTONIC (bpf_ktime_get_ns) when the function returned
        ("sec", "s64", 1),        # the value the process got: seconds
        ("nsec", "s64", 1),       # and nanoseconds
        ("mono", "s64", 1),       # GO_TIME_NOW: the CLOCK_MONOTONIC ns time.now also read; else 0 (not read)
    ), "A clock value the process read without a syscall (the vDSO), seen by a uprobe on its "
       "own code as the function returned: attach mode records what a service read."),
)

#: struct pt_regs of x86_64 (arch/x86/include/asm/ptrace.h), the order of signal_regs.regs.
SIGNAL_REGS = ("r15", "r14", "r13", "r12", "bp", "bx", "r11", "r10", "r9", "r8", "ax", "cx", "dx",
               "si", "di", "orig_ax", "ip", "cs", "flags", "sp", "ss")

#: Bytes of payload data per payload record (a power of two: lengths are masked).
CHUNK = 16384
#: Default snaplen in bytes per buffer (``dr capture --snaplen``).
SNAPLEN_DEFAULT = 256 * 1024
#: Most iovec entries / mmsghdr entries followed per syscall.
IOV_MAX_FOLLOW = 64
#: Longest NUL-terminated string copied (PATH_MAX).
STR_MAX = 4096
#: Most argv/envp entries copied for execve.
ARGV_MAX = 64
