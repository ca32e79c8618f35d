"""Named flag and value sets used to decode arguments, x86_64 values.

Sources: include/uapi/asm-generic/fcntl.h, mman-common.h, linux/socket.h,
linux/time.h, asm-generic/ioctls.h, asm-generic/signal.h, and the headers named
at each set below. Part of the schema:
the generator copies them into ``dr/schema/_tables.py``.
A FLAGS set is decoded bit by bit (``O_CREAT|O_CLOEXEC``); an ENUM set by value.
Sets whose first entry has value 0 name the zero value (``O_RDONLY``).
"""

FLAGS: dict[str, dict[int, str]] = {
    # Printed in this order, as strace does (O_SYNC includes O_DSYNC, O_TMPFILE O_DIRECTORY).
    "open": {0: "O_RDONLY", 0o1: "O_WRONLY", 0o2: "O_RDWR", 0o100: "O_CREAT", 0o200: "O_EXCL",
             0o400: "O_NOCTTY", 0o1000: "O_TRUNC", 0o2000: "O_APPEND",
             0o4000: "O_NONBLOCK", 0o4010000: "O_SYNC", 0o10000: "O_DSYNC", 0o20000: "O_ASYNC",
             0o40000: "O_DIRECT", 0o100000: "O_LARGEFILE",
             0o400000: "O_NOFOLLOW", 0o1000000: "O_NOATIME", 0o2000000: "O_CLOEXEC",
             0o200000: "O_DIRECTORY", 0o10000000: "O_PATH", 0o20200000: "O_TMPFILE"},
    "prot": {1: "PROT_READ", 2: "PROT_WRITE", 4: "PROT_EXEC"},
    "mmap": {0x1: "MAP_SHARED", 0x2: "MAP_PRIVATE", 0x10: "MAP_FIXED",
             0x20: "MAP_ANONYMOUS", 0x100: "MAP_GROWSDOWN", 0x800: "MAP_DENYWRITE",
             0x1000: "MAP_EXECUTABLE", 0x2000: "MAP_LOCKED", 0x4000: "MAP_NORESERVE",
             0x8000: "MAP_POPULATE", 0x10000: "MAP_NONBLOCK", 0x20000: "MAP_STACK",
             0x40000: "MAP_HUGETLB", 0x100000: "MAP_FIXED_NOREPLACE"},
    "at": {0x100: "AT_SYMLINK_NOFOLLOW", 0x200: "AT_REMOVEDIR", 0x400: "AT_SYMLINK_FOLLOW",
           0x800: "AT_NO_AUTOMOUNT", 0x1000: "AT_EMPTY_PATH", 0x2000: "AT_STATX_FORCE_SYNC",
           0x4000: "AT_STATX_DONT_SYNC"},
    "sock_type": {0o2000000: "SOCK_CLOEXEC", 0o4000: "SOCK_NONBLOCK"},
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
    # include/uapi/linux/fcntl.h (unistd.h): access(2) modes; 0 is F_OK
    "access": {0: "F_OK", 4: "R_OK", 2: "W_OK", 1: "X_OK"},
    # include/uapi/linux/stat.h: statx(2) mask and stx_attributes
    "statx_mask": {0x7FF: "STATX_BASIC_STATS", 0x1: "STATX_TYPE", 0x2: "STATX_MODE",
                   0x4: "STATX_NLINK", 0x8: "STATX_UID", 0x10: "STATX_GID", 0x20: "STATX_ATIME",
                   0x40: "STATX_MTIME", 0x80: "STATX_CTIME", 0x100: "STATX_INO",
                   0x200: "STATX_SIZE", 0x400: "STATX_BLOCKS", 0x800: "STATX_BTIME",
                   0x1000: "STATX_MNT_ID", 0x2000: "STATX_DIOALIGN", 0x4000: "STATX_MNT_ID_UNIQUE",
                   0x8000: "STATX_SUBVOL", 0x10000: "STATX_WRITE_ATOMIC"},
    "statx_attr": {0x4: "STATX_ATTR_COMPRESSED", 0x10: "STATX_ATTR_IMMUTABLE",
                   0x20: "STATX_ATTR_APPEND", 0x40: "STATX_ATTR_NODUMP",
                   0x800: "STATX_ATTR_ENCRYPTED", 0x1000: "STATX_ATTR_AUTOMOUNT",
                   0x2000: "STATX_ATTR_MOUNT_ROOT", 0x100000: "STATX_ATTR_VERITY",
                   0x200000: "STATX_ATTR_DAX", 0x400000: "STATX_ATTR_WRITE_ATOMIC"},
    # arch/x86/include/uapi/asm/signal.h: sa_flags of struct sigaction, in strace's order
    "sa_flags": {0x04000000: "SA_RESTORER", 0x08000000: "SA_ONSTACK", 0x10000000: "SA_RESTART",
                 0x40000000: "SA_NODEFER", 0x80000000: "SA_RESETHAND", 0x4: "SA_SIGINFO",
                 0x1: "SA_NOCLDSTOP", 0x2: "SA_NOCLDWAIT", 0x400: "SA_UNSUPPORTED",
                 0x800: "SA_EXPOSE_TAGBITS"},
    # include/uapi/asm-generic/fcntl.h: F_GETFD/F_SETFD flags
    "fd_flags": {1: "FD_CLOEXEC"},
    # include/uapi/linux/futex.h: bits of futex(2)'s op besides the command
    "futex_op_flags": {128: "FUTEX_PRIVATE_FLAG", 256: "FUTEX_CLOCK_REALTIME"},
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
              5: "F_GETLK", 6: "F_SETLK", 7: "F_SETLKW", 8: "F_SETOWN", 9: "F_GETOWN",
              10: "F_SETSIG", 11: "F_GETSIG", 15: "F_SETOWN_EX", 16: "F_GETOWN_EX",
              36: "F_OFD_GETLK", 37: "F_OFD_SETLK", 38: "F_OFD_SETLKW",
              1024: "F_SETLEASE", 1025: "F_GETLEASE", 1035: "F_GET_RW_HINT", 1036: "F_SET_RW_HINT",
              1030: "F_DUPFD_CLOEXEC",
              1031: "F_SETPIPE_SZ", 1032: "F_GETPIPE_SZ", 1033: "F_ADD_SEALS", 1034: "F_GET_SEALS"},
    "ioctl": {0x5401: "TCGETS", 0x5402: "TCSETS", 0x5403: "TCSETSW", 0x5404: "TCSETSF",
              0x540F: "TIOCGPGRP", 0x5410: "TIOCSPGRP", 0x5413: "TIOCGWINSZ",
              0x5414: "TIOCSWINSZ", 0x541B: "FIONREAD", 0x5421: "FIONBIO",
              0x5451: "FIOCLEX", 0x5450: "FIONCLEX", 0x5452: "FIOASYNC",
              0x5411: "TIOCOUTQ", 0x5429: "TIOCGSID", 0x80045430: "TIOCGPTN",
              0x802C542A: "TCGETS2", 0x80045200: "RNDGETENTCNT", 0x8905: "SIOCATMARK",
              0x8910: "SIOCGIFNAME", 0x8913: "SIOCGIFFLAGS", 0x8915: "SIOCGIFADDR",
              0x8919: "SIOCGIFBRDADDR", 0x891B: "SIOCGIFNETMASK", 0x8921: "SIOCGIFMTU",
              0x8927: "SIOCGIFHWADDR", 0x8933: "SIOCGIFINDEX",
              0x5415: "TIOCMGET", 0x5418: "TIOCMSET", 0x545D: "TIOCGICOUNT",
              0x5459: "TIOCSERGETLSR", 0x5600: "VT_OPENQRY", 0x5603: "VT_GETSTATE",
              0x4B44: "KDGKBMODE", 0x400454CA: "TUNSETIFF", 0x800454D2: "TUNGETIFF",
              0xC020660B: "FS_IOC_FIEMAP"},
    # include/uapi/linux/prctl.h
    "prctl": {1: "PR_SET_PDEATHSIG", 2: "PR_GET_PDEATHSIG", 3: "PR_GET_DUMPABLE",
              4: "PR_SET_DUMPABLE", 5: "PR_GET_UNALIGN", 9: "PR_GET_FPEMU", 11: "PR_GET_FPEXC",
              15: "PR_SET_NAME", 16: "PR_GET_NAME", 19: "PR_GET_ENDIAN", 22: "PR_SET_SECCOMP",
              21: "PR_GET_SECCOMP", 23: "PR_CAPBSET_READ", 36: "PR_SET_CHILD_SUBREAPER",
              37: "PR_GET_CHILD_SUBREAPER", 38: "PR_SET_NO_NEW_PRIVS", 39: "PR_GET_NO_NEW_PRIVS",
              40: "PR_GET_TID_ADDRESS", 41: "PR_SET_THP_DISABLE", 42: "PR_GET_THP_DISABLE",
              1499557217: "PR_SET_PTRACER", 0x53564d41: "PR_SET_VMA"},
    # include/uapi/linux/stat.h: the S_IFMT field of st_mode
    "s_ifmt": {0o140000: "S_IFSOCK", 0o120000: "S_IFLNK", 0o100000: "S_IFREG",
               0o060000: "S_IFBLK", 0o040000: "S_IFDIR", 0o020000: "S_IFCHR",
               0o010000: "S_IFIFO"},
    # include/linux/errno.h: kernel-internal restart codes a tracepoint can see
    "errno_restart": {512: "ERESTARTSYS", 513: "ERESTARTNOINTR", 514: "ERESTARTNOHAND",
                      516: "ERESTART_RESTARTBLOCK"},
    # include/uapi/asm-generic/mman-common.h: madvise(2) advice
    "madvise": {0: "MADV_NORMAL", 1: "MADV_RANDOM", 2: "MADV_SEQUENTIAL", 3: "MADV_WILLNEED",
                4: "MADV_DONTNEED", 8: "MADV_FREE", 9: "MADV_REMOVE", 10: "MADV_DONTFORK",
                11: "MADV_DOFORK", 12: "MADV_MERGEABLE", 13: "MADV_UNMERGEABLE",
                14: "MADV_HUGEPAGE", 15: "MADV_NOHUGEPAGE", 16: "MADV_DONTDUMP",
                17: "MADV_DODUMP", 18: "MADV_WIPEONFORK", 19: "MADV_KEEPONFORK", 20: "MADV_COLD",
                21: "MADV_PAGEOUT", 22: "MADV_POPULATE_READ", 23: "MADV_POPULATE_WRITE",
                24: "MADV_DONTNEED_LOCKED", 25: "MADV_COLLAPSE", 100: "MADV_HWPOISON",
                101: "MADV_SOFT_OFFLINE"},
    # include/uapi/asm-generic/socket.h: SOL_SOCKET options
    "so_opt": {1: "SO_DEBUG", 2: "SO_REUSEADDR", 3: "SO_TYPE", 4: "SO_ERROR", 5: "SO_DONTROUTE",
               6: "SO_BROADCAST", 7: "SO_SNDBUF", 8: "SO_RCVBUF", 9: "SO_KEEPALIVE",
               10: "SO_OOBINLINE", 11: "SO_NO_CHECK", 12: "SO_PRIORITY", 13: "SO_LINGER",
               14: "SO_BSDCOMPAT", 15: "SO_REUSEPORT", 16: "SO_PASSCRED", 17: "SO_PEERCRED",
               18: "SO_RCVLOWAT", 19: "SO_SNDLOWAT", 20: "SO_RCVTIMEO_OLD", 21: "SO_SNDTIMEO_OLD",
               25: "SO_BINDTODEVICE", 29: "SO_TIMESTAMP_OLD", 30: "SO_ACCEPTCONN",
               32: "SO_SNDBUFFORCE", 33: "SO_RCVBUFFORCE", 34: "SO_PASSSEC", 36: "SO_MARK",
               38: "SO_PROTOCOL", 39: "SO_DOMAIN", 40: "SO_RXQ_OVFL", 46: "SO_BUSY_POLL",
               49: "SO_INCOMING_CPU", 60: "SO_ZEROCOPY"},
    # include/uapi/linux/tcp.h: SOL_TCP options
    "tcp_opt": {1: "TCP_NODELAY", 2: "TCP_MAXSEG", 3: "TCP_CORK", 4: "TCP_KEEPIDLE",
                5: "TCP_KEEPINTVL", 6: "TCP_KEEPCNT", 7: "TCP_SYNCNT", 8: "TCP_LINGER2",
                9: "TCP_DEFER_ACCEPT", 10: "TCP_WINDOW_CLAMP", 11: "TCP_INFO", 12: "TCP_QUICKACK",
                13: "TCP_CONGESTION", 18: "TCP_USER_TIMEOUT", 23: "TCP_FASTOPEN",
                25: "TCP_NOTSENT_LOWAT", 30: "TCP_FASTOPEN_CONNECT"},
    # include/uapi/linux/time.h: getitimer(2)/setitimer(2) timers
    "itimer": {0: "ITIMER_REAL", 1: "ITIMER_VIRTUAL", 2: "ITIMER_PROF"},
    # arch/x86/include/uapi/asm/prctl.h
    "arch_prctl": {0x1001: "ARCH_SET_GS", 0x1002: "ARCH_SET_FS", 0x1003: "ARCH_GET_FS",
                   0x1004: "ARCH_GET_GS", 0x1011: "ARCH_GET_CPUID", 0x1012: "ARCH_SET_CPUID",
                   0x1021: "ARCH_GET_XCOMP_SUPP", 0x1022: "ARCH_GET_XCOMP_PERM",
                   0x1023: "ARCH_REQ_XCOMP_PERM", 0x1024: "ARCH_GET_XCOMP_GUEST_PERM",
                   0x1025: "ARCH_REQ_XCOMP_GUEST_PERM", 0x2001: "ARCH_MAP_VDSO_X32",
                   0x2002: "ARCH_MAP_VDSO_32", 0x2003: "ARCH_MAP_VDSO_64",
                   0x4001: "ARCH_GET_UNTAG_MASK", 0x4002: "ARCH_ENABLE_TAGGED_ADDR",
                   0x4003: "ARCH_GET_MAX_TAG_BITS", 0x4004: "ARCH_FORCE_TAGGED_SVA",
                   0x5001: "ARCH_SHSTK_ENABLE", 0x5002: "ARCH_SHSTK_DISABLE",
                   0x5003: "ARCH_SHSTK_LOCK", 0x5004: "ARCH_SHSTK_UNLOCK",
                   0x5005: "ARCH_SHSTK_STATUS"},
    # include/uapi/linux/futex.h: futex(2) commands (op & FUTEX_CMD_MASK)
    "futex_op": {0: "FUTEX_WAIT", 1: "FUTEX_WAKE", 2: "FUTEX_FD", 3: "FUTEX_REQUEUE",
                 4: "FUTEX_CMP_REQUEUE", 5: "FUTEX_WAKE_OP", 6: "FUTEX_LOCK_PI",
                 7: "FUTEX_UNLOCK_PI", 8: "FUTEX_TRYLOCK_PI", 9: "FUTEX_WAIT_BITSET",
                 10: "FUTEX_WAKE_BITSET", 11: "FUTEX_WAIT_REQUEUE_PI",
                 12: "FUTEX_CMP_REQUEUE_PI", 13: "FUTEX_LOCK_PI2"},
    # include/uapi/linux/in.h: socket(2) protocols of AF_INET/AF_INET6
    "ipproto": {0: "IPPROTO_IP", 1: "IPPROTO_ICMP", 6: "IPPROTO_TCP", 17: "IPPROTO_UDP",
                41: "IPPROTO_IPV6", 58: "IPPROTO_ICMPV6", 132: "IPPROTO_SCTP",
                136: "IPPROTO_UDPLITE", 255: "IPPROTO_RAW", 262: "IPPROTO_MPTCP"},
    # include/uapi/linux/capability.h
    "cap_version": {0x19980330: "_LINUX_CAPABILITY_VERSION_1",
                    0x20071026: "_LINUX_CAPABILITY_VERSION_2",
                    0x20080522: "_LINUX_CAPABILITY_VERSION_3"},
    "cap": {0: "CAP_CHOWN", 1: "CAP_DAC_OVERRIDE", 2: "CAP_DAC_READ_SEARCH", 3: "CAP_FOWNER",
            4: "CAP_FSETID", 5: "CAP_KILL", 6: "CAP_SETGID", 7: "CAP_SETUID", 8: "CAP_SETPCAP",
            9: "CAP_LINUX_IMMUTABLE", 10: "CAP_NET_BIND_SERVICE", 11: "CAP_NET_BROADCAST",
            12: "CAP_NET_ADMIN", 13: "CAP_NET_RAW", 14: "CAP_IPC_LOCK", 15: "CAP_IPC_OWNER",
            16: "CAP_SYS_MODULE", 17: "CAP_SYS_RAWIO", 18: "CAP_SYS_CHROOT",
            19: "CAP_SYS_PTRACE", 20: "CAP_SYS_PACCT", 21: "CAP_SYS_ADMIN", 22: "CAP_SYS_BOOT",
            23: "CAP_SYS_NICE", 24: "CAP_SYS_RESOURCE", 25: "CAP_SYS_TIME",
            26: "CAP_SYS_TTY_CONFIG", 27: "CAP_MKNOD", 28: "CAP_LEASE", 29: "CAP_AUDIT_WRITE",
            30: "CAP_AUDIT_CONTROL", 31: "CAP_SETFCAP", 32: "CAP_MAC_OVERRIDE",
            33: "CAP_MAC_ADMIN", 34: "CAP_SYSLOG", 35: "CAP_WAKE_ALARM",
            36: "CAP_BLOCK_SUSPEND", 37: "CAP_AUDIT_READ", 38: "CAP_PERFMON", 39: "CAP_BPF",
            40: "CAP_CHECKPOINT_RESTORE"},
    "rlimit": {0: "RLIMIT_CPU", 1: "RLIMIT_FSIZE", 2: "RLIMIT_DATA", 3: "RLIMIT_STACK",
               4: "RLIMIT_CORE", 5: "RLIMIT_RSS", 6: "RLIMIT_NPROC", 7: "RLIMIT_NOFILE",
               8: "RLIMIT_MEMLOCK", 9: "RLIMIT_AS", 10: "RLIMIT_LOCKS", 11: "RLIMIT_SIGPENDING",
               12: "RLIMIT_MSGQUEUE", 13: "RLIMIT_NICE", 14: "RLIMIT_RTPRIO", 15: "RLIMIT_RTTIME"},
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
    0x5411: ("out", 4),    # TIOCOUTQ: int
    0x5429: ("out", 4),    # TIOCGSID: pid_t
    0x80045430: ("out", 4),  # TIOCGPTN: unsigned int
    0x802C542A: ("out", 44),  # TCGETS2: struct termios2
    0x80045200: ("out", 4),  # RNDGETENTCNT: int (include/uapi/linux/random.h)
    0x8905: ("out", 4),    # SIOCATMARK: int
    # SIOCGIF*: struct ifreq (40 bytes); the name goes in, the kernel writes the whole struct back
    0x8910: ("out", 40),   # SIOCGIFNAME
    0x8913: ("out", 40),   # SIOCGIFFLAGS
    0x8915: ("out", 40),   # SIOCGIFADDR
    0x8919: ("out", 40),   # SIOCGIFBRDADDR
    0x891B: ("out", 40),   # SIOCGIFNETMASK
    0x8921: ("out", 40),   # SIOCGIFMTU
    0x8927: ("out", 40),   # SIOCGIFHWADDR
    0x8933: ("out", 40),   # SIOCGIFINDEX
    # Requests whose number does not say what the kernel writes (no _IOC_READ size, or a
    # wrong one): tty_ioctl(4), console_ioctl(4), drivers/net/tun.c
    0x5415: ("out", 4),    # TIOCMGET: int
    0x5418: ("in", 4),     # TIOCMSET: int
    0x545D: ("out", 80),   # TIOCGICOUNT: struct serial_icounter_struct
    0x5459: ("out", 4),    # TIOCSERGETLSR: unsigned int
    0x5600: ("out", 4),    # VT_OPENQRY: int
    0x5603: ("out", 6),    # VT_GETSTATE: struct vt_stat
    0x4B44: ("out", 4),    # KDGKBMODE: int
    0x400454CA: ("out", 40),  # TUNSETIFF: _IOW, but the kernel writes the struct ifreq back
    0x800454D2: ("out", 40),  # TUNGETIFF: _IOR(unsigned int), writes a struct ifreq
}
#: ioctl requests whose buffer is a header and an array the kernel fills: request ->
#: (header bytes, offset of the u32 count the kernel writes, offset of the u32 capacity the
#: caller gives, element bytes). The kernel writes header + count * element bytes.
IOCTL_COUNTED: dict[int, tuple[int, int, int, int]] = {
    0xC020660B: (32, 20, 24, 56),   # FS_IOC_FIEMAP: struct fiemap + fm_mapped_extents fiemap_extent
}

