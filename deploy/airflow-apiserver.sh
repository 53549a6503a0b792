#!/usr/bin/env bash
# Airflow's API server and UI. Its simple auth manager reads the passwords from a file: the admin's comes from
# the env file (AIRFLOW_ADMIN_PASSWORD); any other user in AIRFLOW_USERS gets a random one, printed in this
# service's log (or add it to the file). A team that signs in through its identity provider uses another
# auth manager (FAB or Keycloak), configured by Airflow's own settings.
set -euo pipefail
: "${AIRFLOW_ADMIN_PASSWORD:?set AIRFLOW_ADMIN_PASSWORD (the env file)}"
python - <<'PY'
import json, os
path = os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
passwords = {}
if os.path.exists(path):
    with open(path) as f:
        passwords = json.load(f)
passwords["admin"] = os.environ["AIRFLOW_ADMIN_PASSWORD"]
with open(f"{path}.tmp", "w") as f:
    json.dump(passwords, f)
os.chmod(f"{path}.tmp", 0o600)
os.replace(f"{path}.tmp", path)
PY
exec deploy/airflow.sh api-server --port 8080
