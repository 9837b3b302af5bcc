# Sourced by the deploy/dev scripts that install Debian packages for the tests.

# apt_install PKG... installs the packages, refreshing the package lists only when apt
# does not know one of them yet, and once more when the install fails on stale lists
# (a mirror that moved on).
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  local p need_update=0
  for p in "$@"; do
    if ! apt-cache show "$p" >/dev/null 2>&1; then need_update=1; fi
  done
  if [ "$need_update" -eq 1 ]; then
    apt-get update
  fi
  if ! apt-get install -y --no-install-recommends "$@"; then
    apt-get update
    apt-get install -y --no-install-recommends "$@"
  fi
}

# tool_present NAME prints NAME's version and succeeds when NAME is on PATH.
tool_present() {
  command -v "$1" >/dev/null 2>&1 || return 1
  echo "$1: $("$1" --version 2>/dev/null | head -n 1 || echo installed)"
}

# ensure_tool NAME WHAT INSTALL... runs INSTALL (as root) unless NAME is on PATH already,
# and fails unless it is afterwards; WHAT says where NAME comes from.
ensure_tool() {
  local name=$1 what=$2
  shift 2
  if tool_present "$name"; then
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "$name: run as root to install it from $what" >&2
    exit 1
  fi
  "$@"
  if ! tool_present "$name"; then
    echo "$name: installed $what but there is still no $name on PATH" >&2
    exit 1
  fi
}
