"""Make a process's vDSO time functions enter the kernel.

clock_gettime, gettimeofday, time, getcpu and clock_getres normally run in the vDSO without a
syscall, so neither the capture's tracepoints nor replay's seccomp filter see
them. :func:`patch_vdso` rewrites each entry point with::

    mov eax, NR      ; b8 <imm32>
    syscall          ; 0f 05
    ret              ; c3

The arguments are already in rdi, rsi, rdx, the registers of the syscall ABI.
The entry points come from the vDSO's own ELF dynamic symbol table (the
``__vdso_*`` names of arch/x86/entry/vdso/vdso.lds.S), read through
/proc/TID/mem; the write goes through /proc/TID/mem too, whose FOLL_FORCE
writes the read-only, executable vDSO page (copy-on-write: only this process
sees the change). getrandom's vDSO entry (Linux 6.11) is left alone: its
callers first query a state size with an opaque length of ~0, which a plain
syscall cannot answer. x86_64 only.

Used by capture in spawn mode at every exec stop of the traced tree, and by
replay at the first notification after each execve: the same set of
functions must be patched on both sides so that the trace holds every time
read replay will see. It lives outside capture/ and replay/ so neither
imports the other.
"""

from __future__ import annotations

import os
import struct

from dr.errors import TargetError

__all__ = ["VDSO_SYSCALLS", "patch_vdso", "vdso_range", "vdso_symbols"]

#: vDSO symbol -> x86_64 syscall number it is turned into.
VDSO_SYSCALLS = {
    "__vdso_clock_gettime": 228,
    "__vdso_gettimeofday": 96,
    "__vdso_time": 201,
    "__vdso_getcpu": 309,
    "__vdso_clock_getres": 229,
}

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_PHDR = struct.Struct("<IIQQQQQQ")
_SYM = struct.Struct("<IBBHQQ")
SHT_DYNSYM = 11
PT_LOAD = 1
MAX_VDSO = 1 << 20


def vdso_range(pid: int) -> tuple[int, int] | None:
    """(start, end) of the ``[vdso]`` mapping of ``pid`` from /proc/PID/maps, or None."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                if line.rstrip().endswith("[vdso]"):
                    lo, hi = line.split()[0].split("-")
                    return int(lo, 16), int(hi, 16)
    except OSError:
        return None
    return None


def vdso_symbols(image: bytes) -> dict[str, int]:
    """Dynamic symbols of a vDSO image: name -> offset from the image start.

    Layout: the ELF64 header, section headers and symbols of elf(5). Raises
    TargetError when the image is not an ELF file we understand.
    """
    try:
        eh = _EHDR.unpack_from(image, 0)
        if eh[0][:4] != b"\x7fELF" or eh[0][4] != 2:
            raise ValueError("not ELF64")
        phoff, shoff, phentsize, phnum, shentsize, shnum = eh[5], eh[6], eh[9], eh[10], eh[11], eh[12]
        base_vaddr = 0
        for i in range(phnum):
            ph = _PHDR.unpack_from(image, phoff + i * phentsize)
            if ph[0] == PT_LOAD:
                base_vaddr = ph[3] - ph[2]  # p_vaddr - p_offset
                break
        secs = [_SHDR.unpack_from(image, shoff + i * shentsize) for i in range(shnum)]
        out: dict[str, int] = {}
        for sh in secs:
            if sh[1] != SHT_DYNSYM:
                continue
            strtab = secs[sh[6]]
            stroff, strsize = strtab[4], strtab[5]
            entsize = sh[9] or _SYM.size
            for k in range(sh[5] // entsize):
                name_off, _info, _other, shndx, value, _size = _SYM.unpack_from(image, sh[4] + k * entsize)
                if not name_off or not shndx or name_off >= strsize:
                    continue
                end = image.index(b"\0", stroff + name_off)
                out[image[stroff + name_off:end].decode("ascii", "replace")] = value - base_vaddr
        return out
    except (struct.error, ValueError, IndexError) as e:
        raise TargetError(f"cannot parse the vDSO image: {e}") from None


def patch_vdso(pid: int, names: dict[str, int] | None = None) -> dict[str, int]:
    """Patch the vDSO time functions of process ``pid`` to issue real syscalls.

    Returns {symbol: patched address}. A process without a vDSO (or with none
    of the symbols) returns {}. Raises TargetError when /proc/PID/mem cannot be
    read or written (no ptrace access, process gone).
    """
    table = VDSO_SYSCALLS if names is None else names
    rng = vdso_range(pid)
    if rng is None:
        return {}
    lo, hi = rng
    size = min(hi - lo, MAX_VDSO)
    try:
        fd = os.open(f"/proc/{pid}/mem", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        raise TargetError(f"cannot open the memory of tid {pid}: {e.strerror}") from None
    try:
        image = os.pread(fd, size, lo)
        syms = vdso_symbols(image)
        done: dict[str, int] = {}
        for name, nr in table.items():
            off = syms.get(name)
            if off is None or not 0 <= off < size - 8:
                continue
            code = b"\xb8" + struct.pack("<I", nr) + b"\x0f\x05\xc3"
            if os.pwrite(fd, code, lo + off) != len(code):
                raise TargetError(f"short write patching {name} in tid {pid}")
            done[name] = lo + off
        return done
    except OSError as e:
        raise TargetError(f"cannot patch the vDSO of tid {pid}: {e.strerror}") from None
    finally:
        os.close(fd)
