#!/usr/bin/env bash
# PostgreSQL for the stack. On the first start (an empty $PGDATA) it creates the cluster, whose superuser is
# $POSTGRES_USER with $POSTGRES_PASSWORD, and the databases in $POSTGRES_DATABASES (space-separated). Clients
# log in with a password (scram-sha-256) from anywhere on the network; production uses a managed PostgreSQL.
set -euo pipefail
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD (the env file)}"
user="${POSTGRES_USER:-ct}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  secret="$(mktemp)"
  printf '%s\n' "$POSTGRES_PASSWORD" >"$secret"
  initdb -D "$PGDATA" -U "$user" --pwfile="$secret" --encoding=UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$secret"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
  for database in ${POSTGRES_DATABASES:-}; do
    createdb -U "$user" "$database"
    echo "postgres: created database $database"
  done
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -c max_connections="${POSTGRES_MAX_CONNECTIONS:-300}"
