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
from typing import Any, Sequence

import zstandard

from dr import __version__
from dr.errors import DrError, OutputError, TraceError, UsageError
from dr.formats.bundle_read import check_binaries, info, open_bundle, open_trace_or_bundle, verify
from dr.formats.bundle_spec import (
    _CHUNK,
    BUNDLE_FORMAT_VERSION,
    MANIFEST,
    MANIFEST_SHA,
    MAX_MEMBER_BYTES,
    README,
    REPORT,
    BundleInfo,
    CreateResult,
    OpenBundle,
    VerifyResult,
    _sha256_file,
    elf_build_id,
    is_bundle,
    kernel_fs,
)
from dr.formats.bundle_text import _readme, _sockaddr, _wall, human_size, stored_files_text

__all__ = [
    "BUNDLE_FORMAT_VERSION", "BundleInfo", "OpenBundle", "CreateResult", "VerifyResult",
    "create", "verify", "info", "open_bundle", "check_binaries", "is_bundle", "elf_build_id",
    "open_trace_or_bundle", "stored_files_text", "human_size",
]
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
        if (fs := kernel_fs(fd)) is not None:  # its bytes as root are not what others read
            raise OSError(errno.EACCES, f"on {fs}, whose content depends on who reads it "
                                        "(dr bundles no private file)")
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
