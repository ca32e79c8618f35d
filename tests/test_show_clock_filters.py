"""dr show's filters apply to vDSO clock reads (attach mode's uprobe records) as to calls:
-Z listed every successful clock_gettime of a trace (968 lines of a 1-minute incident)."""

from __future__ import annotations

from dr import schema
from dr.formats.strace_format import Formatter, ShowOptions
from dr.formats.trace_spec import ClockRead

_LIBC = schema.CLOCK_SOURCES["LIBC_CLOCK_GETTIME"]
_GO = schema.CLOCK_SOURCES["GO_TIME_NOW"]
_NR = schema.by_name("clock_gettime").nr


def _shown(ret: int, source: int = _LIBC, **opts) -> bool:
    cr = ClockRead(source=source, tid=7, tgid=7, ts=1, clockid=1, ret=ret, sec=5, nsec=6)
    return Formatter(ShowOptions(**opts)).clock_line(cr) is not None


def test_failed_only_hides_successful_clock_reads():
    assert not _shown(0, status="failed")
    assert not _shown(0, source=_GO, status="failed")  # time.now() cannot fail
    assert _shown(-1, status="failed")


def test_successful_only_hides_failed_clock_reads():
    assert _shown(0, status="successful")
    assert _shown(0, source=_GO, status="successful")
    assert not _shown(-1, status="successful")


def test_trace_and_pid_filters_still_apply():
    assert _shown(0, syscalls=frozenset({_NR}))
    assert not _shown(0, syscalls=frozenset({schema.by_name("read").nr}))
    assert not _shown(0, pids=frozenset({8}))
    assert _shown(0, pids=frozenset({7}), status="successful")
