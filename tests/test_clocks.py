"""Attach mode records the clock values a process read through its vDSO (issue 14):
uprobes on its libc's clock_gettime (dr.capture.clocks, bpf/dr_clock.c), the target
left as it was; the records are in the trace, `dr show` lists them, and they survive
a rewrite of the trace (bundle, redaction)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from conftest import build_c

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="capture needs root (CAP_BPF)")]

#: Reads CLOCK_REALTIME through libc (the vDSO: no syscall) and prints it, 50 times a second.
STAMPER = r"""
#include <stdio.h>
#include <time.h>
#include <unistd.h>
int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (int i = 0; i < 3000; i++) {
        struct timespec t;
        clock_gettime(CLOCK_REALTIME, &t);
        printf("%lld.%09ld\n", (long long)t.tv_sec, t.tv_nsec);
        usleep(20000);
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def stamped(tmp_path_factory):
    """(trace path, lines the program printed) of a C program captured by pid for ~1 s."""
    from dr.demo.harness import Capture, stop
    work = tmp_path_factory.mktemp("clocks")
    exe = build_c(work, "stamper", STAMPER)
    out = open(work / "out.txt", "wb")
    proc = subprocess.Popen([str(exe)], stdout=out, stderr=subprocess.DEVNULL)
    try:
        with Capture(proc.pid, work / "c.drt", work / "cap.log") as cap:
            time.sleep(1.0)
            assert cap.stop() == 0
        time.sleep(0.1)
        assert proc.poll() is None, "the target must run on unchanged after the capture"
    finally:
        stop(proc)
        out.close()
    return work / "c.drt", (work / "out.txt").read_text().split()


def test_libc_clock_gettime_values_are_recorded_as_the_program_read_them(stamped):
    from dr.formats.trace import ClockRead, Event, TraceReader
    trace, _printed = stamped
    with TraceReader(trace) as r:
        recs = list(r.stream())
        meta = r.meta
    assert meta["clock_probes"]["libc"] == [meta["pid"]], meta["clock_probes"]
    reads = [x for x in recs if isinstance(x, ClockRead)]
    assert reads
    # every value the program printed once the uprobes were attached (the syscall
    # probes come first) is a recorded one
    writes = [x.payload(1) for x in recs if isinstance(x, Event) and x.name == "write" and x.payload(1)
              and x.ts_enter > reads[0].ts]
    assert len(writes) >= 10
    got = {f"{c.sec}.{c.nsec:09d}".encode() + b"\n" for c in reads
           if c.kind == "LIBC_CLOCK_GETTIME" and c.clockid == 0 and c.ret == 0}
    assert set(writes) <= got, (writes[:3], sorted(got)[:3])
    # no uretprobe: nothing of the probes shows up as a syscall of the target
    assert not any(isinstance(x, Event) and x.name == "uretprobe" for x in recs)


def test_dr_show_lists_the_clock_reads_and_a_rewritten_trace_keeps_them(stamped, tmp_path):
    trace, _printed = stamped
    show = subprocess.run([sys.executable, "-m", "dr", "show", str(trace)], capture_output=True, text=True,
                          timeout=60)
    assert show.returncode == 0, show.stderr
    lines = [ln for ln in show.stdout.splitlines() if "seen by a uprobe on libc" in ln]
    assert len(lines) >= 10
    assert re.search(r"clock_gettime\(CLOCK_REALTIME, \{tv_sec=\d+, tv_nsec=\d+\}\) = 0", lines[0]), lines[0]
    only = subprocess.run([sys.executable, "-m", "dr", "show", str(trace), "-e", "trace=write"],
                          capture_output=True, text=True, timeout=60)
    assert "uprobe" not in only.stdout   # not a write: filtered as clock_gettime would be
    bundle = tmp_path / "c.drb"
    made = subprocess.run([sys.executable, "-m", "dr", "bundle", "create", str(trace), "-o", str(bundle)],
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    again = subprocess.run([sys.executable, "-m", "dr", "show", str(bundle)], capture_output=True, text=True,
                           timeout=60)
    assert again.returncode == 0, again.stderr
    assert [ln for ln in again.stdout.splitlines() if "seen by a uprobe on libc" in ln] == lines
