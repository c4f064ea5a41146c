#!/usr/bin/env bash
# The test command: sets up what the tests need on a fresh Linux machine
# (Python 3.11, pip and gcc), then lints the Dockerfile and runs the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_venv requirements-dev.txt
ensure_chromium
echo "==> hadolint Dockerfile"
"$VENV/bin/hadolint" Dockerfile
echo "==> pytest"
exec "$PY" -m pytest "$@"
