# Shared set-up for scripts/test.sh and scripts/demo.sh: installs what a fresh machine lacks.
# Sourced, not run. Every function is idempotent and quiet when nothing is missing.

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root to run: $*" >&2; return 1; fi
}

pg_bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$d" ] && [ -x "$d/initdb" ] && echo "$d"
}

# Debian's PostgreSQL server and client, Redis server and redis-cli.
ensure_system_packages() {
  local missing=()
  [ -n "$(pg_bindir)" ] || missing+=(postgresql)
  command -v psql >/dev/null || missing+=(postgresql-client)
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v redis-cli >/dev/null || missing+=(redis-tools)
  command -v python3 >/dev/null || missing+=(python3 python3-pip)
  if [ ${#missing[@]} -gt 0 ]; then
    step "installing Debian packages: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
  # The Debian packages start system-wide servers; the tests start their own.
  if command -v systemctl >/dev/null && systemctl is-active --quiet redis-server 2>/dev/null; then
    as_root systemctl stop redis-server || true
  fi
}

# cargo subcommands, pinned so every machine runs the same checks.
ensure_cargo_tool() {
  local crate=$1 version=$2 bin=${3:-$1}
  if ! command -v "$bin" >/dev/null || ! "$bin" --version 2>/dev/null | grep -q "$version"; then
    step "installing $crate $version"
    cargo install --locked --quiet "$crate" --version "$version"
  fi
}

# PyPI packages the end-to-end tests drive (psycopg, redis-py, ...).
ensure_python_packages() {
  local req=$1
  [ -s "$req" ] || return 0
  if ! python3 - "$req" <<'PY' 2>/dev/null
import sys
from importlib import metadata
import re
for line in open(sys.argv[1]):
    line = line.split('#')[0].strip()
    if not line:
        continue
    name = re.split(r'[\[<>=!~ ;]', line, maxsplit=1)[0]
    metadata.version(name)
PY
  then
    step "installing Python packages from $req"
    if ! python3 -m pip --version >/dev/null 2>&1; then
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip
    fi
    # A distribution's own Python (PEP 668) refuses installs into its site-packages: install
    # for this user instead, which that Python reads too.
    local flags=()
    if [ -f "$(python3 -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')/EXTERNALLY-MANAGED" ]; then
      flags=(--user --break-system-packages --no-warn-script-location)
    fi
    python3 -m pip install --quiet --disable-pip-version-check "${flags[@]}" -r "$req"
  fi
}

# npm packages of a helper process (the OIDC provider used by identity tests).
ensure_npm_packages() {
  local dir=$1
  [ -f "$dir/package.json" ] || return 0
  if [ ! -d "$dir/node_modules" ]; then
    command -v npm >/dev/null || { step "installing nodejs and npm"; as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; }
    step "installing npm packages in $dir"
    if [ -f "$dir/package-lock.json" ]; then
      (cd "$dir" && npm ci --no-audit --no-fund --silent)
    else
      (cd "$dir" && npm install --no-audit --no-fund --silent)
    fi
  fi
}
