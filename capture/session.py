"""A capture as a step machine: start, step until a stop condition, stop.

::

    s = CaptureSession(CaptureOptions(output="t.drt", pid=1234))
    s.start()                       # snapshot, load probes, trace the target
    while (r := s.step()).status is Status.RUNNING:
        show(r)                     # events, bytes, drops, elapsed
    summary = s.stop(r.status)      # final drain, detach, summary record

The capture path does no per-event Python work: each step sleeps one poll
interval (the probes write with BPF_RB_NO_WAKEUP, so the kernel never wakes
user space per event), copies the committed span of the ring buffer verbatim
into the trace (:meth:`dr.formats.trace.TraceWriter.write_block`), flushes a
frame at least every second and writes loss records for new losses.

With ``redact`` the metadata and every drained span go through
:class:`dr.formats.redact.Redactor` before the writer sees them (same-length
masks; a ``redactions`` record precedes the block it covers), so no secret
the rules find reaches disk; the summary carries ``Redactor.report()``.

Spawn mode (``command``) starts the command through
:class:`dr.capture.spawn.SpawnTree`: the child waits on a pipe before execve,
is added to the traced set, then released, so its first recorded syscall is
execve. ASLR is off for the whole tree, and every image the tree execs has its
vDSO time functions made to enter the kernel at its exec stop (the tree is
ptrace'd with exec/fork/clone events only). The snapshot is taken at the
command's exec stop.
Attach mode (``pid``/``tid``) never stops, signals or patches the target.

Errors: :class:`dr.errors.TargetError`, :class:`dr.errors.OutputError`,
:class:`dr.errors.PermissionDenied`, :class:`dr.errors.MissingDependency`,
:class:`dr.errors.UsageError`.
"""

from __future__ import annotations

import enum
import os
import select
import shutil
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from dr import schema
from dr.capture.advice import loss_advice
from dr.capture.summary import LOST_CAUSES, RING_IO, Summary
from dr.errors import DrError, OutputError, TargetError, UsageError

if TYPE_CHECKING:   # loaded in start(): importing dr.capture.session loads no BCC
    from dr.capture.probes import Probes
    from dr.capture.ringbuf import RingBuffer
    from dr.capture.spawn import SpawnTree
    from dr.formats.redact import Redactor
    from dr.formats.trace import TraceWriter

#: Largest trace (bytes) read back at the end of a capture for moved bytes and files.
POST_PASS_MAX_TRACE = 256 << 20



class Status(enum.Enum):
    """What a step found; anything but RUNNING ends the capture."""

    RUNNING = "running"
    TARGET_EXITED = "target exited"
    DURATION = "duration reached"
    MAX_SIZE = "max size reached"
    OUTPUT_ERROR = "output error"
    STOPPED = "stopped"   # Ctrl-C / SIGTERM, decided by the caller


@dataclass(frozen=True, slots=True)
class CaptureOptions:
    """Flags of ``dr capture`` (sizes in bytes, times in seconds)."""

    output: str
    pid: int | None = None
    tid: int | None = None
    command: tuple[str, ...] | None = None
    snaplen: int = schema.SNAPLEN_DEFAULT
    duration: float | None = None
    max_size: int | None = None
    follow: bool = True
    ringbuf_size: int = 64 << 20
    poll_interval: float = 0.02
    flush_interval: float = 1.0
    patch_vdso: bool = True              # spawn: make every image's vDSO time functions enter the kernel
    ptrace_tree: bool = True             # spawn: follow the tree's execs (False: the first image only)
    aslr: bool = False                   # spawn: keep address-space randomization (replay turns it off)
    zstd_level: int = 1
    redact: bool = False                 # mask secrets before anything reaches disk
    redact_rules: str | None = None      # TOML rules added to the built-in ones (implies redact)
    identify_files: bool = True          # files/blob records for mapped and executed files (at stop)
    clock_probes: bool = True            # attach: uprobes record the time the target read (dr.capture.clocks)


@dataclass(frozen=True, slots=True)
class StepResult:
    """One step's view: status, counters so far (events, bytes), elapsed seconds."""

    status: Status
    events: int
    payload_bytes: int
    ring_bytes: int
    trace_bytes: int
    lost: int
    elapsed: float
    error: str | None = None


