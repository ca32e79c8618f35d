"""The vDSO patcher moved to :mod:`dr.vdso` (shared by capture and replay); re-exported here."""

from dr.vdso import VDSO_SYSCALLS, patch_vdso, vdso_range, vdso_symbols

__all__ = ["VDSO_SYSCALLS", "patch_vdso", "vdso_range", "vdso_symbols"]
