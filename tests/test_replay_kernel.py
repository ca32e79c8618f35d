"""Strict replay answers like the kernel: small C programs written for these
tests, each exercising one class of kernel behaviour, recorded with the real
capture and replayed under the real seccomp supervisor. Each must replay
faithfully and print what it printed when recorded.

Budget: a few seconds per program.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path


from conftest import DR, KERNEL_REPLAY, build_c, faithful, record, replay, work_dir




pytestmark = KERNEL_REPLAY
work = work_dir("dr-test-kernel-")




# ----------------------------------------------------------------------------- syscall numbers

INVALID = r"""
#include <stdio.h>
#include <errno.h>
#include <unistd.h>
#include <sys/syscall.h>
int main(void) {
    long r = syscall(-1);
    printf("syscall(-1) = %ld errno %d\n", r, errno);
    errno = 0;
    r = syscall(0x40000000 | 39);   /* an x32 getpid: this kernel has no x32 */
    printf("x32 = %ld errno %d\n", r, errno);
    long ret;
    __asm__ volatile ("int $0x80" : "=a"(ret) : "a"(20) : "memory");   /* i386 getpid */
    printf("int 0x80 getpid == getpid: %d\n", ret == getpid());
    return 0;
}
"""


def test_invalid_numbers_and_int80_answered_as_recorded(work):
    out = faithful(work, "invalid", INVALID)
    assert b"syscall(-1) = -1 errno 38" in out


# ----------------------------------------------------------------------------- restarts

SIGCHLD_LOOP = r"""
#include <stdio.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>
static volatile sig_atomic_t got;
static void on_chld(int s) { (void)s; got++; }
int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_chld;          /* no SA_RESTART: an interrupted clone is restarted */
    sigaction(SIGCHLD, &sa, NULL);
    int n = 0, reaped = 0;
    for (int i = 0; i < 30; i++) {
        pid_t p = fork();
        if (p == 0) _exit(0);
        if (p > 0) n++;
        close(open("/dev/null", O_RDONLY));
    }
    for (;;) {
        pid_t w = wait(NULL);
        if (w > 0) reaped++;
        else if (errno != EINTR) break;
    }
    printf("forked %d reaped %d handler ran %d\n", n, reaped, (int)got);
    return 0;
}
"""

STOP_CONT = r"""
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>
int main(void) {
    int p[2];
    pipe(p);
    pid_t c = fork();
    if (c == 0) {
        struct pollfd fd = {p[0], POLLIN, 0};
        int r = poll(&fd, 1, 1500);     /* SIGSTOP/SIGCONT: back through restart_syscall */
        printf("child poll = %d revents %d\n", r, fd.revents);
        return 0;
    }
    struct timespec ts = {0, 300 * 1000 * 1000};
    nanosleep(&ts, NULL);
    kill(c, SIGSTOP);
    nanosleep(&ts, NULL);
    kill(c, SIGCONT);
    int st;
    waitpid(c, &st, 0);
    printf("parent: child exited %d\n", WEXITSTATUS(st));
    return 0;
}
"""


def test_sigchld_without_sa_restart_fork_loop_faithful_every_time(work):
    """SIGCHLD (no SA_RESTART) at a native clone: the kernel restarts the clone
    (ERESTARTNOINTR), which replay must not count as a second clone."""
    exe = build_c(work, "chldloop", SIGCHLD_LOOP)
    for i in range(5):
        trace, out = record(work, f"chldloop{i}", str(exe))
        r = replay(trace)
        assert r.returncode == 0, (i, r.stderr.decode())
        assert r.stdout == out and out.startswith(b"forked 30 reaped 30")


def test_poll_interrupted_by_sigstop_sigcont(work):
    out = faithful(work, "stopcont", STOP_CONT)
    assert b"child poll = 0" in out


# ----------------------------------------------------------------------------- synchronous faults

SEGV_LONGJMP = r"""
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
static sigjmp_buf env;
static void on_segv(int s) { (void)s; siglongjmp(env, 1); }
int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_segv;
    sigaction(SIGSEGV, &sa, NULL);
    int recovered = 0;
    for (int i = 0; i < 3; i++) {
        if (sigsetjmp(env, 1) == 0) {
            printf("round %d: touching NULL\n", i);
            fflush(stdout);
            *(volatile int *)0 = i;
        } else {
            recovered++;
        }
    }
    printf("recovered %d times\n", recovered);
    return 0;
}
"""


def test_sigsegv_handler_recovering_with_siglongjmp(work):
    """The program's own faults are raised by its own execution in replay, never re-sent."""
    out = faithful(work, "segv", SEGV_LONGJMP)
    assert out.endswith(b"recovered 3 times\n")


