"""nginx with the distribution's configuration serving a small static site, for tests and bench.

:func:`make_site` writes a directory holding ``nginx.conf`` — Debian's
``/etc/nginx/nginx.conf`` as installed (``user www-data``, ``worker_processes
auto``, ``sendfile on``, ``gzip on``, its log paths) with two lines changed so
that several copies can run at once: the pid file, and the include of
``sites-enabled/*`` replaced by this site's server block — plus the site: an
index page, a larger file (sent with sendfile), and ``location = /msec``
answering nginx's ``$msec`` (the time of the request, ms resolution).

The directory is made under /var/lib/dr-tests, not /tmp: the replay sandbox
gives the program a fresh /tmp, and the replayed nginx must find the same
files.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

__all__ = ["make_site", "BASE"]

BASE = "/var/lib/dr-tests"


def make_site(port: int, workers: int | None = None, user: str | None = None,
              logs: str | None = None) -> Path:
    """Write the site for ``127.0.0.1:port``; returns its directory (remove it with shutil.rmtree).

    ``workers``/``user``/``logs``: override ``worker_processes``, ``user`` and the
    log directory (None keeps the distribution's). Raises OSError when
    /etc/nginx/nginx.conf is missing.
    """
    conf = Path("/etc/nginx/nginx.conf").read_text()
    os.makedirs(BASE, exist_ok=True)
    d = Path(tempfile.mkdtemp(prefix="nginx-", dir=BASE))
    d.chmod(0o755)  # the workers (www-data) read the site
    conf = re.sub(r"(?m)^pid .*;$", f"pid {d}/nginx.pid;", conf)
    conf = re.sub(r"(?m)^(\s*)include /etc/nginx/sites-enabled/\*;", rf"\1include {d}/site.conf;", conf)
    if workers is not None:
        conf = re.sub(r"(?m)^worker_processes .*;$", f"worker_processes {workers};", conf)
    if user is not None:
        conf = re.sub(r"(?m)^user .*;$", f"user {user};", conf)
    if logs is not None:
        conf = conf.replace("/var/log/nginx/", logs.rstrip("/") + "/")
    (d / "nginx.conf").write_text(conf)
    (d / "site.conf").write_text(
        "server {\n"
        f"\tlisten 127.0.0.1:{port};\n"
        f"\troot {d}/www;\n"
        "\tindex index.html;\n"
        '\tlocation = /msec { default_type text/plain; return 200 "$msec\\n"; }\n'
        "}\n")
    www = d / "www"
    www.mkdir()
    www.chmod(0o755)
    (www / "index.html").write_text("<html><body>" + "hello from nginx " * 40 + "</body></html>\n")
    (www / "big.txt").write_text("".join(f"line {i:05d} of a static file\n" for i in range(2000)))
    for f in www.iterdir():
        f.chmod(0o644)
    return d


def remove_site(d: Path) -> None:
    """Remove a directory :func:`make_site` wrote."""
    if str(d).startswith(BASE + "/"):
        shutil.rmtree(d, ignore_errors=True)
