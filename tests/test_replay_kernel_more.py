"""Strict replay of more kernel behaviour (kernel devices, restarts after native calls,
asynchronous signals, SysV message queues, fds passed over unix sockets, pid
namespaces): small C programs recorded with the real capture and replayed under the
real seccomp supervisor, each faithful with the stdout it printed when recorded.
"""

from __future__ import annotations

import struct
import subprocess

from conftest import KERNEL_REPLAY, faithful, work_dir

pytestmark = KERNEL_REPLAY
work = work_dir("dr-test-more-")


DEV_ZERO = r"""
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
int main(void) {
    int fd = open("/dev/zero", O_RDWR);
    char *a = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    char *b = mmap(0, 4096, PROT_READ, MAP_SHARED, fd, 0);
    if (a == MAP_FAILED || b == MAP_FAILED) { printf("mmap failed\n"); return 1; }
    memset(a, 0xdd, 4096);
    char buf[8] = {1};
    ssize_t r = read(fd, buf, sizeof buf);
    int full = open("/dev/full", O_WRONLY);
    ssize_t w = write(full, "x", 1);
    printf("b[0]=%d read=%zd buf0=%d full=%zd\n", b[0], r, buf[0], w);
    return 0;
}
"""


def test_dev_zero_shared_mapping_is_the_real_device(work):
    assert faithful(work, "devzero", DEV_ZERO) == b"b[0]=0 read=8 buf0=0 full=-1\n"


NATIVE_RESTART = r"""
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static volatile pid_t waiter;
static int ready[2];
static void *wait_thread(void *arg) {
    (void)arg;
    signal(SIGUSR2, SIG_IGN);
    pthread_mutex_lock(&lock);
    waiter = syscall(SYS_gettid);
    write(ready[1], "r", 1);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 400000000;
    if (ts.tv_nsec >= 1000000000) { ts.tv_sec++; ts.tv_nsec -= 1000000000; }
    /* a native futex wait; the ignored SIGUSR2 interrupts it only under capture's
       ptrace (ERESTART_RESTARTBLOCK, then restart_syscall) */
    int r = pthread_cond_timedwait(&cond, &lock, &ts);
    pthread_mutex_unlock(&lock);
    printf("wait: %s\n", r == ETIMEDOUT ? "timed out" : "woken");
    return NULL;
}
int main(void) {
    pthread_t t;
    char c;
    pipe(ready);
    pthread_create(&t, NULL, wait_thread, NULL);
    read(ready[0], &c, 1);
    usleep(100000);
    syscall(SYS_tgkill, getpid(), waiter, SIGUSR2);
    pthread_join(t, NULL);
    printf("done\n");
    return 0;
}
"""


def test_restart_of_a_native_wait_runs_natively(work):
    assert faithful(work, "native_restart", NATIVE_RESTART) == b"wait: timed out\ndone\n"


TIMER_SIGNAL = r"""
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
static volatile sig_atomic_t got;
static void on_usr1(int sig) { (void)sig; got = 1; }
static void *helper(void *arg) {
    (void)arg;
    sigset_t none;
    sigemptyset(&none);
    write(1, "helper waits\n", 13);
    sigsuspend(&none);   /* a native wait: no answered call of this thread is pending */
    return NULL;
}
int main(void) {
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigprocmask(SIG_BLOCK, &usr1, NULL);
    pthread_t t;
    pthread_create(&t, NULL, helper, NULL);
    struct timespec nap = {0, 50000000};
    nanosleep(&nap, NULL);
    /* installed after the helper's last answered call: the signal must not come then */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_SIGNAL;
    sev.sigev_signo = SIGUSR1;
    timer_t id;
    timer_create(CLOCK_MONOTONIC, &sev, &id);
    struct itimerspec when = {{0, 0}, {0, 1000000}};
    timer_settime(id, 0, &when, NULL);
    nanosleep(&nap, NULL);   /* the timer fires: the helper, not blocking SIGUSR1, takes it */
    pthread_join(t, NULL);
    printf("got %d\n", got);
    return 0;
}
"""