# ----------------------------------------------------------------------------- lifecycle

KILL_CHILD = r"""
#include <signal.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>
int main(void) {
    int p[2];
    pipe(p);
    pid_t c = fork();
    if (c == 0) {                      /* writes and sleeps until its parent kills it */
        close(p[0]);
        for (;;) {
            char b = 'x';
            write(p[1], &b, 1);
            struct timespec ts = {0, 20 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    close(p[1]);
    char buf[1];
    for (int i = 0; i < 5; i++) read(p[0], buf, 1);
    kill(c, SIGKILL);
    int st;
    waitpid(c, &st, 0);
    printf("child killed by signal %d\n", WIFSIGNALED(st) ? WTERMSIG(st) : -1);
    return 0;
}
"""

EXEC_FROM_THREAD = r"""
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>
static char *self;
static void *run(void *a) {
    (void)a;
    char *argv[] = {self, "again", NULL};
    execv(self, argv);                 /* from a second thread: it takes the leader's tid */
    return NULL;
}
int main(int argc, char **argv) {
    if (argc > 1) {
        printf("after exec: pid == tid: %d\n", getpid() == gettid());
        return 0;
    }
    self = argv[0];
    printf("before exec\n");
    fflush(stdout);
    pthread_t t;
    pthread_create(&t, NULL, run, NULL);
    for (;;) pause();
}
"""

ORPHAN = r"""
#include <stdio.h>
#include <time.h>
#include <unistd.h>
int main(void) {
    printf("parent starts\n");
    fflush(stdout);
    if (fork() == 0) {
        struct timespec ts = {0, 300 * 1000 * 1000};
        nanosleep(&ts, NULL);
        printf("orphan writes after its parent exited\n");
        return 0;
    }
    return 0;
}
"""


def test_child_killed_by_its_parent_mid_loop(work):
    out = faithful(work, "killchild", KILL_CHILD)
    assert out == b"child killed by signal 9\n"


def test_exec_from_a_second_thread(work):
    out = faithful(work, "execthr", EXEC_FROM_THREAD, "-lpthread")
    assert out == b"before exec\nafter exec: pid == tid: 1\n"


def test_orphan_is_recorded_to_its_end_and_compared(work):
    """Spawn mode follows the whole tree: an orphan writing after its parent exited
    is recorded, and its output is compared in replay."""
    out = faithful(work, "orphan", ORPHAN)
    assert out == b"parent starts\norphan writes after its parent exited\n"


def test_orphan_outliving_the_recording_is_never_called_faithful(work):
    """A capture stopped (--duration) while an orphan still runs: its later output
    was not recorded, so replay cannot compare it and must not say faithful."""
    exe = build_c(work, "orphan3", ORPHAN.replace("{0, 300 * 1000 * 1000}", "{3, 0}"))
    trace = work / "orphan3.drt"
    subprocess.run([DR, "capture", "-q", "--duration", "1", "-o", str(trace), "--", str(exe)],
                   capture_output=True, timeout=120, cwd=str(work))
    r = replay(trace)
    assert r.returncode == 7, r.stderr.decode()
    assert b"incomplete" in r.stderr and b"faithful" not in r.stderr
    assert r.stdout == b"parent starts\n"


# ----------------------------------------------------------------------------- verdicts

