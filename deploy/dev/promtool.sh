#!/usr/bin/env bash
# Makes sure promtool is on PATH for the Prometheus rules' tests (deploy/prometheus,
# deploy/deploytest's TestPrometheusRules). It is taken out of Debian's prometheus package
# rather than installing that package, whose scripts would start a Prometheus server.
# Idempotent; run as root (CI does).
set -euo pipefail

# shellcheck source=deploy/dev/apt.sh
source "$(dirname "$0")/apt.sh"

# promtool_from_deb puts the package's promtool in /usr/local/bin.
promtool_from_deb() {
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-cache show prometheus >/dev/null 2>&1; then
    apt-get update
  fi
  local work
  work=$(mktemp -d)
  # Once more on fresh lists when the download fails on stale ones (a mirror that moved on).
  if ! (cd "$work" && apt-get download prometheus); then
    apt-get update
    (cd "$work" && apt-get download prometheus)
  fi
  dpkg -x "$work"/prometheus_*.deb "$work/pkg"
  install -m 0755 "$work/pkg/usr/bin/promtool" /usr/local/bin/promtool
  rm -rf "$work"
}

ensure_tool promtool "Debian's prometheus package" promtool_from_deb
