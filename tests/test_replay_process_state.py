"""State the kernel keeps for a replayed process and enforces where it runs (resource
limits): strict replay must set it for real, or the program faults elsewhere. Small C
programs, recorded with the real capture and replayed under the real supervisor."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from conftest import NEEDS_NOTIFY
from test_replay_kernel import faithful

pytestmark = [
    pytest.mark.root,
    NEEDS_NOTIFY,
    pytest.mark.skipif(os.geteuid() != 0, reason="capture needs root (CAP_BPF)"),
    pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is needed to build the test programs"),
]


@pytest.fixture(scope="module")
def work():
    d = Path(tempfile.mkdtemp(prefix="dr-test-state-"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


STACK_LIMIT = r"""
#include <stdio.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
static volatile int *depth;
static int recurse(void) {
    volatile char pad[256];
    pad[0] = (char)++*depth;
    return recurse() + pad[0];
}
int main(void) {
    depth = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    pid_t child = fork();
    if (child == 0) {
        struct rlimit r = { 1 << 20, 1 << 20 };
        setrlimit(RLIMIT_STACK, &r);
        return recurse();
    }
    int status;
    waitpid(child, &status, 0);
    printf("signal=%d under_2MiB=%d depth=%d\n", WIFSIGNALED(status) ? WTERMSIG(status) : 0,
           *depth * 256 < (2 << 20), *depth);
    return 0;
}
"""


def test_stack_limit_the_program_sets_is_set_for_real(work):
    """setrlimit(RLIMIT_STACK) in a child: the recursion faults at the recorded depth (the
    limit was only answered before, so the replayed child recursed 8 times deeper)."""
    out = faithful(work, "stacklimit", STACK_LIMIT)
    assert out.startswith(b"signal=11 under_2MiB=1 depth="), out
