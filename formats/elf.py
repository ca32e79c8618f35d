"""ELF facts dr records about binaries: the GNU build-id. No kernel access.

Layout: elf(5) and <elf.h> — the ELF header gives the program header table;
PT_NOTE segments hold notes (u32 namesz, descsz, type; name and desc padded
to 4 bytes); NT_GNU_BUILD_ID (3) with name "GNU" carries the build-id.
"""

from __future__ import annotations

import os
import struct

PT_NOTE = 4
NT_GNU_BUILD_ID = 3


def build_id(path: str | os.PathLike[str]) -> str | None:
    """The GNU build-id (hex) of ELF file ``path``, or None when it has none.

    32- and 64-bit, either byte order. Raises OSError when the file cannot be read.
    """
    with open(path, "rb") as f:
        ident = f.read(64)
        if len(ident) < 52 or ident[:4] != b"\x7fELF":
            return None
        e = "<" if ident[5] == 1 else ">"
        if ident[4] == 2:
            phoff, = struct.unpack_from(e + "Q", ident, 32)
            phentsize, phnum = struct.unpack_from(e + "HH", ident, 54)
            ph = struct.Struct(e + "IIQQQQQQ")
        elif ident[4] == 1:
            phoff, = struct.unpack_from(e + "I", ident, 28)
            phentsize, phnum = struct.unpack_from(e + "HH", ident, 42)
            ph = struct.Struct(e + "IIIIIIII")
        else:
            return None
        if phentsize < ph.size or phnum > 512:
            return None
        f.seek(phoff)
        table = f.read(phentsize * phnum)
        for i in range(phnum):
            if (i + 1) * phentsize > len(table):
                break
            fields = ph.unpack_from(table, i * phentsize)
            if fields[0] != PT_NOTE:
                continue
            if ident[4] == 2:
                off, size = fields[2], fields[5]
            else:
                off, size = fields[1], fields[4]
            if size > 1 << 20:
                continue
            f.seek(off)
            notes = f.read(size)
            pos = 0
            while pos + 12 <= len(notes):
                namesz, descsz, ntype = struct.unpack_from(e + "III", notes, pos)
                pos += 12
                name = notes[pos:pos + namesz]
                pos += (namesz + 3) & ~3
                desc = notes[pos:pos + descsz]
                pos += (descsz + 3) & ~3
                if ntype == NT_GNU_BUILD_ID and name.rstrip(b"\0") == b"GNU":
                    return desc.hex()
    return None
