# Environment for the embedded stack. Source it: `source scripts/env.sh`. Every value can be overridden.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$ROOT/.venv/bin:$PATH"
export CT_STATE_DIR="${CT_STATE_DIR:-$ROOT/.state}"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$CT_STATE_DIR/airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="${AIRFLOW__CORE__DAGS_FOLDER:-$ROOT/dags}"
export AIRFLOW__CORE__PLUGINS_FOLDER="${AIRFLOW__CORE__PLUGINS_FOLDER:-$ROOT/plugins}"
export AIRFLOW__CORE__LOAD_EXAMPLES="${AIRFLOW__CORE__LOAD_EXAMPLES:-False}"
# The scheduler runs tasks on Airflow's LocalExecutor with warm workers (plugins/ct_executor.py: torch, MLflow,
# Evidently and Dask imported once, before the workers fork), four at a time. A finished task's worker is free
# again within a second (Airflow waits up to min_heartbeat_interval, 5 s by default, to see a task's process
# exit), and the scheduler looks for the next task 0.2 s after an idle pass (default 1 s). The costs: the
# scheduler holds the libraries (730 MB resident) and uses about 10% of a core while idle, and a running task
# writes its heartbeat every second. `make airflow` and the suite's real Airflow (tests/scheduler.py) run with
# these; bench/pipeline.py measures what they save.
export AIRFLOW__CORE__EXECUTOR="${AIRFLOW__CORE__EXECUTOR:-ct_executor.PreloadingLocalExecutor}"
export AIRFLOW__CORE__PARALLELISM="${AIRFLOW__CORE__PARALLELISM:-4}"
export AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL="${AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL:-1}"
export AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME="${AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME:-0.2}"
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN:-sqlite:///$AIRFLOW_HOME/airflow.db}"
# One port decides the UI's address and the address its links use (MLflow runs' airflow.run_url too); tasks
# reach Airflow's task API at the base URL's /execution/ (Airflow derives it).
export AIRFLOW__API__PORT="${AIRFLOW__API__PORT:-8080}"
export AIRFLOW__API__BASE_URL="${AIRFLOW__API__BASE_URL:-http://127.0.0.1:$AIRFLOW__API__PORT}"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS:-admin:admin}"
export NO_ALBUMENTATIONS_UPDATE=1 GIT_PYTHON_REFRESH=quiet
mkdir -p "$AIRFLOW_HOME"
