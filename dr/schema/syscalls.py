"""The syscall table: every x86_64 syscall of Linux 6.18, declared once.

This is the single source of truth for syscall names, numbers (x86_64 and
aarch64), argument kinds, buffer size rules and classes. Generated from it by
``python -m dr.schema.gen`` (never edit those by hand; a test regenerates them):

- ``bpf/dr_schema.h``       the C side: numbers, record layouts, copy rules
- ``dr/schema/_tables.py``  the Python side: lookup tables and struct formats

Sources: arch/x86/entry/syscalls/syscall_64.tbl and include/uapi/asm-generic/unistd.h
for numbers; the kernel's syscall tracepoint formats
(/sys/kernel/tracing/events/syscalls/sys_enter_*/format) for argument names;
the man pages of section 2 for argument meanings. Structure sizes are x86_64.

Rules to keep: names are unique; never renumber; a syscall with pointer
arguments is REGULAR only when every pointer has a kind and size rule
(``ptr`` means "never copied", so such calls are UNSUPPORTED until declared).
"""

from __future__ import annotations

import dataclasses

from dr.schema.types import Arg, Class, Kind, Rule, Syscall
from dr.schema.args import (  # the constructors the table below is written with
    int_, uint, hex_, oct_, fd, ptr, signal, flags, enum, path, str_, argv, out, inb, struct_out, struct_in,
    struct_io, array_out, array_ret, array_in, fdset, iov_in, iov_out, msg_in, msg_out, mmsg_in, mmsg_out,
    sockaddr_in, sockaddr_out, S)

R, I, P, U = Class.REGULAR, Class.IRREGULAR, Class.PASSTHROUGH, Class.UNSUPPORTED
RET, ARG, DEREF = Rule.RET, Rule.ARG, Rule.DEREF


#: In-parameters read at sys_enter rather than sys_exit: the kernel may overwrite
#: them before it returns (glibc's sleep() passes one timespec as request and
#: remainder). Every other in-buffer is read at exit, when its pages are present.
READ_AT_ENTRY: frozenset[tuple[str, str]] = frozenset({
    ("nanosleep", "rqtp"), ("clock_nanosleep", "rqtp"),
})

