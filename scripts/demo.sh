#!/usr/bin/env bash
# The demo: two runs of the real `retrain` DAG through Airflow, then a summary.
# Run 1 (normal data) bootstraps a champion; run 2 (an injected drift scenario) trains a challenger that
# the gate judges against it. The demo starts from a clean embedded state each time, so it can be re-run.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
FIRST="${DEMO_FIRST_DATE:-2026-11-20}"
SECOND="${DEMO_SECOND_DATE:-2026-11-21}"
SCENARIO="${DEMO_SCENARIO:-concept_drift}"
LOGS="$CT_STATE_DIR/logs"

echo "==> resetting the embedded demo state under $CT_STATE_DIR"
rm -rf "$CT_STATE_DIR/data" "$CT_STATE_DIR/mlflow" "$AIRFLOW_HOME/airflow.db" "$LOGS"
mkdir -p "$LOGS" "$AIRFLOW_HOME"
airflow db migrate >"$LOGS/airflow-db-migrate.log" 2>&1 || { tail -30 "$LOGS/airflow-db-migrate.log"; exit 1; }

run_dag() {
  local day="$1" conf="$2" log="$LOGS/retrain-$1.log" started=$SECONDS
  echo "==> airflow dags test retrain $day  conf=$conf  (log: $log)"
  if ! airflow dags test retrain "$day" -c "$conf" >"$log" 2>&1; then
    echo "!! the DAG run for $day failed; the end of its log:"; tail -40 "$log"; exit 1
  fi
  if ! grep -q "state=success" "$log"; then
    echo "!! the DAG run for $day did not succeed; the end of its log:"; tail -40 "$log"; exit 1
  fi
  echo "    finished in $((SECONDS - started)) s"
}

run_dag "$FIRST" '{"scenario": "none"}'
run_dag "$SECOND" "{\"scenario\": \"$SCENARIO\"}"
echo
pipelines summary "$FIRST" "$SECOND" 2> "$LOGS/summary.log"
