"""Load, attach and detach the capture probes (bpf/dr_capture.c) with BCC.

The only module of dr that imports :mod:`bcc`. :class:`Probes` compiles the
program once with the capture's constants as ``-D`` flags, loads the copy
rules of :data:`dr.schema.RULES` into the ``rules`` array map (index
``nr * DR_MAX_RULES + i``), and exposes the maps user space needs: the traced
tgids, the ring buffer's fd and the per-CPU loss and in-flight counters.

Errors: :class:`dr.errors.PermissionDenied` (not root / no CAP_BPF),
:class:`dr.errors.MissingDependency` (BCC or kernel headers missing),
:class:`dr.errors.NotSupported` (the kernel refused the program).
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import io
import os
import sys
from dataclasses import dataclass, field
from typing import Any
from importlib import resources

from dr import schema
from dr.errors import MissingDependency, NotSupported, PermissionDenied

TRACEFS = "/sys/kernel/tracing"
SETUP_HINT = "run scripts/setup.sh (as root) to install BCC and link kernel headers"


#: Most copier steps per syscall phase the probes load with (see ProbeConfig.copier_steps).
MAX_COPIER_STEPS = 232


@dataclass(frozen=True, slots=True)
class ProbeConfig:
    """Compile-time constants of the probes.

    snaplen: bytes kept per buffer; tid: trace this tid only (0: by tgid);
    follow: trace children made by fork/vfork/clone; orphan_exits: record a
    syscall seen only at its exit (attach mode: calls in flight at start);
    ringbuf_size: ring buffer bytes (rounded up to a power-of-two pages).
    """

    snaplen: int = schema.SNAPLEN_DEFAULT
    tid: int = 0
    follow: bool = True
    orphan_exits: bool = True
    ringbuf_size: int = 64 << 20

    def ringbuf_pages(self) -> int:
        page = os.sysconf("SC_PAGE_SIZE")
        pages = max(1, -(-self.ringbuf_size // page))
        return 1 << (pages - 1).bit_length()

    def copier_steps(self) -> int:
        """Steps of the probes' bounded copy loop per syscall phase.

        One step copies up to one 16 KiB chunk, starts a job, or takes one
        iovec/argv element; execve's argv and envp (64 entries each) need
        about 135. Room for two snaplen-sized buffers, capped by what the
        verifier accepts (its cost grows with the steps: load time). The cap
        is measured: on 6.18 the sys_exit program stopped loading between 276
        and 282 steps (the verifier's 1M-instruction budget); with the mmsg
        expansion, bpf(2)'s pointed buffers and 16 attempts per event record
        it still loads at 232 and not at 256 (2026-12-06); tests/test_capture.py
        loads the probes at the cap. Beyond it, what a phase could not copy
        is counted as COPY_STEPS loss.
        """
        need = 2 * (-(-max(self.snaplen, 1) // schema.CHUNK) + 2) + 32
        return max(192, min(need, MAX_COPIER_STEPS))

    def cflags(self) -> list[str]:
        return [
            f"-DDR_SNAPLEN={int(self.snaplen)}",
            f"-DDR_TID_FILTER={int(self.tid)}",
            f"-DDR_FOLLOW={int(bool(self.follow))}",
            f"-DDR_ORPHAN_EXITS={int(bool(self.orphan_exits))}",
            f"-DDR_RB_PAGES={self.ringbuf_pages()}",
            f"-DDR_STEPS={self.copier_steps()}",
            f"-DDR_NCPU={_possible_cpus()}",
            f"-DDR_PID_MAX={_pid_max()}",
        ]


def _possible_cpus() -> int:
    try:
        text = open("/sys/devices/system/cpu/possible").read().strip()
    except OSError:
        return os.cpu_count() or 1
    n = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        n = max(n, int(hi or lo) + 1)
    return n


def _pid_max() -> int:
    try:
        n = int(open("/proc/sys/kernel/pid_max").read())
    except (OSError, ValueError):
        n = 4194304
    return max(64, (n + 63) // 64 * 64)


def bpf_dir() -> str:
    """Directory of the shipped C files (package data of dr.bpf)."""
    return str(resources.files("dr.bpf"))


#: The program's files, in order: dr_clock.c (uprobes on the target's clock functions,
#: dr.capture.clocks) uses dr_capture.c's maps and helpers. One text, because BCC makes
#: programs only of the functions of its main file, not of included ones.
PROGRAM_FILES = ("dr_capture.c", "dr_clock.c")


def program_text() -> str:
    """The BPF program text, as ``dr capture --ebpf`` prints it."""
    return "\n".join((resources.files("dr.bpf") / name).read_text() for name in PROGRAM_FILES)


def ensure_tracefs() -> None:
    """Mount tracefs at /sys/kernel/tracing when a fresh machine lacks it."""
    if os.path.exists(os.path.join(TRACEFS, "events")):
        return
    libc = ct.CDLL(None, use_errno=True)
    if libc.mount(b"nodev", TRACEFS.encode(), b"tracefs", 0, None) != 0:
        err = ct.get_errno()
        raise NotSupported(f"tracefs is not mounted at {TRACEFS} and mounting it failed: "
                           f"{os.strerror(err)}; mount it with: mount -t tracefs nodev {TRACEFS}")


def check_privileges() -> None:
    """Raise PermissionDenied unless this process may load tracing BPF programs."""
    if os.geteuid() == 0:
        return
    # CAP_BPF (39) and CAP_PERFMON (38) suffice on recent kernels.
    try:
        for line in open("/proc/self/status"):
            if line.startswith("CapEff:"):
                eff = int(line.split()[1], 16)
                if eff & (1 << 39) and eff & (1 << 38):
                    return
    except OSError:
        pass
    raise PermissionDenied("dr capture needs root (or CAP_BPF and CAP_PERFMON); run it with sudo")


def _import_bcc():
    try:
        import bcc  # noqa: F401
    except ImportError:
        raise MissingDependency(f"BCC's Python module is not importable; {SETUP_HINT}") from None
    return bcc


@dataclass
class Probes:
    """The loaded capture program and its maps.

    Use :meth:`load`, then :meth:`trace_tgid` for each target, read
    :meth:`losses` and :meth:`inflight` while draining ``ringbuf_fd``, and
    :meth:`close` (idempotent) to detach everything.
    """

    config: ProbeConfig
    bpf: Any = None   # bcc.BPF: BCC ships no type information
    ringbuf_fd: int = -1
    ringbuf_bytes: int = 0
    _closed: bool = field(default=False, repr=False)

    @classmethod
    def load(cls, config: ProbeConfig) -> "Probes":
        """Compile, load and attach. Raises the errors named in the module doc."""
        check_privileges()
        ensure_tracefs()
        bcc = _import_bcc()
        build = f"/lib/modules/{os.uname().release}/build"
        if not os.path.exists(build):
            raise MissingDependency(f"kernel headers for {os.uname().release} not found at {build}; "
                                    f"{SETUP_HINT}")
        src = program_text()
        cflags = ["-I" + bpf_dir(), "-Wno-unused-function"] + config.cflags()
        # BCC prints compiler diagnostics and verifier logs on stderr; keep them
        # for the one-line error and show nothing when loading succeeds.
        err = io.StringIO()
        try:
            with _capture_fd2(err):
                b = bcc.BPF(text=src.encode(), cflags=cflags)
        except Exception as exc:  # BCC raises bare Exception
            log = err.getvalue()
            if "Operation not permitted" in str(exc) or "Operation not permitted" in log:
                raise PermissionDenied("loading BPF programs is not permitted; run dr capture as root") from None
            if "linux/" in log and "file not found" in log:
                raise MissingDependency(f"kernel headers are incomplete; {SETUP_HINT}") from None
            last = [ln for ln in log.splitlines() if ln.strip()][-3:]
            raise NotSupported(f"the kernel refused the capture probes: {exc}: {' | '.join(last)}") from None
        self = cls(config, b)
        try:
            self._fill_maps()
        except Exception:
            self.close()
            raise
        return self

    def _fill_maps(self) -> None:
        b = self.bpf
        rules = b["rules"]
        nrinfo = b["nrinfo"]
        info: dict[int, int] = {}
        execs = {schema.by_name(n).nr for n in ("execve", "execveat")}
        entry_rules = set(schema.ENTRY_RULES)
        # Copied at entry: the entry value of value-result arguments; everything
        # else at exit (execve/execveat too: from the new image's stack, see
        # build_exec_jobs in bpf/dr_capture.c).
        for (nr, i, arg, kind, rule, param, elem, size) in schema.RULES:
            leaf = rules.Leaf()
            leaf.arg, leaf.kind, leaf.rule, leaf.param = arg, kind, rule, param
            at_entry = (nr, i) in entry_rules
            leaf.elem, leaf.valid, leaf.size = elem, 1 | (2 if at_entry else 0), size
            rules[ct.c_int(nr * schema.MAX_RULES + i)] = leaf
            bits = info.get(nr, 0) | 2
            if kind == int(schema.Kind.INOUT) or at_entry:
                bits |= 1
            if nr in execs:
                bits = 2 | 4   # see nrinfo in bpf/dr_capture.c
            info[nr] = bits
        for nr, bits in info.items():
            nrinfo[ct.c_int(nr)] = ct.c_uint8(bits)
        reqbufs = b["reqbufs"]
        for (nr, req), (direction, size) in schema.REQUEST_BUFFERS.items():
            flags = (1 << 31 if direction in ("out", "inout", "ret", "outret") else 0) \
                | (1 << 30 if direction == "inout" else 0) | (1 << 29 if direction == "outret" else 0) \
                | (1 << 26 if direction == "ret" else 0)
            flags |= 1 << 28 if direction == "sub" else 0
            flags |= (1 << 31 | 1 << 25) if direction == "iov" else 0
            reqbufs[ct.c_uint64(nr << 32 | req)] = ct.c_uint32(size | flags)
        pointed = b["sockptr"]
        for (level, optname), (count_off, ptr_off, elem) in schema.SOCKOPT_POINTED.items():
            pointed[ct.c_uint64(level << 32 | optname)] = ct.c_uint64(count_off | ptr_off << 16 | elem << 32)
        modes = {"field": 1, "key": 2, "value": 3, "str": 4}
        bpfptr = b["bpfptr"]
        for cmd, bufs in schema.BPF_POINTED.items():
            if bufs:
                v = bpfptr.Leaf()
                for k, (ptr_off, direction, size, size_off, elem) in enumerate(bufs):
                    v.d[k] = (ptr_off | size_off << 8 | elem << 16 | modes[size] << 32
                              | (direction == "out") << 40)
                bpfptr[ct.c_uint32(cmd)] = v
        counted = b["reqcount"]
        nr_ioctl = schema.by_name("ioctl").nr
        for req, (hdr, count_off, _cap_off, elem) in schema.IOCTL_COUNTED.items():
            # header | count offset << 16 | element << 32; the reqbufs value says "counted"
            reqbufs[ct.c_uint64(nr_ioctl << 32 | req)] = ct.c_uint32(hdr | 1 << 31 | 1 << 27)
            counted[ct.c_uint64(nr_ioctl << 32 | req)] = ct.c_uint64(hdr | count_off << 16 | elem << 32)
        for (nr, req, subreq), (direction, size, buf_arg) in schema.REQUEST_SUB_BUFFERS.items():
            # key: the request's, with sub-request + 1 in bits 48-63; the buffer argument
            # + 1 in bits 16-18 of the value
            flags = (1 << 31 if direction in ("out", "inout") else 0) | (1 << 30 if direction == "inout" else 0)
            key = nr << 32 | req | ((subreq & 0xFFFF) + 1) << 48
            reqbufs[ct.c_uint64(key)] = ct.c_uint32(size | flags | (buf_arg + 1) << 16)
        rbt = b["rb"]
        self.ringbuf_fd = rbt.map_fd
        self.ringbuf_bytes = self.config.ringbuf_pages() * os.sysconf("SC_PAGE_SIZE")

    def trace_tgid(self, tgid: int) -> None:
        """Add a process (all its threads) to the traced set."""
        self.bpf["tgids"][ct.c_uint32(tgid)] = ct.c_uint8(1)
        bits = self.bpf["tgbits"]
        key = ct.c_int(tgid >> 6)
        bits[key] = ct.c_uint64(bits[key].value | (1 << (tgid & 63)))

    def losses(self) -> dict[str, int]:
        """Loss counters summed over CPUs: cause name -> count since load."""
        table = self.bpf["losses"]
        out = {}
        for name, idx in schema.LOSS_CAUSES.items():
            out[name] = int(sum(table[ct.c_int(idx)]))
        return out

    def losses_by_cpu(self) -> dict[str, list[int]]:
        """Loss counters per CPU: cause name -> [count on cpu 0, cpu 1, ...]."""
        table = self.bpf["losses"]
        return {name: [int(v) for v in table[ct.c_int(idx)]]
                for name, idx in schema.LOSS_CAUSES.items()}

    def counters(self) -> dict[str, int]:
        """``{events, payload_bytes, payloads, proc_events, ring_retries}`` so far (summed over CPUs).

        ring_retries: records written after one or more failed reservation attempts.
        """
        table = self.bpf["stats"]
        return {name: int(sum(table[ct.c_int(i)]))
                for i, name in enumerate(("events", "payload_bytes", "payloads", "proc_events",
                                          "ring_retries"))}

    def syscall_counts(self) -> dict[int, int]:
        """Syscall events written, by syscall number (summed over CPUs, zeros omitted)."""
        table = self.bpf["counts"]
        out = {}
        for k, vals in table.items():
            n = int(sum(vals))
            if n:
                out[int(k.value)] = n
        return out

    def traced_tgids(self) -> list[int]:
        """The processes still traced (the probes drop a process at its exit)."""
        try:
            return sorted(int(k.value) for k in self.bpf["tgids"].keys())
        except Exception:   # the map is gone (closing): nothing traced
            return []

    def untrace_all(self) -> None:
        """Stop tracing every process (the probes stay attached until close)."""
        with contextlib.suppress(Exception):
            for k in list(self.bpf["tgids"].keys()):
                self.bpf["tgbits"][ct.c_int(k.value >> 6)] = ct.c_uint64(0)
            self.bpf["tgids"].clear()

    def inflight(self) -> bool:
        """True when some program may hold an uncommitted ring-buffer record.

        Reads each CPU's ``end`` before its ``start`` so the answer errs on
        the side of "in flight".
        """
        table = self.bpf["inflight"]
        vals = table[ct.c_int(0)]
        return any(v.start != v.end for v in vals)

    def close(self) -> None:
        """Detach every probe and free the maps (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self.bpf is not None:
            with contextlib.suppress(Exception):
                self.bpf.cleanup()
            self.bpf = None


@contextlib.contextmanager
def _capture_fd2(sink: io.StringIO):
    """Collect what C code writes on fd 2 (clang and verifier logs) into sink."""
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            sink.write(tmp.read().decode(errors="replace"))
