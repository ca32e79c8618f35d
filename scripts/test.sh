#!/usr/bin/env bash
# The README's test command: set everything up (idempotent), check that the
# generated schema files are fresh, and run the suite. `.ci/run` calls this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${DR_VENV:-.venv}
"$VENV/bin/python" -m dr.schema.gen --check
exec "$VENV/bin/python" -m pytest -q tests "$@"