#: setsockopt options whose structure points at an array the kernel fills: (level, optname)
#: -> (offset of the u32 element count, offset of the pointer, element bytes). Recorded on
#: the optval slot with Sub.POINTED when the call succeeds.
SOCKOPT_POINTED: dict[tuple[int, int], tuple[int, int, int]] = {
    (0, 64): (84, 88, 16),    # SOL_IP, IPT_SO_SET_REPLACE: ipt_replace.num_counters, .counters (xt_counters)
    (41, 64): (84, 88, 16),   # SOL_IPV6, IP6T_SO_SET_REPLACE: ip6t_replace, the same layout
}

#: bpf(2) commands strict replay answers from the recording, -> the buffers their union
#: bpf_attr points at (include/uapi/linux/bpf.h; uapi offsets are ABI), each
#: (pointer offset, "in"|"out", size, size offset, element bytes). size "field": the u32 at
#: the size offset, as the call left it, times the element; "key"/"value": the key/value
#: size of the map the attr's first u32 names (capture learns it from that map's
#: BPF_MAP_CREATE); "str": NUL-terminated. Capture keeps at most BPF_POINTED_MAX bytes of
#: each, at exit of a successful call, on the attr's slot as Sub.POINTED with the entry's
#: index in slot bits 8-15. A command not listed is refused by replay (its pointers are
#: not recorded); one listed with () has none.
BPF_POINTED: dict[int, tuple[tuple[int, str, str, int, int], ...]] = {
    0: (),                                                   # BPF_MAP_CREATE
    1: ((8, "in", "key", 0, 0), (16, "out", "value", 0, 0)),  # BPF_MAP_LOOKUP_ELEM: key, value
    2: ((8, "in", "key", 0, 0), (16, "in", "value", 0, 0)),   # BPF_MAP_UPDATE_ELEM
    3: ((8, "in", "key", 0, 0),),                             # BPF_MAP_DELETE_ELEM
    4: ((8, "in", "key", 0, 0), (16, "out", "key", 0, 0)),    # BPF_MAP_GET_NEXT_KEY: key, next_key
    5: ((8, "in", "field", 4, 8), (16, "in", "str", 0, 0),    # BPF_PROG_LOAD: insns (insn_cnt x 8),
        (32, "out", "field", 28, 1)),                         # license, log_buf (log_size)
    8: (), 9: (),                                            # BPF_PROG_ATTACH, BPF_PROG_DETACH
    15: ((8, "out", "field", 4, 1),),                         # BPF_OBJ_GET_INFO_BY_FD: info (info_len)
    16: ((16, "out", "field", 24, 4),),                       # BPF_PROG_QUERY: prog_ids (prog_cnt x 4)
    22: (), 35: (),                                          # BPF_MAP_FREEZE, BPF_PROG_BIND_MAP
}
BPF_POINTED_MAX = 16384
#: bpf(2) commands whose result is a new fd (always close-on-exec): MAP_CREATE, PROG_LOAD,
#: OBJ_GET, PROG/MAP_GET_FD_BY_ID, RAW_TRACEPOINT_OPEN, BTF_LOAD, BTF_GET_FD_BY_ID,
#: LINK_CREATE, LINK_GET_FD_BY_ID, ENABLE_STATS, ITER_CREATE, TOKEN_CREATE.
BPF_FD_COMMANDS = frozenset({0, 5, 7, 13, 14, 17, 18, 19, 28, 30, 32, 33, 36})

