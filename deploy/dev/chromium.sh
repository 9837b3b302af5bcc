#!/usr/bin/env bash
# Makes sure Debian's Chromium is installed for the dashboard's browser tests
# (cmd/syvault/ui_browser_test.go drives it headless with chromedp). It comes from apt,
# like the Python SDK's packages; no browser build is downloaded by anything else.
# Idempotent; run as root (CI does).
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
  echo "chromium: $(chromium --version 2>/dev/null || echo installed)"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "chromium: run as root to install Debian's chromium package with apt" >&2
  exit 1
fi

# shellcheck source=deploy/dev/apt.sh
source "$(dirname "$0")/apt.sh"
apt_install chromium

if ! command -v chromium >/dev/null 2>&1; then
  echo "chromium: installed the chromium package but there is still no chromium on PATH" >&2
  exit 1
fi
echo "chromium: $(chromium --version 2>/dev/null || echo installed)"
