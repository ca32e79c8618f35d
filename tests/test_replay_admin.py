"""Strict replay of administrative calls (kernel log, performance counters, Landlock,
mounts, another process's memory): small C programs written for these tests,
recorded with the real capture and replayed under the real supervisor. Each call
is answered from the recording (an fd gets a stand-in, out-buffers come from the
trace); none of them reaches the host kernel from the replayed program.
"""

from __future__ import annotations


import pytest

from conftest import KERNEL_REPLAY, work_dir
from test_replay_kernel import faithful

pytestmark = KERNEL_REPLAY
work = work_dir("dr-test-admin-")


SYSLOG = r"""
#include <stdio.h>
#include <string.h>
#include <sys/klog.h>
int main(void) {
    int size = klogctl(10 /* SYSLOG_ACTION_SIZE_BUFFER */, NULL, 42);
    static char buf[8192];
    memset(buf, '#', sizeof buf);
    int n = klogctl(3 /* SYSLOG_ACTION_READ_ALL */, buf, 4096);   /* whole records only */
    unsigned sum = 0;
    for (int i = 0; i < (int)sizeof buf; i++) sum = sum * 31 + (unsigned char)buf[i];
    printf("size=%d big=%d some=%d untouched=%d sum=%u\n", size, size > 42, n > 0 && n <= 4096,
           buf[4096] == '#', sum);
    return 0;
}
"""


def test_syslog_size_query_is_not_a_byte_count(work):
    """syslog(SIZE_BUFFER) returns the log's size, larger than its unused len argument: not a
    corrupt trace. READ_ALL's bytes come from the recording, no more than it returned."""
    out = faithful(work, "syslog", SYSLOG)
    assert b"big=1 some=1 untouched=1" in out, out


LANDLOCK = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>
struct ruleset_attr { uint64_t handled_access_fs; };
struct path_beneath { uint64_t allowed_access; int32_t parent_fd; } __attribute__((packed));
int main(void) {
    struct ruleset_attr ra = {8 /* LANDLOCK_ACCESS_FS_READ_DIR */};
    int rs = syscall(444 /* landlock_create_ruleset */, &ra, sizeof ra, 0);
    if (rs < 0) { printf("landlock unavailable %d\n", errno); return 0; }
    struct path_beneath pb = {8, open("/usr", O_PATH | O_CLOEXEC)};
    int add = syscall(445 /* landlock_add_rule */, rs, 1 /* LANDLOCK_RULE_PATH_BENEATH */, &pb, 0);
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    int rst = syscall(446 /* landlock_restrict_self */, rs, 0);
    int in = open("/usr/lib", O_RDONLY | O_DIRECTORY);
    int out = open("/etc", O_RDONLY | O_DIRECTORY);
    printf("add=%d restrict=%d usr_lib=%d etc=%d errno=%d\n", add, rst, in >= 0, out, errno);
    return 0;
}
"""


def test_landlock_rules_are_answered_from_the_recording(work):
    """landlock_add_rule's rule (sized by its type) is recorded; the ruleset's verdicts
    (a directory outside the rule refused) replay as recorded."""
    out = faithful(work, "landlock", LANDLOCK)
    if out.startswith(b"landlock unavailable"):
        pytest.skip("the kernel has no Landlock")
    assert out.startswith(b"add=0 restrict=0 usr_lib=1 etc=-1 errno=13"), out


PERF = r"""
#include <linux/perf_event.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(void) {
    struct perf_event_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.size = sizeof attr;
    attr.type = PERF_TYPE_SOFTWARE;
    attr.config = PERF_COUNT_SW_TASK_CLOCK;
    int fd = syscall(SYS_perf_event_open, &attr, 0, -1, -1, PERF_FLAG_FD_CLOEXEC);
    if (fd < 0) { perror("perf_event_open"); return 0; }
    ioctl(fd, PERF_EVENT_IOC_ENABLE, 0);
    volatile unsigned long x = 0;
    for (int i = 0; i < 1000000; i++) x += i;
    uint64_t count = 0;
    ssize_t n = read(fd, &count, sizeof count);
    printf("fd=%d n=%zd count=%llu\n", fd, n, (unsigned long long)count);
    return 0;
}
"""


def test_perf_event_open_is_answered_from_the_recording(work):
    """A counter's fd is a stand-in at the recorded number and its reads return the recorded count."""
    out = faithful(work, "perf", PERF)
    if out.startswith(b"perf_event_open"):
        pytest.skip("perf_event_open refused natively")
    assert b" n=8 count=" in out and b"count=0\n" not in out, out