#: Any other ioctl request with _IOC_READ in its direction bits (include/uapi/asm-generic/ioctl.h)
#: is recorded, and answered, as an out-buffer of the size in its bits 16-29.

# fcntl(2) commands with a buffer argument: cmd -> (direction, bytes). "inout":
# read at entry (Sub.ENTRY) and, when the call succeeded, at exit.
FCNTL_BUFFERS: dict[int, tuple[str, int]] = {
    5: ("inout", 32),      # F_GETLK: struct flock (include/uapi/asm-generic/fcntl.h)
    6: ("in", 32),         # F_SETLK
    7: ("in", 32),         # F_SETLKW
    36: ("inout", 32),     # F_OFD_GETLK
    37: ("in", 32),        # F_OFD_SETLK
    38: ("in", 32),        # F_OFD_SETLKW
    15: ("in", 8),         # F_SETOWN_EX: struct f_owner_ex
    16: ("out", 8),        # F_GETOWN_EX
    1035: ("out", 8),      # F_GET_RW_HINT: u64
    1036: ("in", 8),       # F_SET_RW_HINT
}

# prctl(2) options whose arg2 points at a buffer: option -> (direction, bytes).
PRCTL_BUFFERS: dict[int, tuple[str, int]] = {
    2: ("out", 4),         # PR_GET_PDEATHSIG: int
    5: ("out", 4),         # PR_GET_UNALIGN: unsigned int
    9: ("out", 4),         # PR_GET_FPEMU
    11: ("out", 4),        # PR_GET_FPEXC
    15: ("in", 16),        # PR_SET_NAME: char[16]
    16: ("out", 16),       # PR_GET_NAME: char[16] (TASK_COMM_LEN)
    19: ("out", 4),        # PR_GET_ENDIAN
    25: ("out", 4),        # PR_GET_TSC: int
    37: ("out", 4),        # PR_GET_CHILD_SUBREAPER: int
    40: ("out", 8),        # PR_GET_TID_ADDRESS: int **
    35: ("sub", 0),        # PR_SET_MM: its sub-operation (arg2) says, SUB_REQUEST_BUFFERS
}