def test_timer_signal_taken_by_a_thread_in_a_native_wait(work):
    from dr.replay.strict.script import load_script
    assert faithful(work, "timer_signal", TIMER_SIGNAL, "-lrt").endswith(b"got 1\n")
    # sent process-wide with the latest answered call, not at the helper's own last call
    script = load_script(str(work / "timer_signal.drt"))
    assert [sig for sigs in script.proc_signals.values() for _, sig in sigs] == [10]


PENDING_TO_NEW_THREAD = r"""
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <time.h>
static volatile sig_atomic_t got;
static void on_usr1(int sig) { (void)sig; got = 1; }
static void *unblock(void *arg) {
    (void)arg;
    sigset_t none;
    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, NULL);   /* the pending SIGUSR1 is taken here */
    return NULL;
}
int main(void) {
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigprocmask(SIG_BLOCK, &usr1, NULL);
    signal(SIGUSR1, on_usr1);
    struct sigevent ev = {0};
    ev.sigev_notify = SIGEV_SIGNAL;
    ev.sigev_signo = SIGUSR1;
    timer_t id;
    timer_create(CLOCK_MONOTONIC, &ev, &id);
    struct itimerspec t = {{0, 0}, {0, 1000000}};
    timer_settime(id, 0, &t, NULL);
    struct timespec ts = {0, 50000000};
    nanosleep(&ts, NULL);                          /* the timer fires: pending, blocked */
    pthread_t th;
    pthread_create(&th, NULL, unblock, NULL);
    pthread_join(th, NULL);
    printf("handled %d\n", (int)got);
    return 0;
}
"""


def test_a_pending_timer_signal_taken_by_a_new_thread_is_sent_by_replay(work):
    # The new thread takes the signal in a call that runs natively, before any answered
    # call of its own: replay sends it process-wide, where it was pending (it was dropped)
    assert faithful(work, "pending_new_thread", PENDING_TO_NEW_THREAD, "-lrt") == b"handled 1\n"


EXEC_OVER_NEW_THREAD = r"""
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>
static void *idle(void *arg) { (void)arg; sleep(1000); return NULL; }
int main(int argc, char **argv) {
    if (argc > 1) { printf("after exec\n"); return 0; }
    pthread_t t;
    pthread_create(&t, NULL, idle, NULL);
    char *args[] = {"/proc/self/exe", "again", NULL};
    execv("/proc/self/exe", args);   /* kills the thread, often before its first call */
    return 1;
}
"""


def test_a_thread_killed_by_exec_before_its_first_call_is_not_a_signal_to_resend(work):
    from dr.replay.strict.script import load_script
    assert faithful(work, "exec_new_thread", EXEC_OVER_NEW_THREAD) == b"after exec\n"
    script = load_script(str(work / "exec_new_thread.drt"))
    assert all(sig != 9 for sigs in script.proc_signals.values() for _, sig in sigs)


MAIN_LEAVES_FIRST = r"""
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>
static volatile unsigned long spin;
static void *work(void *arg) {
    (void)arg;
    /* fast at capture, several times slower answered one by one in replay */
    for (int i = 0; i < 20000; i++) syscall(SYS_getppid);
    write(1, "from the thread\n", 16);
    return NULL;
}
int main(void) {
    dlopen("libgcc_s.so.1", RTLD_NOW);   /* so pthread_exit makes no answered call */
    pthread_t t;
    pthread_create(&t, NULL, work, NULL);
    for (long i = 0; i < 25000000L; i++) spin++;   /* user space only */
    pthread_exit(NULL);   /* glibc: exit_group when the last thread, exit when not */
}
"""


def test_main_thread_leaving_before_its_thread_unlike_the_recording_is_faithful(work):
    # at capture the thread left first (main: exit_group); in replay its answered calls
    # take longer, so main leaves first with exit, and the thread last with exit_group
    assert faithful(work, "main_leaves_first", MAIN_LEAVES_FIRST) == b"from the thread\n"