BIG_WRITE = r"""
#include <stdlib.h>
#include <unistd.h>
int main(void) {
    size_t n = 1 << 20, off = 0;
    char *b = malloc(n);
    for (size_t i = 0; i < n; i++) b[i] = 'a' + i % 26;
    while (off < n) { ssize_t w = write(1, b + off, n - off); if (w <= 0) return 1; off += w; }
    return 0;
}
"""


def test_write_truncated_at_snaplen_is_not_faithful(work):
    exe = build_c(work, "bigwrite", BIG_WRITE)
    trace = work / "bigwrite.drt"
    r = subprocess.run([DR, "capture", "-q", "--snaplen", "64K", "-o", str(trace), "--", str(exe)],
                       capture_output=True, timeout=120)
    assert r.returncode == 0 and len(r.stdout) == 1 << 20, r.stderr.decode()
    rp = subprocess.run([DR, "replay", str(trace)], capture_output=True, timeout=120)
    assert rp.returncode == 7, rp.stderr.decode()
    err = rp.stderr.decode()
    assert err.count("\n") == 1 and "faithful" not in err
    assert f"{(1 << 20) - (64 << 10)} bytes the program wrote were cut" in err
    assert err.rstrip().endswith("re-capture with `--snaplen 1M`")   # the remedy, sized


# ----------------------------------------------------------------------------- coverage

COVERAGE = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timex.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>
static volatile int got_val;
static void on_usr1(int s, siginfo_t *si, void *u) { (void)s; (void)u; got_val = si->si_value.sival_int; }
int main(int argc, char **argv) {
    char dir[] = "@DIR@";
    if (mkdir(dir, 0700)) return 1;
    char a[256], b[256], f[256];
    snprintf(a, sizeof a, "%s/a", dir); snprintf(b, sizeof b, "%s/b", dir); snprintf(f, sizeof f, "%s/fifo", dir);
    close(open(a, O_CREAT | O_WRONLY, 0644));
    printf("renameat2 %d\n", (int)syscall(SYS_renameat2, AT_FDCWD, a, AT_FDCWD, b, 0));
    printf("fchmodat %d\n", fchmodat(AT_FDCWD, b, 0600, 0));
    printf("mknodat %d\n", mknodat(AT_FDCWD, f, S_IFIFO | 0600, 0));
    struct timespec ts[2] = {{1000000000, 0}, {1000000000, 0}};
    printf("utimensat %d\n", utimensat(AT_FDCWD, b, ts, 0));
    char v[16];
    ssize_t x = getxattr(b, "user.none", v, sizeof v);
    printf("getxattr %zd errno %d\n", x, x < 0 ? errno : 0);
    struct timex tx; memset(&tx, 0, sizeof tx);
    int st = clock_adjtime(CLOCK_REALTIME, &tx);
    printf("clock_adjtime state %d tick %ld\n", st, tx.tick);
    struct sigaction sa; memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_usr1; sa.sa_flags = SA_SIGINFO;
    sigaction(SIGUSR1, &sa, NULL);
    siginfo_t si; memset(&si, 0, sizeof si);
    si.si_code = SI_QUEUE; si.si_pid = getpid(); si.si_uid = getuid(); si.si_value.sival_int = 42;
    printf("rt_sigqueueinfo %d\n", (int)syscall(SYS_rt_sigqueueinfo, getpid(), SIGUSR1, &si));
    printf("handler got %d\n", got_val);
    struct mq_attr at = {0, 4, 32, 0};
    mqd_t q = mq_open("/dr-cover", O_CREAT | O_RDWR, 0600, &at);
    printf("mq_send %d\n", mq_send(q, "hello", 5, 1));
    char m[32]; unsigned prio = 0;
    ssize_t n = mq_receive(q, m, sizeof m, &prio);
    printf("mq_receive %zd %.*s prio %u\n", n, (int)(n > 0 ? n : 0), m, prio);
    mq_close(q); mq_unlink("/dr-cover");
    pid_t c = fork();
    if (c == 0) _exit(7);
    siginfo_t wi; memset(&wi, 0, sizeof wi);
    waitid(P_PID, c, &wi, WEXITED);
    printf("waitid status %d code %d\n", wi.si_status, wi.si_code);
    unlink(f); unlink(b); rmdir(dir);
    return 0;
}
"""


def test_calls_that_used_to_stop_replay_are_substituted(work):
    """renameat2, fchmodat, mknodat, utimensat, getxattr, clock_adjtime,
    rt_sigqueueinfo (its si_value reaches the handler), mq_*, waitid."""
    d = work / "cover-dir"
    out = faithful(work, "cover", COVERAGE.replace("@DIR@", str(d)), "-lrt")
    assert b"handler got 42" in out and b"mq_receive 5 hello prio 1" in out
    assert b"waitid status 7" in out


def test_sigterm_writes_the_report_and_kills_the_tracee(work):
    """SIGTERM to dr replay: a report saying how far it got, exit 130, no tracee left."""
    import json
    import signal
    import time
    trace, _ = record(work, "ddterm", "dd", "if=/dev/zero", "of=/dev/null", "bs=1", "count=100000")
    report = work / "term.json"
    p = subprocess.Popen([DR, "replay", "--report", str(report), str(trace)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        # wait until the tracee runs (the sandbox's dd appears as a grandchild)
        while time.monotonic() < deadline and not _descendants(p.pid, "dd"):
            time.sleep(0.05)
        p.send_signal(signal.SIGTERM)
        _out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, err.decode()
    assert b"interrupted by SIGTERM" in err and err.count(b"\n") == 1
    rep = json.loads(report.read_text())
    assert rep["verdict"] == "interrupted" and 0 < rep["events_replayed"] < rep["events_total"]
    assert not _descendants(p.pid, "dd")


def _descendants(pid: int, comm: str) -> list[int]:
    """Processes named ``comm`` whose ancestry includes ``pid`` (from /proc)."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/comm") as f:
                if f.read().strip() != comm:
                    continue
            cur = int(d)
            for _ in range(16):
                with open(f"/proc/{cur}/stat") as f:
                    cur = int(f.read().rsplit(")", 1)[1].split()[1])
                if cur == pid:
                    found.append(int(d))
                    break
                if cur <= 1:
                    break
        except (OSError, ValueError):
            continue
    return found


