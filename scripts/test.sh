#!/usr/bin/env bash
# The project's one test command: scripts/test.sh [PYTEST ARGS...]
#
# 1. creates .venv with python3 if missing (reuses it otherwise) and installs
#    the package with its dev extras (pip install -e '.[dev]');
# 2. unless HUB_TEST_POSTGRES_URL is already set, starts a throwaway PostgreSQL
#    on 127.0.0.1 (scripts/pg.sh) and exports
#    HUB_TEST_POSTGRES_URL=postgresql+psycopg://carehub@127.0.0.1:PORT/carehub_test
#    (the server and its data dir are removed on exit);
#    HUB_TEST_SKIP_POSTGRES=1 skips this and runs SQLite only (no URL exported);
# 3. installs node and npm (Debian packages) when missing, for tests/clients;
#    and installs what the browser tests need when missing (chromium, chromium-driver with
#    apt-get; axe-core with npm into var/npm; HUB_TEST_SKIP_BROWSER=1 skips this);
#    installs nginx (Debian package) when missing, for tests/deploy and deploy/up.sh;
#    installs systemd (Debian package) when systemd-analyze is missing, for tests/deploy;
# 4. runs ruff and mypy (HUB_TEST_SKIP_LINT=1 skips them), then
#    `.venv/bin/python -m pytest "$@"` and exits with pytest's code.
#    "No tests collected" (pytest exit 5) counts as a failure.
#
# Environment: PYTHON (default python3) is the interpreter used to create .venv.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

log() { printf 'test.sh: %s\n' "$*" >&2; }

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

# --- virtualenv ----------------------------------------------------------------
PYTHON=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  log "creating .venv with $("$PYTHON" --version 2>&1)"
  "$PYTHON" -m venv .venv
elif ! .venv/bin/python -c 'import sys' 2>/dev/null; then
  log ".venv is broken (moved or its python is gone); recreating it"
  "$PYTHON" -m venv --clear .venv
fi
VPY=$ROOT/.venv/bin/python
"$VPY" -m pip install -q -e '.[dev]'

# --- Node (the fhir-kit-client compatibility test) -----------------------------------
# tests/clients runs fhir-kit-client with Node; its npm package is installed by the test
# itself (npm ci in tests/clients/js). A machine without node/npm gets Debian's packages.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  sudo=()
  if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
  fi
  if command -v apt-get >/dev/null && { [[ $(id -u) -eq 0 ]] || (( ${#sudo[@]} )); }; then
    log "node/npm missing; installing Debian's nodejs and npm packages"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends nodejs npm </dev/null >&2
  else
    log "node/npm missing and cannot be installed here; the fhir-kit-client test will fail"
  fi
fi

# --- PostgreSQL ------------------------------------------------------------------
PG_DIR=
# shellcheck disable=SC2317  # invoked via trap
cleanup() {
  local rc=$?
  if [[ -n $PG_DIR ]]; then
    bash "$ROOT/scripts/pg.sh" stop "$PG_DIR" || true
    rm -rf -- "$PG_DIR" || true
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {  # first free TCP port on 127.0.0.1 at or above $1
  "$VPY" - "$1" <<'EOF'
import socket, sys
start = int(sys.argv[1])
for port in range(start, min(start + 500, 65536)):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        print(port)
        sys.exit(0)
sys.exit(f"no free port in {start}..{start + 499}")
EOF
}

if [[ ${HUB_TEST_SKIP_POSTGRES:-} == 1 ]]; then
  if [[ -n ${HUB_TEST_POSTGRES_URL:-} ]]; then
    log "HUB_TEST_SKIP_POSTGRES=1: ignoring HUB_TEST_POSTGRES_URL, SQLite only"
  else
    log "HUB_TEST_SKIP_POSTGRES=1: SQLite only"
  fi
  unset HUB_TEST_POSTGRES_URL
elif [[ -n ${HUB_TEST_POSTGRES_URL:-} ]]; then
  log "using PostgreSQL from HUB_TEST_POSTGRES_URL"
else
  PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/carehub-pg.XXXXXX")
  port=55432
  for attempt in 1 2 3 4 5; do
    port=$(free_port "$port")
    rc=0
    bash "$ROOT/scripts/pg.sh" start "$PG_DIR" "$port" || rc=$?
    (( rc == 75 && attempt < 5 )) || break   # 75: lost a race for the port, try the next one
    port=$((port + 1))
  done
  if (( rc != 0 )); then
    log "could not start PostgreSQL (set HUB_TEST_SKIP_POSTGRES=1 to run SQLite-only tests)"
    exit "$rc"
  fi
  export HUB_TEST_POSTGRES_URL="postgresql+psycopg://carehub@127.0.0.1:$port/carehub_test"
  log "HUB_TEST_POSTGRES_URL=$HUB_TEST_POSTGRES_URL"
fi

# --- the browser tests' tools ---------------------------------------------------------
# Debian's chromium and chromium-driver (apt-get, when missing and running as root, as CI
# does) and axe-core from npm into var/npm (gitignored). HUB_TEST_SKIP_BROWSER=1 skips this;
# without the tools tests/ui/test_browser.py skips (under CI=1 it fails).
if [[ ${HUB_TEST_SKIP_BROWSER:-} != 1 ]]; then
  apt_install() {
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
      log "installing $* with apt-get"
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq </dev/null >/dev/null && apt-get install -y -qq "$@" </dev/null >/dev/null \
        || log "apt-get install $* failed"
    else
      log "$* missing and apt-get is not available to this user"
    fi
  }
  if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    apt_install chromium chromium-driver
  fi
  if [[ ! -f var/npm/node_modules/axe-core/axe.min.js ]]; then
    command -v npm >/dev/null || apt_install npm
    if command -v npm >/dev/null; then
      mkdir -p var/npm
      npm install --silent --no-audit --no-fund --no-save --prefix var/npm axe-core@4 </dev/null \
        || log "npm install axe-core failed"
    fi
  fi
fi

# --- nginx and systemd-analyze (tests/deploy) ---------------------------------------------------
# Debian's packages with apt-get when missing and running as root, as CI does; without them
# the tests that need them skip (under CI=1 they fail).
apt_install() {  # package, what it is for
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    log "installing $1 with apt-get ($2)"
    { DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$1"; } </dev/null >/dev/null \
      || log "apt-get install $1 failed"
  else
    log "$1 missing and apt-get is not available to this user"
  fi
}
# deploy/nginx/carehub.conf's pools (deploy/up.sh needs nginx too)
if ! command -v nginx >/dev/null && [[ ! -x /usr/sbin/nginx ]]; then
  apt_install nginx "deploy/nginx's pools"
fi
# deploy/systemd's units as systemd reads them: only `systemd-analyze verify`, nothing started
if ! command -v systemd-analyze >/dev/null; then
  apt_install systemd "systemd-analyze for deploy/systemd's units"
fi

# --- lint and types ----------------------------------------------------------------
# ruff and mypy --strict (settings in pyproject.toml); HUB_TEST_SKIP_LINT=1 skips them.
if [[ ${HUB_TEST_SKIP_LINT:-} != 1 ]]; then
  "$ROOT/.venv/bin/ruff" check --quiet
  "$ROOT/.venv/bin/mypy"
  "$ROOT/.venv/bin/lint-imports"   # the consent gate cannot be bypassed (pyproject.toml)
fi

# --- pytest ------------------------------------------------------------------------
rc=0
"$VPY" -m pytest "$@" || rc=$?
if (( rc == 5 )); then
  log "pytest collected no tests (exit 5): treated as a failure"
fi
exit "$rc"
