"""Named flag and value sets used to decode arguments, x86_64 values.

Sources: include/uapi/asm-generic/fcntl.h, mman-common.h, linux/socket.h,
linux/time.h, asm-generic/ioctls.h, asm-generic/signal.h. Part of the schema:
the generator copies them into ``dr/schema/_tables.py``.
A FLAGS set is decoded bit by bit (``O_CREAT|O_CLOEXEC``); an ENUM set by value.
Sets whose first entry has value 0 name the zero value (``O_RDONLY``).
"""

FLAGS: dict[str, dict[int, str]] = {
    "open": {0: "O_RDONLY", 0o1: "O_WRONLY", 0o2: "O_RDWR", 0o100: "O_CREAT", 0o200: "O_EXCL",
             0o400: "O_NOCTTY", 0o1000: "O_TRUNC", 0o2000: "O_APPEND",
             0o4000: "O_NONBLOCK", 0o10000: "O_DSYNC", 0o20000: "O_ASYNC",
             0o40000: "O_DIRECT", 0o100000: "O_LARGEFILE", 0o200000: "O_DIRECTORY",
             0o400000: "O_NOFOLLOW", 0o1000000: "O_NOATIME", 0o2000000: "O_CLOEXEC",
             0o4010000: "O_SYNC", 0o10000000: "O_PATH", 0o20200000: "O_TMPFILE"},
    "prot": {1: "PROT_READ", 2: "PROT_WRITE", 4: "PROT_EXEC"},
    "mmap": {0x1: "MAP_SHARED", 0x2: "MAP_PRIVATE", 0x10: "MAP_FIXED",
             0x20: "MAP_ANONYMOUS", 0x100: "MAP_GROWSDOWN", 0x800: "MAP_DENYWRITE",
             0x1000: "MAP_EXECUTABLE", 0x2000: "MAP_LOCKED", 0x4000: "MAP_NORESERVE",
             0x8000: "MAP_POPULATE", 0x10000: "MAP_NONBLOCK", 0x20000: "MAP_STACK",
             0x40000: "MAP_HUGETLB", 0x100000: "MAP_FIXED_NOREPLACE"},
    "at": {0x100: "AT_SYMLINK_NOFOLLOW", 0x200: "AT_REMOVEDIR", 0x400: "AT_SYMLINK_FOLLOW",
           0x800: "AT_NO_AUTOMOUNT", 0x1000: "AT_EMPTY_PATH", 0x2000: "AT_STATX_FORCE_SYNC",
           0x4000: "AT_STATX_DONT_SYNC"},
    "sock_type": {0o4000: "SOCK_NONBLOCK", 0o2000000: "SOCK_CLOEXEC"},
    "msg": {0x1: "MSG_OOB", 0x2: "MSG_PEEK", 0x4: "MSG_DONTROUTE", 0x8: "MSG_CTRUNC",
            0x20: "MSG_TRUNC", 0x40: "MSG_DONTWAIT", 0x80: "MSG_EOR", 0x100: "MSG_WAITALL",
            0x4000: "MSG_NOSIGNAL", 0x8000: "MSG_MORE", 0x40000000: "MSG_CMSG_CLOEXEC"},
    "grnd": {1: "GRND_NONBLOCK", 2: "GRND_RANDOM", 4: "GRND_INSECURE"},
    "clone": {0x100: "CLONE_VM", 0x200: "CLONE_FS", 0x400: "CLONE_FILES",
              0x800: "CLONE_SIGHAND", 0x1000: "CLONE_PIDFD", 0x2000: "CLONE_PTRACE",
              0x4000: "CLONE_VFORK", 0x8000: "CLONE_PARENT", 0x10000: "CLONE_THREAD",
              0x20000: "CLONE_NEWNS", 0x40000: "CLONE_SYSVSEM", 0x80000: "CLONE_SETTLS",
              0x100000: "CLONE_PARENT_SETTID", 0x200000: "CLONE_CHILD_CLEARTID",
              0x1000000: "CLONE_CHILD_SETTID"},
    "wait": {1: "WNOHANG", 2: "WUNTRACED", 8: "WCONTINUED", 0x40000000: "__WALL"},
    "efd": {1: "EFD_SEMAPHORE", 0o4000: "EFD_NONBLOCK", 0o2000000: "EFD_CLOEXEC"},
    "tfd": {0o4000: "TFD_NONBLOCK", 0o2000000: "TFD_CLOEXEC"},
    "sfd": {0o4000: "SFD_NONBLOCK", 0o2000000: "SFD_CLOEXEC"},
    "epoll_create": {0o2000000: "EPOLL_CLOEXEC"},
    "mfd": {1: "MFD_CLOEXEC", 2: "MFD_ALLOW_SEALING", 4: "MFD_HUGETLB"},
    "timer": {1: "TIMER_ABSTIME"},
    "tfd_settime": {1: "TFD_TIMER_ABSTIME", 2: "TFD_TIMER_CANCEL_ON_SET"},
    "splice": {1: "SPLICE_F_MOVE", 2: "SPLICE_F_NONBLOCK", 4: "SPLICE_F_MORE"},
    "mremap": {1: "MREMAP_MAYMOVE", 2: "MREMAP_FIXED", 4: "MREMAP_DONTUNMAP"},
    "msync": {1: "MS_ASYNC", 2: "MS_INVALIDATE", 4: "MS_SYNC"},
    "rwf": {1: "RWF_HIPRI", 2: "RWF_DSYNC", 4: "RWF_SYNC", 8: "RWF_NOWAIT", 16: "RWF_APPEND"},
    "close_range": {2: "CLOSE_RANGE_UNSHARE", 4: "CLOSE_RANGE_CLOEXEC"},
    # include/uapi/asm-generic/poll.h
    "poll": {0x1: "POLLIN", 0x2: "POLLPRI", 0x4: "POLLOUT", 0x8: "POLLERR", 0x10: "POLLHUP",
             0x20: "POLLNVAL", 0x40: "POLLRDNORM", 0x80: "POLLRDBAND", 0x100: "POLLWRNORM",
             0x200: "POLLWRBAND", 0x400: "POLLMSG", 0x2000: "POLLRDHUP"},
    # include/uapi/linux/eventpoll.h
    "epoll_events": {0x1: "EPOLLIN", 0x2: "EPOLLPRI", 0x4: "EPOLLOUT", 0x8: "EPOLLERR",
                     0x10: "EPOLLHUP", 0x20: "EPOLLNVAL", 0x40: "EPOLLRDNORM",
                     0x80: "EPOLLRDBAND", 0x100: "EPOLLWRNORM", 0x200: "EPOLLWRBAND",
                     0x400: "EPOLLMSG", 0x2000: "EPOLLRDHUP", 1 << 28: "EPOLLEXCLUSIVE",
                     1 << 29: "EPOLLWAKEUP", 1 << 30: "EPOLLONESHOT", 1 << 31: "EPOLLET"},
    "none": {},
}