# fmt: off
SYSCALLS: tuple[Syscall, ...] = (
    S("read", 0, 63, R, fd("fd"), out("buf", RET), uint("count")),
    S("write", 1, 64, R, fd("fd"), inb("buf", RET), uint("count")),
    S("open", 2, None, I, path("filename"), flags("flags", "open"), oct_("mode"), ret="fd"),
    S("close", 3, 57, I, fd("fd")),
    S("stat", 4, None, R, path("filename"), struct_out("statbuf", 144, "stat")),
    S("fstat", 5, 80, R, fd("fd"), struct_out("statbuf", 144, "stat")),
    S("lstat", 6, None, R, path("filename"), struct_out("statbuf", 144, "stat")),
    S("poll", 7, None, R, array_out("ufds", 1, 8, "pollfd"), uint("nfds"), int_("timeout_msecs")),
    S("lseek", 8, 62, R, fd("fd"), int_("offset"), enum("whence", "whence")),
    S("mmap", 9, 222, P, hex_("addr"), uint("len"), flags("prot", "prot"), flags("flags", "mmap"), fd("fd"), hex_("off"), ret="hex"),
    S("mprotect", 10, 226, P, hex_("start"), uint("len"), flags("prot", "prot")),
    S("munmap", 11, 215, P, hex_("addr"), uint("len")),
    S("brk", 12, 214, P, hex_("brk"), ret="hex"),
    S("rt_sigaction", 13, 134, P, signal("sig"), struct_in("act", 32, "sigaction"), struct_out("oact", 32, "sigaction"), uint("sigsetsize")),
    S("rt_sigprocmask", 14, 135, P, enum("how", "sigprocmask"), struct_in("nset", 8, "sigset"), struct_out("oset", 8, "sigset"), uint("sigsetsize")),
    S("rt_sigreturn", 15, 139, P, ret="none"),
    S("ioctl", 16, 29, I, fd("fd"), enum("cmd", "ioctl"), hex_("arg")),
    S("pread64", 17, 67, R, fd("fd"), out("buf", RET), uint("count"), int_("pos")),
    S("pwrite64", 18, 68, R, fd("fd"), inb("buf", RET), uint("count"), int_("pos")),
    S("readv", 19, 65, R, fd("fd"), iov_out("vec", 2), uint("vlen")),
    S("writev", 20, 66, R, fd("fd"), iov_in("vec", 2), uint("vlen")),
    S("access", 21, None, R, path("filename"), flags("mode", "access")),
    S("pipe", 22, None, I, struct_out("fildes", 8, "fd_pair")),
    S("select", 23, None, R, int_("n"), fdset("inp", 0), fdset("outp", 0), fdset("exp", 0), struct_io("tvp", 16, "timeval")),
    S("sched_yield", 24, 124, P),
    S("mremap", 25, 216, P, hex_("addr"), uint("old_len"), uint("new_len"), flags("flags", "mremap"), hex_("new_addr"), ret="hex"),
    S("msync", 26, 227, P, hex_("start"), uint("len"), flags("flags", "msync")),
    S("mincore", 27, 232, P, uint("start"), uint("len"), ptr("vec")),
    S("madvise", 28, 233, P, hex_("start"), uint("len_in"), int_("behavior")),
    S("shmget", 29, 194, I, int_("key"), uint("size"), int_("shmflg")),
    S("shmat", 30, 196, P, int_("shmid"), ptr("shmaddr"), int_("shmflg")),
    S("shmctl", 31, 195, P, int_("shmid"), int_("cmd"), ptr("buf")),
    S("dup", 32, 23, I, fd("fildes"), ret="fd"),
    S("dup2", 33, None, I, fd("oldfd"), fd("newfd"), ret="fd"),
    S("pause", 34, None, R),
    S("nanosleep", 35, 101, R, struct_in("rqtp", 16, "timespec"), struct_out("rmtp", 16, "timespec")),
    S("getitimer", 36, 102, R, int_("which"), struct_out("value", 32, "itimerval")),
    S("alarm", 37, None, R, uint("seconds")),
    S("setitimer", 38, 103, R, int_("which"), struct_in("value", 32, "itimerval"), struct_out("ovalue", 32, "itimerval")),
    S("getpid", 39, 172, R),
    S("sendfile", 40, 71, R, fd("out_fd"), fd("in_fd"), struct_io("offset", 8, "loff_t"), uint("count")),
    S("socket", 41, 198, R, enum("family", "af"), flags("type", "sock_type"), int_("protocol"), ret="fd"),
    S("connect", 42, 203, R, fd("fd"), sockaddr_in("uservaddr", 2), uint("addrlen")),
    S("accept", 43, 202, R, fd("fd"), sockaddr_out("upeer_sockaddr", 2), struct_io("upeer_addrlen", 4, "socklen"), ret="fd"),
    S("sendto", 44, 206, R, fd("fd"), inb("buff", RET), uint("len"), flags("flags", "msg"), sockaddr_in("addr", 5), uint("addr_len")),
    S("recvfrom", 45, 207, R, fd("fd"), out("ubuf", Rule.MIN_RET_ARG, 2), uint("size"), flags("flags", "msg"), sockaddr_out("addr", 5), struct_io("addr_len", 4, "socklen")),
    S("sendmsg", 46, 211, R, fd("fd"), msg_in("msg"), flags("flags", "msg")),
    S("recvmsg", 47, 212, R, fd("fd"), msg_out("msg"), flags("flags", "msg")),
    S("shutdown", 48, 210, R, fd("fd"), enum("how", "shutdown")),
    S("bind", 49, 200, R, fd("fd"), sockaddr_in("umyaddr", 2), uint("addrlen")),
    S("listen", 50, 201, R, fd("fd"), int_("backlog")),
    S("getsockname", 51, 204, R, fd("fd"), sockaddr_out("usockaddr", 2), struct_io("usockaddr_len", 4, "socklen")),
    S("getpeername", 52, 205, R, fd("fd"), sockaddr_out("usockaddr", 2), struct_io("usockaddr_len", 4, "socklen")),
    S("socketpair", 53, 199, I, enum("family", "af"), flags("type", "sock_type"), int_("protocol"), struct_out("usockvec", 8, "fd_pair")),
    S("setsockopt", 54, 208, R, fd("fd"), enum("level", "sol"), int_("optname"), inb("optval", ARG, 4), uint("optlen")),
    S("getsockopt", 55, 209, R, fd("fd"), enum("level", "sol"), int_("optname"), out("optval", DEREF, 4), struct_io("optlen", 4, "socklen")),
    S("clone", 56, 220, I, flags("clone_flags", "clone"), hex_("newsp"), ptr("parent_tidptr"), ptr("child_tidptr"), hex_("tls")),
    S("fork", 57, None, I),
    S("vfork", 58, None, I),
    S("execve", 59, 221, I, path("filename"), argv("argv"), argv("envp")),
    S("exit", 60, 93, I, int_("error_code"), ret="none"),
    S("wait4", 61, 260, I, int_("upid"), struct_out("stat_addr", 4, "wait_status"), flags("options", "wait"), struct_out("ru", 144, "rusage")),
    S("kill", 62, 129, I, int_("pid"), signal("sig")),
    S("uname", 63, 160, R, struct_out("name", 390, "utsname")),
    S("semget", 64, 190, I, int_("key"), int_("nsems"), int_("semflg")),
    S("semop", 65, 193, P, int_("semid"), ptr("tsops"), uint("nsops")),
    S("semctl", 66, 191, P, int_("semid"), int_("semnum"), int_("cmd"), uint("arg")),
    S("shmdt", 67, 197, P, ptr("shmaddr")),
    S("msgget", 68, 186, I, int_("key"), int_("msgflg")),
    S("msgsnd", 69, 189, P, int_("msqid"), ptr("msgp"), uint("msgsz"), int_("msgflg")),
    S("msgrcv", 70, 188, P, int_("msqid"), ptr("msgp"), uint("msgsz"), int_("msgtyp"), int_("msgflg")),
    S("msgctl", 71, 187, P, int_("msqid"), int_("cmd"), ptr("buf")),
    S("fcntl", 72, 25, I, fd("fd"), enum("cmd", "fcntl"), hex_("arg")),
    S("flock", 73, 32, R, fd("fd"), int_("cmd")),
    S("fsync", 74, 82, R, fd("fd")),
    S("fdatasync", 75, 83, R, fd("fd")),
    S("truncate", 76, 45, R, path("path"), int_("length")),
    S("ftruncate", 77, 46, R, fd("fd"), int_("length")),
    S("getdents", 78, None, R, fd("fd"), out("dirent", RET), uint("count")),
    S("getcwd", 79, 17, R, out("buf", RET), uint("size")),
    S("chdir", 80, 49, I, path("filename")),
    S("fchdir", 81, 50, R, fd("fd")),
    S("rename", 82, None, R, path("oldname"), path("newname")),
    S("mkdir", 83, None, R, path("pathname"), oct_("mode")),
    S("rmdir", 84, None, R, path("pathname")),
    S("creat", 85, None, I, path("pathname"), oct_("mode"), ret="fd"),
    S("link", 86, None, R, path("oldname"), path("newname")),
    S("unlink", 87, None, R, path("pathname")),
    S("symlink", 88, None, R, path("oldname"), path("newname")),
    S("readlink", 89, None, R, path("path"), out("buf", RET), uint("bufsiz")),
    S("chmod", 90, None, R, path("filename"), oct_("mode")),
    S("fchmod", 91, 52, R, fd("fd"), oct_("mode")),
    S("chown", 92, None, R, path("filename"), int_("user"), int_("group")),
    S("fchown", 93, 55, R, fd("fd"), int_("user"), int_("group")),
    S("lchown", 94, None, R, path("filename"), int_("user"), int_("group")),
    S("umask", 95, 166, R, oct_("mask")),
    S("gettimeofday", 96, 169, R, struct_out("tv", 16, "timeval"), struct_out("tz", 8, "timezone")),
    S("getrlimit", 97, 163, R, enum("resource", "rlimit"), struct_out("rlim", 16, "rlimit")),
    S("getrusage", 98, 165, R, int_("who"), struct_out("ru", 144, "rusage")),
    S("sysinfo", 99, 179, R, struct_out("info", 112, "sysinfo")),
    S("times", 100, 153, R, struct_out("tbuf", 32, "tms")),
    S("ptrace", 101, 117, R, int_("request"), int_("pid"), hex_("addr"), hex_("data")),
    S("getuid", 102, 174, R),
    S("syslog", 103, 116, R, int_("type"), hex_("buf"), int_("len")),    # by type: flagsets.SYSLOG_BUFFERS
    S("getgid", 104, 176, R),
    S("setuid", 105, 146, R, uint("uid")),
    S("setgid", 106, 144, R, uint("gid")),
    S("geteuid", 107, 175, R),
    S("getegid", 108, 177, R),
    S("setpgid", 109, 154, R, int_("pid"), int_("pgid")),
    S("getppid", 110, 173, R),
    S("getpgrp", 111, None, R),
    S("setsid", 112, 157, R),
    S("setreuid", 113, 145, R, uint("ruid"), uint("euid")),
    S("setregid", 114, 143, R, uint("rgid"), uint("egid")),
    S("getgroups", 115, 158, R, int_("gidsetsize"), out("grouplist", RET, 0, "", 4)),
    S("setgroups", 116, 159, R, int_("gidsetsize"), Arg("grouplist", Kind.BUF_IN, Rule.ARG, 0, "", 4)),
    S("setresuid", 117, 147, R, uint("ruid"), uint("euid"), uint("suid")),
    S("getresuid", 118, 148, R, struct_out("ruidp", 4, "uint"), struct_out("euidp", 4, "uint"), struct_out("suidp", 4, "uint")),
    S("setresgid", 119, 149, R, uint("rgid"), uint("egid"), uint("sgid")),
    S("getresgid", 120, 150, R, struct_out("rgidp", 4, "uint"), struct_out("egidp", 4, "uint"), struct_out("sgidp", 4, "uint")),
    S("getpgid", 121, 155, R, int_("pid")),
    S("setfsuid", 122, 151, R, uint("uid")),
    S("setfsgid", 123, 152, R, uint("gid")),
    S("getsid", 124, 156, R, int_("pid")),
    S("capget", 125, 90, R, struct_io("header", 8, "cap_user_header"), struct_out("dataptr", 24, "cap_user_data")),
    S("capset", 126, 91, R, struct_io("header", 8, "cap_user_header"), struct_in("data", 24, "cap_user_data")),
    S("rt_sigpending", 127, 136, R, out("uset", ARG, 1, "sigset"), uint("sigsetsize")),
    S("rt_sigtimedwait", 128, 137, R, struct_in("uthese", 8, "sigset"), struct_out("uinfo", 128, "siginfo"), struct_in("uts", 16, "timespec"), uint("sigsetsize")),
    S("rt_sigqueueinfo", 129, 138, I, int_("pid"), signal("sig"), struct_in("uinfo", 128, "siginfo")),
    S("rt_sigsuspend", 130, 133, P, ptr("unewset"), uint("sigsetsize")),
    S("sigaltstack", 131, 132, P, struct_in("uss", 24, "stack_t"), struct_out("uoss", 24, "stack_t")),
    S("utime", 132, None, R, path("filename"), struct_in("times", 16, "utimbuf")),
    S("mknod", 133, None, R, path("filename"), oct_("mode"), uint("dev")),
    S("uselib", 134, None, U),
    S("personality", 135, 92, R, uint("personality")),
    S("ustat", 136, None, U, uint("dev"), ptr("ubuf")),
    S("statfs", 137, 43, R, path("pathname"), struct_out("buf", 120, "statfs")),
    S("fstatfs", 138, 44, R, fd("fd"), struct_out("buf", 120, "statfs")),
    S("sysfs", 139, None, R, int_("option"), uint("arg1"), uint("arg2")),
    S("getpriority", 140, 141, R, int_("which"), int_("who")),
    S("setpriority", 141, 140, R, int_("which"), int_("who"), int_("niceval")),
    S("sched_setparam", 142, 118, R, int_("pid"), struct_in("param", 4, "int")),
    S("sched_getparam", 143, 121, R, int_("pid"), struct_out("param", 4, "int")),
    S("sched_setscheduler", 144, 119, R, int_("pid"), int_("policy"), struct_in("param", 4, "int")),
    S("sched_getscheduler", 145, 120, R, int_("pid")),
    S("sched_get_priority_max", 146, 125, R, int_("policy")),
    S("sched_get_priority_min", 147, 126, R, int_("policy")),
    S("sched_rr_get_interval", 148, 127, R, int_("pid"), struct_out("interval", 16, "timespec")),
    S("mlock", 149, 228, P, hex_("start"), uint("len")),
    S("munlock", 150, 229, P, hex_("start"), uint("len")),
    S("mlockall", 151, 230, P, hex_("flags")),
    S("munlockall", 152, 231, P),
    S("vhangup", 153, 58, R),
    S("modify_ldt", 154, None, U, int_("func"), ptr("ptr"), uint("bytecount")),
    S("pivot_root", 155, 41, U, path("new_root"), path("put_old")),
    S("_sysctl", 156, None, U),
    S("prctl", 157, 167, I, enum("option", "prctl"), hex_("arg2"), hex_("arg3"), hex_("arg4"), hex_("arg5")),
    S("arch_prctl", 158, None, P, enum("option", "arch_prctl"), hex_("arg2")),
    S("adjtimex", 159, 171, R, struct_io("txc_p", 208, "timex")),
    S("setrlimit", 160, 164, I, enum("resource", "rlimit"), struct_in("rlim", 16, "rlimit")),
    S("chroot", 161, 51, R, path("filename")),
    S("sync", 162, 81, R),
    S("acct", 163, 89, R, path("name")),
    S("settimeofday", 164, 170, R, struct_in("tv", 16, "timeval"), struct_in("tz", 8, "timezone")),
    S("mount", 165, 40, R, path("dev_name"), path("dir_name"), path("type"), hex_("flags"), str_("data")),
    S("umount2", 166, 39, R, path("name"), hex_("flags")),
    S("swapon", 167, 224, U, path("specialfile"), hex_("swap_flags")),
    S("swapoff", 168, 225, U, path("specialfile")),
    S("reboot", 169, 142, U, int_("magic1"), int_("magic2"), uint("cmd"), ptr("arg")),
    S("sethostname", 170, 161, R, inb("name", ARG, 1), int_("len")),
    S("setdomainname", 171, 162, R, inb("name", ARG, 1), int_("len")),
    S("iopl", 172, None, R, uint("level")),
    S("ioperm", 173, None, R, uint("from"), uint("num"), int_("turn_on")),
    S("create_module", 174, None, U),
    S("init_module", 175, 105, U),
    S("delete_module", 176, 106, U),
    S("get_kernel_syms", 177, None, U),
    S("query_module", 178, None, U),
    S("quotactl", 179, 60, U, uint("cmd"), path("special"), uint("id"), ptr("addr")),
    S("nfsservctl", 180, 42, U),
    S("getpmsg", 181, None, U),
    S("putpmsg", 182, None, U),
    S("afs_syscall", 183, None, U),
    S("tuxcall", 184, None, U),
    S("security", 185, None, U),
    S("gettid", 186, 178, R),
    S("readahead", 187, 213, R, fd("fd"), int_("offset"), uint("count")),
    S("setxattr", 188, 5, R, path("pathname"), str_("name"), inb("value", ARG, 3), uint("size"), hex_("flags")),
    S("lsetxattr", 189, 6, R, path("pathname"), str_("name"), inb("value", ARG, 3), uint("size"), hex_("flags")),
    S("fsetxattr", 190, 7, R, fd("fd"), str_("name"), inb("value", ARG, 3), uint("size"), hex_("flags")),
    S("getxattr", 191, 8, R, path("pathname"), str_("name"), out("value", RET), uint("size")),
    S("lgetxattr", 192, 9, R, path("pathname"), str_("name"), out("value", RET), uint("size")),
    S("fgetxattr", 193, 10, R, fd("fd"), str_("name"), out("value", RET), uint("size")),
    S("listxattr", 194, 11, R, path("pathname"), out("list", RET), uint("size")),
    S("llistxattr", 195, 12, R, path("pathname"), out("list", RET), uint("size")),
    S("flistxattr", 196, 13, R, fd("fd"), out("list", RET), uint("size")),
    S("removexattr", 197, 14, R, path("pathname"), str_("name")),
    S("lremovexattr", 198, 15, R, path("pathname"), str_("name")),
    S("fremovexattr", 199, 16, R, fd("fd"), str_("name")),
    S("tkill", 200, 130, I, int_("pid"), signal("sig")),
    S("time", 201, None, R, struct_out("tloc", 8, "time_t")),
    S("futex", 202, 98, P, hex_("uaddr"), enum("op", "futex_op"), uint("val"), ptr("utime"), hex_("uaddr2"), uint("val3")),
    S("sched_setaffinity", 203, 122, I, int_("pid"), uint("len"), inb("user_mask_ptr", ARG, 1)),
    S("sched_getaffinity", 204, 123, R, int_("pid"), uint("len"), out("user_mask_ptr", RET)),
    S("set_thread_area", 205, None, U),
    S("io_setup", 206, 0, U, uint("nr_events"), ptr("ctxp")),
    S("io_destroy", 207, 1, U, uint("ctx")),
    S("io_getevents", 208, 4, U, uint("ctx_id"), int_("min_nr"), int_("nr"), ptr("events"), ptr("timeout")),
    S("io_submit", 209, 2, U, uint("ctx_id"), int_("nr"), ptr("iocbpp")),
    S("io_cancel", 210, 3, U, uint("ctx_id"), ptr("iocb"), ptr("result")),
    S("get_thread_area", 211, None, U),
    S("lookup_dcookie", 212, 18, U),
    S("epoll_create", 213, None, R, int_("size")),
    S("epoll_ctl_old", 214, None, U),
    S("epoll_wait_old", 215, None, U),
    S("remap_file_pages", 216, 234, P, uint("start"), uint("size"), uint("prot"), uint("pgoff"), hex_("flags")),
    S("getdents64", 217, 61, R, fd("fd"), out("dirent", RET), uint("count")),
    S("set_tid_address", 218, 96, P, ptr("tidptr")),
    S("restart_syscall", 219, 128, R),
    S("semtimedop", 220, 192, P, int_("semid"), ptr("tsops"), uint("nsops"), ptr("timeout")),
    S("fadvise64", 221, 223, R, fd("fd"), int_("offset"), uint("len"), int_("advice")),
    S("timer_create", 222, 107, R, enum("which_clock", "clock"), struct_in("timer_event_spec", 64, "sigevent"), struct_out("created_timer_id", 4, "int")),
    S("timer_settime", 223, 110, R, int_("timer_id"), flags("flags", "timer"), struct_in("new_setting", 32, "itimerspec"), struct_out("old_setting", 32, "itimerspec")),
    S("timer_gettime", 224, 108, R, int_("timer_id"), struct_out("setting", 32, "itimerspec")),
    S("timer_getoverrun", 225, 109, R, int_("timer_id")),
    S("timer_delete", 226, 111, R, int_("timer_id")),
    S("clock_settime", 227, 112, R, enum("which_clock", "clock"), struct_in("tp", 16, "timespec")),
    S("clock_gettime", 228, 113, R, enum("which_clock", "clock"), struct_out("tp", 16, "timespec")),
    S("clock_getres", 229, 114, R, enum("which_clock", "clock"), struct_out("tp", 16, "timespec")),
    S("clock_nanosleep", 230, 115, R, enum("which_clock", "clock"), flags("flags", "timer"), struct_in("rqtp", 16, "timespec"), struct_out("rmtp", 16, "timespec")),
    S("exit_group", 231, 94, I, int_("error_code"), ret="none"),
    S("epoll_wait", 232, None, R, fd("epfd"), array_ret("events", 12, "epoll_event"), int_("maxevents"), int_("timeout")),
    S("epoll_ctl", 233, 21, R, fd("epfd"), enum("op", "epoll_ctl"), fd("fd"), struct_in("event", 12, "epoll_event")),
    S("tgkill", 234, 131, I, int_("tgid"), int_("pid"), signal("sig")),
    S("utimes", 235, None, R, path("filename"), struct_in("utimes", 32, "timeval_pair")),
    S("vserver", 236, None, U),
    S("mbind", 237, 235, P, uint("start"), uint("len"), oct_("mode"), ptr("nmask"), uint("maxnode"), hex_("flags")),
    S("set_mempolicy", 238, 237, P, int_("mode"), ptr("nmask"), uint("maxnode")),
    S("get_mempolicy", 239, 236, P, ptr("policy"), ptr("nmask"), uint("maxnode"), uint("addr"), hex_("flags")),
    S("mq_open", 240, 180, R, path("u_name"), flags("oflag", "open"), oct_("mode"), struct_in("u_attr", 64, "mq_attr"), ret="fd"),
    S("mq_unlink", 241, 181, R, path("u_name")),
    S("mq_timedsend", 242, 182, R, fd("mqdes"), inb("u_msg_ptr", ARG, 2), uint("msg_len"), uint("msg_prio"), struct_in("u_abs_timeout", 16, "timespec")),
    S("mq_timedreceive", 243, 183, R, fd("mqdes"), out("u_msg_ptr", RET), uint("msg_len"), struct_out("u_msg_prio", 4, "uint"), struct_in("u_abs_timeout", 16, "timespec")),
    S("mq_notify", 244, 184, R, fd("mqdes"), struct_in("u_notification", 64, "sigevent")),
    S("mq_getsetattr", 245, 185, R, fd("mqdes"), struct_in("u_mqstat", 64, "mq_attr"), struct_out("u_omqstat", 64, "mq_attr")),
    S("kexec_load", 246, 104, U),
    S("waitid", 247, 95, I, int_("which"), int_("upid"), struct_out("infop", 128, "siginfo"), flags("options", "wait"), struct_out("ru", 144, "rusage")),
    S("add_key", 248, 217, R, str_("_type"), str_("_description"), inb("_payload", ARG, 3), uint("plen"), int_("ringid")),
    S("request_key", 249, 218, R, str_("_type"), str_("_description"), str_("_callout_info"), int_("destringid")),
    S("keyctl", 250, 219, R, int_("option"), hex_("arg2"), hex_("arg3"), hex_("arg4"), hex_("arg5")),
    S("ioprio_set", 251, 30, R, int_("which"), int_("who"), int_("ioprio")),
    S("ioprio_get", 252, 31, R, int_("which"), int_("who")),
    S("inotify_init", 253, None, R),
    S("inotify_add_watch", 254, 27, R, fd("fd"), path("pathname"), hex_("mask")),
    S("inotify_rm_watch", 255, 28, R, fd("fd"), int_("wd")),
    S("migrate_pages", 256, 238, U, int_("pid"), uint("maxnode"), ptr("old_nodes"), ptr("new_nodes")),
    S("openat", 257, 56, I, fd("dfd"), path("filename"), flags("flags", "open"), oct_("mode"), ret="fd"),
    S("mkdirat", 258, 34, R, fd("dfd"), path("pathname"), oct_("mode")),
    S("mknodat", 259, 33, R, fd("dfd"), path("filename"), oct_("mode"), uint("dev")),
    S("fchownat", 260, 54, R, fd("dfd"), path("filename"), int_("user"), int_("group"), flags("flag", "at")),
    S("futimesat", 261, None, R, fd("dfd"), path("filename"), struct_in("utimes", 32, "timeval_pair")),
    S("newfstatat", 262, 79, R, fd("dfd"), path("filename"), struct_out("statbuf", 144, "stat"), flags("flag", "at")),
    S("unlinkat", 263, 35, R, fd("dfd"), path("pathname"), flags("flag", "at")),
    S("renameat", 264, 38, R, fd("olddfd"), path("oldname"), fd("newdfd"), path("newname")),
    S("linkat", 265, 37, R, fd("olddfd"), path("oldname"), fd("newdfd"), path("newname"), flags("flags", "at")),
    S("symlinkat", 266, 36, R, path("oldname"), fd("newdfd"), path("newname")),
    S("readlinkat", 267, 78, R, fd("dfd"), path("pathname"), out("buf", RET), uint("bufsiz")),
    S("fchmodat", 268, 53, R, fd("dfd"), path("filename"), oct_("mode")),
    S("faccessat", 269, 48, R, fd("dfd"), path("filename"), flags("mode", "access")),
    S("pselect6", 270, 72, I, int_("n"), fdset("inp", 0), fdset("outp", 0), fdset("exp", 0), struct_io("tsp", 16, "timespec"), ptr("sig")),
    S("ppoll", 271, 73, I, array_out("ufds", 1, 8, "pollfd"), uint("nfds"), struct_io("tsp", 16, "timespec"), struct_in("sigmask", 8, "sigset"), uint("sigsetsize")),
    S("unshare", 272, 97, I, hex_("unshare_flags")),
    S("set_robust_list", 273, 99, P, ptr("head"), uint("len")),
    S("get_robust_list", 274, 100, P, int_("pid"), ptr("head_ptr"), ptr("len_ptr")),
    S("splice", 275, 76, R, fd("fd_in"), struct_io("off_in", 8, "loff_t"), fd("fd_out"), struct_io("off_out", 8, "loff_t"), uint("len"), flags("flags", "splice")),
    S("tee", 276, 77, R, int_("fdin"), int_("fdout"), uint("len"), hex_("flags")),
    S("sync_file_range", 277, 84, R, fd("fd"), int_("offset"), int_("nbytes"), hex_("flags")),
    S("vmsplice", 278, 75, U, fd("fd"), ptr("uiov"), uint("nr_segs"), hex_("flags")),
    S("move_pages", 279, 239, U, int_("pid"), uint("nr_pages"), ptr("pages"), ptr("nodes"), ptr("status"), hex_("flags")),
    S("utimensat", 280, 88, R, fd("dfd"), path("filename"), struct_in("utimes", 32, "timespec_pair"), flags("flags", "at")),
    S("epoll_pwait", 281, 22, R, fd("epfd"), array_ret("events", 12, "epoll_event"), int_("maxevents"), int_("timeout"), struct_in("sigmask", 8, "sigset"), uint("sigsetsize")),
    S("signalfd", 282, None, U, fd("ufd"), ptr("user_mask"), uint("sizemask")),
    S("timerfd_create", 283, 85, R, enum("clockid", "clock"), flags("flags", "tfd"), ret="fd"),
    S("eventfd", 284, None, R, uint("count")),
    S("fallocate", 285, 47, R, fd("fd"), int_("mode"), int_("offset"), int_("len")),
    S("timerfd_settime", 286, 86, R, fd("ufd"), flags("flags", "tfd_settime"), struct_in("utmr", 32, "itimerspec"), struct_out("otmr", 32, "itimerspec")),
    S("timerfd_gettime", 287, 87, R, fd("ufd"), struct_out("otmr", 32, "itimerspec")),
    S("accept4", 288, 242, R, fd("fd"), sockaddr_out("upeer_sockaddr", 2), struct_io("upeer_addrlen", 4, "socklen"), flags("flags", "sock_type"), ret="fd"),
    S("signalfd4", 289, 74, R, fd("ufd"), struct_in("user_mask", 8, "sigset"), uint("sizemask"), flags("flags", "sfd"), ret="fd"),
    S("eventfd2", 290, 19, R, uint("count"), flags("flags", "efd"), ret="fd"),
    S("epoll_create1", 291, 20, R, flags("flags", "epoll_create"), ret="fd"),
    S("dup3", 292, 24, I, fd("oldfd"), fd("newfd"), flags("flags", "open"), ret="fd"),
    S("pipe2", 293, 59, I, struct_out("fildes", 8, "fd_pair"), flags("flags", "open")),
    S("inotify_init1", 294, 26, R, hex_("flags")),
    S("preadv", 295, 69, R, fd("fd"), iov_out("vec", 2), uint("vlen"), int_("pos_l"), int_("pos_h")),
    S("pwritev", 296, 70, R, fd("fd"), iov_in("vec", 2), uint("vlen"), int_("pos_l"), int_("pos_h")),
    S("rt_tgsigqueueinfo", 297, 240, I, int_("tgid"), int_("pid"), signal("sig"), struct_in("uinfo", 128, "siginfo")),
    S("perf_event_open", 298, 241, R, struct_in("attr_uptr", 136, "perf_event_attr"), int_("pid"), int_("cpu"), int_("group_fd"), hex_("flags")),
    S("recvmmsg", 299, 243, R, fd("fd"), mmsg_out("mmsg", 2), uint("vlen"), flags("flags", "msg"), struct_io("timeout", 16, "timespec")),
    S("fanotify_init", 300, 262, R, hex_("flags"), hex_("event_f_flags")),
    S("fanotify_mark", 301, 263, R, fd("fanotify_fd"), hex_("flags"), hex_("mask"), fd("dfd"), path("pathname")),
    S("prlimit64", 302, 261, I, int_("pid"), enum("resource", "rlimit"), struct_in("new_rlim", 16, "rlimit"), struct_out("old_rlim", 16, "rlimit")),
    S("name_to_handle_at", 303, 264, U, fd("dfd"), path("name"), ptr("handle"), ptr("mnt_id"), hex_("flag")),
    S("open_by_handle_at", 304, 265, U, int_("mountdirfd"), ptr("handle"), hex_("flags")),
    S("clock_adjtime", 305, 266, R, enum("which_clock", "clock"), struct_io("utx", 208, "timex")),
    S("syncfs", 306, 267, R, fd("fd")),
    S("sendmmsg", 307, 269, R, fd("fd"), mmsg_in("mmsg", 2), uint("vlen"), flags("flags", "msg")),
    S("setns", 308, 268, R, fd("fd"), hex_("flags")),
    S("getcpu", 309, 168, R, struct_out("cpup", 4, "uint"), struct_out("nodep", 4, "uint"), ptr("unused")),
    S("process_vm_readv", 310, 270, R, int_("pid"), iov_out("lvec", 2), uint("liovcnt"), array_in("rvec", 4, 16, "iovec"), uint("riovcnt"), hex_("flags")),
    S("process_vm_writev", 311, 271, I, int_("pid"), iov_in("lvec", 2), uint("liovcnt"), array_in("rvec", 4, 16, "iovec"), uint("riovcnt"), hex_("flags")),
    S("kcmp", 312, 272, R, int_("pid1"), int_("pid2"), int_("type"), uint("idx1"), uint("idx2")),
    S("finit_module", 313, 273, U),
    S("sched_setattr", 314, 274, R, int_("pid"), struct_in("uattr", 48, "sched_attr"), hex_("flags")),
    S("sched_getattr", 315, 275, R, int_("pid"), out("uattr", ARG, 2), uint("usize"), hex_("flags")),
    S("renameat2", 316, 276, R, fd("olddfd"), path("oldname"), fd("newdfd"), path("newname"), hex_("flags")),
    S("seccomp", 317, 277, I, uint("op"), hex_("flags"), ptr("uargs")),   # by op: flagsets.SECCOMP_BUFFERS
    S("getrandom", 318, 278, R, out("buf", RET), uint("count"), flags("flags", "grnd")),
    S("memfd_create", 319, 279, R, str_("uname"), flags("flags", "mfd"), ret="fd"),
    S("kexec_file_load", 320, 294, U),
    S("bpf", 321, 280, I, int_("cmd"), array_out("uattr", 2, 1, "bpf_attr"), uint("size")),
    S("execveat", 322, 281, I, fd("fd"), path("filename"), argv("argv"), argv("envp"), flags("flags", "at")),
    S("userfaultfd", 323, 282, U, hex_("flags")),
    S("membarrier", 324, 283, P, int_("cmd"), flags("flags", "none"), int_("cpu_id")),
    S("mlock2", 325, 284, P, uint("start"), uint("len"), hex_("flags")),
    S("copy_file_range", 326, 285, R, fd("fd_in"), struct_io("off_in", 8, "loff_t"), fd("fd_out"), struct_io("off_out", 8, "loff_t"), uint("len"), hex_("flags")),
    S("preadv2", 327, 286, R, fd("fd"), iov_out("vec", 2), uint("vlen"), int_("pos_l"), int_("pos_h"), flags("flags", "rwf")),
    S("pwritev2", 328, 287, R, fd("fd"), iov_in("vec", 2), uint("vlen"), int_("pos_l"), int_("pos_h"), flags("flags", "rwf")),
    S("pkey_mprotect", 329, 288, P, uint("start"), uint("len"), uint("prot"), int_("pkey")),
    S("pkey_alloc", 330, 289, P, hex_("flags"), uint("init_val")),
    S("pkey_free", 331, 290, P, int_("pkey")),
    S("statx", 332, 291, R, fd("dfd"), path("filename"), flags("flags", "at"), flags("mask", "statx_mask"), struct_out("buffer", 256, "statx")),
    S("io_pgetevents", 333, 292, U, uint("ctx_id"), int_("min_nr"), int_("nr"), ptr("events"), ptr("timeout"), ptr("usig")),
    S("rseq", 334, 293, P, ptr("rseq"), uint("rseq_len"), int_("flags"), uint("sig")),
    S("uretprobe", 335, None, P),
    S("uprobe", 336, None, P),
    S("pidfd_send_signal", 424, 424, I, fd("pidfd"), int_("sig"), ptr("info"), hex_("flags")),
    S("io_uring_setup", 425, 425, U, uint("entries"), ptr("params"), ret="fd"),
    S("io_uring_enter", 426, 426, U, fd("fd"), uint("to_submit"), uint("min_complete"), flags("flags", "none"), ptr("argp"), uint("argsz")),
    S("io_uring_register", 427, 427, U, fd("fd"), uint("opcode"), ptr("arg"), uint("nr_args")),
    S("open_tree", 428, 428, R, fd("dfd"), path("filename"), hex_("flags"), ret="fd"),
    S("move_mount", 429, 429, R, fd("from_dfd"), path("from_pathname"), fd("to_dfd"), path("to_pathname"), hex_("flags")),
    S("fsopen", 430, 430, R, str_("_fs_name"), hex_("flags"), ret="fd"),
    S("fsconfig", 431, 431, R, fd("fd"), uint("cmd"), str_("_key"), str_("_value"), int_("aux")),
    S("fsmount", 432, 432, R, int_("fs_fd"), hex_("flags"), hex_("attr_flags")),
    S("fspick", 433, 433, R, fd("dfd"), path("path"), hex_("flags"), ret="fd"),
    S("pidfd_open", 434, 434, R, int_("pid"), hex_("flags")),
    S("clone3", 435, 435, I, struct_in("uargs", 88, "clone_args"), uint("size")),
    S("close_range", 436, 436, I, fd("fd"), fd("max_fd"), flags("flags", "close_range")),
    S("openat2", 437, 437, I, fd("dfd"), path("filename"), struct_in("how", 24, "open_how"), uint("usize"), ret="fd"),
    S("pidfd_getfd", 438, 438, R, fd("pidfd"), fd("fd"), hex_("flags")),
    S("faccessat2", 439, 439, R, fd("dfd"), path("filename"), flags("mode", "access"), flags("flags", "at")),
    S("process_madvise", 440, 440, U, fd("pidfd"), ptr("vec"), uint("vlen"), int_("behavior"), hex_("flags")),
    S("epoll_pwait2", 441, 441, R, fd("epfd"), array_ret("events", 12, "epoll_event"), int_("maxevents"), struct_in("timeout", 16, "timespec"), struct_in("sigmask", 8, "sigset"), uint("sigsetsize")),
    S("mount_setattr", 442, 442, R, fd("dfd"), path("path"), hex_("flags"), inb("uattr", ARG, 4), uint("usize")),
    S("quotactl_fd", 443, 443, U, fd("fd"), uint("cmd"), uint("id"), ptr("addr")),
    S("landlock_create_ruleset", 444, 444, R, inb("attr", ARG, 1), uint("size"), hex_("flags")),
    S("landlock_add_rule", 445, 445, R, fd("ruleset_fd"), int_("rule_type"), hex_("rule_attr"), hex_("flags")),  # by rule_type: flagsets
    S("landlock_restrict_self", 446, 446, R, int_("ruleset_fd"), hex_("flags")),
    S("memfd_secret", 447, 447, R, hex_("flags")),
    S("process_mrelease", 448, 448, R, fd("pidfd"), hex_("flags")),
    S("futex_waitv", 449, 449, P, ptr("waiters"), uint("nr_futexes"), hex_("flags"), ptr("timeout"), int_("clockid")),
    S("set_mempolicy_home_node", 450, 450, R, uint("start"), uint("len"), uint("home_node"), hex_("flags")),
    S("cachestat", 451, 451, U, fd("fd"), ptr("cstat_range"), ptr("cstat"), hex_("flags")),
    S("fchmodat2", 452, 452, R, fd("dfd"), path("filename"), oct_("mode"), flags("flags", "at")),
    S("map_shadow_stack", 453, 453, U),
    S("futex_wake", 454, 454, P, ptr("uaddr"), uint("mask"), int_("nr"), hex_("flags")),
    S("futex_wait", 455, 455, P, ptr("uaddr"), uint("val"), uint("mask"), hex_("flags"), ptr("timeout"), int_("clockid")),
    S("futex_requeue", 456, 456, P, ptr("waiters"), hex_("flags"), int_("nr_wake"), int_("nr_requeue")),
    S("statmount", 457, 457, U, ptr("req"), ptr("buf"), uint("bufsize"), hex_("flags")),
    S("listmount", 458, 458, U, ptr("req"), ptr("mnt_ids"), uint("nr_mnt_ids"), hex_("flags")),
    S("lsm_get_self_attr", 459, 459, U, uint("attr"), ptr("ctx"), ptr("size"), hex_("flags")),
    S("lsm_set_self_attr", 460, 460, U, uint("attr"), ptr("ctx"), uint("size"), hex_("flags")),
    S("lsm_list_modules", 461, 461, U, ptr("ids"), ptr("size"), hex_("flags")),
    S("mseal", 462, 462, P, uint("start"), uint("len"), hex_("flags")),
    S("setxattrat", 463, 463, U, fd("dfd"), path("pathname"), hex_("at_flags"), path("name"), ptr("uargs"), uint("usize")),
    S("getxattrat", 464, 464, U, fd("dfd"), path("pathname"), hex_("at_flags"), path("name"), ptr("uargs"), uint("usize")),
    S("listxattrat", 465, 465, U, fd("dfd"), path("pathname"), hex_("at_flags"), ptr("list"), uint("size")),
    S("removexattrat", 466, 466, U, fd("dfd"), path("pathname"), hex_("at_flags"), path("name")),
    S("open_tree_attr", 467, 467, U, fd("dfd"), path("filename"), hex_("flags"), ptr("uattr"), uint("usize")),
    S("file_getattr", 468, 468, U, fd("dfd"), path("filename"), ptr("ufattr"), uint("usize"), hex_("at_flags")),
    S("file_setattr", 469, 469, U, fd("dfd"), path("filename"), ptr("ufattr"), uint("usize"), hex_("at_flags")),
)
# fmt: on

