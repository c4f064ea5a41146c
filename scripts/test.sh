#!/usr/bin/env bash
# The test command: sets up what the tests need on a fresh Linux machine
# (Python 3.11, pip and gcc), then lints the Dockerfile and runs the tests; as root
# with apt-get, the tests include building and running the Docker image with podman
# and two app replicas behind HAProxy.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_venv requirements-dev.txt
compile_venv
ensure_chromium
ensure_podman
ensure_haproxy
echo "==> hadolint Dockerfile"
"$VENV/bin/hadolint" Dockerfile
echo "==> pytest"
exec "$PY" -m pytest "$@"
