"""``dr stats`` output: the per-syscall, per-file and per-thread tables of a
:class:`~dr.formats.stats.Stats` (rich tables on a terminal, plain text otherwise)."""

from __future__ import annotations

from typing import TextIO

from dr.formats.stats import Stats, file_groups, plural, process_name

# --------------------------------------------------------------------------- output


def _us(ns: int) -> str:
    """ns as µs text with 1 decimal (3 for sub-µs values)."""
    return f"{ns / 1000:.1f}" if ns >= 1000 or ns == 0 else f"{ns / 1000:.3f}"


def _bytes(n: int) -> str:
    return f"{n:,}"


#: Rows per table when the user gives no --top: a long trace has thousands of
#: files and connections; the JSON document always has them all.
DEFAULT_TOP = 20


def render(st: Stats, out: TextIO, *, rich_output: bool | None = None,
           top: int = DEFAULT_TOP) -> None:
    """Print ``st`` as tables on ``out``: rich tables on a terminal, plain text otherwise.

    ``top`` > 0 limits each table to its first rows and says how many were left
    out (0: all).
    """
    from rich import box
    from rich.console import Console
    from rich.table import Table

    tty = out.isatty() if rich_output is None else rich_output
    class _Console(Console):
        def on_broken_pipe(self) -> None:
            # rich exits 1 on its own here; the reader going away is the caller's
            # to judge (the CLI: success, as for every command).
            self.quiet = True
            raise BrokenPipeError(32, "Broken pipe")

    con = _Console(file=out, force_terminal=tty, no_color=not tty, highlight=False,
                  width=None if tty else 200, soft_wrap=not tty)

    def table(title: str, *cols: str, left: tuple[str, ...] = (), flex: tuple[str, ...] = ()) -> Table:
        t = Table(title=title if tty else None, box=box.SIMPLE_HEAD if tty else None,
                  show_edge=tty, pad_edge=False, title_justify="left", header_style="bold" if tty else "")
        for c in cols:
            right = c not in left
            # Numbers never wrap or shrink; on a narrow terminal the text columns
            # (file, peer, top) give way first.
            flexible = c in flex
            t.add_column(c, justify="right" if right else "left", no_wrap=not (tty and flexible),
                         min_width=12 if flexible else len(c), overflow="fold" if tty else "ellipsis")
        return t

    def lim(rows: list) -> list:
        return rows[:top] if top else rows

    def more(rows: list) -> None:
        if top and len(rows) > top:
            con.print(f"... and {len(rows) - top:,} more (--top 0 shows all)")

    def heading(text: str) -> None:
        if not tty:
            con.print(text)

    m = st.meta
    dur = max(0, st.last_ns - st.first_ns)
    what = " ".join(str(a) for a in m.get("argv") or []) or process_name(m)
    con.print(f"trace {st.path}: {plural(st.events, 'syscall')}, {plural(st.errors, 'error')}, "
              f"{dur / 1e9:.3f} s, {plural(len(st.threads), 'thread')}"
              + (f", mode {m['mode']}" if m.get("mode") else "") + (f" — {what}" if what else ""))
    if st.truncated:
        con.print(f"note: the trace was cut short {st.cut_where}; these numbers cover what was read")

    t = table("syscalls", "syscall", "calls", "errors", "p50 µs", "p99 µs", "max µs", "total µs",
              left=("syscall", "errors"), flex=("errors",))
    for s in lim(st.syscalls):
        errs = ", ".join(f"{k} {v}" for k, v in sorted(s.errors.items(), key=lambda kv: -kv[1]))
        t.add_row(s.name, f"{s.count:,}", errs or "-", _us(s.p50_ns), _us(s.p99_ns), _us(s.max_ns),
                  _us(s.total_ns))
    con.print()
    heading("syscalls")
    con.print(t)
    more(st.syscalls)

    groups = file_groups(st)
    if groups:
        t = table("bytes per file", "file", "opens", "in", "out", "reads", "writes", "fds",
                  left=("file", "fds"), flex=("file", "fds"))
        for g in lim(groups):
            fds = ",".join(g.fds[:3]) + (f",... {len(g.fds) - 3} more" if len(g.fds) > 3 else "")
            t.add_row(g.label, f"{g.opens:,}", _bytes(g.bytes_in), _bytes(g.bytes_out),
                      f"{g.calls_in:,}", f"{g.calls_out:,}", fds)
        con.print()
        heading("bytes per file (same path or peer together; fds as tgid:fd)")
        con.print(t)
        more(groups)

    conns = st.connections
    if conns:
        t = table("connections", "proto", "local", "peer", "in", "out", "fd",
                  left=("proto", "local", "peer", "fd"), flex=("peer",))
        for f in lim(conns):
            t.add_row(f.proto or "?", f.local or "?", f.peer or ("several" if f.peers else "?"),
                      _bytes(f.bytes_in), _bytes(f.bytes_out), ",".join(f.fds))
            for addr, (bi, bo) in sorted(f.peers.items()):
                t.add_row("", "", "  " + addr, _bytes(bi), _bytes(bo), "")
        con.print()
        heading("connections")
        con.print(t)
        more(conns)

    one_process = len({th.tgid for th in st.threads}) <= 1
    cols = ["tid"] + ([] if one_process else ["tgid"]) + ["name", "syscalls", "errors", "sys µs",
                                                          "in", "out", "top"]
    t = table("threads", *cols, left=("name", "top"), flex=("top", "name"))
    for th in lim(st.threads):
        topn = ", ".join(f"{n} {c}" for n, c in sorted(th.by_name.items(), key=lambda kv: (-kv[1], kv[0]))[:2])
        row = [str(th.tid)] + ([] if one_process else [str(th.tgid)]) + [
            th.name or "", f"{th.syscalls:,}", f"{th.errors:,}", _us(th.time_in_syscalls_ns),
            _bytes(th.bytes_in), _bytes(th.bytes_out), topn]
        t.add_row(*row)
    con.print()
    heading("threads")
    con.print(t)
    more(st.threads)

    con.print()
    if st.losses and st.lost:
        con.print("losses: " + ", ".join(f"{k} {v:,}" for k, v in sorted(st.losses.items()) if v)
                  + f" (total {st.lost:,})" + ("; and the trace was cut short" if st.truncated else ""))
    elif st.truncated:
        # Not "none": whatever the capture recorded after the cut is missing from every table.
        con.print(f"losses: trace cut short {st.cut_where}; none counted in what was read")
    else:
        con.print("losses: none")
    if st.flagged:
        con.print("flagged events: " + ", ".join(f"{k} {v:,}" for k, v in sorted(st.flagged.items())))
    if st.proc_events:
        con.print("process events: " + ", ".join(f"{k} {v:,}" for k, v in sorted(st.proc_events.items())))