# ---------------------------------------------------------------------------- behaviour
# What each syscall does beyond its argument layout, declared class-wide (one
# table per property, so the declarations above stay one line per syscall).
# Read by strict replay, the fd model (formats/fdmap.py), dr show and stats.
from dr.schema.types import Beh, Behaviour, FdEffect, Order  # noqa: E402

O_CLOEXEC = 0o2000000

#: Calls held to their own thread's order only (see types.Order).
ORDER: dict[Order, tuple[str, ...]] = {
    Order.THREAD: (
        "getpid", "gettid", "getppid", "getuid", "geteuid", "getgid", "getegid", "getrandom",
        "uname", "sysinfo", "getrusage", "times", "nanosleep", "clock_nanosleep",
        "sched_getaffinity", "getrlimit", "prlimit64", "getpgrp", "getpgid", "getsid",
        "sched_getscheduler", "getpriority"),
    Order.TIME: ("clock_gettime", "gettimeofday", "time", "getcpu", "clock_getres"),
    Order.LIFECYCLE: ("clone", "clone3", "fork", "vfork", "execve", "execveat"),
    Order.EXIT: ("exit", "exit_group"),
    Order.SIGNAL: ("kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo",
                   "pidfd_send_signal"),
    Order.WAIT: ("futex", "futex_waitv", "futex_wait", "rt_sigsuspend"),
}

