"""`dr bundle create|verify|info`: the library is :mod:`dr.formats.bundle`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from dr.cli import app

bundle_app = typer.Typer(
    name="bundle",
    help="Make, check and read incident bundles: one file with the trace(s), a manifest, "
         "build-ids, a redaction report and a README.",
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="""Examples:

\b
  dr bundle create incident.drt -o incident.drb --ticket OPS-123 --note "p99 spike"
  dr bundle create incident.drt -o incident.drb --rules redact.toml --include-binaries
  dr bundle verify incident.drb
  dr bundle info incident.drb
  dr replay incident.drb
""",
)
app.add_typer(bundle_app, name="bundle")

CREATE_EPILOG = """\
Examples:

\b
  dr bundle create incident.drt -o incident.drb                 # redacted by default
  dr bundle create api.drt worker.drt -o incident.drb --ticket OPS-123 --note "p99 spike"
  dr bundle create incident.drt -o incident.drb --rules redact.toml --include-binaries
  dr bundle create incident.drt -o raw.drb --no-redact          # recorded in the manifest
"""

VERIFY_EPILOG = """\
Examples:

\b
  dr bundle verify incident.drb          # exit 0: every sha256 matches, every trace decodes
  dr bundle verify incident.drb || echo "modified or corrupt (exit 5)"
"""

INFO_EPILOG = """\
Examples:

\b
  dr bundle info incident.drb                          # README, members, binaries
  dr bundle info incident.drb --json | jq .manifest.traces
  dr bundle info incident.drb --json | jq .redaction_report
"""


@bundle_app.command("create", epilog=CREATE_EPILOG,
                     short_help="Bundle traces into one file, redacted by default.")
def create_cmd(
    traces: List[Path] = typer.Argument(..., metavar="TRACE...", help="Trace file(s) to bundle."),
    output: Path = typer.Option(..., "-o", "--output", help="Bundle file to write (e.g. incident.drb)."),
    note: Optional[str] = typer.Option(None, "--note", help="Free text for the README (redacted too)."),
    ticket: Optional[str] = typer.Option(None, "--ticket", help="Ticket id to record."),
    include_binaries: bool = typer.Option(False, "--include-binaries",
                                          help="Add the executable and loaded libraries themselves."),
    no_redact: bool = typer.Option(False, "--no-redact",
                                   help="Do not redact (recorded in the manifest)."),
    rules: Optional[Path] = typer.Option(None, "--rules", metavar="FILE",
                                         help="TOML redaction rules added to the built-in ones."),
) -> None:
    """Bundle traces into one verifiable file; redacts personal data and secrets by default."""
    from dr.formats.bundle import create, stored_files_text
    from dr.formats.stats import plural

    from dr.cli.progress import reading

    with reading("dr bundle create: reading", *traces):
        res = create([str(t) for t in traces], str(output), note=note, ticket=ticket,
                     include_binaries=include_binaries, redact=not no_redact,
                     rules=str(rules) if rules else None)
    for w in res.warnings:
        typer.echo(f"dr: warning: {w}", err=True)
    red = res.manifest["redaction"]
    if red["applied"]:
        hits = {k: v for k, v in res.report["matches"].items() if v}
        what = ", ".join(f"{k} {v}" for k, v in hits.items()) or "no matches"
        redaction = f"redacted ({red['policy']['name']}): {what}"
    else:
        redaction = "NOT redacted (--no-redact)"
    included = sum(1 for b in res.manifest['binaries'] if b.get('member'))
    # What the bytes are: the traces carry the files the programs mapped or executed.
    bundled = res.manifest["traces"]
    # Several traces: each named, or two alike read as one line said twice.
    files = [(f"{t['member'][7:]}: " if len(bundled) > 1 else "") + stored_files_text(t.get("stored_files"))
             for t in bundled if stored_files_text(t.get("stored_files"))]
    carried = "; ".join(files)
    typer.echo(f"wrote {res.path} ({plural(res.size, 'byte')}): "
               f"{plural(len(bundled), 'trace')}" + (f" (with {carried})" if carried else "")
               + f", {plural(included, 'binary', 'binaries')} included; {redaction}")


@bundle_app.command("verify", epilog=VERIFY_EPILOG,
                     short_help="Check every member's sha256 and every trace.")
def verify_cmd(bundle: Path = typer.Argument(..., metavar="FILE", help="Bundle to check.")) -> None:
    """Check every member's sha256 and that each trace decodes completely.

    Exit status 5 when a member does not match the manifest or a trace does
    not decode; 1 when FILE is missing or is not a bundle.
    """
    from dr.formats.bundle import verify
    from dr.formats.stats import plural

    res = verify(str(bundle))
    for note in res.notes:
        typer.echo(f"dr: note: {note}", err=True)
    ev = ", ".join(f"{k}: {plural(v, 'syscall')}" for k, v in res.events.items())
    n = len(res.members)
    typer.echo(f"ok: {bundle}: {plural(n, 'member')} {'matches' if n == 1 else 'match'} "
               f"the manifest; {ev}")


@bundle_app.command("info", epilog=INFO_EPILOG,
                     short_help="Show a bundle's README, members and binaries.")
def info_cmd(
    bundle: Path = typer.Argument(..., metavar="FILE", help="Bundle to describe."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
) -> None:
    """Print a bundle's summary (README and manifest facts) without extracting it."""
    import json

    from dr.formats.bundle import info

    bi = info(str(bundle))
    if as_json:
        typer.echo(json.dumps({"manifest": bi.manifest, "redaction_report": bi.report}, indent=2))
        return
    m = bi.manifest
    typer.echo(bi.readme.rstrip("\n"))
    typer.echo("")
    typer.echo(f"bundle format {m['bundle_format_version']}, dr {m.get('dr_version')}, "
               f"created {m.get('created')}")
    for name, e in m["members"].items():
        typer.echo(f"  {e['size']:>12}  {e['sha256'][:16]}  {name}")
    for b in m["binaries"]:
        typer.echo(f"  {b.get('role', 'binary'):8} {b.get('path')} build-id {b.get('build_id') or '-'}"
                   f"{'  (included)' if b.get('member') else ''}")
