#!/usr/bin/env bash
# Makes sure Debian's interpreter (/usr/bin/python3) has what the Python SDK (sdk/python)
# and its tests need: cryptography (the SDK's only dependency) and psycopg2 (used by the
# tests and the product document's sample). PyPI is not used: both come from apt.
# Idempotent; run as root (CI does).
set -euo pipefail

PY=/usr/bin/python3

have_deps() { "$PY" -c 'import cryptography, psycopg2' >/dev/null 2>&1; }

if have_deps; then
  echo "python-deps: cryptography and psycopg2 already importable by $PY"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "python-deps: run as root to install python3-cryptography and python3-psycopg2 with apt" >&2
  exit 1
fi

pkgs=(python3-cryptography python3-psycopg2)
# shellcheck source=deploy/dev/apt.sh
source "$(dirname "$0")/apt.sh"
apt_install "${pkgs[@]}"

if ! have_deps; then
  echo "python-deps: installed ${pkgs[*]} but $PY still cannot import cryptography and psycopg2" >&2
  exit 1
fi
echo "python-deps: cryptography and psycopg2 installed for $PY"
