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
  # --no-compile: pip would byte-compile every module of every package (torch's thousands) up front,
  # 3 min 16 s -> 2 min 6 s on 2 cores; Python compiles what it imports (see compile_venv for the tests).
  for f in "$@"; do
    echo "==> installing $f (the first time takes a few minutes: torch is large)"
    "$PY" -m pip install --quiet --progress-bar off --no-compile -r "$f"
  done
  echo "$want $*" >"$stamp"
}

compile_venv() {  # byte-compile the environment once: the tests start many Python processes, and
  # where PYTHONDONTWRITEBYTECODE is set each compiled what it imports again (CI: pytest 15.8 min, not 10.4)
  local stamp="$VENV/.bbc1k-compiled"
  if [ -f "$stamp" ] && [ "$stamp" -nt "$VENV/.bbc1k-requirements" ]; then
    return 0
  fi
  echo "==> byte-compiling the environment (once)"
  # some packages ship files for other Pythons that do not compile: reported quietly, not fatal
  "$PY" -m compileall -q -j 0 "$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
    >/dev/null 2>&1 || true
  touch "$stamp"
}

apt_install() {  # apt_install WHAT PACKAGE...: Debian packages for WHAT as root with apt-get, else WHAT is skipped
  local what=$1
  shift
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing $* for $what"
    if [ -z "${BBC1K_APT_UPDATED:-}" ]; then  # once per run: the lists are fresh for the next call
      apt-get update -qq || return
      BBC1K_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    echo "==> $* not installed (apt-get install $* as root): $what will be skipped"
  fi
}

ensure_chromium() {  # the browser test drives Debian's chromium
  command -v chromium >/dev/null 2>&1 || apt_install "the browser test" chromium
}

ensure_podman() {  # the image test builds and runs the Dockerfile with Debian's podman, runc and debootstrap
  command -v podman >/dev/null 2>&1 && command -v runc >/dev/null 2>&1 && command -v debootstrap >/dev/null 2>&1 \
    || apt_install "the image test" podman runc debootstrap
}

ensure_haproxy() {  # the replica test puts Debian's haproxy in front of two app processes
  command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || apt_install "the replica test" haproxy
}