SCM_RIGHTS = r"""
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
int main(void) {
    int sv[2], p[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    if (fork() == 0) {
        pipe(p);
        write(p[1], "through the passed fd\n", 22);
        char c = 'x';
        struct iovec iov = {&c, 1};
        char ctl[CMSG_SPACE(sizeof(int))];
        struct msghdr m = {0};
        m.msg_iov = &iov; m.msg_iovlen = 1; m.msg_control = ctl; m.msg_controllen = sizeof ctl;
        struct cmsghdr *h = CMSG_FIRSTHDR(&m);
        h->cmsg_level = SOL_SOCKET; h->cmsg_type = SCM_RIGHTS; h->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(h), &p[0], sizeof(int));
        sendmsg(sv[0], &m, 0);
        _exit(0);
    }
    char c, ctl[CMSG_SPACE(sizeof(int))], buf[64];
    struct iovec iov = {&c, 1};
    struct msghdr m = {0};
    m.msg_iov = &iov; m.msg_iovlen = 1; m.msg_control = ctl; m.msg_controllen = sizeof ctl;
    recvmsg(sv[1], &m, MSG_CMSG_CLOEXEC);
    int fd;
    memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&m)), sizeof(int));
    int again = dup(fd);
    ssize_t n = read(again, buf, sizeof buf);
    close(fd);
    wait(NULL);
    printf("fd %d dup %d read %zd: %.*s", fd, again, n, (int)n, buf);
    return 0;
}
"""


def test_fds_passed_with_scm_rights_exist_in_the_receiver(work):
    from dr.replay.strict.rights import passed_fds
    out = faithful(work, "scm_rights", SCM_RIGHTS)
    assert out.endswith(b"through the passed fd\n")
    fd = int(out.split()[1])
    ctl = struct.pack("<QiI", 20, 1, 1) + struct.pack("<i", fd) + b"\0" * 4
    assert passed_fds(ctl) == [fd]
    assert passed_fds(struct.pack("<QiI", 4096, 1, 1)) == []   # a length past the data: not trusted


PASSED_MEM = r"""
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
static volatile int word = 1;
static int launder(int fd) {
    int sv[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    char c = 'x', ctl[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {&c, 1};
    struct msghdr m = {0};
    m.msg_iov = &iov; m.msg_iovlen = 1; m.msg_control = ctl; m.msg_controllen = sizeof ctl;
    struct cmsghdr *h = CMSG_FIRSTHDR(&m);
    h->cmsg_level = SOL_SOCKET; h->cmsg_type = SCM_RIGHTS; h->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(h), &fd, sizeof(int));
    sendmsg(sv[1], &m, 0);
    memset(ctl, 0, sizeof ctl);
    recvmsg(sv[0], &m, 0);
    memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&m)), sizeof(int));
    close(sv[0]); close(sv[1]);
    return fd;
}
int main(void) {
    int go[2];
    pipe(go);
    pid_t child = fork();
    if (child == 0) {
        char c;
        read(go[0], &c, 1);
        printf("child sees %d\n", word);
        return 0;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/mem", child);
    int mem = launder(open(path, O_RDWR));
    int v = 42;
    ssize_t w = pwrite(mem, &v, sizeof v, (off_t)(unsigned long)&word);
    write(go[1], "x", 1);
    waitpid(child, NULL, 0);
    printf("wrote %zd through the passed fd\n", w);
    return 0;
}
"""


def test_an_owned_fd_passed_with_scm_rights_keeps_its_object(work):
    # /proc/CHILD/mem is real in replay (its writes change the child); passed over a unix
    # socket it stays that file, not a /dev/null stand-in, so the child sees the write
    out = faithful(work, "passed_mem", PASSED_MEM)
    assert out == b"child sees 42\nwrote 4 through the passed fd\n"