# ----------------------------------------------------------------------------- request-sized out-buffers

REQ_OUT = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>
int main(void) {
    char name[16] = "";
    int sig = -1;
    prctl(PR_SET_NAME, "req-out");
    prctl(PR_SET_PDEATHSIG, SIGUSR1);
    prctl(PR_GET_NAME, name);
    prctl(PR_GET_PDEATHSIG, &sig);
    int fd = open("/etc/passwd", O_RDONLY);   /* not a file of the run: fcntl is substituted */
    struct flock fl = {.l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 10};
    int r = fcntl(fd, F_GETLK, &fl);          /* nobody holds it: l_type comes back F_UNLCK */
    struct f_owner_ex own = {.type = 7, .pid = 7};
    int r2 = fcntl(fd, F_GETOWN_EX, &own);    /* no owner: {F_OWNER_TID 0, 0} */
    printf("name=%s sig=%d getlk=%d type=%d ownex=%d %d %d\n", name, sig, r, fl.l_type, r2,
           own.type, own.pid);
    return 0;
}
"""


def test_request_sized_out_buffers_are_written_back(work):
    """fcntl and prctl getters whose buffer the request sizes (F_GETLK, F_GETOWN_EX,
    PR_GET_NAME, PR_GET_PDEATHSIG): replay writes what the kernel wrote."""
    out = faithful(work, "req_out", REQ_OUT)
    assert out.startswith(b"name=req-out sig=10 getlk=0 type=2 ownex=0 0 0"), out


SYSV_SHM = r"""
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/wait.h>
int main(void) {
    int id = shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600);
    char *p = shmat(id, NULL, 0);
    if (fork() == 0) { strcpy(p, "written by the child"); shmdt(p); return 0; }
    wait(NULL);
    printf("parent reads: %s\n", p);
    shmdt(p);
    shmctl(id, IPC_RMID, NULL);
    return 0;
}
"""


def test_sysv_shared_memory_runs_in_the_sandbox_ipc_namespace(work):
    """shmget/shmat/shmdt/shmctl run natively in the sandbox's own IPC namespace (the
    segment is the replay's, never the host's): the child's bytes reach the parent."""
    out = faithful(work, "sysvshm", SYSV_SHM)
    assert out == b"parent reads: written by the child\n"


