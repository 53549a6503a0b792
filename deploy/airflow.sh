#!/usr/bin/env bash
# An Airflow component (api-server, scheduler, dag-processor, triggerer, celery worker): it starts once the
# metadata database is migrated (the airflow-init service migrates it), so the order holds on any compose.
set -euo pipefail
airflow db check-migrations --migration-wait-timeout "${CT_WAIT_TIMEOUT_S:-300}" >/dev/null
exec airflow "$@"
