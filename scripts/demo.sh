#!/usr/bin/env bash
# The README's main-job command: set up, then run the built-in demo end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${DR_VENV:-.venv}/bin/python" -m dr.demo "$@"