ENUMS: dict[str, dict[int, str]] = {
    "whence": {0: "SEEK_SET", 1: "SEEK_CUR", 2: "SEEK_END", 3: "SEEK_DATA", 4: "SEEK_HOLE"},
    "af": {0: "AF_UNSPEC", 1: "AF_UNIX", 2: "AF_INET", 10: "AF_INET6", 16: "AF_NETLINK",
           17: "AF_PACKET"},
    "sock_type_base": {1: "SOCK_STREAM", 2: "SOCK_DGRAM", 3: "SOCK_RAW", 5: "SOCK_SEQPACKET"},
    "sol": {0: "SOL_IP", 1: "SOL_SOCKET", 6: "SOL_TCP", 17: "SOL_UDP", 41: "SOL_IPV6"},
    "clock": {0: "CLOCK_REALTIME", 1: "CLOCK_MONOTONIC", 2: "CLOCK_PROCESS_CPUTIME_ID",
              3: "CLOCK_THREAD_CPUTIME_ID", 4: "CLOCK_MONOTONIC_RAW", 5: "CLOCK_REALTIME_COARSE",
              6: "CLOCK_MONOTONIC_COARSE", 7: "CLOCK_BOOTTIME", 11: "CLOCK_TAI"},
    "shutdown": {0: "SHUT_RD", 1: "SHUT_WR", 2: "SHUT_RDWR"},
    "epoll_ctl": {1: "EPOLL_CTL_ADD", 2: "EPOLL_CTL_DEL", 3: "EPOLL_CTL_MOD"},
    "sigprocmask": {0: "SIG_BLOCK", 1: "SIG_UNBLOCK", 2: "SIG_SETMASK"},
    "fcntl": {0: "F_DUPFD", 1: "F_GETFD", 2: "F_SETFD", 3: "F_GETFL", 4: "F_SETFL",
              5: "F_GETLK", 6: "F_SETLK", 7: "F_SETLKW", 1030: "F_DUPFD_CLOEXEC",
              1031: "F_SETPIPE_SZ", 1032: "F_GETPIPE_SZ", 1033: "F_ADD_SEALS", 1034: "F_GET_SEALS"},
    "ioctl": {0x5401: "TCGETS", 0x5402: "TCSETS", 0x5403: "TCSETSW", 0x5404: "TCSETSF",
              0x540F: "TIOCGPGRP", 0x5410: "TIOCSPGRP", 0x5413: "TIOCGWINSZ",
              0x5414: "TIOCSWINSZ", 0x541B: "FIONREAD", 0x5421: "FIONBIO",
              0x5451: "FIOCLEX", 0x5450: "FIONCLEX", 0x5452: "FIOASYNC"},
    # include/uapi/linux/stat.h: the S_IFMT field of st_mode
    "s_ifmt": {0o140000: "S_IFSOCK", 0o120000: "S_IFLNK", 0o100000: "S_IFREG",
               0o060000: "S_IFBLK", 0o040000: "S_IFDIR", 0o020000: "S_IFCHR",
               0o010000: "S_IFIFO"},
    # include/linux/errno.h: kernel-internal restart codes a tracepoint can see
    "errno_restart": {512: "ERESTARTSYS", 513: "ERESTARTNOINTR", 514: "ERESTARTNOHAND",
                      516: "ERESTART_RESTARTBLOCK"},
    "rlimit": {0: "RLIMIT_CPU", 1: "RLIMIT_FSIZE", 2: "RLIMIT_DATA", 3: "RLIMIT_STACK",
               4: "RLIMIT_CORE", 5: "RLIMIT_RSS", 6: "RLIMIT_NPROC", 7: "RLIMIT_NOFILE",
               8: "RLIMIT_MEMLOCK", 9: "RLIMIT_AS"},
}

#: ioctl requests whose argument is a buffer: request -> (direction, bytes).
#: Source: ioctl_tty(2), ioctl_fionread; struct termios (kernel) is 36 bytes.
IOCTL_BUFFERS: dict[int, tuple[str, int]] = {
    0x5401: ("out", 36),   # TCGETS: struct termios
    0x5402: ("in", 36),    # TCSETS
    0x5403: ("in", 36),    # TCSETSW
    0x5404: ("in", 36),    # TCSETSF
    0x540F: ("out", 4),    # TIOCGPGRP: pid_t
    0x5413: ("out", 8),    # TIOCGWINSZ: struct winsize
    0x5414: ("in", 8),     # TIOCSWINSZ
    0x541B: ("out", 4),    # FIONREAD: int
    0x5421: ("in", 4),     # FIONBIO: int
}
