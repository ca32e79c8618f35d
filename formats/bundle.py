"""Bundles: one file to attach to a ticket (``dr bundle create/verify/info``).

Container: a POSIX (pax) tar archive compressed as one zstd stream, the file
``tar --zstd -tf incident.drb`` lists. Why tar and not zip: tar records each
member's type, so links, devices and fifos are visible and refused instead of
being guessed from attributes; it streams in one pass with bounded memory
(create never holds a trace in memory, ``info`` stops after the first
members); and zstd is already the trace format's compressor. Members, in this
order (``info`` reads only the first four)::

    manifest.json           bundle format version, dr version, sha256 + size of
                            every other member, creation time, host, kernel, CPU
                            model and flags, per-trace capture summary, binaries,
                            redaction (applied, policy) -- see MANIFEST below
    manifest.sha256         "<sha256 of manifest.json>  manifest.json\\n"
    README.md               the human summary: what, when, how long, top
                            syscalls, connections, losses
    redaction-report.json   matches per rule (never the values)
    traces/<name>           the trace(s), rewritten through the redactor
    binaries/<sha256>       with --include-binaries: the executable and loaded
                            libraries, deduplicated by content

Bundles are untrusted input for verify, info and replay. The reader never
calls ``tarfile.extract``: it accepts only regular-file members with the
names above, in that order, each once, no larger than the manifest says and
than ``MAX_MEMBER_BYTES``, and caps the decompressed total
(``MAX_TOTAL_BYTES``) and the decompression ratio (``MAX_RATIO`` once past
``RATIO_FLOOR``). Anything else raises :class:`dr.errors.BundleError` with one
line naming the member. The manifest is integrity, not authenticity: anyone
may rebuild a bundle with new hashes.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import io
import json
import os
import re
import shutil
import socket
import stat
import tarfile
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Sequence

import zstandard

from dr import __version__
from dr.formats import elf, sockaddr
from dr.errors import BundleError, DrError, ExitCode, OutputError, TraceError, UsageError

__all__ = [
    "BUNDLE_FORMAT_VERSION", "BundleInfo", "OpenBundle", "CreateResult", "VerifyResult",
    "create", "verify", "info", "open_bundle", "check_binaries", "is_bundle", "elf_build_id",
    "open_trace_or_bundle", "stored_files_text", "human_size",
]

#: One integer for the bundle layout (members, manifest keys). Bump it when a
#: reader of the previous version would misread a new bundle; readers refuse
#: newer versions.
BUNDLE_FORMAT_VERSION = 1

#: Hostile-input caps (bytes, or a ratio of decompressed to compressed bytes).
MAX_MEMBERS = 4096
MAX_MEMBER_BYTES = 16 << 30
MAX_TOTAL_BYTES = 64 << 30
MAX_SMALL_MEMBER = 16 << 20   # manifest.json, manifest.sha256, README.md, the report
MAX_RATIO = 100
RATIO_FLOOR = 16 << 20
MAX_WINDOW = 1 << 27          # zstd window (memory) a reader accepts

MANIFEST = "manifest.json"
MANIFEST_SHA = "manifest.sha256"
README = "README.md"
REPORT = "redaction-report.json"
_HEAD = (MANIFEST, MANIFEST_SHA, README, REPORT)
_NAME_RE = re.compile(r"(?:traces/[A-Za-z0-9][A-Za-z0-9._-]{0,127}|binaries/[0-9a-f]{64})\Z")
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_CHUNK = 1 << 20


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class BundleInfo:
    """What ``dr bundle info`` shows: the parsed manifest, README text, report."""

    path: str
    manifest: dict[str, Any]
    readme: str
    report: dict[str, Any]


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """A verified bundle: members checked (name -> size in bytes), traces' events."""

    path: str
    members: dict[str, int]
    events: dict[str, int]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CreateResult:
    """A written bundle: its path and size, manifest, redaction report, warnings."""

    path: str
    size: int
    manifest: dict[str, Any]
    report: dict[str, Any]
    warnings: tuple[str, ...] = ()


@dataclass
class OpenBundle:
    """A verified bundle extracted into a private temporary directory.

    ``traces``: paths of the extracted traces (manifest order);
    ``binaries``: the recorded executable and libraries (dicts with ``path``,
    ``build_id``, ``sha256``, ``role`` and, when included, ``file``: the
    extracted copy). Use as a context manager; :meth:`close` removes the
    directory.
    """

    path: str
    dir: Path
    manifest: dict[str, Any]
    report: dict[str, Any]
    traces: list[Path] = field(default_factory=list)
    binaries: list[dict[str, Any]] = field(default_factory=list)

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "OpenBundle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- small helpers


def _sha256_file(path: str | os.PathLike[str], limit: int | None = None) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        while True:
            b = f.read(_CHUNK)
            if not b:
                break
            n += len(b)
            if limit is not None and n > limit:
                raise OSError(27, "file too large")
            h.update(b)
    return h.hexdigest(), n


