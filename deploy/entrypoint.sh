#!/usr/bin/env bash
# Every container of the ct image starts here (under tini), then runs its service's command.
#
# CT_WAIT_FOR: host:port pairs (comma-separated) that must accept connections before the command starts, so
# the stack comes up in order on any compose implementation (healthcheck conditions are not enforced by every
# one: podman-compose before Podman 4.6 ignores them). CT_WAIT_TIMEOUT_S bounds the wait (default 300).
set -euo pipefail

# Spark executors connect back to their driver (a task in an Airflow worker) at this address: the container's
# IP on the compose network, which every container reaches, not its hostname, which only it knows.
if [ -z "${SPARK_LOCAL_IP:-}" ]; then
  SPARK_LOCAL_IP="$(hostname -i | awk '{print $1}' || true)"
  export SPARK_LOCAL_IP
fi

deadline=$((SECONDS + ${CT_WAIT_TIMEOUT_S:-300}))
IFS=',' read -r -a targets <<<"${CT_WAIT_FOR:-}"
for target in "${targets[@]}"; do
  [ -n "$target" ] || continue
  host="${target%:*}" port="${target##*:}"
  until (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "entrypoint: $host:$port did not accept connections within ${CT_WAIT_TIMEOUT_S:-300} s" >&2
      exit 1
    fi
    sleep 1
  done
done

exec "$@"
