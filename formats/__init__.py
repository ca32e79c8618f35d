"""The trace file format and bundles: encode, decode, validate.

Imports neither bcc nor seccomp, so traces are readable on any machine
(``dr show`` on a laptop). The trace API lives in :mod:`dr.formats.trace`;
its names are re-exported here lazily.
"""

from __future__ import annotations

_TRACE_NAMES = {"FORMAT_VERSION", "MAGIC", "TraceWriter", "TraceReader", "Event", "Payload",
                "ProcEvent", "FrameInfo", "encode_block", "open_trace"}

__all__ = sorted(_TRACE_NAMES)


def __getattr__(name: str):
    if name in _TRACE_NAMES:
        from dr.formats import trace
        return getattr(trace, name)
    raise AttributeError(f"module 'dr.formats' has no attribute {name!r}")