def _open_public(path: str, limit: int = MAX_MEMBER_BYTES) -> tuple[Any, int]:
    """Open host file ``path``, named by a trace, for a bundle: ``(binary file, size)``.

    A trace is untrusted and dr runs as root, so a path it names is read only
    when any user of this host could read it: a regular file (never a device,
    fifo or socket: ``/dev/zero`` would fill memory, a fifo would block),
    readable by others, below directories others may search, at most ``limit``
    bytes. Otherwise a bundle made on a trace's say-so could carry
    ``/etc/shadow`` or a private key to whoever the bundle is sent to. Raises
    OSError naming the reason.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if not st.st_mode & stat.S_IROTH:
            raise OSError(errno.EACCES, "not readable by every user (dr bundles no private file)")
        if st.st_size > limit:
            raise OSError(errno.EFBIG, "file too large")
        # The directories above the file as opened (symlinks resolved by the kernel).
        d = os.path.dirname(os.readlink(f"/proc/self/fd/{fd}"))
        while True:
            if not os.stat(d).st_mode & stat.S_IXOTH:
                raise OSError(errno.EACCES, f"below {d}, which not every user may search "
                                            "(dr bundles no private file)")
            if d in ("/", ""):
                break
            d = os.path.dirname(d)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), st.st_size
    except BaseException:
        os.close(fd)
        raise


def _copy_public(path: str, dst: str | None, limit: int = MAX_MEMBER_BYTES) -> tuple[str, int]:
    """(sha256, size) of the public host file ``path`` (:func:`_open_public`), copied to
    ``dst`` unless None: exactly the bytes hashed, so a bundle holds what was checked."""
    h = hashlib.sha256()
    n = 0
    src, _size = _open_public(path, limit)
    with src, (open(dst, "xb") if dst else contextlib.nullcontext()) as out:
        while b := src.read(_CHUNK):
            n += len(b)
            if n > limit:
                raise OSError(errno.EFBIG, "file too large")
            h.update(b)
            if out is not None:
                out.write(b)
    return h.hexdigest(), n


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode("utf-8", "backslashreplace")
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    return str(v)


def is_bundle(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` starts like a bundle (a zstd stream), False for a trace or other file."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == _ZSTD_MAGIC
    except OSError:
        return False


def elf_build_id(path: str | os.PathLike[str]) -> str | None:
    """The GNU build-id (hex) of ELF file ``path`` (see :func:`dr.formats.elf.build_id`)."""
    return elf.build_id(path)


def _host_facts() -> dict[str, Any]:
    """Host, kernel and CPU of the machine creating the bundle (/proc/cpuinfo, uname(2))."""
    u = os.uname()
    facts: dict[str, Any] = {"hostname": socket.gethostname(), "kernel": u.release,
                             "kernel_version": u.version, "arch": u.machine}
    try:
        with open("/etc/os-release", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    facts["os"] = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    cpu: dict[str, Any] = {"count": os.cpu_count()}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read(1 << 20)
        first = text.split("\n\n", 1)[0]
        kv = {}
        for line in first.splitlines():
            if ":" in line:
                k, v = line.split(":", 1)
                kv[k.strip()] = v.strip()
        cpu["model"] = kv.get("model name") or kv.get("Hardware") or kv.get("CPU part") or "unknown"
        if "vendor_id" in kv:
            cpu["vendor"] = kv["vendor_id"]
        cpu["flags"] = (kv.get("flags") or kv.get("Features") or "").split()
    except OSError:
        cpu["model"] = "unknown"
        cpu["flags"] = []
    facts["cpu"] = cpu
    return facts


def _fmt_ns(ns: int | None) -> str:
    if not isinstance(ns, int) or ns < 0:
        return "unknown"
    s = ns / 1e9
    return f"{s:.3f} s" if s < 120 else f"{s / 60:.1f} min"


def _wall(meta: dict[str, Any], mono_ns: Any) -> str | None:
    """Wall-clock ISO time of a CLOCK_MONOTONIC timestamp, from the meta's clock offsets."""
    if not isinstance(mono_ns, int):
        return None
    for key in ("clock", "clocks", "clock_offsets"):
        c = meta.get(key)
        if isinstance(c, dict) and isinstance(c.get("realtime_ns"), int):
            t = (mono_ns + c["realtime_ns"]) / 1e9
            return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).isoformat(timespec="seconds")
    return None


def _sockaddr(b: bytes | None) -> str | None:
    """Text form of a struct sockaddr (see :mod:`dr.formats.sockaddr`)."""
    return sockaddr.text(b)


# --------------------------------------------------------------------------- create


class _Stats:
    """What the README tells, gathered in the same pass as redaction."""

    def __init__(self) -> None:
        self.events = 0
        self.syscalls: Counter[str] = Counter()
        self.connections: Counter[tuple[str, str]] = Counter()
        self._bound: dict[tuple[int, int], str] = {}  # (tgid, fd) -> address bound, until listen
        self.first_ts: int | None = None
        self.last_ts: int | None = None
        # Files whose bytes the trace carries (blob records): sha256 -> [bytes, source],
        # source "capture" (stored by dr capture) or "host" (added by dr bundle create).
        self.blobs: dict[str, list[Any]] = {}
        self.paths: dict[str, str] = {}   # sha256 -> a path the trace's files records name
        self.cut_where = ""   # a source trace cut short: where it ends (TraceReader.cut_where)

    def blob(self, rec: dict[str, Any], source: str) -> None:
        data = rec.get("data")
        b = self.blobs.setdefault(rec["sha256"], [0, source])
        b[0] += len(data) if isinstance(data, (bytes, bytearray)) else 0

    def stored_files(self) -> dict[str, Any]:
        """The manifest's account of the file bytes inside the trace (what, how much, from where)."""
        files = [{"path": self.paths.get(sha), "sha256": sha, "bytes": n, "source": src}
                 for sha, (n, src) in sorted(self.blobs.items(), key=lambda kv: (-kv[1][0], kv[0]))]

        def part(src: str) -> dict[str, int]:
            mine = [f for f in files if f["source"] == src]
            return {"files": len(mine), "bytes": sum(f["bytes"] for f in mine)}
        return {"files": len(files), "bytes": sum(f["bytes"] for f in files),
                "stored_by_capture": part("capture"), "added_at_bundle_time": part("host"),
                "list": files}

    def add(self, ev: Any) -> None:
        self.events += 1
        self.syscalls[ev.name] += 1
        if ev.ts_enter and (self.first_ts is None or ev.ts_enter < self.first_ts):
            self.first_ts = ev.ts_enter
        end = ev.ts_exit or ev.ts_enter
        if end and (self.last_ts is None or end > self.last_ts):
            self.last_ts = end
        name = ev.name
        # A non-blocking connect returns -EINPROGRESS (115) and still connects.
        if name in ("connect", "accept", "accept4", "sendto", "recvfrom") and (
                ev.ret >= 0 or (name == "connect" and ev.ret == -115)):
            addr = _sockaddr(ev.payload(1)) if name in ("connect", "accept", "accept4") \
                else _sockaddr(ev.payload(4))
            if addr:
                kind = "outbound" if name in ("connect", "sendto") else "inbound"
                self.connections[(kind, addr)] += 1
        elif name == "bind" and ev.ret == 0:
            addr = _sockaddr(ev.payload(1))
            if addr:
                self._bound[(ev.tgid, ev.args[0] & 0xFFFFFFFF)] = addr
        elif name == "listen" and ev.ret == 0:
            addr = self._bound.pop((ev.tgid, ev.args[0] & 0xFFFFFFFF), None)
            if addr:
                self.connections[("listening on", addr)] += 1


