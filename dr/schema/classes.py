"""strace's syscall classes (``-e trace=%network``), declared once for ``dr show``.

strace tags each syscall of its table (strace ``src/linux/x86_64/syscallent.h``
and ``src/linux/generic/syscallent-common.h``) with class flags: TD (%desc),
TF (%file), TN (%network), TP (%process), TS (%signal), TI (%ipc), TM
(%memory), TC (%creds), TCL (%clock), and the stat families. The membership
below is strace's, so ``dr show -e trace=%network`` selects the same names as
``strace -e trace=%network`` (tests/test_show_flags.py runs both on one program).
Every name here is a syscall of :mod:`dr.schema.syscalls` (tests/test_schema.py
checks it); a name strace knows and this schema does not is left out.
"""

from __future__ import annotations

__all__ = ["TRACE_CLASSES"]


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: class name (without ``%``) -> the syscall names strace puts in it.
TRACE_CLASSES: dict[str, frozenset[str]] = {
    # TD: takes or returns a file descriptor
    "desc": _names("""
        read write open close fstat poll lseek mmap ioctl pread64 pwrite64 readv writev pipe
        select dup dup2 sendfile fcntl flock fsync fdatasync ftruncate getdents fchdir creat
        fchmod fchown fstatfs readahead fsetxattr fgetxattr flistxattr fremovexattr
        epoll_create getdents64 fadvise64 epoll_wait epoll_ctl mq_open mq_timedsend
        mq_timedreceive mq_notify mq_getsetattr inotify_init inotify_add_watch inotify_rm_watch
        openat mkdirat mknodat fchownat futimesat newfstatat unlinkat renameat linkat symlinkat
        readlinkat fchmodat faccessat pselect6 ppoll splice tee sync_file_range vmsplice
        utimensat epoll_pwait signalfd timerfd_create eventfd fallocate timerfd_settime
        timerfd_gettime signalfd4 eventfd2 epoll_create1 dup3 pipe2 inotify_init1 preadv
        pwritev perf_event_open fanotify_init fanotify_mark name_to_handle_at open_by_handle_at
        syncfs setns finit_module renameat2 memfd_create kexec_file_load bpf execveat
        userfaultfd copy_file_range preadv2 pwritev2 statx pidfd_send_signal io_uring_setup
        io_uring_enter io_uring_register open_tree move_mount fsopen fsconfig fsmount fspick
        pidfd_open openat2 pidfd_getfd faccessat2 process_madvise epoll_pwait2 mount_setattr
        quotactl_fd landlock_create_ruleset landlock_add_rule landlock_restrict_self
        memfd_secret process_mrelease cachestat fchmodat2 setxattrat getxattrat listxattrat
        removexattrat open_tree_attr file_getattr file_setattr
    """),
    # TF: takes a file name
    "file": _names("""
        open stat lstat access truncate getcwd chdir rename mkdir rmdir creat link unlink
        symlink readlink chmod chown lchown utime mknod uselib statfs pivot_root chroot acct
        mount umount2 swapon swapoff quotactl setxattr lsetxattr getxattr lgetxattr listxattr
        llistxattr removexattr lremovexattr utimes inotify_add_watch openat mkdirat mknodat
        fchownat futimesat newfstatat unlinkat renameat linkat symlinkat readlinkat fchmodat
        faccessat utimensat fanotify_mark name_to_handle_at renameat2 execve execveat statx
        open_tree move_mount fsconfig fspick openat2 faccessat2 mount_setattr fchmodat2
        setxattrat getxattrat listxattrat removexattrat open_tree_attr file_getattr file_setattr
    """),
    # TN: network
    "network": _names("""
        sendfile socket connect accept sendto recvfrom sendmsg recvmsg shutdown bind listen
        getsockname getpeername socketpair setsockopt getsockopt getpmsg putpmsg accept4
        recvmmsg sendmmsg
    """),
    # TP: process management
    "process": _names("""
        clone fork vfork execve exit wait4 kill rt_sigqueueinfo tkill exit_group tgkill waitid
        rt_tgsigqueueinfo execveat pidfd_send_signal clone3
    """),
    # TS: signals
    "signal": _names("""
        rt_sigaction rt_sigprocmask rt_sigreturn pause kill rt_sigpending rt_sigtimedwait
        rt_sigqueueinfo rt_sigsuspend sigaltstack tkill tgkill signalfd signalfd4
        rt_tgsigqueueinfo pidfd_send_signal io_uring_enter
    """),
    # TI: System V IPC
    "ipc": _names("""
        shmget shmat shmctl semget semop semctl shmdt msgget msgsnd msgrcv msgctl semtimedop
    """),
    # TM: memory mapping
    "memory": _names("""
        mmap mprotect munmap brk mremap msync mincore madvise shmat shmdt mlock munlock mlockall
        munlockall io_setup io_destroy remap_file_pages mbind set_mempolicy get_mempolicy
        migrate_pages move_pages mlock2 pkey_mprotect io_uring_register set_mempolicy_home_node
        map_shadow_stack mseal
    """),
    # TC: user/group ids and capabilities
    "creds": _names("""
        getuid getgid setuid setgid geteuid getegid setreuid setregid getgroups setgroups
        setresuid getresuid setresgid getresgid setfsuid setfsgid capget capset prctl
    """),
    # TCL: read or change clocks
    "clock": _names("""
        gettimeofday adjtimex settimeofday time clock_settime clock_gettime clock_getres
        clock_adjtime
    """),
    # the stat families (TST, TLST, TFST, TSTA, TSF, TFSF, TSFA) and PU (no arguments, pure)
    "stat": _names("stat"),
    "lstat": _names("lstat"),
    "fstat": _names("fstat newfstatat statx"),
    "%stat": _names("stat fstat lstat newfstatat statx"),
    "statfs": _names("statfs"),
    "fstatfs": _names("fstatfs"),
    "%statfs": _names("ustat statfs fstatfs"),
    "pure": _names("getpid getuid getgid geteuid getegid getppid getpgrp gettid"),
}
