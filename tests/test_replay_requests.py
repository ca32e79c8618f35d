"""Out-buffers that a request argument sizes (ioctl, prctl, keyctl): the real capture records
what the kernel wrote and strict replay writes it back, so a program that prints or tests
those bytes takes the recorded path. Small C programs, real kernel, real supervisor."""

from __future__ import annotations


import pytest

from conftest import KERNEL_REPLAY, work_dir
from test_replay_kernel import faithful

pytestmark = KERNEL_REPLAY
work = work_dir("dr-test-requests-")


IOR_GENERIC = r"""
#include <stdio.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <linux/fs.h>
int main(void) {
    int fd = open("ior-file", O_RDWR | O_CREAT, 0600);
    unsigned long v = 0x5a5a5a5a5a5a5a5aUL;
    int r = ioctl(fd, FS_IOC_GETVERSION, &v);   /* _IOR('v', 1, long): in no table */
    printf("r=%d version=%lx\n", r, v);
    return 0;
}
"""


def test_ioctl_read_request_out_of_table_is_written_back(work):
    """An ioctl request in no table whose number has _IOC_READ (FS_IOC_GETVERSION): the
    bytes its size bits name are recorded and written back (the inode generation printed)."""
    out = faithful(work, "ior", IOR_GENERIC)
    assert out.startswith(b"r=0 version=5a5a5a5a"), out
    assert out != b"r=0 version=5a5a5a5a5a5a5a5a\n", out


KEYCTL_READ = r"""
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <linux/keyctl.h>
int main(void) {
    const char data[] = "recorded key payload";
    long key = syscall(SYS_add_key, "user", "dr-test-key", data, sizeof data, KEY_SPEC_PROCESS_KEYRING);
    char buf[64] = "stale", small[4] = "old";
    long n = syscall(SYS_keyctl, KEYCTL_READ, key, buf, sizeof buf);
    long m = syscall(SYS_keyctl, KEYCTL_READ, key, small, sizeof small - 1);
    printf("n=%ld read=%s m=%ld small=%.3s\n", n, buf, m, small);
    return 0;
}
"""


def test_keyctl_read_buffer_is_written_back(work):
    """keyctl(KEYCTL_READ) returns the whole size and copies at most the buffer's length
    (this kernel: nothing into a short buffer): the replayed program reads the recorded
    payload, and the short buffer keeps what it held."""
    out = faithful(work, "keyread", KEYCTL_READ)
    assert out == b"n=21 read=recorded key payload m=21 small=old\n", out


PR_SET_MM_MAP_SIZE = r"""
#include <stdio.h>
#include <sys/prctl.h>
int main(void) {
    unsigned int size = 0;
    int r = prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE, &size, 0, 0);
    printf("r=%d size=%u\n", r, size);
    return 0;
}
"""


def test_prctl_sub_operation_buffer_is_written_back(work):
    """prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE, &size): the sub-operation (arg2) says arg3 is an
    out-buffer; replay writes the size the kernel wrote (it printed 0 before)."""
    out = faithful(work, "mmsize", PR_SET_MM_MAP_SIZE)
    assert out.startswith(b"r=0 size=") and out != b"r=0 size=0\n", out


FIEMAP = r"""
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
int main(void) {
    int fd = open("fiemap-file", O_RDWR | O_CREAT | O_TRUNC, 0600);
    char block[4096];
    memset(block, 'x', sizeof block);
    write(fd, block, sizeof block);
    fsync(fd);
    char buf[sizeof(struct fiemap) + 8 * sizeof(struct fiemap_extent)];
    memset(buf, 0, sizeof buf);
    struct fiemap *fm = (struct fiemap *)buf;
    fm->fm_length = FIEMAP_MAX_OFFSET;
    fm->fm_flags = FIEMAP_FLAG_SYNC;
    fm->fm_extent_count = 8;
    if (ioctl(fd, FS_IOC_FIEMAP, fm) < 0) { printf("unsupported\n"); return 0; }
    printf("mapped=%u physical_set=%d length=%llu\n", fm->fm_mapped_extents,
           fm->fm_mapped_extents > 0 && fm->fm_extents[0].fe_physical != 0,
           fm->fm_mapped_extents ? (unsigned long long)fm->fm_extents[0].fe_length : 0ULL);
    return 0;
}
"""


def test_fiemap_extents_after_its_header_are_written_back(work):
    """FS_IOC_FIEMAP: the kernel writes the header and fm_mapped_extents extents after it;
    both are recorded and written back (replay gave the program an empty extent)."""
    out = faithful(work, "fiemap", FIEMAP)
    if out == b"unsupported\n":
        pytest.skip("the test directory's file system has no FIEMAP")
    assert out == b"mapped=1 physical_set=1 length=4096\n", out


IPT_REPLACE = r"""
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <linux/netfilter_ipv4/ip_tables.h>
int main(void) {
    if (unshare(CLONE_NEWNET) != 0) { printf("no netns\n"); return 0; }
    int s = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
    struct ipt_getinfo info;
    memset(&info, 0, sizeof info);
    strcpy(info.name, "nat");
    socklen_t len = sizeof info;
    if (s < 0 || getsockopt(s, SOL_IP, IPT_SO_GET_INFO, &info, &len) != 0) { printf("no nat table\n"); return 0; }
    size_t esz = sizeof(struct ipt_get_entries) + info.size;
    struct ipt_get_entries *e = calloc(1, esz);
    strcpy(e->name, "nat");
    e->size = info.size;
    len = esz;
    getsockopt(s, SOL_IP, IPT_SO_GET_ENTRIES, e, &len);
    struct ipt_replace *r = calloc(1, sizeof *r + info.size);
    strcpy(r->name, "nat");
    r->valid_hooks = info.valid_hooks;
    r->num_entries = r->num_counters = info.num_entries;
    r->size = info.size;
    memcpy(r->hook_entry, info.hook_entry, sizeof r->hook_entry);
    memcpy(r->underflow, info.underflow, sizeof r->underflow);
    struct xt_counters *c = malloc(sizeof *c * info.num_entries);
    memset(c, 0xff, sizeof *c * info.num_entries);
    r->counters = c;
    memcpy(r->entries, e->entrytable, info.size);
    int ret = setsockopt(s, SOL_IP, IPT_SO_SET_REPLACE, r, sizeof *r + info.size);
    printf("replace=%d counters[0]=%llu/%llu\n", ret, (unsigned long long)c[0].pcnt,
           (unsigned long long)c[0].bcnt);
    return 0;
}
"""


def test_iptables_counters_the_replace_points_at_are_written_back(work):
    """setsockopt(IPT_SO_SET_REPLACE): the kernel writes the old counters where the
    ipt_replace structure points; they are recorded and written back there (replay left
    the program's 0xff filler)."""
    out = faithful(work, "iptreplace", IPT_REPLACE)
    if out in (b"no netns\n", b"no nat table\n"):
        pytest.skip("no iptables nat table here")
    assert out == b"replace=0 counters[0]=0/0\n", out
