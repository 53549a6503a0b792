#!/usr/bin/env bash
# The MLflow tracking server: runs and the registry in PostgreSQL, artifacts on the /mlflow volume served by
# the server itself (clients read and write them through it, `mlflow-artifacts:/`), and MLflow's basic-auth
# app: every request needs a login, people read by default, and the pipeline's account manages the models
# and experiments it creates. The admin account comes from the environment (the env file): no password is
# in the image, and the server refuses to start without one.
set -euo pipefail
: "${MLFLOW_AUTH_ADMIN_PASSWORD:?set MLFLOW_ADMIN_PASSWORD (the env file)}"
: "${MLFLOW_AUTH_DATABASE_URI:?}"
export MLFLOW_AUTH_CONFIG_PATH="${MLFLOW_AUTH_CONFIG_PATH:-/tmp/mlflow-basic-auth.ini}"
(umask 077 && cat >"$MLFLOW_AUTH_CONFIG_PATH") <<INI
[mlflow]
default_permission = ${MLFLOW_DEFAULT_PERMISSION:-READ}
database_uri = ${MLFLOW_AUTH_DATABASE_URI}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = ${MLFLOW_AUTH_CACHE_TTL_S:-60}
INI
# Each request's login is checked against the stored scrypt hash (tens of ms of CPU each, 141 ms on this 2-core
# machine while busy): a task's few dozen requests and every replica's poll paid it each time. A login that
# passed is kept for MLFLOW_AUTH_CACHE_TTL_S (60; 0 checks every request) in each worker, keyed by an HMAC of the
# password, never the password: a password changed or a user deleted through the API is dropped at once by the
# worker that did it, and by the others within the TTL.
# The store's URI (it holds the database password) reaches the server through MLFLOW_BACKEND_STORE_URI, not the
# command line, which every user of the host can read.
: "${MLFLOW_BACKEND_STORE_URI:?}"
# Uvicorn's supervisor pings each worker and replaces one that has not answered within
# --timeout-worker-healthcheck (5 s by default). A worker that starts on busy cores (the whole stack starting on two
# of them: load 24) answered later than that, every time: each was killed and replaced, the port never served,
# and mlflow-init gave up. MLFLOW_WORKER_HEALTHCHECK_S (60) bounds it instead. MLFLOW_WORKERS sets the workers.
exec mlflow server \
  --uvicorn-opts "--timeout-worker-healthcheck ${MLFLOW_WORKER_HEALTHCHECK_S:-60}" \
  --app-name basic-auth \
  --serve-artifacts --artifacts-destination /mlflow/artifacts \
  --host 0.0.0.0 --port 5000
