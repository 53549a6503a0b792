#!/usr/bin/env bash
# Airflow UI and scheduler for these DAGs (standalone: api-server, scheduler, dag-processor, triggerer).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
airflow db migrate >/dev/null
echo "Airflow UI: $AIRFLOW__API__BASE_URL   login: admin / password in $AIRFLOW_HOME/simple_auth_manager_passwords.json.generated"
echo "(the file is written on first start; standalone also prints it below)"
exec airflow standalone
