#!/usr/bin/env bash
# Redis, the Celery broker: a password from the env file (given on stdin, not in the process list), no
# persistence (Airflow's metadata database, not the broker, is the record of what ran).
set -euo pipefail
: "${REDIS_PASSWORD:?set REDIS_PASSWORD (the env file)}"
printf 'bind 0.0.0.0\nport 6379\nprotected-mode no\nsave ""\nappendonly no\nrequirepass %s\n' "$REDIS_PASSWORD" |
  exec redis-server -