#: prctl(PR_SET_MM, sub-operation, ...) whose arg3 is a buffer: sub -> (direction, bytes).
PR_SET_MM_BUFFERS: dict[int, tuple[str, int]] = {
    15: ("out", 4),        # PR_SET_MM_MAP_SIZE: unsigned int, sizeof(struct prctl_mm_map)
}

#: Requests ("sub" above) whose next argument picks the buffer: (syscall, request) ->
#: (buffer argument, {sub-request: (direction, bytes)}). The sub-request is compared in
#: its low 16 bits (the capture's map key).
SUB_REQUEST_BUFFERS: dict[tuple[str, int], tuple[int, dict[int, tuple[str, int]]]] = {
    ("prctl", 35): (2, PR_SET_MM_BUFFERS),
}

# ptrace(2) requests whose data argument points at a buffer: request -> (direction, bytes).
# A replayed tracer's calls are answered from the recording (its tracee is replayed as an
# ordinary supervised process), so what the kernel wrote for it must be in the trace.
# Sizes: struct user_regs_struct 216, user_fpregs_struct 512, siginfo_t 128
# (arch/x86/include/asm/user_64.h); PEEK* store the word at *data (ptrace(2), "C library/kernel
# differences").
PTRACE_BUFFERS: dict[int, tuple[str, int]] = {
    1: ("out", 8),         # PTRACE_PEEKTEXT
    2: ("out", 8),         # PTRACE_PEEKDATA
    3: ("out", 8),         # PTRACE_PEEKUSER
    12: ("out", 216),      # PTRACE_GETREGS
    13: ("in", 216),       # PTRACE_SETREGS
    14: ("out", 512),      # PTRACE_GETFPREGS
    15: ("in", 512),       # PTRACE_SETFPREGS
    0x4201: ("out", 8),    # PTRACE_GETEVENTMSG: unsigned long
    0x4202: ("out", 128),  # PTRACE_GETSIGINFO
    0x4203: ("in", 128),   # PTRACE_SETSIGINFO
    0x4204: ("iov", 0xFFFF),   # PTRACE_GETREGSET: data is one struct iovec (its bytes at most)
    0x420A: ("out", 8),    # PTRACE_GETSIGMASK (data: sigset_t, addr: its size)
    0x420B: ("in", 8),     # PTRACE_SETSIGMASK
}