#: Calls whose success value is always a new fd: name -> (what it refers to,
#: close-on-exec (argument, mask)); -1 when the new fd is never close-on-exec, -2
#: when it always is (pidfd_getfd). bpf, seccomp and landlock_create_ruleset return
#: an fd only for some commands, so they are not listed.
NEW_FD: dict[str, tuple[str, tuple[int, int]]] = {
    "open": ("file", (1, O_CLOEXEC)), "openat": ("file", (2, O_CLOEXEC)),
    "openat2": ("file", (2, O_CLOEXEC)), "creat": ("file", (-1, 0)),
    "open_by_handle_at": ("file", (2, O_CLOEXEC)), "open_tree": ("file", (2, O_CLOEXEC)),
    "socket": ("socket", (1, O_CLOEXEC)), "accept": ("socket", (-1, 0)),
    "accept4": ("socket", (3, O_CLOEXEC)),
    "eventfd": ("eventfd", (-1, 0)), "eventfd2": ("eventfd", (1, O_CLOEXEC)),
    "epoll_create": ("epoll", (-1, 0)), "epoll_create1": ("epoll", (0, O_CLOEXEC)),
    "timerfd_create": ("timerfd", (1, O_CLOEXEC)),
    "signalfd": ("signalfd", (-1, 0)), "signalfd4": ("signalfd", (3, O_CLOEXEC)),
    "inotify_init": ("inotify", (-1, 0)), "inotify_init1": ("inotify", (0, O_CLOEXEC)),
    "fanotify_init": ("fanotify", (0, 1)),                       # FAN_CLOEXEC
    "pidfd_open": ("pidfd", (-1, 0)), "pidfd_getfd": ("file", (-2, 0)),
    "memfd_create": ("memfd", (1, 1)),                           # MFD_CLOEXEC
    "memfd_secret": ("memfd", (0, O_CLOEXEC)),
    "userfaultfd": ("userfaultfd", (0, O_CLOEXEC)),
    "perf_event_open": ("perf_event", (4, 8)),                   # PERF_FLAG_FD_CLOEXEC
    "mq_open": ("mqueue", (1, O_CLOEXEC)),
    "fsopen": ("fs_context", (1, 1)), "fspick": ("fs_context", (2, 1)),
    "fsmount": ("file", (1, 1)),
    "io_uring_setup": ("io_uring", (-1, 0)),
}
#: Calls writing two new fds into an out-argument.
PAIR_FD: dict[str, tuple[str, tuple[int, int]]] = {
    "pipe": ("pipe", (-1, 0)), "pipe2": ("pipe", (1, O_CLOEXEC)),
    "socketpair": ("socket", (1, O_CLOEXEC)),
}
FD_EFFECT: dict[FdEffect, tuple[str, ...]] = {
    FdEffect.DUP: ("dup", "dup2", "dup3"),
    FdEffect.DUP_CMD: ("fcntl",),
    FdEffect.CLOSE: ("close",),
    FdEffect.CLOSE_RANGE: ("close_range",),
    FdEffect.EXEC: ("execve", "execveat"),
}
#: close-on-exec of the DUP calls (dup3's flags argument).
DUP_CLOEXEC = {"dup3": (2, O_CLOEXEC)}

