"""The human side of a bundle: its README.md and the sizes and stored-file lines
``dr bundle create`` prints (gathered facts come from :class:`dr.formats.bundle._Stats`)."""

from __future__ import annotations

import datetime as _dt
from typing import TYPE_CHECKING, Any

from dr.formats import sockaddr

if TYPE_CHECKING:
    from dr.formats.bundle import _Stats


def _fmt_ns(ns: int | None) -> str:
    if not isinstance(ns, int) or ns < 0:
        return "unknown"
    s = ns / 1e9
    return f"{s:.3f} s" if s < 120 else f"{s / 60:.1f} min"


def _wall(meta: dict[str, Any], mono_ns: Any) -> str | None:
    """Wall-clock ISO time of a CLOCK_MONOTONIC timestamp, from the meta's clock offsets."""
    if not isinstance(mono_ns, int):
        return None
    for key in ("clock", "clocks", "clock_offsets"):
        c = meta.get(key)
        if isinstance(c, dict) and isinstance(c.get("realtime_ns"), int):
            t = (mono_ns + c["realtime_ns"]) / 1e9
            return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).isoformat(timespec="seconds")
    return None


def _sockaddr(b: bytes | None) -> str | None:
    """Text form of a struct sockaddr (see :mod:`dr.formats.sockaddr`)."""
    return sockaddr.text(b)


def human_size(n: float) -> str:
    """1.1 MiB, 36.0 KiB, 512 B."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def stored_files_text(sf: Any) -> str:
    """A trace's ``stored_files`` (manifest) in words: "12 files' bytes, 1.1 MiB: 1 stored
    by dr capture, 11 added from this host at bundle time"; "" when it carries none."""
    if not isinstance(sf, dict) or not sf.get("files"):
        return ""
    n = sf["files"]
    parts = []
    for key, words in (("stored_by_capture", "stored by dr capture"),
                       ("added_at_bundle_time", "added from this host at bundle time")):
        k = (sf.get(key) or {}).get("files") or 0
        if k:
            parts.append(f"{'all' if k == n and n > 1 else k} {words}")
    return (f"{n} {'file' if n == 1 else 'files'}' bytes, {human_size(sf.get('bytes') or 0)}"
            + (f": {', '.join(parts)}" if parts else ""))


def _listening(f: dict) -> bool:
    """A socket of the fd snapshot that listens: state LISTEN, or a TCP peer of all zeros."""
    if f.get("state") == "LISTEN":
        return True
    peer = str(f.get("peer") or "")
    return peer in ("0.0.0.0:0", "[::]:0", ":::0", "::0")


def _readme(manifest: dict[str, Any], per_trace: list[tuple[dict, _Stats, dict]],
            report: dict[str, Any]) -> str:
    L = ["# dr incident bundle", ""]
    if manifest.get("ticket"):
        L.append(f"Ticket: {manifest['ticket']}  ")
    if manifest.get("note"):
        L.append(f"Note: {manifest['note']}  ")
    h = manifest["host"]
    L += [f"Bundled {manifest['created']} on {h['hostname']} (Linux {h['kernel']}, {h['arch']}, "
          f"{h['cpu'].get('model', 'unknown')}) by dr {manifest['dr_version']}.", ""]
    for tinfo, st, meta in per_trace:
        cap = tinfo["capture"]
        L.append(f"## {tinfo['member']}")
        L.append("")
        argv = " ".join(str(a) for a in (meta.get("argv") or [])) or "unknown"
        L.append(f"- What: `{argv[:300]}` (pid {cap.get('pid')}, {cap.get('mode')} mode, "
                 f"exe {cap.get('exe') or 'unknown'})")
        L.append(f"- When: {cap.get('started') or 'unknown'}, on {cap.get('hostname') or 'unknown'} "
                 f"(Linux {cap.get('kernel') or 'unknown'})")
        L.append(f"- How long: {_fmt_ns(cap.get('duration_ns'))}; {tinfo['events']} syscalls; "
                 f"{'complete' if tinfo['complete'] else str(tinfo.get('cut_short')).replace('cut short', 'CUT SHORT', 1)}")
        losses = tinfo.get("losses") or {}
        lost = sum(v for v in losses.values() if isinstance(v, int))
        L.append("- Losses: " + ("none" if not lost else ", ".join(f"{k} {v}" for k, v in
                                                                      sorted(losses.items()))))
        sf = tinfo.get("stored_files") or {}
        if sf.get("files"):
            L.append(f"- Files inside the trace: {stored_files_text(sf)}; the bytes of files the "
                     "programs mapped or executed, which dr replay uses instead of the replay host's")
            for f in sf["list"][:10]:
                L.append(f"  - `{f.get('path') or f['sha256'][:16]}` {human_size(f['bytes'])}"
                         f"{' (from this host)' if f.get('source') == 'host' else ''}")
            if len(sf["list"]) > 10:
                L.append(f"  - ... and {len(sf['list']) - 10} more (manifest.json: traces[].stored_files)")
        else:
            L.append("- Files inside the trace: none (replay uses the replay host's files)")
        L += ["", "Top syscalls:", "", "| syscall | count |", "|---|---:|"]
        for name, n in st.syscalls.most_common(10):
            L.append(f"| {name} | {n} |")
        L.append("")
        conns = sorted(st.connections.items(), key=lambda kv: (-kv[1], kv[0]))
        fds = [f for f in (meta.get("fds") or []) if isinstance(f, dict) and (f.get("peer") or f.get("state") == "LISTEN")]
        L.append("Connections:")
        L.append("")
        if not conns and not fds:
            L.append("- none recorded")
        for (kind, addr), n in conns[:20]:
            L.append(f"- {kind} {addr} ({n}x)")
        if len(conns) > 20:
            L.append(f"- ... and {len(conns) - 20} more (dr stats lists them all)")
        for f in fds[:20]:
            if _listening(f):  # /proc/net shows a listener's peer as 0.0.0.0:0
                L.append(f"- open at start: fd {f.get('fd')} listening on {f.get('local')}")
            else:
                L.append(f"- open at start: fd {f.get('fd')} {f.get('local')} -> {f.get('peer')}")
        if len(fds) > 20:
            L.append(f"- ... and {len(fds) - 20} more open at start")
        L.append("")
    bins = manifest.get("binaries") or []
    inc = sum(1 for b in bins if b.get("member"))
    L.append(f"Binaries: {len(bins)} recorded by identity (path, build-id, sha256); "
             + (f"{inc} included under binaries/." if inc else
                "none included as members (dr bundle create --include-binaries adds them)."))
    L.append("")
    red = manifest["redaction"]
    if red["applied"]:
        counts = ", ".join(f"{k} {v}" for k, v in report.get("matches", {}).items() if v) or "no matches"
        L.append(f"Redaction: applied (policy {red['policy']['name']}): {counts}. "
                 "Masked bytes read as `*`; see redaction-report.json.")
    else:
        L.append("Redaction: NOT applied (--no-redact). This bundle may hold personal data and secrets.")
    L.append("")
    L.append("Check it with `dr bundle verify`; replay it with `dr replay` on this file.")
    return "\n".join(L) + "\n"
