"""Calls whose bytes sit behind pointers inside other structures, captured and written
back in strict replay: recvmmsg/sendmmsg's per-message iovec bytes, bpf(2)'s attr."""

from __future__ import annotations

from conftest import KERNEL_REPLAY, build_c, work_dir
from test_replay_kernel import faithful, record, replay

from dr import schema
from dr.formats.trace_read import open_trace
from dr.formats.trace_spec import Event

pytestmark = KERNEL_REPLAY
work = work_dir("dr-test-messages-")

MMSG = r"""
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
int main(void) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sv)) return 1;
    char a[] = "hello", b[] = "mmsg world!";
    struct iovec siov[2] = {{a, 5}, {b, 11}};
    struct mmsghdr s[2];
    memset(s, 0, sizeof s);
    s[0].msg_hdr.msg_iov = &siov[0]; s[0].msg_hdr.msg_iovlen = 1;
    s[1].msg_hdr.msg_iov = &siov[1]; s[1].msg_hdr.msg_iovlen = 1;
    if (sendmmsg(sv[0], s, 2, 0) != 2) return 2;
    char r0[8] = {0}, r1a[4] = {0}, r1b[32] = {0};
    struct iovec riov0[1] = {{r0, 7}}, riov1[2] = {{r1a, 3}, {r1b, 31}};
    struct mmsghdr r[2];
    memset(r, 0, sizeof r);
    r[0].msg_hdr.msg_iov = riov0; r[0].msg_hdr.msg_iovlen = 1;
    r[1].msg_hdr.msg_iov = riov1; r[1].msg_hdr.msg_iovlen = 2;
    int n = recvmmsg(sv[1], r, 2, 0, NULL);
    printf("n=%d len0=%u len1=%u m0=%s m1=%.3s|%s\n", n, r[0].msg_len, r[1].msg_len, r0, r1a, r1b);
    return 0;
}
"""


def test_recvmmsg_message_bytes_are_recorded_and_written_back(work):
    """Each message's bytes are in the trace on its own slot, and the replayed program
    reads them from its own iovecs (the second message split over two)."""
    out = faithful(work, "mmsg", MMSG)
    assert out == b"n=2 len0=5 len1=11 m0=hello m1=mms|g world!\n", out
    got = {}
    for e in open_trace(str(work / "mmsg.drt")).stream():
        if isinstance(e, Event) and e.name in ("sendmmsg", "recvmmsg"):
            got[e.name] = [e.payloads[schema.message_slot(1, m)].data for m in range(2)]
    assert got == {"sendmmsg": [b"hello", b"mmsg world!"], "recvmmsg": [b"hello", b"mmsg world!"]}


BPF_MAP = r"""
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <linux/bpf.h>
static long bpf(int cmd, union bpf_attr *a) { return syscall(__NR_bpf, cmd, a, sizeof(*a)); }
int main(void) {
    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.map_type = BPF_MAP_TYPE_HASH; a.key_size = 4; a.value_size = 8; a.max_entries = 4;
    int fd = bpf(BPF_MAP_CREATE, &a);
    uint32_t key = 99, none = 0, next = 0;
    uint64_t value = 1234567, out[2] = {0, 0xabababababababab};
    memset(&a, 0, sizeof a);
    a.map_fd = fd; a.key = (uintptr_t)&key; a.value = (uintptr_t)&value;
    long u = bpf(BPF_MAP_UPDATE_ELEM, &a);
    a.value = (uintptr_t)out;
    long l = bpf(BPF_MAP_LOOKUP_ELEM, &a);
    a.key = (uintptr_t)&none; a.next_key = (uintptr_t)&next;
    long k = bpf(BPF_MAP_GET_NEXT_KEY, &a);
    printf("fd>2=%d u=%ld l=%ld value=%llu guard=%llx k=%ld next=%u\n", fd > 2, u, l,
           (unsigned long long)out[0], (unsigned long long)out[1], k, next);
    return 0;
}
"""


def test_bpf_map_values_are_answered_from_the_recording(work):
    """bpf(2)'s map fd is a stand-in, the looked-up value and next key are the recorded
    ones written where the attr points, and nothing past them is touched."""
    out = faithful(work, "bpfmap", BPF_MAP)
    assert out == b"fd>2=1 u=0 l=0 value=1234567 guard=abababababababab k=0 next=99\n", out


BPF_UNMODELLED = r"""
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <linux/bpf.h>
int main(void) {
    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.enable_stats.type = BPF_STATS_RUN_TIME;
    long fd = syscall(__NR_bpf, BPF_ENABLE_STATS, &a, sizeof a);
    printf("fd>2=%d\n", fd > 2);
    return 0;
}
"""


def test_bpf_command_without_a_declared_layout_is_refused(work):
    """A bpf command whose attr pointers are not declared cannot be answered faithfully:
    replay stops in one line naming it (fail closed), never "faithful"."""
    exe = build_c(work, "bpfstats", BPF_UNMODELLED)
    trace, out = record(work, "bpfstats", str(exe))
    assert out == b"fd>2=1\n"
    r = replay(trace)
    assert r.returncode != 0 and b"faithful" not in r.stderr
    assert b"does not support bpf command 32" in r.stderr, r.stderr.decode()
