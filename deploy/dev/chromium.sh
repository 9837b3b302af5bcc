#!/usr/bin/env bash
# Makes sure Debian's Chromium is installed for the dashboard's browser tests
# (cmd/syvault/ui_browser_test.go drives it headless with chromedp). It comes from apt,
# like the Python SDK's packages; no browser build is downloaded by anything else.
# Idempotent; run as root (CI does).
set -euo pipefail

# shellcheck source=deploy/dev/apt.sh
source "$(dirname "$0")/apt.sh"
ensure_tool chromium "Debian's chromium package" apt_install chromium
