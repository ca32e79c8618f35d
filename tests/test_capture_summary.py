"""What a capture's summary and exit status say about completeness (issue 11)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dr.capture.session import Summary, loss_advice

PY = sys.executable

URING_C = r"""
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(void) {
    unsigned char params[120];
    memset(params, 0, sizeof params);
    printf("io_uring_setup %ld\n", syscall(425, 8, params));
    return 0;
}
"""


def _summary(**kw) -> Summary:
    base = dict(events=10, payload_bytes=0, losses={}, duration_ns=1, stop_reason="target exited",
                exit_status=0, syscalls={}, trace_bytes=1, raw_bytes=1, proc_events=0)
    base.update(kw)
    return Summary(**base)


def test_copy_fault_advice_is_not_about_the_ring_size():
    lines = loss_advice({"COPY_FAULT": 3}, None)
    assert len(lines) == 1 and "not a ring-buffer size problem" in lines[0]
    assert "--ringbuf-size" not in lines[0]


def test_ring_failures_with_an_empty_ring_are_not_called_a_size_problem():
    empty = loss_advice({"RINGBUF_EVENT": 2}, {"min": 0, "max": 4096, "ring_bytes": 64 << 20})
    full = loss_advice({"RINGBUF_EVENT": 2}, {"min": 60 << 20, "max": 64 << 20, "ring_bytes": 64 << 20})
    assert "not a size problem" in empty[0] and "--ringbuf-size" in full[0]


def test_spawn_trace_with_loss_is_incomplete_attach_trace_says_loss_only():
    assert _summary(mode="spawn", losses={"COPY_FAULT": 1}).incomplete
    assert _summary(mode="spawn", losses={"TRUNCATED": 5}).incomplete == []
    assert _summary(mode="attach", losses={"COPY_FAULT": 1}).incomplete == []


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="dr capture needs root (CAP_BPF)")
def test_io_uring_setup_makes_the_capture_say_incomplete(tmp_path):
    src = tmp_path / "uring.c"
    src.write_text(URING_C)
    exe = tmp_path / "uring"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(src)], check=True, capture_output=True)
    out = tmp_path / "u.drt"
    p = subprocess.run([PY, "-m", "dr", "capture", "-q", "-o", str(out), "--", str(exe)],
                       capture_output=True, timeout=120)
    if b"io_uring_setup -" in p.stdout:
        pytest.skip("io_uring is disabled on this kernel (kernel.io_uring_disabled)")
    assert p.returncode == 3
    assert "io_uring ring is not in the trace" in p.stderr.decode()
    from dr.formats.trace import TraceReader

    r = TraceReader(out)
    list(r.stream())
    assert any("io_uring" in why for why in r.summary["incomplete"])
