#!/usr/bin/env bash
# Makes sure the databases the tests talk to are up on 127.0.0.1, starting the ones that
# are installed but stopped. SyVault's own NATS is embedded, so none is needed here.
set -euo pipefail

wait_for() { # name, check command...
  local name=$1; shift
  for _ in $(seq 1 60); do
    if "$@" >/dev/null 2>&1; then echo "services: $name is up"; return 0; fi
    sleep 0.5
  done
  echo "services: $name did not come up on 127.0.0.1" >&2
  return 1
}

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432; }
if ! pg_up; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  fi
fi
wait_for PostgreSQL pg_up

maria_up() { mariadb -uroot -h127.0.0.1 -P3306 -e 'SELECT 1'; }
if ! maria_up; then
  if [ -x /usr/sbin/mariadbd ]; then
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
  fi
fi
wait_for MariaDB maria_up

# The PostgreSQL driver suite starts a private cluster with scram-sha-256 auth so that
# password checks are real; it needs the server binaries.
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
if [ -z "$pgbin" ] || [ ! -x "$pgbin/initdb" ]; then
  echo "services: PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql" >&2
  exit 1
fi
echo "services: PostgreSQL binaries in $pgbin"
