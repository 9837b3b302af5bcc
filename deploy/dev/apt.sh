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
