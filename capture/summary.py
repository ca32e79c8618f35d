"""The end of a capture: the ``summary`` record and the figures ``dr capture`` prints.

Keys and meaning: docs/internals.md, "Summary". :class:`Summary` is built by
:meth:`dr.capture.session.CaptureSession.stop`; :attr:`Summary.incomplete`
says why a trace lacks what the program saw, :meth:`Summary.advice` what
helps against its losses.
"""

from __future__ import annotations

from dataclasses import dataclass

from dr.capture.advice import loss_advice

#: Loss causes that mean data is missing (TRUNCATED keeps the first snaplen bytes by design).
LOST_CAUSES = ("RINGBUF_EVENT", "RINGBUF_PAYLOAD", "COPY_FAULT", "ENTRY_MAP_FULL", "RINGBUF_PROC",
               "COPY_STEPS")

#: Syscalls whose I/O happens outside any syscall the probes see.
RING_IO = ("io_uring_setup",)


@dataclass
class Summary:
    """The end of a capture: what the ``summary`` record holds, plus the numbers printed."""

    events: int
    payload_bytes: int
    losses: dict[str, int]
    duration_ns: int
    stop_reason: str
    exit_status: int | None
    syscalls: dict[str, int]
    trace_bytes: int
    raw_bytes: int
    proc_events: int
    walks: int = 0        # drains that had to walk record headers (a probe was mid-write)
    walk_ns: int = 0
    error: str | None = None
    redaction: dict | None = None   # Redactor.report(): counts per rule, never values
    ring_fill_at_loss: dict | None = None   # {min, max} bytes pending in the ring at failed reservations
    ring_retries: int = 0   # records written only after a failed reservation attempt (not lost)
    attached: dict | None = None   # attach mode: {processes, threads} traced from the start

    mode: str = "attach"
    files: dict | None = None   # dr.capture.files.write_files: {files, stored, stored_bytes, seconds}
    moved: dict | None = None   # dr.capture.moved: {calls, with_bytes, bytes} of sendfile & co

    @property
    def lost(self) -> int:
        return sum(self.losses.get(c, 0) for c in LOST_CAUSES)

    spawn_released: int = 0     # spawn: tasks let go at a job-control stop or for the program's own
    #                             ptrace (capture/yield_ptrace.py): their execs not prepared
    outlived: list[int] | None = None   # spawn: processes still running when the tree stopped being followed

    @property
    def incomplete(self) -> list[str]:
        """Why the trace does not hold everything the program saw (empty: it does)."""
        why = []
        rings = sum(self.syscalls.get(n, 0) for n in RING_IO)
        if rings:
            why.append(f"the program called io_uring_setup ({rings}x): I/O submitted through "
                       "an io_uring ring is not in the trace")
        if self.lost and self.mode == "spawn":
            why.append(f"{self.lost} events or payloads were lost")
        return why

    def advice(self) -> list[str]:
        return loss_advice(self.losses, self.ring_fill_at_loss)

    @property
    def compression_ratio(self) -> float:
        return self.raw_bytes / self.trace_bytes if self.trace_bytes else 0.0

    def record(self) -> dict:
        return {"events": self.events, "payload_bytes": self.payload_bytes,
                "losses": self.losses, "duration_ns": self.duration_ns,
                "stop_reason": self.stop_reason, "exit_status": self.exit_status,
                "syscalls": self.syscalls, "proc_events": self.proc_events,
                "truncated_payloads": self.losses.get("TRUNCATED", 0),
                "ring_bytes": self.raw_bytes, "ring_walks": self.walks, "ring_walk_ns": self.walk_ns,
                "ring_retries": self.ring_retries, "incomplete": self.incomplete,
                **({"files": self.files} if self.files is not None else {}),
                **({"moved": self.moved} if self.moved is not None else {}),
                **({"spawn_released": self.spawn_released} if self.spawn_released else {}),
                **({"outlived": self.outlived} if self.outlived else {}),
                **({"redaction": self.redaction} if self.redaction is not None else {}),
                **({"attached": self.attached} if self.attached is not None else {}),
                **({"ring_fill_at_loss": self.ring_fill_at_loss} if self.ring_fill_at_loss else {})}


__all__ = ["Summary", "LOST_CAUSES", "RING_IO"]
