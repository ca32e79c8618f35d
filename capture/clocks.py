"""Uprobes on the target's own clock functions: the time a service read (attach mode).

A process reads the clock through its vDSO (clock_gettime, gettimeofday, time):
no syscall, so the tracepoints see nothing. In attach mode dr changes nothing in
the target (spawn mode makes the vDSO enter the kernel instead), so it asks the
kernel for uprobes on the functions that call the vDSO, in the target's own
files: a uprobe is a breakpoint the kernel keeps (the process's memory, registers
and stack are as they were when it continues), and the records go into the trace
(``clock_read``, bpf/dr_clock.c) for streams replay to serve.

- **libc** ``clock_gettime``: before its call into the vDSO the clockid and the
  out-pointer are kept per thread; a second uprobe past that call (its one
  indirect call) reads the timespec and the vDSO's result. Both sit on branch
  instructions where there are some (:func:`libc_probe_points`: the kernel
  emulates those and single-steps others, tens of µs in a VM). Not a
  uretprobe: on this kernel its return trampoline is a syscall of its own
  (``uretprobe``), which the trace would then show as the target's. The
  fallback path (no vDSO) makes a real clock_gettime syscall, traced as such. ``gettimeofday`` and ``time`` are IFUNCs on x86_64
  glibc: the caller jumps straight into the vDSO, which has no file a uprobe can
  name, so those reads stay unrecorded.
- **Go** ``time.now`` (what ``time.Now`` calls; runtime/time_linux_amd64.s,
  ABIInternal) returns the REALTIME seconds, the nanoseconds and the
  CLOCK_MONOTONIC ns in AX, BX and CX: a uprobe on ``time.Now``'s first branch
  after that call while AX and BX are untouched (:func:`go_probe_points`), else
  on each RET of ``time.now``. The RET offsets
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

__all__ = ["GO_SYMBOL", "LIBC_SYMBOL", "go_probe_points", "go_time_now_rets", "libc_probe_points", "libc_of", "attach_clock_probes"]

GO_SYMBOL = "time.now"
GO_CALLER = "time.Now"
_CALLS_NOW = re.compile(r"call\s+[0-9a-f]+ <time\.now>$")
#: what may come between time.Now's call and the probed branch: plain ALU moves that
#: write one register operand, never AX or BX (the values read)
_SAFE_GO = re.compile(r"(mov|movabs|movslq|lea|add|sub|shr|shl|and|or|xor|test|cmp)[bwlq]?\s")
_WRITES_AXBX = re.compile(r",%(rax|eax|ax|al|ah|rbx|ebx|bx|bl|bh)$")
#: objdump's lines before the RET that set the result registers (Go 1.17+, amd64):
#: ``MOVQ DI, BX`` then ``ADDQ DX, CX`` (AT&T: source first), then the frame teardown
#: the assembler adds (restore BP, pop the frame), which touches neither.
_GO_EPILOGUE = (re.compile(r"mov\s+%rdi,%rbx$"), re.compile(r"add\s+%rdx,%rcx$"))
_GO_TEARDOWN = (re.compile(r"mov\s+(0x[0-9a-f]+)?\(%rsp\),%rbp$"), re.compile(r"add\s+\$0x[0-9a-f]+,%rsp$"))
_LINE = re.compile(r"^\s*([0-9a-f]+):\s+(.*?)\s*$")
LIBC_SYMBOL = "clock_gettime"
_INDIRECT_CALL = re.compile(r"call\s+\*%r\w+$")
#: direct jumps (objdump: "jne    cf460 <sym+0x40>"), conditional ones, and what writes no register
_JUMP = re.compile(r"j[a-z]+\s+((?:0x)?[0-9a-f]+) <")
_JCC = re.compile(r"j(?!mp)[a-z]+\s+((?:0x)?[0-9a-f]+) <")
_NO_WRITE = re.compile(r"(test|cmp)[bwlq]?\s")
_WRITES_ARGS = re.compile(r",%(rdi|rsi|edi|esi|di|si|dil|sil)$|^(call|syscall|push|pop)")
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
            text = m.group(2)
            j = _JUMP.match(text)
            if j:   # a direct jump's target, as an offset in the symbol too
                text = f"{text.split()[0]} {int(j.group(1), 16) - addr:#x} <"
            insns.append((int(m.group(1), 16) - addr, text))
    if not insns:
        return [], f"objdump found no instructions in {symbol} of {path}"
    return insns, None


def go_probe_points(path: str) -> tuple[str, str, list[int], str | None]:
    """Where to probe a Go program's clock reads: ``(symbol, BPF function, offsets, why)``.

    Preferred: ``time.Now``'s first conditional branch after its call to ``time.now``,
    when nothing between writes AX or BX (the REALTIME seconds and nanoseconds) and no
    jump lands in between: the kernel emulates a probed branch (about 2 µs a read here)
    but single-steps a RET (about 100 µs in this VM). It sees time.Now's reads only, not
    the runtime's own (GC statistics), and not the monotonic value (CX is already
    adjusted there). Otherwise every RET of ``time.now`` (:func:`go_time_now_rets`).
    """
    insns, _why = _disassemble(path, GO_CALLER)
    for i, (_off, text) in enumerate(insns):
        if not _CALLS_NOW.match(text):
            continue
        targets = {int(j.group(1), 0) for j in (_JUMP.match(t) for _o, t in insns) if j}
        for off, t in insns[i + 1:]:
            if any(insns[i][0] < tgt <= off for tgt in targets):
                break
            if _JCC.match(t):
                return GO_CALLER, "dr_go_time_now_caller", [off], None
            if not _SAFE_GO.match(t) or _WRITES_AXBX.search(t):
                break
        break
    rets, why = go_time_now_rets(path)
    return GO_SYMBOL, "dr_go_time_now", rets, why


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


def libc_probe_points(path: str) -> tuple[tuple[int, int] | None, str | None]:
    """Offsets in libc's ``clock_gettime`` of its two probes, ``(entry, after)``, or why not.

    ``after``: past its one indirect call (the vDSO's clock_gettime), where the caller's
    timespec holds the value; ``entry``: before that call, where its arguments are still
    in DI and SI. Each is moved to a branch instruction when one is at hand: the kernel
    emulates a probed branch, but single-steps any other instruction out of line, which
    in a VM costs tens of µs per read (measured here: 55-75 µs; a branch 1.3-1.7 µs).
    A point must not be reachable but through the path it watches (no jump lands between
    the function's start and ``entry``, nor between the call and ``after``): a stale
    entry would otherwise pair with another call's value.
    """
    insns, why = _disassemble(path, LIBC_SYMBOL)
    if not insns:
        return None, why or f"no {LIBC_SYMBOL} in {path}"
    calls = [i for i, (_o, t) in enumerate(insns) if _INDIRECT_CALL.match(t)]
    if len(calls) != 1 or calls[0] + 1 >= len(insns):
        return None, (f"{LIBC_SYMBOL} in {path} makes {len(calls)} indirect calls (one, to the "
                      "vDSO, expected): not probed")
    k = calls[0]
    targets = {int(j.group(1), 0) for j in (_JUMP.match(t) for _o, t in insns) if j}
    # entry: the first branch on the straight line from the start, before DI/SI change
    entry = 0
    for i in range(k):
        off, text = insns[i]
        if _JUMP.match(text):
            if not any(0 < tgt <= off for tgt in targets):
                entry = off
            break
        if _WRITES_ARGS.search(text):
            break
    # after: the first conditional branch past the call with only tests in between
    after = insns[k + 1][0]
    for i in range(k + 1, len(insns)):
        off, text = insns[i]
        if _JCC.match(text):
            after = off
            break
        if not _NO_WRITE.match(text):
            break
    call_off = insns[k][0]
    if any(call_off < tgt <= after for tgt in targets):
        return None, f"{LIBC_SYMBOL} in {path} has a jump into its vDSO call's return path: not probed"
    return (entry, after), None


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
    go_cache: dict[tuple[int, int], tuple[str, str, list[int], str | None]] = {}
    libc_cache: dict[tuple[int, int], tuple[tuple[int, int] | None, str | None]] = {}
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
                    go_cache[key] = go_probe_points(exe)
                sym, fn, rets, why = go_cache[key]
                if why and why not in out["notes"]:
                    out["notes"].append(why)
                try:
                    for off in rets:
                        bpf.attach_uprobe(name=exe.encode(), sym=sym.encode(), sym_off=off,
                                          fn_name=fn.encode(), pid=pid)
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
            libc_cache[lkey] = libc_probe_points(libc)
        at, why = libc_cache[lkey]
        if at is None:
            if why and why not in out["notes"]:
                out["notes"].append(why)
            continue
        try:
            bpf.attach_uprobe(name=libc.encode(), sym=LIBC_SYMBOL.encode(), sym_off=at[0],
                              fn_name=b"dr_libc_clock_enter", pid=pid)
            bpf.attach_uprobe(name=libc.encode(), sym=LIBC_SYMBOL.encode(), sym_off=at[1],
                              fn_name=b"dr_libc_clock_vdso_returned", pid=pid)
            out["libc"].append(pid)
        except Exception as e:   # BCC raises bare Exception
            out["notes"].append(f"libc clock probe on pid {pid} failed: {e}")
    return out
