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

export DEBIAN_FRONTEND=noninteractive
pkgs=(python3-cryptography python3-psycopg2)

# Only refresh the package lists when apt does not know a package yet.
need_update=0
for p in "${pkgs[@]}"; do
  if ! apt-cache show "$p" >/dev/null 2>&1; then need_update=1; fi
done
if [ "$need_update" -eq 1 ]; then
  apt-get update
fi
if ! apt-get install -y --no-install-recommends "${pkgs[@]}"; then
  # Stale package lists (e.g. a mirror moved on): refresh once and retry.
  apt-get update
  apt-get install -y --no-install-recommends "${pkgs[@]}"
fi

if ! have_deps; then
  echo "python-deps: installed ${pkgs[*]} but $PY still cannot import cryptography and psycopg2" >&2
  exit 1
fi
echo "python-deps: cryptography and psycopg2 installed for $PY"
