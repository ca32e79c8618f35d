"""The trace format's constants (header, framing, hostile-input caps, ring-buffer
record framing) and the values a reader yields; see :mod:`dr.formats.trace`."""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass, field

from dr import schema
from dr.schema import Sub

#: One integer for the whole format. Bump it on ANY change of the header, the
#: frame framing, a record's meaning, or a probe record layout (dr/schema/layout.py).
#: Adding a new record type ("t") that old readers may skip does not need a bump.
#: Checklist question for every change to this file or layout.py: did you bump FORMAT_VERSION?
#: 3: execve argv/envp from the new image's stack, request-sized and Sub.MOVED payloads,
#:    files/blob records, loss cause COPY_STEPS, metadata key names of formats/meta.py.
#:    Versions 1-2 still read (formats.meta.normalize renames their keys).
FORMAT_VERSION = 3
#: First 8 bytes of every trace.
MAGIC = b"DRTRACE\x00"
#: magic, u32 version, u32 flags (all little-endian).
HEADER = struct.Struct("<8sII")
#: Header flag bits 0-15 must be understood by a reader (it refuses unknown ones);
#: bits 16-31 are informational and ignored. No bit is defined in version 1.
FLAGS_MUST_UNDERSTAND = 0xFFFF

_LEN = struct.Struct("<I")
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: A frame is closed once this many uncompressed bytes are pending.
FRAME_TARGET = 1 << 20
#: Largest event block written in one record; larger spans are split at record boundaries.
MAX_BLOCK = 64 << 20
#: Largest uncompressed frame a reader accepts: the most a writer makes (a pending
#: frame just under FRAME_TARGET plus one MAX_BLOCK span) and a MiB of record framing.
MAX_FRAME_RAW = FRAME_TARGET + MAX_BLOCK + (1 << 20)
#: Decompression budget (issue #15), checked from the frame headers when a trace
#: is opened, before anything is decompressed: a frame may declare at most
#: max(FRAME_FLOOR, MAX_RATIO x its compressed length) bytes, and the trace as a
#: whole at most TOTAL_FLOOR + MAX_RATIO x its file size. zstd turns a run of
#: zeros into 4 bytes per 128 KiB block (32768x); real traces, even of programs
#: moving zeros with a 256 KiB snaplen, stay under about 10000x, because each
#: event record breaks the run.
MAX_RATIO = 16384
FRAME_FLOOR = 8 << 20
TOTAL_FLOOR = 256 << 20
#: Largest compressed frame a reader accepts.
MAX_FRAME = MAX_FRAME_RAW + (1 << 20)
#: Largest reassembled payload (offset + length) a reader accepts.
MAX_PAYLOAD = 256 << 20
#: Largest run of zeros a reader fills in for payload chunks that were lost
#: (a hostile trace could otherwise ask for MAX_PAYLOAD of zeros per chunk).
MAX_GAP = 16 << 20
#: Most zeros filled in across one event block (the block's events are held
#: at once, so gaps must be bounded per block, not only per chunk).
MAX_GAP_PER_BLOCK = 64 << 20
#: Most syscalls with payload chunks waiting for their event across frames.
MAX_PENDING = 1 << 16

# Ring-buffer record header (include/uapi/linux/bpf.h: BPF_RINGBUF_*_BIT,
# kernel/bpf/ringbuf.c: struct bpf_ringbuf_hdr { u32 len; u32 pg_off; }).
RB_HDR = 8
RB_BUSY = 1 << 31
RB_DISCARD = 1 << 30
_RB_LEN_MASK = ~(RB_BUSY | RB_DISCARD) & 0xFFFFFFFF

# msgpack prefix of {"t": "ev", "d": <bin32>}: written by hand so that
# write_block costs two buffer appends whatever the span holds.
_EV_PREFIX = b"\x82\xa1t\xa2ev\xa1d\xc6"

_EVT = schema.record("syscall_event")
_EVD = schema.record("syscall_event_data")
_PAY = schema.record("payload")
_PROC = schema.record("proc_event")
_PROC_NAMES = {v: k for k, v in schema.PROC_EVENTS.items()}
_SREG = schema.record("signal_regs")
_SIGNAL = schema.PROC_EVENTS["SIGNAL"]
_CLK = schema.record("clock_read")
_CLOCK_SOURCE_NAMES = {v: k for k, v in schema.CLOCK_SOURCES.items()}


def _pad8(n: int) -> int:
    return (n + 7) & ~7


# --------------------------------------------------------------------------- values


