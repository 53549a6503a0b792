#!/usr/bin/env bash
# Airflow's API server and UI. Its simple auth manager reads the passwords from a file, written from the env
# file at every start (deploy/airflow_passwords.py): admin's AIRFLOW_ADMIN_PASSWORD and every other user's in
# AIRFLOW_USER_PASSWORDS; a user without one stops the start (Airflow would print a made-up one in this log). A
# team that signs in through its identity provider uses another auth manager (FAB or Keycloak), configured by
# Airflow's own settings.
set -euo pipefail
: "${AIRFLOW_ADMIN_PASSWORD:?set AIRFLOW_ADMIN_PASSWORD (the env file)}"
python deploy/airflow_passwords.py
exec deploy/airflow.sh api-server --port 8080