def _rewrite_trace(src: str, dst: str, redactor: Any | None, stats: _Stats) -> Any:
    """Copy trace ``src`` to ``dst`` through TraceReader -> TraceWriter, masking payloads.

    Returns the source reader's facts (meta after redaction, summary,
    truncated, losses). A ``redactions`` record precedes each event block
    whose payloads it covers.
    """
    from dr.formats.redact import redactions_record
    from dr.formats.trace import Event, Payload, TraceReader, TraceWriter

    def named(e: TraceError) -> TraceError:
        msg = e.message if src in e.message else f"trace {src}: {e.message}"
        return type(e)(msg, exit_code=e.exit_code)

    try:
        r = TraceReader(src)
    except TraceError as e:
        raise named(e) from None
    with r:
        meta = redactor.meta(r.meta) if redactor is not None else dict(r.meta)
        if redactor is None:
            meta["redaction"] = {"applied": False, "reason": "--no-redact",
                                 "prior": r.meta.get("redaction")}
        w = TraceWriter(dst, meta)
        try:
            batch: list[Any] = []
            pending = 0

            def flush() -> None:
                nonlocal batch, pending
                if redactor is not None and batch:
                    evs = [e for e in batch if isinstance(e, Event) and e.payloads]
                    items = [((e.tid, e.seq, slot), p.data) for e in evs for slot, p in e.payloads.items()]
                    results = iter(redactor.payloads(items))
                    spans: list[list[Any]] = []
                    for e in evs:
                        for slot, p in list(e.payloads.items()):
                            data, sp = next(results)
                            if sp:
                                e.payloads[slot] = Payload(slot, data, p.total)
                                spans += sp
                    if spans:
                        w.write_record(redactions_record(spans))
                if batch:
                    w.write_events(batch)
                batch, pending = [], 0

            have: set[str] = set()   # content hashes whose bytes the trace carries (blob records)
            try:
                for rec in r.stream():
                    if isinstance(rec, dict):
                        flush()
                        if rec.get("t") == "blob" and isinstance(rec.get("sha256"), str):
                            have.add(rec["sha256"])
                            stats.blob(rec, "capture")
                        elif rec.get("t") == "files":
                            for f in rec.get("files") or ():
                                if isinstance(f, dict) and isinstance(f.get("sha256"), str) \
                                        and isinstance(f.get("path"), str):
                                    stats.paths.setdefault(f["sha256"], f["path"])
                            _add_host_files(w, rec, have, stats)
                        w.write_record(rec)
                        continue
                    if isinstance(rec, Event):
                        stats.add(rec)
                        for p in rec.payloads.values():
                            pending += len(p.data)
                    batch.append(rec)
                    if pending >= (1 << 20) or len(batch) >= 4096:
                        flush()
                flush()
            except TraceError as e:
                # A corrupt frame mid-way: refuse to bundle it, naming the trace.
                raise named(e) from None
            w.close(r.summary if not r.truncated else None)
        except BaseException:
            w.close(None)
            raise
        stats.cut_where = r.cut_where() if r.truncated else ""
        return meta, r.summary, r.truncated, r.losses


def _add_host_files(w: Any, rec: dict[str, Any], have: set[str], stats: _Stats) -> None:
    """Blob records for the files a trace identified but did not store (unmodified
    package files): read from this host when their sha256 still matches, so the
    bundle holds every file the programs mapped or executed. Only files every
    user may read (:func:`_open_public`): the paths come from the trace."""
    for f in rec.get("files") or ():
        if not isinstance(f, dict) or f.get("stored") or not isinstance(f.get("sha256"), str):
            continue
        sha, path = f["sha256"], f.get("path")
        if sha in have or not isinstance(path, str) or not path.startswith("/") or "\0" in path:
            continue
        try:
            fh, size = _open_public(path)
            with fh:
                h = hashlib.sha256()
                while b := fh.read(_CHUNK):
                    h.update(b)
                if h.hexdigest() != sha:
                    continue   # changed since the capture: the bundle cannot vouch for it
                fh.seek(0)
                have.add(sha)
                off = 0
                # Chunks as read; a reader joins them and checks the hash (TraceReader.blob).
                while (data := fh.read(_CHUNK)) or off == 0:
                    blob = {"t": "blob", "sha256": sha, "offset": off, "size": size, "data": data}
                    w.write_record(blob)
                    stats.blob(blob, "host")
                    w.flush()
                    off += len(data)
                    if not data:
                        break
        except OSError:
            continue


