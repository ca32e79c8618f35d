"""dr.capture: record a process's syscalls and payloads with eBPF (BCC).

Modules, one responsibility each:

- :mod:`dr.capture.probes`   load/attach bpf/dr_capture.c, fill its maps (the only importer of bcc)
- :mod:`dr.capture.ringbuf`  drain the BPF ring buffer by mmap, in verbatim spans
- :mod:`dr.capture.snapshot` the process and host facts written into the metadata
- :mod:`dr.capture.spawn`    spawn mode: start the command, prepare every image its tree execs
- :mod:`dr.capture.files`    files the tree mapped or executed: identified, stored
- :mod:`dr.capture.moved`    bytes sendfile & co moved from files, added at the end
- :mod:`dr.capture.advice`   loss advice naming the cause
- :mod:`dr.capture.session`  :class:`CaptureSession`: start, step, stop
- :mod:`dr.capture.summary`  :class:`Summary`: the summary record, why a trace is incomplete

Importing this package imports nothing heavy; :mod:`dr.capture.session`
imports BCC only when a capture starts.
"""
