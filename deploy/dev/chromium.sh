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

export DEBIAN_FRONTEND=noninteractive
# Only refresh the package lists when apt does not know the package yet.
if ! apt-cache show chromium >/dev/null 2>&1; then
  apt-get update
fi
if ! apt-get install -y --no-install-recommends chromium; then
  # Stale package lists (e.g. a mirror moved on): refresh once and retry.
  apt-get update
  apt-get install -y --no-install-recommends chromium
fi

if ! command -v chromium >/dev/null 2>&1; then
  echo "chromium: installed the chromium package but there is still no chromium on PATH" >&2
  exit 1
fi
echo "chromium: $(chromium --version 2>/dev/null || echo installed)"
