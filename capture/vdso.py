"""Make a spawned child's vDSO time functions enter the kernel (x86_64).

clock_gettime, gettimeofday, time, getcpu and clock_getres normally run in the
vDSO without a syscall, so no tracepoint sees them. In spawn mode the capture
rewrites their entry points right after execve, before the program runs, with
the same code replay uses (:mod:`dr.replay.vdso`: ``mov eax, NR; syscall;
ret``), so the trace holds every time read replay will see. One
implementation serves both sides; this module only turns its error into the
capture's. Attach mode never touches the target.
"""

from __future__ import annotations

from dr.errors import DrError, TargetError


def patch_vdso(pid: int) -> dict[str, int]:
    """Patch the vDSO time functions of stopped process ``pid``.

    Returns {symbol: address patched} ({} without a vDSO). Raises TargetError
    when /proc/PID/mem cannot be read or written.
    """
    from dr.replay.vdso import patch_vdso as _patch

    try:
        return _patch(pid)
    except DrError as e:
        raise TargetError(f"cannot make the vDSO of process {pid} enter the kernel: {e.message}") from None


__all__ = ["patch_vdso"]
