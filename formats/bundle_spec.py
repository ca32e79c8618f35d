"""Bundle layout: member names, the caps a reader applies to hostile input, and the
values the bundle API returns (the format itself is described in :mod:`dr.formats.bundle`)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dr.formats import elf

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


#: statfs f_type of kernel filesystems whose files' bytes depend on who reads them
#: (linux/magic.h): as root, /proc/kallsyms holds the kernel's addresses (zeros for
#: other users) and /proc/self/* describe dr itself, though their mode says 0444.
KERNEL_FS = {0x9FA0: "proc", 0x62656572: "sysfs", 0x64626720: "debugfs", 0x74726163: "tracefs",
             0x73636673: "securityfs", 0x27E0EB: "cgroup", 0x63677270: "cgroup2", 0xCAFE4A11: "bpf",
             0x62656570: "configfs", 0xDE5E81E4: "efivarfs", 0x6165676C: "pstore",
             0x42494E4D: "binfmt_misc", 0x1CD1: "devpts"}


def kernel_fs(fd: int) -> str | None:
    """The name of the kernel filesystem (:data:`KERNEL_FS`) ``fd`` lies on, else None.
    OSError when fstatfs fails."""
    import ctypes
    import sys

    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on 64-bit Linux
    if libc.fstatfs(fd, buf) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return KERNEL_FS.get(int.from_bytes(buf.raw[:8], sys.byteorder, signed=True) & 0xFFFFFFFF)