#: syslog(2) types whose buffer the kernel fills: "ret" is as many bytes as the call returns
#: (SYSLOG_ACTION_READ, READ_ALL, READ_CLEAR). Every other type passes no buffer, and
#: SIZE_BUFFER and SIZE_UNREAD return a size, not a byte count.
SYSLOG_BUFFERS: dict[int, tuple[str, int]] = {
    2: ("ret", 0),         # SYSLOG_ACTION_READ
    3: ("ret", 0),         # SYSLOG_ACTION_READ_ALL
    4: ("ret", 0),         # SYSLOG_ACTION_READ_CLEAR
}

#: landlock_add_rule(2) rule type -> its ``rule_attr`` (include/uapi/linux/landlock.h, packed).
LANDLOCK_RULE_BUFFERS: dict[int, tuple[str, int]] = {
    1: ("in", 12),         # LANDLOCK_RULE_PATH_BENEATH: u64 allowed_access, s32 parent_fd
    2: ("in", 16),         # LANDLOCK_RULE_NET_PORT: u64 allowed_access, u64 port
}

#: seccomp(2) operation -> its ``uargs`` buffer (include/uapi/linux/seccomp.h).
SECCOMP_BUFFERS: dict[int, tuple[str, int]] = {
    1: ("in", 16),         # SECCOMP_SET_MODE_FILTER: struct sock_fprog
    2: ("in", 4),          # SECCOMP_GET_ACTION_AVAIL: u32 action
    3: ("out", 6),         # SECCOMP_GET_NOTIF_SIZES: struct seccomp_notif_sizes
}