MOUNTS = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>
struct mount_attr_ { uint64_t set, clr, propagation, userns_fd; };
int main(int argc, char **argv) {
    int u = unshare(CLONE_NEWNS);
    int p = mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL);
    int m = mount("dr-test", argv[1], "tmpfs", 0, "size=1m,mode=0700");
    struct statvfs sv;
    statvfs(argv[1], &sv);
    int fs = syscall(SYS_fsopen, "tmpfs", 0);
    syscall(SYS_fsconfig, fs, 6 /* FSCONFIG_CMD_CREATE */, NULL, NULL, 0);
    int mnt = syscall(SYS_fsmount, fs, 0, 0);
    struct mount_attr_ ma = {1 /* MOUNT_ATTR_RDONLY */, 0, 0, 0};
    int sa = syscall(SYS_mount_setattr, mnt, "", AT_EMPTY_PATH, &ma, sizeof ma);
    struct statvfs sv2;
    fstatvfs(mnt, &sv2);
    int um = umount2(argv[1], 0);
    printf("unshare=%d private=%d mount=%d blocks=%lu setattr=%d rdonly=%d umount=%d\n", u, p, m,
           (unsigned long)sv.f_blocks, sa, !!(sv2.f_flag & ST_RDONLY), um);
    return 0;
}
"""


def test_mounts_are_answered_from_the_recording(work):
    """mount, umount2 and mount_setattr in a namespace of the program's own: the replay
    answers them (and what the program learns about the mounts) from the recording."""
    d = work / "mnt"
    d.mkdir(exist_ok=True)
    out = faithful(work, "mounts", MOUNTS.replace("argv[1]", f'"{d}"'))
    assert out.startswith(b"unshare=0 private=0 mount=0 blocks=256 setattr=0 rdonly=1 umount=0"), out


VM_RW = r"""
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>
int main(void) {
    char src[16] = "hello, world", dst[16] = "...............", got[16] = "";
    struct iovec l = {src, 5}, r = {dst + 2, 5};
    ssize_t w = process_vm_writev(getpid(), &l, 1, &r, 1, 0);
    struct iovec l2 = {got, 12}, r2 = {src + 7, 5};
    ssize_t rd = process_vm_readv(getpid(), &l2, 1, &r2, 1, 0);
    printf("w=%zd dst=%s rd=%zd got=%s\n", w, dst, rd, got);
    return 0;
}
"""


def test_process_vm_writev_to_itself_lands(work):
    """process_vm_writev into the program's own memory: the supervisor copies the bytes along
    the remote iovecs (the program reads them back); process_vm_readv's bytes come from the trace."""
    out = faithful(work, "vm_rw", VM_RW)
    assert out.startswith(b"w=5 dst=..hello........ rd=5 got=world"), out


PIDNS = r"""
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>
static void *drop_stdout(void *arg) {
    unshare(CLONE_FILES);   /* this thread's own fd table: its close leaves the process's stdout */
    close(1);
    return arg;
}
int main(void) {
    int u = unshare(CLONE_NEWPID);
    pid_t c = fork();
    if (c == 0) {   /* pid 1 of the new namespace: its own child is pid 2 there */
        pid_t g = fork();
        if (g == 0) {
            printf("grandchild pid %d\n", getpid());
            fflush(stdout);
            _exit(4);
        }
        int gs = 0;
        pid_t gw = waitpid(g, &gs, 0);
        printf("child pid %d fork=%d waited=%d status=%d\n", getpid(), g, gw == g, WEXITSTATUS(gs));
        return 3;
    }
    int st = 0;
    pid_t w = waitpid(c, &st, 0);
    pthread_t t;
    pthread_create(&t, NULL, drop_stdout, NULL);
    pthread_join(t, NULL);
    printf("unshare=%d waited=%d status=%d\n", u, w == c, WEXITSTATUS(st));
    return 0;
}
"""


def test_pid_namespace_children_and_private_fd_tables(work):
    """A child born in a pid namespace of the program's own (fork returns 2 there, capture
    records its host tid) replays as that child; a thread that unshares its fd table and closes stdout leaves
    the process's stdout open (what it prints after is shown)."""
    out = faithful(work, "pidns", PIDNS, "-pthread")
    assert out == (b"grandchild pid 2\nchild pid 1 fork=2 waited=1 status=4\n"
                   b"unshare=0 waited=1 status=3\n"), out


PIDNS_KILL = r"""
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>
int main(void) {
    int p[2];
    pipe(p);
    unshare(CLONE_NEWPID);
    pid_t init = fork();
    if (init == 0) {            /* pid 1 of the namespace: its children die with it */
        for (int i = 0; i < 3; i++)
            if (fork() == 0) { pause(); _exit(0); }
        write(p[1], "x", 1);
        pause();
        _exit(0);
    }
    char c;
    read(p[0], &c, 1);
    printf("killing the namespace's init\n");
    fflush(stdout);
    return kill(init, SIGKILL);   /* and exit at once: its members die after us */
}
"""


def test_children_of_a_killed_pid_namespace_init_do_not_hold_the_replay(work):
    """Killing a pid namespace's init kills its other members in the recording; replay (whose
    namespaces are the sandbox's) ends once everything recorded was replayed instead of waiting
    for them (it hung when the first process's end was seen before their last calls)."""
    for i in range(3):
        out = faithful(work, f"pidns_kill{i}", PIDNS_KILL)
        assert out == b"killing the namespace's init\n", out


INIT_SIGNAL = r"""
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>
int main(void) {
    unshare(CLONE_NEWPID);
    pid_t init = fork();
    if (init == 0) {
        kill(getpid(), SIGQUIT);   /* pid 1, no handler: the kernel does not let it act */
        printf("init %d survived\n", getpid());
        return 55;
    }
    int st = 0;
    waitpid(init, &st, 0);
    printf("exited=%d status=%d\n", WIFEXITED(st), WEXITSTATUS(st));
    return 0;
}
"""


def test_an_unhandled_signal_a_pid_namespace_init_survived_does_not_kill_it(work):
    """The recording shows SIGQUIT delivered to a namespace's init that lived on; replay's
    process is no init, so delivering it would kill it: a recorded unhandled delivery the
    process survived is not delivered."""
    out = faithful(work, "init_signal", INIT_SIGNAL)
    assert out == b"init 1 survived\nexited=1 status=55\n", out
