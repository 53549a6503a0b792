#!/usr/bin/env bash
# PostgreSQL for the stack. On the first start (an empty $PGDATA) it creates the cluster, whose superuser is
# $POSTGRES_USER with $POSTGRES_PASSWORD. On any start until they all exist (a first start killed part way, a
# name added to the list since), it creates the databases in $POSTGRES_DATABASES (space-separated) that are
# missing: a first start killed between two of them left a cluster that passed its health check without the
# others, for good. Clients log in with a password (scram-sha-256) from anywhere on the network; production
# uses a managed PostgreSQL.
set -euo pipefail
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD (the env file)}"
user="${POSTGRES_USER:-ct}"
done_file="$PGDATA/ct-databases"  # the databases made so far; written once all of them exist
wanted="${POSTGRES_DATABASES:-}"
for database in $wanted; do
  [[ $database =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || {
    echo "postgres: POSTGRES_DATABASES holds '$database', not a plain database name" >&2
    exit 2
  }
done
# The cluster is made in $staged, then moved into $PGDATA with its PG_VERSION last: PG_VERSION in $PGDATA means
# a whole cluster. initdb writes PG_VERSION first, so one killed part way in $PGDATA itself (a compose down,
# the OOM killer) left a cluster that every later start took for made and that PostgreSQL could not run.
staged="$PGDATA/.initdb"
staged_whole="$PGDATA/.initdb-whole"  # initdb finished in $staged: what is left is a move, resumed at a start
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  mkdir -p "$PGDATA"
  chmod 700 "$PGDATA"
  if [ ! -e "$staged_whole" ]; then
    stray="$(find "$PGDATA" -mindepth 1 -maxdepth 1 ! -name .initdb ! -name lost+found -print -quit)"
    if [ -n "$stray" ]; then
      echo "postgres: $PGDATA holds $stray but no cluster (no PG_VERSION); empty it or set PGDATA to an empty folder" >&2
      exit 2
    fi
    rm -rf "$staged"  # an initdb killed part way
    secret="$(mktemp)"
    trap 'rm -f "$secret"' EXIT
    printf '%s\n' "$POSTGRES_PASSWORD" >"$secret"
    initdb -D "$staged" -U "$user" --pwfile="$secret" --encoding=UTF8 --locale=C.UTF-8 \
      --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$secret"
    trap - EXIT
    touch "$staged_whole"
  fi
  find "$staged" -mindepth 1 -maxdepth 1 ! -name PG_VERSION -exec mv -t "$PGDATA" {} +
  mv "$staged/PG_VERSION" "$PGDATA/PG_VERSION"
fi
if [ -e "$staged_whole" ]; then  # moved: the staging is empty (a start killed here removed it, or not)
  [ ! -d "$staged" ] || rmdir "$staged"
  rm "$staged_whole"
fi
if [ ! -f "$done_file" ] || [ "$(cat "$done_file")" != "$wanted" ]; then
  grep -qxF "host all all all scram-sha-256" "$PGDATA/pg_hba.conf" ||
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
  trap 'pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null' EXIT  # a failed creation stops the server too
  for database in $wanted; do
    if [ -z "$(psql -U "$user" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$database'")" ]; then
      createdb -U "$user" "$database"
      echo "postgres: created database $database"
    fi
  done
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  trap - EXIT
  printf '%s' "$wanted" >"$done_file.tmp" && mv "$done_file.tmp" "$done_file"
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -c max_connections="${POSTGRES_MAX_CONNECTIONS:-300}"
