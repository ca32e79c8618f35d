"""What to tell a user about the losses of a capture: the cause, and what helps."""

from __future__ import annotations

__all__ = ["loss_advice"]


def loss_advice(losses: dict[str, int], fill: dict | None) -> list[str]:
    """One line per loss cause seen, naming the cause and what helps (never a guess).

    ``fill``: Summary.ring_fill_at_loss, the ring's unconsumed bytes when reservations failed.
    """
    out = []
    ring = sum(losses.get(k, 0) for k in ("RINGBUF_EVENT", "RINGBUF_PAYLOAD", "RINGBUF_PROC"))
    if ring:
        if fill and fill.get("max", 0) < fill.get("ring_bytes", 0) // 2:
            out.append(f"{ring} ring-buffer reservations failed while the ring was at most "
                       f"{100 * fill['max'] // max(fill['ring_bytes'], 1)}% full: not a size problem "
                       "(the kernel refused them; see ring_fill_at_loss in the summary)")
        else:
            out.append(f"{ring} records did not fit in the ring buffer: the reader fell behind; "
                       "try a bigger --ringbuf-size")
    if losses.get("COPY_FAULT"):
        out.append(f"{losses['COPY_FAULT']} payloads could not be read from the tracee's memory "
                   "(a page not present, an invalid pointer): not a ring-buffer size problem")
    if losses.get("COPY_STEPS"):
        out.append(f"{losses['COPY_STEPS']} syscalls had more buffer bytes than the probe copies per "
                   "call: try a smaller --snaplen")
    if losses.get("ENTRY_MAP_FULL"):
        out.append(f"{losses['ENTRY_MAP_FULL']} syscalls were missed: too many threads inside "
                   "syscalls at once")
    return out
