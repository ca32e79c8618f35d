"""Reading bundles: hostile input for ``verify``, ``info`` and replay.

The reader never calls ``tarfile.extract``: see :mod:`dr.formats.bundle` for the
members it accepts and the caps (:mod:`dr.formats.bundle_spec`) it applies.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import stat
import tarfile
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import zstandard

from dr.errors import BundleError, DrError, ExitCode, OutputError, UsageError
from dr.formats.bundle_spec import (
    _CHUNK,
    _HEAD,
    _NAME_RE,
    _ZSTD_MAGIC,
    BUNDLE_FORMAT_VERSION,
    MANIFEST,
    MANIFEST_SHA,
    MAX_MEMBER_BYTES,
    MAX_MEMBERS,
    MAX_RATIO,
    MAX_SMALL_MEMBER,
    MAX_TOTAL_BYTES,
    MAX_WINDOW,
    RATIO_FLOOR,
    README,
    BundleInfo,
    OpenBundle,
    VerifyResult,
    _sha256_file,
    elf_build_id,
    is_bundle,
)

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
                        report = _json(data)
                except (UnicodeDecodeError, ValueError):
                    raise BundleError(f"bundle {self.path}: member {expect} is malformed") from None
        return self.manifest, readme, report

    def _parse_manifest(self, data: bytes) -> dict[str, Any]:
        try:
            m = _json(data)
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


def _json(data: bytes) -> Any:
    """json.loads of a bundle member; ValueError for nesting past MAX_NESTING too: a
    manifest of 100000 '[' raised RecursionError (a traceback) from every command."""
    from dr.formats.trace_read import MAX_NESTING, too_deep
    try:
        v = json.loads(data)
    except RecursionError:
        raise ValueError("nested too deep") from None
    if too_deep(v):
        raise ValueError(f"nested more than {MAX_NESTING} deep")
    return v


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


def pick_trace(path: str | os.PathLike[str], entries: list[dict[str, Any]],
               trace: str | None) -> dict[str, Any]:
    """The manifest entry of the bundle's trace named ``trace`` (member name, file name
    or source name; None: the first). The one rule of every command's ``--trace``."""
    if trace is None:
        if not entries:
            raise BundleError(f"bundle {os.fspath(path)} holds no trace", exit_code=ExitCode.ERROR)
        return entries[0]
    chosen = next((t for t in entries if trace in (t["member"], t["member"][7:], t.get("source"))),
                  None)
    if chosen is None:
        names = ", ".join(t["member"][7:] for t in entries)
        raise UsageError(f"--trace {trace}: bundle {os.fspath(path)} holds no such trace "
                         f"(it holds: {names})")
    return chosen


def refuse_trace_name(path: str | os.PathLike[str], trace: str | None) -> None:
    """``--trace`` given with a plain trace: a UsageError (there is nothing to choose)."""
    if trace is not None:
        raise UsageError(f"--trace {trace}: {os.fspath(path)} is a trace, not a bundle; drop --trace")


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
        refuse_trace_name(path, trace)
        with TraceReader(path) as r:
            yield r
        return
    with open_bundle(path) as ob:
        chosen = pick_trace(path, ob.manifest["traces"], trace)
        with open(ob.dir / chosen["member"], "rb") as f:
            r = TraceReader(f)
            r.path = f"{os.fspath(path)}:{chosen['member']}"
            with r:
                yield r