PIDFD_STDOUT = r"""
#define _GNU_SOURCE
#include <stdio.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
int main(void) {
    int p[2];
    char c;
    pipe(p);
    pid_t child = fork();
    if (child == 0) { read(p[0], &c, 1); return 0; }
    int pidfd = syscall(SYS_pidfd_open, child, 0);
    int out = syscall(SYS_pidfd_getfd, pidfd, 1, 0);   /* the child's stdout */
    write(out, "through the child's stdout\n", 27);
    write(p[1], "x", 1);
    wait(NULL);
    return 0;
}
"""


def test_stdout_taken_with_pidfd_getfd_is_shown(work):
    """An fd taken from another process's stdout with pidfd_getfd is the console too:
    --show-output prints what was written through it, as the recording did."""
    out = faithful(work, "pidfdout", PIDFD_STDOUT)
    assert out == b"through the child's stdout\n"


OWN_FILTER = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/ucontext.h>
static volatile int traps;
static void on_sys(int sig, siginfo_t *si, void *uc) {
    (void)sig; (void)si;
    traps++;
    ((ucontext_t *)uc)->uc_mcontext.gregs[REG_RAX] = 42;
}
int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sys;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSYS, &sa, NULL);
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_pipe2, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ESRCH),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_geteuid, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRAP),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {sizeof f / sizeof f[0], f};
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    long r = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
    int p[2];
    long e = syscall(SYS_pipe2, p, 0);
    int err = errno;
    long uid = syscall(SYS_geteuid);
    printf("filter %ld pipe2 %ld %s geteuid %ld traps %d\n", r, e, strerror(err), uid, traps);
    return 0;
}
"""


def test_a_filter_the_program_installs_acts_in_replay(work):
    """The program's own seccomp filter is installed for real in replay: its
    SECCOMP_RET_ERRNO and SECCOMP_RET_TRAP answers (and the SIGSYS handler's
    result) come out as recorded."""
    out = faithful(work, "ownfilter", OWN_FILTER)
    assert out == b"filter 0 pipe2 -1 No such process geteuid 42 traps 1\n"


def test_script_started_by_a_relative_path_replays(work):
    """`dr capture -- ./run.sh`: the tracee execs the path as recorded, from the recorded
    working directory, so the interpreter opens "./run.sh" as it did at capture."""
    script = work / "run.sh"
    script.write_text("#!/bin/sh\necho started as $0\n")
    script.chmod(0o755)
    trace, out = record(work, "relscript", "./run.sh")
    assert out == b"started as ./run.sh\n"
    r = replay(trace)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout == out


def test_program_below_a_closed_directory_is_named_as_the_cause():
    """A program below a 0700 directory (pyenv or a venv in /root): the sandbox's root
    is not host root, so it cannot be started; replay says which directory and why."""
    closed = Path(tempfile.mkdtemp(prefix="dr-test-closed-", dir="/var/lib"))
    try:
        os.chmod(closed, 0o700)
        shutil.copy("/bin/true", closed / "prog")
        trace, _ = record(closed, "closed", str(closed / "prog"))
        r = replay(trace)
        assert r.returncode == 1
        assert f"{closed} is closed to other users (mode 700)".encode() in r.stderr, r.stderr.decode()
    finally:
        shutil.rmtree(closed, ignore_errors=True)
