"""dr: eBPF capture and deterministic replay of Linux processes.

Library layout (the CLI in :mod:`dr.cli` is a thin layer over these):

- :mod:`dr.schema`   the syscall table and the event layout, declared once
- :mod:`dr.formats`  trace and bundle files: encode, decode, validate (no kernel access)
- :mod:`dr.capture`  BCC probes, ring-buffer draining, process snapshot
- :mod:`dr.replay`   sandbox, seccomp user-notification supervisor, divergence reports
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
