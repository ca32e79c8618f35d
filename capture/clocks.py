"""Uprobes on the target's own clock functions: the time a service read (attach mode).

A process reads the clock through its vDSO (clock_gettime, gettimeofday, time):
no syscall, so the tracepoints see nothing. In attach mode dr changes nothing in
the target (spawn mode makes the vDSO enter the kernel instead), so it asks the
kernel for uprobes on the functions that call the vDSO, in the target's own
files: a uprobe is a breakpoint the kernel keeps (the process's memory, registers
and stack are as they were when it continues), and the records go into the trace
(``clock_read``, bpf/dr_clock.c) for streams replay to serve.

- **libc** ``clock_gettime``: at its entry the clockid and the out-pointer are
  kept per thread; a second uprobe on the instruction after its one indirect
  call (the vDSO's clock_gettime) reads the timespec and the vDSO's result. Not a
  uretprobe: on this kernel its return trampoline is a syscall of its own
  (``uretprobe``), which the trace would then show as the target's. The
  fallback path (no vDSO) makes a real clock_gettime syscall, traced as such. ``gettimeofday`` and ``time`` are IFUNCs on x86_64
  glibc: the caller jumps straight into the vDSO, which has no file a uprobe can
  name, so those reads stay unrecorded.
- **Go** ``time.now`` (what ``time.Now`` calls; runtime/time_linux_amd64.s,
  ABIInternal): a uprobe on each RET instruction, where AX, BX and CX hold the
  REALTIME seconds, the nanoseconds and the CLOCK_MONOTONIC ns. The RET offsets
  come from objdump's disassembly of that one symbol (binutils, installed by
  scripts/setup.sh): a breakpoint must sit on an instruction's first byte, which
  only a decoder knows. The instructions before the RET are checked to be the
  ones that set those registers, so another Go version's layout is refused, not
  misread. No uretprobe in Go: it rewrites the return address on the goroutine's
  stack, which the runtime moves.

Probes are attached per process (the target and the descendants traced at
start): the kernel plants breakpoints only in those processes' memory. A process
forked later is not probed (its clock reads are served the approximation).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Any

__all__ = ["GO_SYMBOL", "LIBC_SYMBOL", "go_time_now_rets", "libc_after_vdso", "libc_of", "attach_clock_probes"]

GO_SYMBOL = "time.now"
#: objdump's lines before the RET that set the result registers (Go 1.17+, amd64):
#: ``MOVQ DI, BX`` then ``ADDQ DX, CX`` (AT&T: source first), then the frame teardown
#: the assembler adds (restore BP, pop the frame), which touches neither.
_GO_EPILOGUE = (re.compile(r"mov\s+%rdi,%rbx$"), re.compile(r"add\s+%rdx,%rcx$"))
_GO_TEARDOWN = (re.compile(r"mov\s+(0x[0-9a-f]+)?\(%rsp\),%rbp$"), re.compile(r"add\s+\$0x[0-9a-f]+,%rsp$"))
_LINE = re.compile(r"^\s*([0-9a-f]+):\s+(.*?)\s*$")
LIBC_SYMBOL = "clock_gettime"
_INDIRECT_CALL = re.compile(r"call\s+\*%r\w+$")
OBJDUMP_TIMEOUT_S = 30


def _disassemble(path: str, symbol: str) -> tuple[list[tuple[int, str]], str | None]:
    """The instructions ``(offset from the symbol's start, text)`` of ``symbol`` in ELF
    ``path`` (its symbol table, or the dynamic one of a stripped library), or why not.
    An empty list and None: the file has no such symbol."""
    objdump = shutil.which("objdump")
    if objdump is None:
        return [], "objdump (binutils) is not installed; run scripts/setup.sh"
    try:
        syms = subprocess.run([objdump, "-t", "-T", path], capture_output=True, text=True,
                              timeout=OBJDUMP_TIMEOUT_S).stdout
        addr = size = None
        for line in syms.splitlines():
            # -t: ADDR FLAGS F .text SIZE NAME; -T: ADDR g DF .text SIZE VERSION NAME
            parts = line.split()
            sect = next((i for i, p in enumerate(parts) if p.startswith(".")), None)
            if parts[-1:] == [symbol] and sect is not None and sect + 1 < len(parts) - 1 \
                    and any("F" in p for p in parts[1:sect]):
                addr, size = int(parts[0], 16), int(parts[sect + 1], 16)
                if size:
                    break
        if addr is None or not size:
            return [], None
        dis = subprocess.run([objdump, "-d", "--no-show-raw-insn", f"--start-address={addr:#x}",
                              f"--stop-address={addr + size:#x}", path],
                             capture_output=True, text=True, timeout=OBJDUMP_TIMEOUT_S).stdout
    except (OSError, subprocess.TimeoutExpired, ValueError) as e:
        return [], f"objdump failed on {path}: {e}"
    insns = []
    for line in dis.splitlines():
        m = _LINE.match(line)
        if m and m.group(2):
            insns.append((int(m.group(1), 16) - addr, m.group(2)))
    if not insns:
        return [], f"objdump found no instructions in {symbol} of {path}"
    return insns, None


def go_time_now_rets(path: str) -> tuple[list[int], str | None]:
    """Offsets (from the symbol's start) of the RET instructions of Go's ``time.now`` in
    ELF ``path``, and why there are none (None: found, or not a Go program)."""
    insns, why = _disassemble(path, GO_SYMBOL)
    if not insns:
        return [], why
    rets = []
    for i, (off, text) in enumerate(insns):
        if text.split()[0:1] != ["ret"]:
            continue
        k = i
        while k > 0 and any(p.match(insns[k - 1][1]) for p in _GO_TEARDOWN) and i - k < 2:
            k -= 1
        before = [t for _a, t in insns[max(0, k - 2):k]]
        if len(before) != 2 or not all(p.match(t) for p, t in zip(_GO_EPILOGUE, before)):
            return [], (f"{GO_SYMBOL} in {path} does not end as Go 1.17-1.22 on amd64 does "
                        f"({'; '.join(before)}): its result registers are unknown, not probed")
        rets.append(off)
    if not rets:
        return [], f"no RET found in {GO_SYMBOL} of {path}"
    return rets, None


def libc_after_vdso(path: str) -> tuple[int | None, str | None]:
    """Offset in libc's ``clock_gettime`` of the instruction after its one indirect call
    (the vDSO's clock_gettime): the value is in the caller's timespec there. Or why not."""
    insns, why = _disassemble(path, LIBC_SYMBOL)
    if not insns:
        return None, why or f"no {LIBC_SYMBOL} in {path}"
    calls = [i for i, (_o, t) in enumerate(insns) if _INDIRECT_CALL.match(t)]
    if len(calls) != 1 or calls[0] + 1 >= len(insns):
        return None, (f"{LIBC_SYMBOL} in {path} makes {len(calls)} indirect calls (one, to the "
                      "vDSO, expected): not probed")
    return insns[calls[0] + 1][0], None


def libc_of(pid: int) -> str | None:
    """Path (as the host sees it) of the C library process ``pid`` maps, or None."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) == 6 and re.search(r"/libc(\.so\.6|-[0-9.]+\.so)$", parts[5].strip()):
                    path = parts[5].strip()
                    return f"/proc/{pid}/root{path}"
    except OSError:
        return None
    return None


def _exe(pid: int) -> str | None:
    path = f"/proc/{pid}/exe"
    return path if os.path.exists(path) else None


def attach_clock_probes(bpf: Any, pids: list[int]) -> dict:
    """Attach the clock uprobes (bpf/dr_clock.c) to each process of ``pids``.

    Returns ``{"libc": [pids], "go": [pids], "notes": [why something was not probed]}``
    for the metadata. Never raises: a capture goes on without them.
    """
    out: dict = {"libc": [], "go": [], "notes": []}
    go_cache: dict[tuple[int, int], tuple[list[int], str | None]] = {}
    libc_cache: dict[tuple[int, int], tuple[int | None, str | None]] = {}
    for pid in pids:
        exe = _exe(pid)
        if exe is not None:
            try:
                st = os.stat(exe)
                key = (st.st_dev, st.st_ino)
            except OSError:
                key = None
            if key is not None:
                if key not in go_cache:
                    go_cache[key] = go_time_now_rets(exe)
                rets, why = go_cache[key]
                if why and why not in out["notes"]:
                    out["notes"].append(why)
                try:
                    for off in rets:
                        bpf.attach_uprobe(name=exe.encode(), sym=GO_SYMBOL.encode(), sym_off=off,
                                          fn_name=b"dr_go_time_now", pid=pid)
                    if rets:
                        out["go"].append(pid)
                except Exception as e:   # BCC raises bare Exception
                    out["notes"].append(f"Go clock probe on pid {pid} failed: {e}")
        libc = libc_of(pid)
        if libc is None:
            continue
        try:
            st = os.stat(libc)
            lkey = (st.st_dev, st.st_ino)
        except OSError:
            continue
        if lkey not in libc_cache:
            libc_cache[lkey] = libc_after_vdso(libc)
        at, why = libc_cache[lkey]
        if at is None:
            if why and why not in out["notes"]:
                out["notes"].append(why)
            continue
        try:
            bpf.attach_uprobe(name=libc.encode(), sym=LIBC_SYMBOL.encode(), fn_name=b"dr_libc_clock_enter", pid=pid)
            bpf.attach_uprobe(name=libc.encode(), sym=LIBC_SYMBOL.encode(), sym_off=at,
                              fn_name=b"dr_libc_clock_vdso_returned", pid=pid)
            out["libc"].append(pid)
        except Exception as e:   # BCC raises bare Exception
            out["notes"].append(f"libc clock probe on pid {pid} failed: {e}")
    return out
