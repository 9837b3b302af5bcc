#!/usr/bin/env bash
# Makes sure Debian's interpreter (/usr/bin/python3) has what the Python SDK (sdk/python)
# and its tests need: cryptography (the SDK's only dependency), psycopg2 (used by the
# tests and the product document's sample), and venv, setuptools and wheel, with which the
# README installs the SDK into a virtual environment without PyPI. PyPI is not used: all
# come from apt.
# Idempotent; run as root (CI does).
set -euo pipefail

PY=/usr/bin/python3

have_deps() { "$PY" -c 'import cryptography, psycopg2, ensurepip, setuptools, wheel' >/dev/null 2>&1; }

if have_deps; then
  echo "python-deps: cryptography, psycopg2, venv, setuptools and wheel already importable by $PY"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "python-deps: run as root to install python3-cryptography, python3-psycopg2, python3-venv, python3-setuptools and python3-wheel with apt" >&2
  exit 1
fi

pkgs=(python3-cryptography python3-psycopg2 python3-venv python3-setuptools python3-wheel)
# shellcheck source=deploy/dev/apt.sh
source "$(dirname "$0")/apt.sh"
apt_install "${pkgs[@]}"

if ! have_deps; then
  echo "python-deps: installed ${pkgs[*]} but $PY still cannot import cryptography, psycopg2, ensurepip, setuptools and wheel" >&2
  exit 1
fi
echo "python-deps: ${pkgs[*]} installed for $PY"
