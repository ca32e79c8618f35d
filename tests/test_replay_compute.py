"""Strict replay of a program that computes between two calls: not a stall while its
thread uses CPU for about as long as the recording shows (replay/strict/stall.py)."""

from __future__ import annotations

import subprocess

from conftest import DR, KERNEL_REPLAY, build_c, record, work_dir

pytestmark = KERNEL_REPLAY
work = work_dir("dr-test-compute-")


COMPUTE = r"""
#include <stdio.h>
#include <time.h>
#include <unistd.h>
static volatile unsigned long x;
int main(void) {
    write(1, "start\n", 6);
    /* user code only, no calls: 1-2 s of CPU, longer than the stall timeout */
    struct timespec a, b;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
    for (unsigned long i = 0; i < 600000000UL; i++) x += i;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
    printf("done\n");
    return 0;
}
"""


def test_a_thread_computing_as_long_as_recorded_is_not_a_stall(work):
    exe = build_c(work, "compute", COMPUTE)
    trace, out = record(work, "compute", str(exe))
    r = subprocess.run([DR, "replay", str(trace), "--show-output", "--stall-timeout", "0.5"],
                       capture_output=True, timeout=120, cwd="/")
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout == out == b"start\ndone\n"