PIPE_BIG_WRITE = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <x86intrin.h>
int main(int argc, char **argv) {
    size_t n = 1 << 20;
    char *buf = malloc(n);
    for (size_t i = 0; i < n; i++) buf[i] = 'a' + i % 26;
    if (argc > 1) { unsigned long long t = __rdtsc(); memcpy(buf + n - 8, &t, 8); }  /* differs in replay */
    int p[2];
    pipe(p);
    if (fork() == 0) {
        close(p[1]);
        size_t got = 0, sum = 0;
        static char in[32768];
        ssize_t r;
        while ((r = read(p[0], in, sizeof in)) > 0)
            for (ssize_t i = 0; i < r; i++, got++) sum += (unsigned char)in[i];
        printf("child read %zu\n", got);
        return 0;
    }
    close(p[0]);
    ssize_t w = write(p[1], buf, n);
    close(p[1]);
    wait(NULL);
    printf("wrote %zd\n", w);
    return 0;
}
"""


def test_a_pipe_write_cut_at_the_snaplen_is_compared_with_what_its_reader_received(work):
    from conftest import DR, build_c, replay
    exe = build_c(work, "pipe_big", PIPE_BIG_WRITE)
    for tag, extra in (("same", ()), ("tsc", ("tsc",))):
        trace = work / f"pipe_big_{tag}.drt"
        r = subprocess.run([DR, "capture", "-q", "--snaplen", "64K", "-o", str(trace), "--", str(exe), *extra],
                           capture_output=True, timeout=120, cwd=str(work))
        assert r.returncode == 0, r.stderr.decode()
        rr = replay(trace)
        if tag == "same":
            # 1 MiB written, 64 KiB recorded with the write: the rest compared with the
            # child's reads (32 KiB each, recorded whole), so faithful, not "incomplete"
            assert rr.returncode == 0, rr.stderr.decode()
            assert rr.stdout == r.stdout == b"child read 1048576\nwrote 1048576\n"
        else:
            # the last 8 bytes differ in replay (a TSC read): seen past the snaplen
            assert rr.returncode == 4, rr.stderr.decode()
            assert b"past the capture's snaplen" in rr.stderr


PID_NS = r"""
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
static void *leave(void *arg) { (void)arg; exit(66); }
int main(void) {
    if (unshare(CLONE_NEWPID)) { printf("no pid namespace\n"); return 0; }
    pid_t init = fork();
    if (init == 0) {
        /* pids here are the namespace's (1, 2, 3, 4): no recorded tid has them */
        if (fork() == 0) {
            if (fork() == 0) sleep(10);   /* killed by the namespace's teardown */
            return 0;
        }
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
        pthread_t t;
        pthread_create(&t, NULL, leave, NULL);
        pthread_exit(NULL);
    }
    int status;
    waitpid(init, &status, 0);
    printf("init exited %d\n", WEXITSTATUS(status));
    return 0;
}
"""


def test_tasks_in_a_pid_namespace_are_matched_by_creator_and_rank(work):
    assert faithful(work, "pid_ns", PID_NS) == b"init exited 66\n"


SYSV_MSG = r"""
#include <stdio.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/wait.h>
#include <unistd.h>
struct m { long type; char text[16]; };
int main(void) {
    int q = msgget(IPC_PRIVATE, 0600);
    if (fork() == 0) {
        struct m in;
        ssize_t n = msgrcv(q, &in, sizeof in.text, 1, 0);
        printf("child got %zd: %s\n", n, in.text);
        return 0;
    }
    struct m out = {1, "hello"};
    msgsnd(q, &out, sizeof out.text, 0);
    wait(NULL);
    printf("queue id %d, removed %d\n", q, msgctl(q, IPC_RMID, NULL));
    return 0;
}
"""


def test_sysv_message_queue_keeps_the_recorded_id(work):
    # A queue on the host before the capture: the recorded id is not a fresh namespace's first.
    host = subprocess.run(["ipcmk", "-Q"], capture_output=True, text=True, check=True).stdout
    qid = int(host.split(":")[-1])
    try:
        out = faithful(work, "sysv_msg", SYSV_MSG)
    finally:
        subprocess.run(["ipcrm", "-q", str(qid)], capture_output=True)
    assert out.startswith(b"child got 16: hello\n")
    assert not out.endswith(b"queue id 0, removed 0\n")
