"""Type-check dr as the package it installs as: ``python scripts/typecheck.py [mypy options]``.

Plain ``mypy`` names a file by its folder, so capture/session.py is checked as
``capture.session``, and every ``from dr.capture... import`` resolves to nothing
(setuptools maps capture/ to dr.capture through package-dir; mypy cannot follow
that mapping, nor the import hook of an editable install). Imports that resolve to
nothing are Any, so types across dr.capture, dr.replay and dr.formats went
unchecked. This script hands mypy every module of
[tool.setuptools] packages under its installed name, read from the same
package-dir mapping, with the options of [tool.mypy]. Exit status as mypy's:
0 clean, 1 errors found, 2 mypy itself failed.
"""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path

from mypy import build, util
from mypy.errors import CompileError
from mypy.main import process_options
from mypy.modulefinder import BuildSource

ROOT = Path(__file__).resolve().parent.parent


def sources() -> list[BuildSource]:
    """One source per module of every installed package, named as installed."""
    st = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    out = []
    for pkg in st["packages"]:
        folder = ROOT / st["package-dir"].get(pkg, pkg.replace(".", "/"))
        for f in sorted(folder.glob("*.py")):
            mod = pkg if f.name == "__init__.py" else f"{pkg}.{f.stem}"
            out.append(BuildSource(str(f.relative_to(ROOT)), mod))
    return out


def main(argv: list[str]) -> int:
    # The options (and their error codes, cache, python version) are mypy's own
    # reading of pyproject.toml; only the file -> module naming is replaced.
    _, options = process_options(argv, require_targets=False)
    srcs = sources()
    try:
        messages = build.build(srcs, options).errors
    except CompileError as e:   # a syntax error or a broken configuration
        messages = e.messages
        print("\n".join(messages))
        return 2
    if messages:
        print("\n".join(messages))
    n_errors, _n_notes, n_files = util.count_stats(messages)
    if n_errors:
        print(f"Found {n_errors} error{'s' if n_errors != 1 else ''} in {n_files} file{'s' if n_files != 1 else ''}"
              f" (checked {len(srcs)} source files)")
        return 1
    print(f"Success: no issues found in {len(srcs)} source files")
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)   # pyproject.toml's [tool.mypy] and paths relative to the repository
    sys.exit(main(sys.argv[1:]))