#: keyctl(2) operations that copy into arg3 at most arg4 bytes and return the whole size
#: (include/uapi/linux/keyctl.h). "outret": the kernel writes min(return value, the argument
#: after the buffer) bytes when the call succeeds; the size column is unused.
KEYCTL_BUFFERS: dict[int, tuple[str, int]] = {
    6: ("outret", 0),      # KEYCTL_DESCRIBE: "type;uid;gid;perm;description"
    11: ("outret", 0),     # KEYCTL_READ: the payload
    17: ("outret", 0),     # KEYCTL_GET_SECURITY: the LSM label
    23: ("outret", 0),     # KEYCTL_DH_COMPUTE: the computed secret
}

#: Bytes of a request's in-buffer the kernel never reads: (syscall, request) -> [start, end)
#: ranges. Replay compares in-buffers with the recording; these bytes (padding, a field the
#: kernel ignores) hold whatever the program's stack held and are left out.
REQUEST_IN_UNREAD: dict[tuple[str, int], tuple[tuple[int, int], ...]] = {
    # struct flock: padding after l_whence, l_pid (ignored when setting a lock; must be 0
    # for OFD locks, which the kernel checks) and the tail padding
    ("fcntl", 6): ((4, 8), (24, 32)),      # F_SETLK
    ("fcntl", 7): ((4, 8), (24, 32)),      # F_SETLKW
    ("fcntl", 37): ((4, 8), (24, 32)),     # F_OFD_SETLK
    ("fcntl", 38): ((4, 8), (24, 32)),     # F_OFD_SETLKW
    ("seccomp", 1): ((2, 8),),             # struct sock_fprog: padding after the u16 len
}
#: Request in-buffers the kernel reads as a NUL-terminated string: bytes after the NUL are unread.
REQUEST_IN_STRINGS: frozenset[tuple[str, int]] = frozenset({
    ("prctl", 15),                         # PR_SET_NAME
})

#: Syscalls whose buffer depends on a request: name -> (request arg, buffer arg, table).
#: Directions: "in", "out", "inout" (also read at entry) of a fixed size, "ret" (out, as
#: many bytes as the call returns), "outret" (out, min(return value, the argument after
#: the buffer) bytes), "iov" (the buffer is one struct iovec the kernel writes through and
#: whose iov_len it sets to the bytes written: those bytes, at most the size column).
REQUEST_BUFFERS: dict[str, tuple[int, int, dict[int, tuple[str, int]]]] = {
    "ioctl": (1, 2, IOCTL_BUFFERS),
    "fcntl": (1, 2, FCNTL_BUFFERS),
    "prctl": (0, 1, PRCTL_BUFFERS),
    "ptrace": (0, 3, PTRACE_BUFFERS),
    "seccomp": (0, 2, SECCOMP_BUFFERS),
    "syslog": (0, 1, SYSLOG_BUFFERS),
    "landlock_add_rule": (1, 2, LANDLOCK_RULE_BUFFERS),
    "keyctl": (0, 2, KEYCTL_BUFFERS),
}
