#!/usr/bin/env bash
# The README's test command: set everything up (idempotent), check that the
# generated schema files are fresh, lint, type-check, and run the suite. `.ci/run` calls this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${DR_VENV:-.venv}
"$VENV/bin/python" -m dr.schema.gen --check
# Lint and type-check (seconds) before the suite (minutes); either one's findings
# are printed and fail the command. Rules: pyproject.toml [tool.ruff], [tool.mypy].
"$VENV/bin/ruff" check .
"$VENV/bin/python" scripts/typecheck.py
exec "$VENV/bin/python" -m pytest -q tests "$@"
