# Shared by scripts/main.sh and scripts/test.sh: a virtual environment in
# .venv that is (re)installed only when the requirements it was made from change.
VENV="${BBC1K_VENV:-.venv}"
PY="$VENV/bin/python"

ensure_venv() {  # ensure_venv REQUIREMENTS_FILE...
  local stamp="$VENV/.bbc1k-requirements"
  local want
  # every requirements file, since one may include another with -r
  want=$(cat requirements*.txt pyproject.toml | sha256sum | cut -d' ' -f1)
  if [ -x "$PY" ] && [ -f "$stamp" ] && grep -qx "$want $*" "$stamp"; then
    return 0
  fi
  if [ ! -x "$PY" ]; then
    echo "==> creating the virtual environment $VENV"
    python3 -m venv "$VENV"
    "$PY" -m pip install --quiet --upgrade pip
  fi
  local f
  for f in "$@"; do
    echo "==> installing $f (the first time takes a few minutes: torch is large)"
    "$PY" -m pip install --quiet --progress-bar off -r "$f"
  done
  echo "$want $*" >"$stamp"
}

ensure_chromium() {  # the browser test drives Debian's chromium; it needs root to install
  if command -v chromium >/dev/null 2>&1; then return 0; fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing chromium for the browser test"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "==> chromium is not installed (apt-get install chromium as root): the browser test will be skipped"
  fi
}
