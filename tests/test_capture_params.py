"""In- and out-parameters capture records (issue 11). Needs root.

Buffers sized by a request (fcntl locks, prctl getters, ioctl results), fd
sets above 1024, in-parameters the kernel overwrites (read at entry), the
remaining time of an interrupted sleep, MSG_TRUNC's true length apart from
the copied bytes: each value as the kernel gave it, in the trace and in
``dr show``.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys

import pytest

from dr import schema

PY = sys.executable

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="dr capture needs root (CAP_BPF)"),
]

OUTS_C = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/wait.h>
#include <unistd.h>
int main(int argc, char **argv) {
    /* a locked region: the child locks, the parent asks F_GETLK */
    char path[] = "/tmp/dr-outs-XXXXXX";
    int fd = mkstemp(path);
    unlink(path);
    ftruncate(fd, 100);
    int p[2]; pipe(p);
    pid_t c = fork();
    if (c == 0) {
        struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 10, .l_len = 20};
        fcntl(fd, F_SETLK, &fl);
        write(p[1], "L", 1);
        pause();
        _exit(0);
    }
    char b; read(p[0], &b, 1);
    struct flock q = {.l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 50};
    fcntl(fd, F_GETLK, &q);
    printf("lock %d %lld %lld %d\n", q.l_type, (long long)q.l_start, (long long)q.l_len, q.l_pid == c);
    kill(c, 9); waitpid(c, NULL, 0);
    prctl(PR_SET_NAME, "dr-outs-name");
    char name[16] = {0};
    prctl(PR_GET_NAME, name);
    printf("name %s\n", name);
    write(p[1], "hello", 5);
    int n = -1;
    ioctl(p[0], FIONREAD, &n);
    printf("fionread %d\n", n);
    struct rlimit rl = {4096, 4096};
    setrlimit(RLIMIT_NOFILE, &rl);
    int big = dup2(p[0], 2000);
    size_t words = (2001 + 63) / 64;
    unsigned long *set = calloc(words, 8);
    set[big / 64] |= 1UL << (big % 64);
    struct timeval tv = {1, 0};
    int r = select(big + 1, (fd_set *)set, NULL, NULL, &tv);
    printf("select %d %d\n", r, (int)((set[big / 64] >> (big % 64)) & 1));
    return 0;
}
"""

SLEEP_TRUNC_C = r"""
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
static void h(int s) { (void)s; }
int main(void) {
    struct sigaction sa; memset(&sa, 0, sizeof sa); sa.sa_handler = h;
    sigaction(SIGALRM, &sa, NULL);
    alarm(1);
    struct timespec t = {5, 0};
    int r = nanosleep(&t, &t);   /* one timespec as request and remainder, as glibc's sleep() */
    printf("nanosleep %d left %ld\n", r, (long)t.tv_sec);
    int a = socket(AF_INET, SOCK_DGRAM, 0), b = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    bind(b, (void *)&sin, sizeof sin);
    socklen_t l = sizeof sin; getsockname(b, (void *)&sin, &l);
    char msg[100]; memset(msg, 'x', sizeof msg); memcpy(msg, "datagram", 8);
    sendto(a, msg, sizeof msg, 0, (void *)&sin, sizeof sin);
    char buf[10];
    long n = recvfrom(b, buf, sizeof buf, MSG_TRUNC, NULL, NULL);
    printf("recvfrom %ld %.8s\n", n, buf);
    return 0;
}
"""


def cc(tmp_path, name: str, src: str) -> str:
    c = tmp_path / f"{name}.c"
    c.write_text(src)
    exe = tmp_path / name
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(c)], check=True, capture_output=True)
    return str(exe)