@dataclass(slots=True)
class Payload:
    """Bytes behind a pointer argument of one syscall.

    ``slot`` is ``arg_index | Sub << 4``; ``data`` the bytes captured (at most
    snaplen); ``total`` the true length in bytes (> len(data): truncated).
    """

    slot: int
    data: bytes
    total: int = -1

    def __post_init__(self) -> None:
        if self.total < 0:
            self.total = len(self.data)

    @property
    def arg(self) -> int:
        return self.slot & 0xF

    @property
    def sub(self) -> int:
        return (self.slot >> 4) & 0xF

    @property
    def message(self) -> int:
        """Sub.MESSAGE payloads: the message's index in the mmsghdr array."""
        return self.slot >> 8

    @property
    def truncated(self) -> bool:
        return self.total > len(self.data)


@dataclass(slots=True)
class Event:
    """One completed syscall (struct dr_syscall_event, dr/schema/layout.py).

    Times are ns of CLOCK_MONOTONIC; ``args`` the six raw register values
    (unsigned 64-bit); ``ret`` the signed return value (-errno on failure);
    ``payloads`` maps slot -> :class:`Payload`; ``index`` is the event's
    position among all syscall events of the trace (from 0; -1 before writing).
    """

    tid: int
    nr: int
    args: tuple[int, ...] = (0, 0, 0, 0, 0, 0)
    ret: int = 0
    ts_enter: int = 0
    ts_exit: int = 0
    tgid: int = 0
    seq: int = 0
    flags: int = 0
    cpu: int = 0
    payloads: dict[int, Payload] = field(default_factory=dict)
    index: int = field(default=-1, compare=False)

    @property
    def name(self) -> str:
        """Syscall name from the schema (``syscall_<nr>`` when unknown)."""
        return schema.name_of(self.nr)

    def payload(self, arg: int, sub: int = Sub.DATA) -> bytes | None:
        """Bytes of argument ``arg`` (part ``sub``), or None when not captured."""
        p = self.payloads.get(arg | (int(sub) << 4))
        return None if p is None else p.data

    @property
    def errno(self) -> int | None:
        """The errno when the call failed (-4095 <= ret < 0), else None."""
        return -self.ret if -4095 <= self.ret < 0 else None

    @property
    def duration_ns(self) -> int:
        return self.ts_exit - self.ts_enter if self.ts_exit else 0


@dataclass(frozen=True, slots=True)
class ProcEvent:
    """Fork, exec, exit of a traced task or a signal (struct dr_proc_event).

    ``what`` is a PROC_EVENTS value; FORK: arg0 child tid, arg1 child tgid;
    EXIT: arg0 exit code; SIGNAL: arg0 signal number. ``ts`` in ns, CLOCK_MONOTONIC.
    ``regs`` (SIGNAL only, when the probe recorded them): the thread's user
    registers where the signal interrupted it, a dict named as
    dr.schema.layout.SIGNAL_REGS (struct pt_regs); ``orig_ax`` -1 means between
    syscalls (an asynchronous signal interrupting user code).
    """

    what: int
    tid: int
    tgid: int = 0
    ts: int = 0
    arg0: int = 0
    arg1: int = 0
    cpu: int = 0
    regs: dict | None = None

    @property
    def kind(self) -> str:
        return _PROC_NAMES.get(self.what, f"PROC_{self.what}")


@dataclass(frozen=True, slots=True)
class ClockRead:
    """A clock value a traced thread read without a syscall (struct dr_clock_read).

    ``source`` a CLOCK_SOURCES value (libc clock_gettime, Go time.now); ``clockid``
    the clock (0 REALTIME, 1 MONOTONIC, ...); ``ret`` the function's result (0: ok);
    ``sec``/``nsec`` what the thread got; ``mono`` (Go's time.now) the CLOCK_MONOTONIC
    ns it read too; ``ts`` ns, CLOCK_MONOTONIC, when the function returned.
    """

    source: int
    tid: int
    tgid: int = 0
    ts: int = 0
    clockid: int = 0
    ret: int = 0
    sec: int = 0
    nsec: int = 0
    mono: int = 0
    cpu: int = 0

    @property
    def kind(self) -> str:
        return _CLOCK_SOURCE_NAMES.get(self.source, f"CLOCK_{self.source}")

    @property
    def value_ns(self) -> int:
        """The value read, in ns of its clock."""
        return self.sec * 1_000_000_000 + self.nsec


@dataclass(frozen=True, slots=True)
class FrameInfo:
    """One complete frame: ``offset`` of its length prefix, ``length`` of the zstd frame."""

    index: int
    offset: int
    length: int


def _attach_regs(out: list, tid: int, sig: int, regs: tuple) -> None:
    """Give the registers to their signal's process event, written just before
    (records of other CPUs may come between; a record without one is dropped)."""
    from dr.schema.layout import SIGNAL_REGS
    for i in range(len(out) - 1, max(len(out) - 65, -1), -1):
        p = out[i]
        if isinstance(p, ProcEvent) and p.what == _SIGNAL and p.tid == tid:
            if p.regs is None and p.arg0 == sig:
                out[i] = dataclasses.replace(p, regs=dict(zip(SIGNAL_REGS, regs)))
            return