def _binaries_of(meta: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    exe = meta.get("exe")
    if isinstance(exe, str):
        exe = {"path": exe}
    if isinstance(exe, dict) and isinstance(exe.get("path"), str):
        out.append({"role": "exe", **{k: exe.get(k) for k in ("path", "build_id", "sha256")}})
    for m in meta.get("maps") or ():
        if isinstance(m, dict) and isinstance(m.get("path"), str):
            out.append({"role": "library", **{k: m.get(k) for k in ("path", "build_id", "sha256")}})
    return out


def _member_name(src: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]", "_", os.path.basename(src)).lstrip("._-")[:100] or "trace"
    name = f"traces/{base}"
    i = 2
    while name in taken:
        stem, dot, ext = base.rpartition(".")
        name = f"traces/{stem}-{i}.{ext}" if dot and stem else f"traces/{base}-{i}"
        i += 1
    taken.add(name)
    return name


def human_size(n: float) -> str:
    """1.1 MiB, 36.0 KiB, 512 B."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def stored_files_text(sf: Any) -> str:
    """A trace's ``stored_files`` (manifest) in words: "12 files' bytes, 1.1 MiB: 1 stored
    by dr capture, 11 added from this host at bundle time"; "" when it carries none."""
    if not isinstance(sf, dict) or not sf.get("files"):
        return ""
    n = sf["files"]
    parts = []
    for key, words in (("stored_by_capture", "stored by dr capture"),
                       ("added_at_bundle_time", "added from this host at bundle time")):
        k = (sf.get(key) or {}).get("files") or 0
        if k:
            parts.append(f"{'all' if k == n and n > 1 else k} {words}")
    return (f"{n} {'file' if n == 1 else 'files'}' bytes, {human_size(sf.get('bytes') or 0)}"
            + (f": {', '.join(parts)}" if parts else ""))


def _listening(f: dict) -> bool:
    """A socket of the fd snapshot that listens: state LISTEN, or a TCP peer of all zeros."""
    if f.get("state") == "LISTEN":
        return True
    peer = str(f.get("peer") or "")
    return peer in ("0.0.0.0:0", "[::]:0", ":::0", "::0")


def _readme(manifest: dict[str, Any], per_trace: list[tuple[dict, _Stats, dict]],
            report: dict[str, Any]) -> str:
    L = ["# dr incident bundle", ""]
    if manifest.get("ticket"):
        L.append(f"Ticket: {manifest['ticket']}  ")
    if manifest.get("note"):
        L.append(f"Note: {manifest['note']}  ")
    h = manifest["host"]
    L += [f"Bundled {manifest['created']} on {h['hostname']} (Linux {h['kernel']}, {h['arch']}, "
          f"{h['cpu'].get('model', 'unknown')}) by dr {manifest['dr_version']}.", ""]
    for tinfo, st, meta in per_trace:
        cap = tinfo["capture"]
        L.append(f"## {tinfo['member']}")
        L.append("")
        argv = " ".join(str(a) for a in (meta.get("argv") or [])) or "unknown"
        L.append(f"- What: `{argv[:300]}` (pid {cap.get('pid')}, {cap.get('mode')} mode, "
                 f"exe {cap.get('exe') or 'unknown'})")
        L.append(f"- When: {cap.get('started') or 'unknown'}, on {cap.get('hostname') or 'unknown'} "
                 f"(Linux {cap.get('kernel') or 'unknown'})")
        L.append(f"- How long: {_fmt_ns(cap.get('duration_ns'))}; {tinfo['events']} syscalls; "
                 f"{'complete' if tinfo['complete'] else str(tinfo.get('cut_short')).replace('cut short', 'CUT SHORT', 1)}")
        losses = tinfo.get("losses") or {}
        lost = sum(v for v in losses.values() if isinstance(v, int))
        L.append("- Losses: " + ("none" if not lost else ", ".join(f"{k} {v}" for k, v in
                                                                      sorted(losses.items()))))
        sf = tinfo.get("stored_files") or {}
        if sf.get("files"):
            L.append(f"- Files inside the trace: {stored_files_text(sf)}; the bytes of files the "
                     "programs mapped or executed, which dr replay uses instead of the replay host's")
            for f in sf["list"][:10]:
                L.append(f"  - `{f.get('path') or f['sha256'][:16]}` {human_size(f['bytes'])}"
                         f"{' (from this host)' if f.get('source') == 'host' else ''}")
            if len(sf["list"]) > 10:
                L.append(f"  - ... and {len(sf['list']) - 10} more (manifest.json: traces[].stored_files)")
        else:
            L.append("- Files inside the trace: none (replay uses the replay host's files)")
        L += ["", "Top syscalls:", "", "| syscall | count |", "|---|---:|"]
        for name, n in st.syscalls.most_common(10):
            L.append(f"| {name} | {n} |")
        L.append("")
        conns = sorted(st.connections.items(), key=lambda kv: (-kv[1], kv[0]))
        fds = [f for f in (meta.get("fds") or []) if isinstance(f, dict) and (f.get("peer") or f.get("state") == "LISTEN")]
        L.append("Connections:")
        L.append("")
        if not conns and not fds:
            L.append("- none recorded")
        for (kind, addr), n in conns[:20]:
            L.append(f"- {kind} {addr} ({n}x)")
        if len(conns) > 20:
            L.append(f"- ... and {len(conns) - 20} more (dr stats lists them all)")
        for f in fds[:20]:
            if _listening(f):  # /proc/net shows a listener's peer as 0.0.0.0:0
                L.append(f"- open at start: fd {f.get('fd')} listening on {f.get('local')}")
            else:
                L.append(f"- open at start: fd {f.get('fd')} {f.get('local')} -> {f.get('peer')}")
        if len(fds) > 20:
            L.append(f"- ... and {len(fds) - 20} more open at start")
        L.append("")
    bins = manifest.get("binaries") or []
    inc = sum(1 for b in bins if b.get("member"))
    L.append(f"Binaries: {len(bins)} recorded by identity (path, build-id, sha256); "
             + (f"{inc} included under binaries/." if inc else
                "none included as members (dr bundle create --include-binaries adds them)."))
    L.append("")
    red = manifest["redaction"]
    if red["applied"]:
        counts = ", ".join(f"{k} {v}" for k, v in report.get("matches", {}).items() if v) or "no matches"
        L.append(f"Redaction: applied (policy {red['policy']['name']}): {counts}. "
                 "Masked bytes read as `*`; see redaction-report.json.")
    else:
        L.append("Redaction: NOT applied (--no-redact). This bundle may hold personal data and secrets.")
    L.append("")
    L.append("Check it with `dr bundle verify`; replay it with `dr replay` on this file.")
    return "\n".join(L) + "\n"


def _not_a_file(path: str | os.PathLike[str]) -> str:
    """Why ``path`` is no readable regular file, in strerror's words (as TraceReader says it)."""
    if os.path.isdir(path):
        return os.strerror(errno.EISDIR)
    return "not a regular file" if os.path.exists(path) else os.strerror(errno.ENOENT)


def create(traces: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
           note: str | None = None, ticket: str | None = None, include_binaries: bool = False,
           redact: bool = True, rules: str | os.PathLike[str] | None = None,
           level: int = 3) -> CreateResult:
    """Write a bundle of ``traces`` to ``out`` (atomically: a temporary file, then rename).

    Redacts payloads, argv, env and cwd with the built-in policy plus ``rules``
    (a TOML file, see :func:`dr.formats.redact.load_policy`) unless
    ``redact=False``, which is recorded in the manifest. Raises UsageError
    (no traces, rules with redact=False), TraceError (an unreadable trace),
    OutputError (cannot write ``out``).
    """
    from dr.formats.redact import Redactor, load_policy

    if not traces:
        raise UsageError("dr bundle create needs at least one trace")
    if rules is not None and not redact:
        raise UsageError("--rules and --no-redact contradict each other; drop one")
    for t in traces:
        if not os.path.isfile(t):
            # A missing input is an operational error (ExitCode.ERROR), worded as in every
            # dr command: "cannot read trace X: No such file or directory" (strerror).
            raise DrError(f"cannot read trace {os.fspath(t)}: {_not_a_file(t)}")
    if rules is not None and not os.path.isfile(rules):  # a missing input file: ERROR, not USAGE
        raise DrError(f"cannot read redaction rules {os.fspath(rules)}: {_not_a_file(rules)}")
    out = os.fspath(out)
    from dr.formats.output import check_output, output_path
    inputs = [*traces, *([rules] if rules is not None else [])]
    # Refused before any work: a directory, socket, device of the wrong kind, an input.
    kind, target = check_output(out, inputs, "bundle")
    # The scratch directory sits next to a regular target (same filesystem, cheap
    # renames); never next to a device or fifo (e.g. in /dev).
    outdir = os.path.dirname(target) if kind == "atomic" else None
    policy = load_policy(rules) if redact else None
    redactor = Redactor(policy) if policy is not None else None
    warnings: list[str] = []
    now = time.time_ns()
    try:
        work = tempfile.mkdtemp(prefix=".dr-bundle-", dir=outdir)
    except OSError as e:
        raise OutputError(f"cannot write in {outdir or tempfile.gettempdir()}: {e.strerror}") from None
    try:
        taken: set[str] = set()
        files: dict[str, str] = {}          # member -> file on disk
        tinfos: list[dict[str, Any]] = []
        per_trace: list[tuple[dict, _Stats, dict]] = []
        recorded: list[dict[str, Any]] = []
        per_trace_report: dict[str, Any] = {}
        for src in (os.fspath(t) for t in traces):
            member = _member_name(src, taken)
            dst = os.path.join(work, member.replace("/", "_"))
            st = _Stats()
            before = dict(redactor.matches) if redactor else {}
            meta, summary, truncated, losses = _rewrite_trace(src, dst, redactor, st)
            if truncated:
                warnings.append(f"trace {src} was cut short {st.cut_where}; bundled as it is")
            if redactor:
                per_trace_report[member] = {k: v - before.get(k, 0) for k, v in redactor.matches.items()
                                            if v - before.get(k, 0)}
            files[member] = dst
            summ = summary or {}
            dur = summ.get("duration_ns")
            if not isinstance(dur, int) and st.first_ts is not None and st.last_ts is not None:
                dur = st.last_ts - st.first_ts
            exe = meta.get("exe")
            cap = {
                "mode": meta.get("mode"), "pid": meta.get("pid"),
                "exe": exe.get("path") if isinstance(exe, dict) else exe,
                "hostname": meta.get("hostname") or meta.get("host"),
                "kernel": meta.get("kernel"), "arch": meta.get("arch"),
                "tool_version": meta.get("version"),
                "started": _wall(meta, meta.get("started_ns")) or _wall(meta, st.first_ts),
                "duration_ns": dur, "snaplen": meta.get("snaplen"),
            }
            tinfo = {"member": member, "source": os.path.basename(src),
                     "format_version": meta.get("format_version"), "complete": not truncated,
                     "cut_short": ("cut short " + st.cut_where) if truncated else None,
                     "events": st.events, "capture": cap, "summary": _jsonable(summ),
                     "losses": _jsonable(losses),
                     "top_syscalls": dict(st.syscalls.most_common(10)),
                     "stored_files": st.stored_files(),
                     "connections": [{"direction": k, "address": a, "count": n}
                                     for (k, a), n in sorted(st.connections.items())]}
            tinfos.append(tinfo)
            per_trace.append((tinfo, st, meta))
            recorded.extend(_binaries_of(meta))

        # Binaries: recorded identities, and with include_binaries the files.
        binaries: list[dict[str, Any]] = []
        seen: set[tuple[str, Any]] = set()
        for b in recorded:
            key = (b["path"], b.get("sha256") or b.get("build_id"))
            if key in seen:
                continue
            seen.add(key)
            entry = {**b, "source": "trace", "member": None}
            host_sha = None
            if include_binaries or not (b.get("sha256") and b.get("build_id")):
                copy = os.path.join(work, f"bin-{len(seen)}") if include_binaries else None
                try:
                    # Copied as checked (public files only: the path is the trace's word).
                    host_sha, size = _copy_public(b["path"], copy)
                    bid = elf_build_id(copy or b["path"])
                except OSError as e:
                    if include_binaries:
                        warnings.append(f"binary {b['path']} not included: {e.strerror or e}")
                    host_sha = None
                else:
                    if not entry.get("sha256"):
                        entry["sha256"], entry["source"] = host_sha, "host at bundle time"
                    if not entry.get("build_id") and bid:
                        entry["build_id"] = bid
                    entry["size"] = size
            if include_binaries and host_sha:
                if entry["sha256"] != host_sha:
                    warnings.append(f"binary {b['path']} changed since the capture (sha256 differs); "
                                    "not included")
                else:
                    m = f"binaries/{host_sha}"
                    if m not in files and copy:
                        files[m] = copy
                    entry["member"] = m
            binaries.append(entry)

        manifest: dict[str, Any] = {
            "format": "dr-bundle",
            "bundle_format_version": BUNDLE_FORMAT_VERSION,
            "dr_version": __version__,
            "created": _dt.datetime.fromtimestamp(now / 1e9, _dt.timezone.utc).isoformat(timespec="seconds"),
            "created_unix_ns": now,
            "ticket": ticket,
            "note": redactor.text(note, "note") if (redactor and note) else note,
            "host": _host_facts(),
            "traces": tinfos,
            "binaries": binaries,
            "redaction": ({"applied": True, "policy": policy.describe(), "report": REPORT}
                          if policy else {"applied": False, "reason": "--no-redact", "report": REPORT}),
            "members": {},
        }
        if redactor:
            report = {**redactor.report(), "by_trace": per_trace_report}
        else:
            report = {"applied": False, "reason": "--no-redact"}
        readme = _readme(manifest, per_trace, report).encode()
        report_b = json.dumps(report, indent=2, sort_keys=False).encode() + b"\n"
        members: dict[str, dict[str, Any]] = {
            README: {"sha256": hashlib.sha256(readme).hexdigest(), "size": len(readme)},
            REPORT: {"sha256": hashlib.sha256(report_b).hexdigest(), "size": len(report_b)},
        }
        for m, p in files.items():
            sha, size = _sha256_file(p)
            if m.startswith("binaries/") and sha != m[9:]:
                raise OutputError(f"binary {p} changed while it was being bundled; try again")
            members[m] = {"sha256": sha, "size": size}
        manifest["members"] = members
        manifest_b = json.dumps(_jsonable(manifest), indent=2).encode() + b"\n"
        sha_b = f"{hashlib.sha256(manifest_b).hexdigest()}  {MANIFEST}\n".encode()

        try:
            with output_path(out, inputs, "bundle") as dst:
                _write_tar(dst, [(MANIFEST, manifest_b), (MANIFEST_SHA, sha_b), (README, readme),
                                 (REPORT, report_b)],
                           [(m, files[m], members[m]["size"]) for m in files], int(now // 10**9), level)
                size = os.path.getsize(dst) if kind == "atomic" else 0
        except OSError as e:
            raise OutputError(f"cannot write bundle {out}: {e.strerror or e}") from None
        return CreateResult(out, size, manifest, report, tuple(warnings))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _write_tar(path: str, small: list[tuple[str, bytes]], big: list[tuple[str, str, int]],
               mtime: int, level: int) -> None:
    def info(name: str, size: int) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.size, ti.mtime, ti.mode, ti.type = size, mtime, 0o644, tarfile.REGTYPE
        return ti

    with open(path, "wb") as f:
        cctx = zstandard.ZstdCompressor(level=level, write_checksum=True)
        with cctx.stream_writer(f, closefd=False) as zw:
            with tarfile.open(fileobj=zw, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for name, data in small:
                    tar.addfile(info(name, len(data)), io.BytesIO(data))
                for name, src, size in big:
                    with open(src, "rb") as sf:
                        tar.addfile(info(name, size), sf)
        f.flush()
        if stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # a fifo or device (written in place) has no fsync
            os.fsync(f.fileno())


# --------------------------------------------------------------------------- reading (hostile input)


class _Limited(io.RawIOBase):
    """Decompressed bundle bytes, with the bomb caps enforced as they are read."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._raw = open(path, "rb")
        except OSError as e:
            raise BundleError(f"cannot read bundle {path}: {e.strerror}",
                              exit_code=ExitCode.ERROR) from None
        try:
            head = self._raw.read(4)
        except OSError as e:  # a directory opens but does not read
            self._raw.close()
            raise BundleError(f"cannot read bundle {path}: {e.strerror}",
                              exit_code=ExitCode.ERROR) from None
        if head != _ZSTD_MAGIC:
            self._raw.close()
            # Wrong kind of file, not a failed verification: ERROR, not MISMATCH.
            if head.startswith(b"DRTR"):
                raise BundleError(f"{path} is a trace, not a bundle; make one with dr bundle create",
                                  exit_code=ExitCode.ERROR)
            raise BundleError(f"{path} is not a dr bundle (expected a zstd-compressed tar)",
                              exit_code=ExitCode.ERROR)
        self._raw.seek(0)
        dctx = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW)
        self._z = dctx.stream_reader(self._raw, read_across_frames=True, closefd=False)
        self.out = 0
        self.member = "the archive header"

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        try:
            data = self._z.read(len(b))
        except zstandard.ZstdError as e:
            raise BundleError(f"bundle {self.path} is corrupt in {self.member} (zstd: {e})") from None
        n = len(data)
        b[:n] = data
        self.out += n
        if self.out > MAX_TOTAL_BYTES:
            raise BundleError(f"bundle {self.path}: {self.member} decompresses past "
                              f"{MAX_TOTAL_BYTES >> 30} GiB; refused as a decompression bomb")
        if self.out > RATIO_FLOOR:
            inp = max(self._raw.tell(), 1)
            if self.out > MAX_RATIO * inp:
                raise BundleError(f"bundle {self.path}: {self.member} decompresses more than "
                                  f"{MAX_RATIO}x; refused as a decompression bomb")
        return n

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


def _zstd_cut_short(path: str) -> bool:
    """Whether the zstd data of ``path`` ends inside a frame (read in chunks, output
    discarded and capped like a bundle read)."""
    out = 0
    try:
        with open(path, "rb") as f:
            d = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW).decompressobj()
            while chunk := f.read(_CHUNK):
                while chunk:
                    out += len(d.decompress(chunk))
                    if out > MAX_TOTAL_BYTES:
                        return False
                    chunk = d.unused_data if d.eof else b""
                    if d.eof and chunk:
                        d = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW).decompressobj()
        return not d.eof
    except (OSError, zstandard.ZstdError):
        return False


def _check_name(path: str, ti: tarfile.TarInfo) -> str:
    name = ti.name
    shown = repr(name)[1:-1][:200]
    if "\0" in name or "\\" in name:
        raise BundleError(f"bundle {path}: member {shown!r} has a bad character in its name; refused")
    if name.startswith("/"):
        raise BundleError(f"bundle {path}: member {shown!r} has an absolute path; refused")
    if ".." in name.split("/"):
        raise BundleError(f"bundle {path}: member {shown!r} escapes the bundle (../); refused")
    if ti.issym() or ti.islnk():
        raise BundleError(f"bundle {path}: member {shown!r} is a link (to {ti.linkname[:200]!r}); refused")
    if ti.ischr() or ti.isblk() or ti.isfifo():
        raise BundleError(f"bundle {path}: member {shown!r} is a device or fifo; refused")
    if not ti.isreg():
        raise BundleError(f"bundle {path}: member {shown!r} is not a regular file; refused")
    if ti.issparse():
        raise BundleError(f"bundle {path}: member {shown!r} is a sparse file; refused")
    if name not in _HEAD and not _NAME_RE.match(name):
        raise BundleError(f"bundle {path}: unexpected member {shown!r}; refused")
    return name


def _read_small(tar: tarfile.TarFile, ti: tarfile.TarInfo, path: str) -> bytes:
    if ti.size > MAX_SMALL_MEMBER:
        raise BundleError(f"bundle {path}: member {ti.name} is {ti.size} bytes "
                          f"(more than {MAX_SMALL_MEMBER >> 20} MiB); refused")
    f = tar.extractfile(ti)
    try:
        data = f.read() if f else b""
    except (tarfile.TarError, EOFError):
        raise BundleError(f"bundle {path} is cut short inside member {ti.name}") from None
    if len(data) != ti.size:
        raise BundleError(f"bundle {path}: member {ti.name} is cut short")
    return data


class _Reader:
    """Walks a bundle member by member, checking names, order, sizes and hashes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.src = _Limited(self.path)
        try:
            self.tar = tarfile.open(fileobj=io.BufferedReader(self.src, _CHUNK), mode="r|")
        except tarfile.TarError as e:
            self.src.close()
            if _zstd_cut_short(self.path):  # an interrupted copy, not another kind of file
                raise BundleError(f"bundle {self.path} is cut short: its compressed data stops "
                                  f"after {os.path.getsize(self.path):,} bytes, before the first "
                                  "member; copy the whole file again",
                                  exit_code=ExitCode.ERROR) from None
            raise BundleError(f"{self.path} is not a dr bundle (a zstd stream, but not a tar: {e})",
                              exit_code=ExitCode.ERROR) from None
        self.seen: set[str] = set()
        self.count = 0
        self.manifest: dict[str, Any] = {}
        self.members: dict[str, dict[str, Any]] = {}

    def close(self) -> None:
        try:
            self.tar.close()
        except Exception:
            pass
        self.src.close()

    def next(self) -> tarfile.TarInfo | None:
        try:
            ti = self.tar.next()
        except tarfile.TarError as e:
            raise BundleError(f"bundle {self.path} is corrupt after {self.src.member} (tar: {e})") from None
        except EOFError:
            raise BundleError(f"bundle {self.path} is cut short after {self.src.member}") from None
        if ti is None:
            return None
        self.count += 1
        if self.count > MAX_MEMBERS:
            raise BundleError(f"bundle {self.path} has more than {MAX_MEMBERS} members; refused")
        name = _check_name(self.path, ti)
        if name in self.seen:
            raise BundleError(f"bundle {self.path}: member {name} appears twice; refused")
        self.seen.add(name)
        self.src.member = f"member {name}"
        if ti.size > MAX_MEMBER_BYTES:
            raise BundleError(f"bundle {self.path}: member {name} is {ti.size} bytes, more than "
                              f"{MAX_MEMBER_BYTES >> 30} GiB; refused")
        return ti

    def head(self, want: int = 4) -> tuple[dict[str, Any], str, dict[str, Any]]:
        """Read and check the first ``want`` (2..4) members: manifest, its hash, README, report."""
        readme, report = "", {}
        for i, expect in enumerate(_HEAD[:want]):
            ti = self.next()
            if ti is None or ti.name != expect:
                got = "the end of the archive" if ti is None else ti.name
                if i == 0:  # some other tar.zst: the wrong kind of file, not a failed check
                    raise BundleError(f"{self.path} is not a dr bundle (its first member is {got}, "
                                      f"not {MANIFEST})", exit_code=ExitCode.ERROR)
                raise BundleError(f"bundle {self.path}: expected member {expect} at position {i + 1}, "
                                  f"found {got}")
            data = _read_small(self.tar, ti, self.path)
            if expect == MANIFEST:
                manifest_b = data
                self.manifest = self._parse_manifest(data)
            elif expect == MANIFEST_SHA:
                m = re.fullmatch(rb"([0-9a-f]{64})  manifest\.json\n?", data)
                if not m:
                    raise BundleError(f"bundle {self.path}: member {MANIFEST_SHA} is malformed "
                                      f"(expected '<sha256>  {MANIFEST}')")
                if hashlib.sha256(manifest_b).hexdigest() != m.group(1).decode():
                    raise BundleError(f"bundle {self.path}: member {MANIFEST} does not match its "
                                      f"sha256 in {MANIFEST_SHA} (modified or corrupt)")
            else:
                self._check_hash(expect, hashlib.sha256(data).hexdigest(), len(data))
                try:
                    if expect == README:
                        readme = data.decode("utf-8")
                    else:
                        report = json.loads(data)
                except (UnicodeDecodeError, ValueError):
                    raise BundleError(f"bundle {self.path}: member {expect} is malformed") from None
        return self.manifest, readme, report

    def _parse_manifest(self, data: bytes) -> dict[str, Any]:
        try:
            m = json.loads(data)
        except (UnicodeDecodeError, ValueError):
            raise BundleError(f"bundle {self.path}: member {MANIFEST} is not valid JSON") from None
        if not isinstance(m, dict) or m.get("format") != "dr-bundle":
            raise BundleError(f"{self.path} is not a dr bundle (its {MANIFEST} is not a dr bundle "
                              "manifest)", exit_code=ExitCode.ERROR)
        v = m.get("bundle_format_version")
        if not isinstance(v, int) or v < 1:
            raise BundleError(f"bundle {self.path}: member {MANIFEST} has no valid bundle_format_version")
        if v > BUNDLE_FORMAT_VERSION:
            raise BundleError(f"bundle {self.path} has format version {v}, newer than this dr reads "
                              f"({BUNDLE_FORMAT_VERSION}); upgrade dr")
        members = m.get("members")
        if not isinstance(members, dict):
            raise BundleError(f"bundle {self.path}: member {MANIFEST} lists no members")
        for name, e in members.items():
            if (not isinstance(e, dict) or not isinstance(e.get("sha256"), str)
                    or not isinstance(e.get("size"), int) or e["size"] < 0
                    or not (name in _HEAD[2:] or _NAME_RE.match(name))):
                raise BundleError(f"bundle {self.path}: member {MANIFEST} has a bad entry for "
                                  f"{str(name)[:200]!r}")
        for key in ("traces", "binaries"):
            if not isinstance(m.get(key), list) or not all(isinstance(x, dict) for x in m[key]):
                raise BundleError(f"bundle {self.path}: member {MANIFEST} has no valid {key} list")
        for t in m["traces"]:
            if t.get("member") not in members or not str(t.get("member")).startswith("traces/"):
                raise BundleError(f"bundle {self.path}: member {MANIFEST} names a trace "
                                  f"{str(t.get('member'))[:200]!r} that it does not list")
        self.members = members
        return m

    def _check_hash(self, name: str, sha: str, size: int) -> None:
        e = self.members.get(name)
        if e is None:
            raise BundleError(f"bundle {self.path}: member {name} is not listed in {MANIFEST}; refused")
        if size != e["size"] or sha != e["sha256"]:
            raise BundleError(f"bundle {self.path}: member {name} does not match its sha256 in "
                              f"{MANIFEST} (modified or corrupt)")

    def body(self, sink_for: Any) -> Iterator[tuple[str, Any]]:
        """Read the remaining members, hash-checking each; ``sink_for(name)`` gives a writable or None."""
        while True:
            ti = self.next()
            if ti is None:
                break
            name = ti.name
            if name in _HEAD:
                raise BundleError(f"bundle {self.path}: member {name} out of place; refused")
            e = self.members.get(name)
            if e is None:
                raise BundleError(f"bundle {self.path}: member {name} is not listed in {MANIFEST}; refused")
            if ti.size != e["size"]:
                raise BundleError(f"bundle {self.path}: member {name} is {ti.size} bytes, the manifest "
                                  f"says {e['size']}; refused")
            sink = sink_for(name)
            f = self.tar.extractfile(ti)
            h = hashlib.sha256()
            n = 0
            while f is not None:
                try:
                    b = f.read(_CHUNK)
                except (tarfile.TarError, EOFError):
                    raise BundleError(f"bundle {self.path} is cut short inside member {name}") from None
                if not b:
                    break
                n += len(b)
                h.update(b)
                if sink is not None:
                    try:
                        sink.write(b)
                    except OSError as err:
                        raise OutputError(f"cannot extract {name} from {self.path}: {err.strerror}") from None
            if n != ti.size:
                raise BundleError(f"bundle {self.path}: member {name} is cut short")
            self._check_hash(name, h.hexdigest(), n)
            if name.startswith("binaries/") and name[9:] != h.hexdigest():
                raise BundleError(f"bundle {self.path}: member {name} is not named by its sha256; refused")
            yield name, sink
        missing = [m for m in self.members if m not in self.seen]
        if missing:
            raise BundleError(f"bundle {self.path}: member {missing[0]} is listed in {MANIFEST} "
                              "but missing from the archive")


def _open_reader(path: str | os.PathLike[str]) -> _Reader:
    return _Reader(path)


def info(path: str | os.PathLike[str]) -> BundleInfo:
    """Read the manifest, README and redaction report of bundle ``path``, extracting nothing.

    Only the first four members are decompressed. Raises BundleError for a
    hostile, corrupt or newer bundle (one line, naming the member).
    """
    r = _open_reader(path)
    try:
        manifest, readme, report = r.head(4)
    finally:
        r.close()
    return BundleInfo(os.fspath(path), manifest, readme, report)


def _check_trace(name: str, f: BinaryIO, entry: dict[str, Any], bundle: str) -> tuple[int, str | None]:
    from dr.formats.trace import TraceReader

    f.seek(0)
    try:
        with TraceReader(f) as tr:
            events = tr.verify()
            complete = not tr.truncated
    except DrError as e:
        raise BundleError(f"bundle {bundle}: trace {name} does not decode ({e.message})") from None
    if entry.get("events") != events:
        raise BundleError(f"bundle {bundle}: trace {name} holds {events} syscalls, the manifest "
                          f"says {entry.get('events')}")
    note = None
    if not complete:
        if entry.get("complete", True):
            raise BundleError(f"bundle {bundle}: trace {name} is cut short (no summary record) "
                              "but the manifest says it was complete")
        note = f"trace {name} was already cut short when bundled (recorded in the manifest)"
    return events, note


def verify(path: str | os.PathLike[str]) -> VerifyResult:
    """Check every member's sha256 and size, and that every trace decodes to its end.

    Traces are decoded from anonymous temporary files (nothing is left on
    disk). Raises BundleError (exit code MISMATCH) naming the first member
    that fails.
    """
    r = _open_reader(path)
    sizes: dict[str, int] = {}
    events: dict[str, int] = {}
    notes: list[str] = []
    try:
        manifest, _readme, _report = r.head(4)
        traces = {t["member"]: t for t in manifest["traces"]}
        for name in _HEAD:
            if name in r.members:
                sizes[name] = r.members[name]["size"]

        def sink_for(name: str) -> Any:
            return tempfile.TemporaryFile(prefix="dr-verify-") if name in traces else None

        for name, sink in r.body(sink_for):
            sizes[name] = r.members[name]["size"]
            if sink is not None:
                with sink:
                    events[name], note = _check_trace(name, sink, traces[name], r.path)
                if note:
                    notes.append(note)
    finally:
        r.close()
    return VerifyResult(os.fspath(path), sizes, events, tuple(notes))


def open_bundle(path: str | os.PathLike[str], *, dir: str | None = None) -> OpenBundle:
    """Verify bundle ``path`` and extract its traces and binaries into a new private directory.

    Member names are checked before anything is written and files are
    created by this function under names it chooses (never by
    ``tarfile.extract``), so a hostile archive cannot write elsewhere.
    Returns an :class:`OpenBundle` (close it, or use ``with``). Raises
    BundleError like :func:`verify`; OutputError when the directory cannot be
    written.
    """
    try:
        # Named with our pid: a dr killed with SIGKILL leaves the extracted bundle (up to
        # MAX_TOTAL_BYTES), and the next replay's sweep (replay/sandbox_fs.py) removes it.
        root = Path(tempfile.mkdtemp(prefix=f"dr-bundle-{os.getpid()}-", dir=dir))
    except OSError as e:
        raise OutputError(f"cannot create a directory for the bundle: {e.strerror}") from None
    ok = False
    r = None
    try:
        r = _open_reader(path)
        manifest, _readme, report = r.head(4)
        traces = {t["member"]: t for t in manifest["traces"]}
        for d in ("traces", "binaries"):
            (root / d).mkdir(mode=0o700)
        opened: list[Any] = []

        def sink_for(name: str) -> Any:
            fd = os.open(root / name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            f = os.fdopen(fd, "w+b")
            opened.append(f)
            return f

        try:
            for name, sink in r.body(sink_for):
                if name in traces:
                    _events, _note = _check_trace(name, sink, traces[name], r.path)
                sink.close()
        finally:
            for f in opened:
                f.close()
        ob = OpenBundle(os.fspath(path), root, manifest, report,
                        [root / t["member"] for t in manifest["traces"]])
        for b in manifest["binaries"]:
            entry = {k: b.get(k) for k in ("path", "build_id", "sha256", "role", "member")}
            if isinstance(b.get("member"), str) and b["member"] in r.members:
                entry["file"] = root / b["member"]
            ob.binaries.append(entry)
        ok = True
        return ob
    finally:
        if r is not None:
            r.close()
        if not ok:
            shutil.rmtree(root, ignore_errors=True)


def check_binaries(bundle: OpenBundle | BundleInfo, strict: bool = False) -> list[str]:
    """Compare this host's executable and libraries with the recorded build-ids.

    For each recorded binary: missing here, or a different build-id (sha256
    when no build-id was recorded), gives one warning line. Returns the
    warnings; with ``strict`` raises BundleError when there is any. Reads only
    regular files, each at most MAX_MEMBER_BYTES.
    """
    recorded = bundle.binaries if isinstance(bundle, OpenBundle) else bundle.manifest.get("binaries", [])
    warns: list[str] = []
    for b in recorded:
        p = b.get("path")
        if not isinstance(p, str) or not p.startswith("/"):
            continue
        try:
            if not stat.S_ISREG(os.stat(p).st_mode):
                warns.append(f"{p}: not a regular file on this host (recorded {b.get('role', 'binary')})")
                continue
            if b.get("build_id"):
                here = elf_build_id(p)
                if here != b["build_id"]:
                    warns.append(f"{p}: build-id differs (recorded {b['build_id']}, here {here or 'none'})")
            elif b.get("sha256"):
                here, _n = _sha256_file(p, MAX_MEMBER_BYTES)
                if here != b["sha256"]:
                    warns.append(f"{p}: sha256 differs (recorded {b['sha256'][:16]}..., here {here[:16]}...)")
        except OSError as e:
            warns.append(f"{p}: missing on this host ({e.strerror or e})")
    if strict and warns:
        more = f" (and {len(warns) - 1} more)" if len(warns) > 1 else ""
        raise BundleError(f"binaries differ from the recording: {warns[0]}{more}; "
                          "drop --strict-binaries to replay anyway")
    return warns


@contextlib.contextmanager
def open_trace_or_bundle(path: str | os.PathLike[str], trace: str | None = None) -> Iterator[Any]:
    """A :class:`dr.formats.trace.TraceReader` on ``path``: a trace, or one trace of a bundle.

    A bundle is verified and extracted (:func:`open_bundle`) into a private
    temporary directory removed on exit; its first trace is read, or the one
    whose member name (``traces/run.drt``), file name (``run.drt``) or source
    name is ``trace``. The reader's ``path`` is ``bundle.drb:traces/run.drt``.
    Raises UsageError when ``trace`` is given for a plain trace or names no
    trace of the bundle; BundleError/TraceError as the readers do.
    """
    from dr.formats.trace import TraceReader

    if not is_bundle(path):
        if trace is not None:
            raise UsageError(f"--trace {trace}: {os.fspath(path)} is a trace, not a bundle; "
                             "drop --trace")
        with TraceReader(path) as r:
            yield r
        return
    with open_bundle(path) as ob:
        entries = ob.manifest["traces"]
        if trace is None:
            if not entries:
                raise BundleError(f"bundle {os.fspath(path)} holds no trace",
                                  exit_code=ExitCode.ERROR)
            chosen = entries[0]
        else:
            chosen = next((t for t in entries if trace in (t["member"], t["member"][7:],
                                                          t.get("source"))), None)
            if chosen is None:
                names = ", ".join(t["member"][7:] for t in entries)
                raise UsageError(f"--trace {trace}: bundle {os.fspath(path)} holds no such trace "
                                 f"(it holds: {names})")
        with open(ob.dir / chosen["member"], "rb") as f:
            r = TraceReader(f)
            r.path = f"{os.fspath(path)}:{chosen['member']}"
            with r:
                yield r