def _tgid_of(tid: int) -> int:
    try:
        with open(f"/proc/{tid}/status") as f:
            for line in f:
                if line.startswith("Tgid:"):
                    return int(line.split()[1])
    except OSError:
        pass
    raise TargetError(f"no thread with tid {tid}; check the tid (ls /proc/*/task)")


def _check_output(path: str) -> bool:
    """Fail early, before loading probes, when the trace cannot be created.

    Returns True when this call created the (empty) file, so that a capture
    that fails before writing anything can remove it again.
    """
    parent = os.path.dirname(os.path.abspath(path)) or "."
    if os.path.isdir(path):
        raise OutputError(f"cannot write trace {path}: it is a directory; give a file name with -o")
    if not os.path.isdir(parent):
        raise OutputError(f"cannot write trace {path}: directory {parent} does not exist")
    existed = os.path.exists(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        os.close(fd)
    except OSError as e:
        raise OutputError(f"cannot write trace {path}: {e.strerror}; choose another -o path") from None
    return not existed


class CaptureSession:
    """One capture (see the module doc). Not reusable."""

    def __init__(self, opts: CaptureOptions) -> None:
        n = sum(x is not None for x in (opts.pid, opts.tid, opts.command))
        if n != 1:
            raise UsageError("give exactly one target: --pid PID, --tid TID, or -- CMD ARGS...")
        if opts.snaplen < 0:
            raise UsageError("--snaplen must be >= 0")
        if opts.ringbuf_size < 4096:
            raise UsageError("--ringbuf-size must be at least one page (4096)")
        self.opts = opts
        self.mode = "spawn" if opts.command else "attach"
        self.probes: Probes | None = None
        self.ring: RingBuffer | None = None
        self.writer: TraceWriter | None = None
        self.pid: int | None = None       # target tgid
        self.child: int | None = None     # spawn mode: our child
        self.spawn: SpawnTree | None = None   # spawn mode
        self.exit_status: int | None = None
        self._pidfd: int | None = None
        self._t0 = 0.0
        self._t0_ns = 0
        self._last_flush = 0.0
        self._loss_seen: dict[str, list[int]] = {}
        self._error: str | None = None
        self._stopped = False
        self.vdso_patched: dict[str, int] = {}
        self.attached_procs = 0      # attach mode: processes traced at start (the target and descendants)
        self.attached_threads = 0
        self.redactor: Redactor | None = None
        self._ring_losses = 0          # ring-buffer reservation failures seen so far
        self._pending_now = 0          # bytes unconsumed at the start of the last drain
        self._fill_at_loss: list[int] = []   # that figure for each step in which reservations failed
        self._files: dict | None = None
        self._moved: dict | None = None

    # ------------------------------------------------------------------ start

    def start(self, loading: Callable[[], None] | None = None) -> None:
        """Snapshot the target, load and attach the probes, start tracing.

        ``loading`` is called once the target and output checked out, just
        before the probes are compiled (seconds; tens under load), so the CLI
        can say it is working without a line before a one-line error.
        Raises the errors named in the module doc; on error nothing stays
        attached and a spawned child is killed.
        """
        from dr.capture import snapshot
        from dr.capture.probes import ProbeConfig, Probes
        from dr.capture.ringbuf import RingBuffer
        from dr.formats.trace import TraceWriter

        from dr.capture.probes import check_privileges

        o = self.opts
        check_privileges()
        if o.redact or o.redact_rules:
            from dr.formats.redact import Redactor, load_policy

            self.redactor = Redactor(load_policy(o.redact_rules))   # UsageError on bad rules
        created = _check_output(o.output)
        try:
            if o.command:
                from dr.capture.spawn import SpawnTree

                path = shutil.which(o.command[0])
                if path is None:
                    raise TargetError(f"command not found: {o.command[0]}")
                self.spawn = SpawnTree(path, list(o.command), dict(os.environ),
                                       trace_execs=o.patch_vdso, no_aslr=not o.aslr,
                                       whole_tree=o.ptrace_tree)
                self.child = self.spawn.fork()
                tgid, tid_filter = self.child, 0
            elif o.tid is not None:
                tgid, tid_filter = _tgid_of(o.tid), o.tid
            else:
                assert o.pid is not None   # __init__: exactly one target
                tgid, tid_filter = o.pid, 0
                if not os.path.exists(f"/proc/{tgid}"):
                    raise TargetError(f"no process with pid {tgid}; check the pid")
            self.pid = tgid
            facts = None if o.command else snapshot.process_facts(tgid)
            cfg = ProbeConfig(snaplen=o.snaplen, tid=tid_filter, follow=o.follow and not tid_filter,
                              orphan_exits=not o.command, ringbuf_size=o.ringbuf_size)
            if loading is not None:
                loading()
            self.probes = Probes.load(cfg)
            self.ring = RingBuffer(self.probes.ringbuf_fd, self.probes.ringbuf_bytes, self.probes.inflight)
            if not o.command:
                self._pidfd = self._open_pidfd(tgid)
            self._t0_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            self.probes.trace_tgid(tgid)
            procs = self._attach_descendants(tgid) if (o.pid and cfg.follow) else []
            if not o.command and not procs:
                self.attached_procs = 1
                self.attached_threads = 1 if o.tid else len(snapshot.tids_of(tgid))
            if o.command:
                facts = self._release_child()
            elif not os.path.exists(f"/proc/{tgid}") or (o.tid and not os.path.exists(f"/proc/{o.tid}")):
                raise TargetError(f"process {tgid} exited during attach; nothing to capture")
            meta = dict(snapshot.host_facts())
            meta.update(facts or {})
            meta.update({
                "mode": self.mode,
                "clock_offsets": meta.pop("clock"),   # key names: dr/formats/meta.py
                "snaplen": o.snaplen,
                "filters": {"tid": o.tid, "follow": cfg.follow},
                "redaction": None,
                "started_ns": self._t0_ns,
                "ringbuf_size": self.probes.ringbuf_bytes,
                "vdso_patched": sorted(self.vdso_patched),
            })
            if o.command:
                meta["command"] = list(o.command)
                # how every image of the tree was prepared (replay runs them the same way)
                meta["aslr"] = bool(o.aslr)
                meta["vdso_every_exec"] = bool(o.patch_vdso and o.ptrace_tree)
            if o.pid:
                meta["procs"] = procs
            if not o.command and o.clock_probes:
                # what the target reads from its vDSO (dr.capture.clocks): uprobes, nothing changed in it
                from dr.capture.clocks import attach_clock_probes
                meta["clock_probes"] = attach_clock_probes(self.probes.bpf, [tgid] + [p["pid"] for p in procs])
            if self.redactor is not None:
                meta = self.redactor.meta(meta)   # argv, command, env, cwd
            self.writer = TraceWriter(o.output, meta, level=o.zstd_level)
        except BaseException:
            self._abort()
            if self.writer is None and created:
                # Nothing was captured: leave no empty trace behind.
                try:
                    os.unlink(o.output)
                except OSError:
                    pass
            raise
        self._t0 = time.monotonic()
        self._last_flush = self._t0
        # The consumer must keep up with the probes: a drain that waits for
        # CPU behind a busy target lets the ring fill. Ask for a better share.
        try:
            os.setpriority(os.PRIO_PROCESS, 0, -10)
        except OSError:
            pass

    def _attach_descendants(self, tgid: int) -> list[dict]:
        """Trace every existing descendant of ``tgid`` (pre-forked workers do the work).

        The probes follow forks of traced processes from the moment ``tgid`` is
        in the map; this walk, made after that, finds those forked before. Each
        is added to the tgid map and described (pid, ppid, tids, command at
        exec) for the metadata; one that exits meanwhile is skipped.
        """
        from dr.capture import snapshot
        from dr.capture.cmdline import exec_argv
        assert self.probes is not None   # loaded by start() before this walk
        out = []
        self.attached_threads = len(snapshot.tids_of(tgid))
        for pid, ppid in snapshot.descendants(tgid):
            self.probes.trace_tgid(pid)
            tids = snapshot.tids_of(pid)
            if not tids:
                continue
            try:
                ex = exec_argv(pid)
            except OSError:
                ex = None
            # Names and the fd table, as for the target: dr stats and show name a
            # worker's threads and its inherited fds (stderr, the listening socket).
            try:
                fds = snapshot._fds(pid)
            except (OSError, ValueError):
                fds = None
            out.append({"pid": pid, "ppid": ppid, "tids": tids, "exec": ex,
                        "threads": snapshot.thread_names(pid), "fds": fds})
            self.attached_threads += len(tids)
        self.attached_procs = 1 + len(out)
        return out

    def _release_child(self) -> dict:
        """Let the command exec; at its exec stop take the snapshot and patch the vDSO."""
        from dr.capture import snapshot
        from dr.vdso import patch_vdso

        tree = self.spawn
        assert tree is not None and self.child is not None   # forked by start()

        def first(pid: int) -> dict:
            facts = snapshot.process_facts(pid)
            self.vdso_patched = patch_vdso(pid)
            if not self.opts.ptrace_tree:
                tree.detach()   # let the command go at this stop: its own ptrace then works
            return facts

        tree.on_first_exec, tree.patch = first, patch_vdso
        tree.follow(lambda: self.ring.stats.bytes if self.ring is not None else 0,
                    lambda: self.probes.traced_tgids() if self.probes is not None else [], self.opts.duration)
        try:
            facts = tree.release()
        except TargetError:
            if tree.exited.wait(5.0):
                self.exit_status = tree.exit_status
            raise
        return facts if facts is not None else snapshot.process_facts(self.child)

    @staticmethod
    def _open_pidfd(pid: int) -> int | None:
        try:
            return os.pidfd_open(pid)
        except ProcessLookupError:
            raise TargetError(f"process {pid} exited while the probes were loading; "
                              "nothing to capture") from None
        except OSError:
            return None

    # ------------------------------------------------------------------ step

    def step(self) -> StepResult:
        """Wait one poll interval, drain the ring buffer into the trace, check stop conditions."""
        o = self.opts
        assert self.probes is not None and self.ring is not None and self.writer is not None, "step() before start()"
        status = Status.RUNNING
        if self._target_gone(o.poll_interval):
            status = Status.TARGET_EXITED
        now = time.monotonic()
        try:
            self._drain()
            if now - self._last_flush >= o.flush_interval:
                self._write_losses()
                self.writer.flush()
                self._last_flush = now
        except OutputError as e:
            self._error = e.message
            status = Status.OUTPUT_ERROR
        if status is Status.RUNNING:
            if o.duration is not None and now - self._t0 >= o.duration:
                status = Status.DURATION
            elif o.max_size is not None and self.writer.bytes_written >= o.max_size:
                status = Status.MAX_SIZE
        c = self.probes.counters()
        by_cpu = self.probes.losses_by_cpu()
        lost = sum(sum(v) for k, v in by_cpu.items() if k in LOST_CAUSES)
        self._note_ring_losses(by_cpu)
        return StepResult(status, c["events"], c["payload_bytes"], self.ring.stats.bytes,
                          self.writer.bytes_written, lost, now - self._t0, self._error)

    def _child_exited(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the spawned command's exit (reaped by its tracer thread)."""
        if self.spawn is None or not self.spawn.command_exited.wait(timeout):
            return False
        self.exit_status = self.spawn.exit_status
        self.child = None
        return True

    def _target_gone(self, timeout: float) -> bool:
        if self.child is not None and not self._child_exited(timeout):
            return False
        if self.spawn is not None:   # the rest of the tree is followed while busy (dr.capture.spawn)
            return self.spawn.exited.wait(timeout)
        if self._pidfd is not None:
            r, _, _ = select.select([self._pidfd], [], [], timeout)
            return bool(r)
        time.sleep(timeout)
        return not os.path.exists(f"/proc/{self.pid}")

    def _note_ring_losses(self, by_cpu: dict[str, list[int]]) -> None:
        """Remember how full the ring was when reservations failed.

        The unconsumed bytes only grow between two drains, so the figure taken
        at the start of a drain is the most the ring held since the previous
        one: a failure in a step whose figure is far below the ring's size was
        not a full ring (the consumer was not behind).
        """
        n = sum(sum(by_cpu.get(k, ())) for k in ("RINGBUF_EVENT", "RINGBUF_PAYLOAD", "RINGBUF_PROC"))
        if n > self._ring_losses:
            self._fill_at_loss.append(self._pending_now)
            self._ring_losses = n

    def _drain(self) -> int:
        """Take every committed span; keep going while the ring stays busy."""
        assert self.ring is not None and self.writer is not None   # started, not yet stopped
        self._pending_now = self.ring.pending()
        total = 0
        sink = self.writer.write_block if self.redactor is None else self._write_redacted
        for _ in range(16):
            n = self.ring.drain(sink)
            total += n
            if n < (1 << 20):
                break
        return total

    def _write_redacted(self, span) -> None:
        """Mask payloads of a span in place (same length), spans record first, then the block."""
        from dr.formats.redact import redactions_record

        assert self.redactor is not None and self.writer is not None   # the sink only when redacting
        raw, spans = self.redactor.block(bytes(span))
        if spans:
            self.writer.write_record(redactions_record(spans))
        self.writer.write_block(raw)

    def _write_losses(self) -> None:
        """Loss records for the counters that grew since the last call (per cause and CPU)."""
        assert self.probes is not None and self.writer is not None   # started, not yet stopped
        cur = self.probes.losses_by_cpu()
        for cause, per_cpu in cur.items():
            seen = self._loss_seen.get(cause, [0] * len(per_cpu))
            for cpu, (now, before) in enumerate(zip(per_cpu, seen)):
                if now > before:
                    self.writer.write_loss(cause=cause, count=now - before, cpu=cpu)
        self._loss_seen = cur

    # ------------------------------------------------------------------ stop

    def stop(self, status: Status = Status.STOPPED) -> Summary:
        """Final drain, detach every probe, write the summary record; idempotent.

        The trace stays valid whatever happened: after an output error it is
        cut back to its last complete frame (and reads as cut short).
        """
        if self._stopped:
            raise RuntimeError("capture already stopped")
        self._stopped = True
        if status is Status.STOPPED and self.child is not None:
            # Spawn mode: Ctrl-C reached the child too (same process group);
            # give it a moment so its exit status is known.
            # A stop signal sent to dr alone (kill, a supervisor) did not reach
            # the child: forward SIGTERM so the command does not outlive a
            # capture that was asked to end, as strace does with the command it started.
            if not self._child_exited(0.3):
                try:
                    os.kill(self.child, signal.SIGTERM)
                except OSError:
                    pass
                self._child_exited(0.7)
        err = self._error
        if self.spawn is not None and self.spawn.command_exited.is_set():
            self.spawn.finish()   # stopped while following the rest of the tree: who outlived it
            self.spawn.exited.wait(1.0)
        if self.probes is not None:
            self.probes.untrace_all()
        try:
            if self.writer is not None and self.ring is not None and err is None:   # (the ring opens first)
                # Let in-flight programs commit, then take what is left.
                for _ in range(20):
                    self._drain()
                    if self.ring.pending() == 0:
                        break
                    time.sleep(0.005)
                self._write_losses()
                self._add_moved_bytes()
                if self.opts.identify_files:
                    self._files = self._identify_files()
        except OutputError as e:
            err = e.message
            status = Status.OUTPUT_ERROR
        counters = self.probes.counters() if self.probes else {}
        losses = {k: sum(v) for k, v in self.probes.losses_by_cpu().items()} if self.probes else {}
        syscalls = {schema.name_of(nr): n for nr, n in sorted(
            self.probes.syscall_counts().items(), key=lambda kv: -kv[1])} if self.probes else {}
        stats = self.ring.stats if self.ring else None
        summary = Summary(
            events=counters.get("events", 0), payload_bytes=counters.get("payload_bytes", 0),
            losses=losses, duration_ns=int((time.monotonic() - self._t0) * 1e9),
            stop_reason=status.value, exit_status=self.exit_status, syscalls=syscalls,
            trace_bytes=0, raw_bytes=stats.bytes if stats else 0,
            proc_events=counters.get("proc_events", 0),
            walks=stats.walks if stats else 0, walk_ns=stats.walk_ns if stats else 0, error=err,
            redaction=self.redactor.report() if self.redactor is not None else None,
            ring_fill_at_loss=None, ring_retries=counters.get("ring_retries", 0), mode=self.mode,
            files=self._files, moved=self._moved,
            spawn_released=len(self.spawn.released) if self.spawn is not None else 0,
            outlived=list(self.spawn.outlived) if self.spawn is not None else None,
            attached={"processes": self.attached_procs, "threads": self.attached_threads}
            if self.attached_procs else None)
        if self.probes is not None:
            self._note_ring_losses(self.probes.losses_by_cpu())
        if self._fill_at_loss:
            summary.ring_fill_at_loss = {"min": min(self._fill_at_loss), "max": max(self._fill_at_loss),
                                         "ring_bytes": self.probes.ringbuf_bytes if self.probes else 0}
        self._abort(summary if err is None else None)
        if self.writer is not None:
            summary.trace_bytes = self.writer.bytes_written
        # A spawned command that outlives the capture (duration, max size)
        # keeps running untraced; the caller may wait for it.
        return summary

    def _post_pass_fits(self) -> str | None:
        """Why the end-of-capture passes over the trace (moved bytes, files) are skipped, or None.

        They read the whole trace back (an fd model per event, in Python): bounded so a
        long attach capture ends promptly; the summary says when they were skipped."""
        try:
            size = os.path.getsize(self.opts.output)
        except OSError:
            return "the trace cannot be read back"
        if size > POST_PASS_MAX_TRACE:
            return f"the trace is larger than {POST_PASS_MAX_TRACE >> 20} MiB"
        return None

    def _add_moved_bytes(self) -> None:
        """sendfile/splice/tee/copy_file_range from files: their bytes into the trace (dr.capture.moved).

        Not with redaction: those bytes would bypass the redactor."""
        from dr.capture.moved import MOVERS, add_moved_bytes

        counts = self.probes.syscall_counts() if self.probes else {}
        if self.redactor is not None or not any(counts.get(schema.by_name(n).nr) for n in MOVERS):
            return
        why = self._post_pass_fits()
        if why:
            self._moved = {"skipped": why}
            return
        try:
            self.writer, self._moved = add_moved_bytes(self.writer, self.opts.output, self.opts.snaplen)
        except OutputError:
            raise
        except Exception as e:   # never cost the trace itself
            self._moved = {"error": f"moved bytes not added: {e}"}

    def _identify_files(self) -> dict:
        """``files``/``blob`` records for what the tree mapped or executed (dr.capture.files)."""
        from dr.capture.files import write_files

        assert self.writer is not None   # only from stop(), with the trace open
        self.writer.flush()
        why = self._post_pass_fits()
        if why:
            return {"skipped": why}
        t0 = time.monotonic()
        try:
            out = write_files(self.writer, self.opts.output)
        except OutputError:
            raise
        except Exception as e:   # identifying files must never cost the trace itself
            return {"error": f"files not identified: {e}"}
        out["seconds"] = round(time.monotonic() - t0, 3)
        return out

    def _abort(self, summary: Summary | None = None) -> None:
        """Release everything: ring mmap, probes, trace (with summary when given)."""
        if self.ring is not None:
            self.ring.close()
            self.ring = None
        if self.probes is not None:
            self.probes.close()
            self.probes = None
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        if self.writer is not None:
            try:
                self.writer.close(summary.record() if summary else None)
            except DrError:
                pass
        elif self.spawn is not None and self.child is not None and not self._stopped:
            # start() failed after forking: do not leave the child waiting.
            self.spawn.kill()
            self.spawn.exited.wait(5.0)
            self.child = None
        if self.spawn is not None and self._stopped:
            # A command that outlives the capture runs on unprepared.
            self.spawn.detach()


# Summary, its constants and loss_advice stay importable from here (dr.capture.summary).
__all__ = ["CaptureSession", "CaptureOptions", "StepResult", "Summary", "Status", "LOST_CAUSES", "RING_IO",
           "loss_advice"]