FLAGGED: dict[Beh, tuple[str, ...]] = {
    Beh.FILE_IO: ("read", "write", "pread64", "pwrite64", "readv", "writev", "preadv", "pwritev",
                  "preadv2", "pwritev2", "lseek", "ftruncate", "fallocate", "fsync", "fdatasync"),
    Beh.COUNTS_IN: ("write", "pwrite64", "sendto"),
    Beh.SIZE_QUERY: ("getgroups", "getxattr", "lgetxattr", "fgetxattr", "listxattr", "llistxattr",
                     "flistxattr"),
    Beh.STREAM: ("read", "write", "pread64", "pwrite64", "readv", "writev", "preadv", "pwritev",
                 "preadv2", "pwritev2", "recvfrom", "sendto", "recvmsg", "sendmsg",
                 "recvmmsg", "sendmmsg"),
}
#: Calls moving bytes between two fds without a user buffer: (source arg, target arg).
MOVES: dict[str, tuple[int, int]] = {
    "sendfile": (1, 0), "splice": (0, 2), "copy_file_range": (0, 2), "tee": (0, 1),
}


def _behaviour(name: str) -> Behaviour:
    order = next((o for o, names in ORDER.items() if name in names), Order.SHARED)
    fd, kind, cloexec = FdEffect.NONE, "", (-1, 0)
    if name in NEW_FD:
        fd, (kind, cloexec) = FdEffect.NEW, NEW_FD[name]
    elif name in PAIR_FD:
        fd, (kind, cloexec) = FdEffect.PAIR, PAIR_FD[name]
    else:
        fd = next((e for e, names in FD_EFFECT.items() if name in names), FdEffect.NONE)
        cloexec = DUP_CLOEXEC.get(name, cloexec)
    flags = Beh.NONE
    for f, names in FLAGGED.items():
        if name in names:
            flags |= f
    return Behaviour(order, fd, kind, cloexec, flags, MOVES.get(name))


def _check_tables() -> None:
    names = {s.name for s in SYSCALLS}
    for table in (*ORDER.values(), *FD_EFFECT.values(), *FLAGGED.values(),
                  NEW_FD, PAIR_FD, DUP_CLOEXEC, MOVES):
        unknown = set(table) - names
        assert not unknown, f"behaviour tables name undeclared syscalls: {sorted(unknown)}"


_check_tables()
SYSCALLS = tuple(dataclasses.replace(s, beh=_behaviour(s.name)) for s in SYSCALLS)
