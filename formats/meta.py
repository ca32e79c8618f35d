"""The trace metadata record, declared once: its keys, their types and meaning.

The first record of a trace (``{"t": "meta", ...}``) describes the capture.
:data:`META_KEYS` lists every key a writer may put there; readers use these
names only (never a guess between spellings). :func:`normalize` turns the
metadata of older traces into today's spelling (``clock`` and ``clocks`` of
format 1-2 are ``clock_offsets``); :func:`problems` says which declared keys
have a value of the wrong type (a reader keeps going: metadata is
informational, a hostile trace cannot make it crash).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["MetaKey", "META_KEYS", "normalize", "problems"]


@dataclass(frozen=True, slots=True)
class MetaKey:
    """One metadata key: ``types`` the Python types its value may have (None allowed
    when ``optional``), ``meaning`` one line for people."""

    name: str
    types: tuple[type, ...]
    meaning: str
    optional: bool = True


_D, _L, _S, _I, _B = dict, list, str, int, bool

META_KEYS: dict[str, MetaKey] = {k.name: k for k in (
    MetaKey("tool", (_S,), "always 'dr'", False),
    MetaKey("version", (_S,), "dr version that wrote the trace", False),
    MetaKey("format_version", (_I,), "trace format version (formats.trace.FORMAT_VERSION)", False),
    MetaKey("host", (_S,), "host name"),
    MetaKey("hostname", (_S,), "UTS nodename of the capture host"),
    MetaKey("kernel", (_S,), "kernel release (uname -r)"),
    MetaKey("arch", (_S,), "machine (uname -m): x86_64, aarch64"),
    MetaKey("clock_offsets", (_D,), "{realtime_ns, boottime_ns}: add to a CLOCK_MONOTONIC ns "
                                    "timestamp for the other clock", False),
    MetaKey("mode", (_S,), "'spawn' (trace starts at exec) or 'attach' (mid-flight)", False),
    MetaKey("command", (_L,), "spawn mode: the command line dr started"),
    MetaKey("aslr", (_B,), "spawn mode: address-space randomization on for the tree (dr turns it off)"),
    MetaKey("vdso_every_exec", (_B,), "spawn mode: every image's vDSO time functions enter the kernel"),
    MetaKey("vdso_patched", (_L,), "vDSO symbols made to enter the kernel in the first image"),
    MetaKey("pid", (_I,), "target tgid"),
    MetaKey("tids", (_L,), "threads of the target when the capture started"),
    MetaKey("exe", (_D, _S), "{path, build_id, sha256} of the target's executable"),
    MetaKey("argv", (_L,), "the target's argv"),
    MetaKey("env", (_L,), "the target's environment (KEY=VALUE strings)"),
    MetaKey("cwd", (_S,), "the target's working directory"),
    MetaKey("uid", (_I,), "the target's real uid"),
    MetaKey("gid", (_I,), "the target's real gid"),
    MetaKey("rlimits", (_D,), "the target's resource limits"),
    MetaKey("maps", (_L,), "the target's mapped files at start ({path, build_id, sha256})"),
    MetaKey("fds", (_L,), "the target's fd table at start ({fd, type, path, offset, ...})"),
    MetaKey("snapshot_errors", (_D, _L), "parts of the process snapshot that could not be read"),
    MetaKey("snaplen", (_I,), "bytes kept per buffer (longer: truncated, length kept)"),
    MetaKey("filters", (_D,), "{tid, follow}: what was traced"),
    MetaKey("redaction", (_D,), "redaction policy applied while capturing (None: none)"),
    MetaKey("started_ns", (_I,), "CLOCK_MONOTONIC ns when tracing started"),
    MetaKey("ringbuf_size", (_I,), "BPF ring buffer bytes"),
    MetaKey("threads", (_L,), "the target's threads at start [{tid, name}] (comm)"),
    MetaKey("exec", (_D,), "attach mode: the command line at exec from the initial stack "
                            "{execfn, argv, rewritten, lost} (argv may have been retitled since)"),
    MetaKey("procs", (_L,), "attach mode with --pid: descendants attached at start "
                            "[{pid, ppid, tids, exec, threads, fds}] (threads and fds as the target's)"),
    MetaKey("root", (_D,), "the target's root directory {path, dev, ino, same} (a container's)"),
    MetaKey("clock_probes", (_D,), "attach mode: processes whose clock reads are recorded (clock_read "
                                   "records) {libc: [pids], go: [pids], notes: [why not]}"),
    MetaKey("nspid", (_L,), "the target's pid in each pid namespace, the host's first"),
)}

#: Older spellings of a key -> today's key (formats 1-2 wrote the clock offsets as "clock").
ALIASES = {"clock": "clock_offsets", "clocks": "clock_offsets"}


def normalize(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` with older spellings renamed (a new dict; unknown keys kept as they are)."""
    out = dict(meta)
    for old, new in ALIASES.items():
        if old in out and new not in out:
            out[new] = out.pop(old)
    return out


def problems(meta: dict[str, Any]) -> list[str]:
    """Declared keys whose value has the wrong type, and required keys that are missing."""
    out = []
    for k in META_KEYS.values():
        if k.name not in meta:
            if not k.optional:
                out.append(f"{k.name}: missing")
            continue
        v = meta[k.name]
        if v is None and k.optional:
            continue
        if not isinstance(v, k.types) or (isinstance(v, bool) and _B not in k.types):
            out.append(f"{k.name}: {type(v).__name__}, expected {'/'.join(t.__name__ for t in k.types)}")
    return out