def capture(tmp_path, *cmd):
    out = tmp_path / "t.drt"
    p = subprocess.run([PY, "-m", "dr", "capture", "-q", "-o", str(out), "--", *cmd],
                       capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr.decode()
    from dr.formats.trace import TraceReader

    r = TraceReader(out)
    events = [e for e in r.stream() if hasattr(e, "payloads")]
    shown = subprocess.run([PY, "-m", "dr", "show", str(out)], capture_output=True, timeout=60).stdout.decode()
    return p.stdout.decode(), events, shown


def nr(name: str) -> int:
    return schema.by_name(name).nr


def test_fcntl_getlk_prctl_get_name_fionread_and_select_above_1024(tmp_path):
    exe = cc(tmp_path, "outs", OUTS_C)
    printed, events, shown = capture(tmp_path, exe)
    lock_pid = [e for e in events if e.nr == nr("fcntl") and e.args[1] == 6][0].tid
    assert printed.splitlines() == ["lock 1 10 20 1", "name dr-outs-name", "fionread 5", "select 1 1"]
    getlk = [e for e in events if e.nr == nr("fcntl") and e.args[1] == 5][0]
    typ, _wh, start, length, pid = struct.unpack_from("<hhxxxxqqi", getlk.payload(2))
    assert (typ, start, length, pid) == (1, 10, 20, lock_pid)        # F_WRLCK held by the child
    assert ("fcntl(3, F_GETLK, {l_type=F_RDLCK, l_whence=SEEK_SET, l_start=0, l_len=50, l_pid=0} => "
            f"{{l_type=F_WRLCK, l_whence=SEEK_SET, l_start=10, l_len=20, l_pid={lock_pid}}}) = 0") in shown
    assert 'prctl(PR_GET_NAME, "dr-outs-name",' in shown
    assert "ioctl(4, FIONREAD, [5]) " in shown
    sel = [e for e in events if e.nr in (nr("select"), nr("pselect6"))][0]
    assert len(sel.payload(1)) == (2001 + 63) // 64 * 8      # n bits, not a 1024-bit fd_set
    assert "(2001, [2000], NULL, NULL," in shown


def test_sleep_request_read_at_entry_remainder_kept_and_msg_trunc_length_apart(tmp_path):
    exe = cc(tmp_path, "st", SLEEP_TRUNC_C)
    printed, events, shown = capture(tmp_path, exe)
    assert printed.startswith("nanosleep -1 left ")
    sl = [e for e in events if e.nr in (nr("nanosleep"), nr("clock_nanosleep")) and e.ret < 0][0]
    rq = 0 if sl.nr == nr("nanosleep") else 2
    assert struct.unpack("<qq", sl.payload(rq)) == (5, 0)     # the request, not the remainder
    left = struct.unpack("<qq", sl.payload(rq + 1))
    assert 0 < left[0] < 5 and f"left {left[0]}" in printed
    rf = [e for e in events if e.nr == nr("recvfrom")][0]
    assert rf.ret == 100 and rf.payload(1) == b"datagramxx"   # true length apart from the 10 bytes copied
    assert 'recvfrom(4, "datagramxx", 10, MSG_TRUNC, NULL, NULL) = 100' in shown


EDGE_C = r"""
#define _GNU_SOURCE
#include <linux/capability.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
/* n bytes that end where an unmapped page begins */
static void *at_edge(size_t n) {
    char *p = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    munmap(p + 4096, 4096);
    return p + 4096 - n;
}
int main(void) {
    char *name = at_edge(3);
    memcpy(name, "nm", 3);
    long r1 = prctl(PR_SET_NAME, name);
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_1, 0};
    struct __user_cap_data_struct *d = at_edge(sizeof *d);   /* version 1: one of them */
    long r2 = syscall(SYS_capget, &h, d);
    char *fresh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    long r3 = syscall(SYS_quotactl, 0x12345678, fresh, 0, NULL);     /* EINVAL before the path */
    long r4 = syscall(SYS_nanosleep, fresh + 64, NULL);   /* {0, 0}, read by the kernel only */
    printf("%ld %ld %ld %ld eff %x\n", r1, r2, r3, r4, d->effective);
    return 0;
}
"""


def test_buffers_ending_at_an_unmapped_page_record_what_the_kernel_used(tmp_path):
    """A name read to its NUL and a version-1 capget end right before an unmapped page:
    the trace holds the bytes the kernel read or wrote, and nothing counts as lost; a
    quotactl that failed before reading its path has no path and no loss; a request the
    kernel read from a page the probe could not (never touched before the call) is
    counted as the one loss."""
    exe = cc(tmp_path, "edge", EDGE_C)
    out = tmp_path / "e.drt"
    p = subprocess.run([PY, "-m", "dr", "capture", "-q", "-o", str(out), "--", exe],
                       capture_output=True, timeout=120)
    assert p.returncode == 3, p.stderr.decode()          # the one genuine loss
    printed = p.stdout.decode().split()
    assert printed[:4] == ["0", "0", "-1", "0"]
    from dr.formats.trace import TraceReader

    r = TraceReader(out)
    assert r.losses == {"COPY_FAULT": 1}
    by = {e.name: e for e in r.events() if e.name in ("prctl", "capget", "quotactl", "nanosleep")}
    assert by["prctl"].payload(1) == b"nm\0" and not by["prctl"].flags
    data = by["capget"].payload(1)
    assert len(data) == 12 and not by["capget"].flags
    assert "%x" % struct.unpack_from("<I", data)[0] == printed[5]    # what the program saw
    assert by["quotactl"].payloads == {} and not by["quotactl"].flags
    assert by["nanosleep"].flags & 4                                  # COPY_FAILED: the lost one
