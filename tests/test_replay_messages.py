"""Calls whose bytes sit behind pointers inside other structures, captured and written
back in strict replay: recvmmsg/sendmmsg's per-message iovec bytes."""

from __future__ import annotations

from conftest import KERNEL_REPLAY, work_dir
from test_replay_kernel import faithful

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
