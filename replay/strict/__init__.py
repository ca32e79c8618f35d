"""Strict replay: a spawn-mode trace replayed syscall by syscall.

::

    s = ReplaySession("run.drt", ReplayOptions(show_output=True))
    s.start()
    while (r := s.step()).status is Status.CONTINUE:
        pass
    s.close()          # r.status: EXITED (faithful), DIVERGED, ERROR

Policy (the recording is the oracle):

- Each thread is held to its recorded sequence of notified syscalls, and all
  threads to the recorded global order (the order of event records in the
  trace, which is the order syscalls completed). A notification that is not
  yet due is held unanswered until every earlier event was replayed. Calls that
  must run natively to let others progress (clone, fork, vfork, execve) and
  calls that only read a value (time, ids, getrandom, sleeps) only wait for
  their own thread's turn.
- Recorded tids are the replay's tids: the tracee starts with the recorded pid
  and each recorded clone child gets its recorded tid (ns_last_pid, see
  :mod:`dr.replay.sandbox`); a host tid is mapped through its NSpid.
- Inputs are substituted: the recorded out-payloads (slots of dr.schema) are
  written into the tracee, each capped to the tracee's own buffer argument,
  and the recorded return value is returned. Outputs (write/send payloads,
  paths, socket addresses, scalar arguments) are compared byte for byte.
- fds are created with SECCOMP_IOCTL_NOTIF_ADDFD at the recorded numbers: a
  path that exists in the sandbox root is opened read-only (so mmap of
  libraries works), anything else is /dev/null or an empty memfd. A file the
  run creates itself (O_CREAT with O_EXCL or O_TRUNC, written to) is a memfd
  whose reads, writes, seeks and truncations run natively after comparison,
  so files shared through mmap (POSIX semaphores of multiprocessing) work.
- Blocking calls are answered at once; PASSTHROUGH calls (memory, futex,
  signal masks) run natively; exit, clone, execve and close run natively.
- A SIGNAL process event recorded after a thread's syscall is delivered with
  tgkill before that syscall is answered, so the handler runs where it ran;
  an interrupted call is answered with its recorded -ERESTART*/-EINTR and the
  kernel restarts it or not, as it did. A notification that vanished (ENOENT)
  never advances the cursor, so an SA_RESTART second notification of the same
  call is matched to the same event.
- Unsupported calls (io_uring and the like) get the recorded error when the
  recording shows one, else the replay stops naming the call.
- A child process's exit is held while its parent has a recorded SIGCHLD
  ahead, and released at that point, so the kernel's own SIGCHLD arrives where
  the recording shows it (bash's reaping handler).
- Time reads whose count depends on native scheduling (CPython's GIL waits on
  a futex with a timeout) are matched softly: an extra one gets the thread's
  last recorded value, a missing one is skipped; the report counts both.
- When the due thread cannot reach its syscall because it waits natively on a
  lock a held thread owns, the earliest held call is answered after
  ``reorder_after`` seconds (counted as "reordered"): each thread stays
  faithful to its own sequence.

Layout: :mod:`.script` reads the trace, :mod:`.session` is the step machine
(ordering, threads, the end), :mod:`.answer` the ways to answer a call,
:mod:`.substitute` compares inputs and writes outputs from the schema's argument
kinds, :mod:`.handlers` holds the handlers registered by syscall name (the
schema's IRREGULAR calls; every other call is answered by the table), and
:mod:`.procfs` what is read from /proc. Which calls are thread-local, create
fds, run natively on owned files... is the schema's behaviour (dr.schema.Order,
FdEffect, Beh), never a list here.

Limits: futex and memory run natively, so races between threads in user
space (several threads appending to one stdio buffer) are not replayed; such
a program diverges with a clear report rather than hanging. The whole trace
is loaded into memory first (about 0.9 KiB of RSS per event, measured on dd
bs=1: 173 MiB for 200k events), which bounds the traces it can take.


The trace is untrusted: every recorded return value and payload size is
checked against the tracee's own arguments (read's count, the iovecs' lengths,
poll's nfds) and a call no genuine run could have made is refused at its
event (ReplayError, listed in the report's ``refused``) before any byte is
written; addresses are the tracee's own, paths resolve inside the sandbox root
(openat2 RESOLVE_IN_ROOT), and a bad trace raises TraceError/ReplayError.
"""
from dr.replay.strict.core import ReplayOptions, Status, StepResult
from dr.replay.strict.script import Script, load_script
from dr.replay.strict.session import ReplaySession

__all__ = ["Status", "StepResult", "ReplayOptions", "ReplaySession", "load_script", "Script"]
