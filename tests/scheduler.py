"""A real Airflow for tests: ``airflow standalone`` (api-server, scheduler, dag-processor, triggerer) on its own
home, database and port, so DAG runs go through the scheduler and the LocalExecutor as they do for a user.

Its metadata database is PostgreSQL, as in a team's deployment: on SQLite the scheduler, the API server and a
``backfill create`` write at once and one of them fails with "database is locked" on a busy machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.net import answers, free_port

ROOT = Path(__file__).resolve().parent.parent
AIRFLOW = str(Path(sys.executable).parent / "airflow")


def _embedded_environment(home: Path) -> dict[str, str]:
    """The environment ``scripts/env.sh`` gives the embedded stack, for an Airflow home of its own."""
    preset = {**os.environ, "AIRFLOW_HOME": str(home), "CT_STATE_DIR": str(home.parent / "state")}
    for name in [n for n in preset if n.startswith("AIRFLOW__")]:
        del preset[name]  # the suite's own Airflow settings (unit-test mode, its SQLite) are not the stack's
    done = subprocess.run(
        ["bash", "-c", f"source {shlex.quote(str(ROOT / 'scripts' / 'env.sh'))} && env -0"],
        env=preset,
        capture_output=True,
        check=True,
    )
    return dict(item.split("=", 1) for item in done.stdout.decode().split("\0") if "=" in item)


class Airflow:
    """``airflow standalone`` started in ``home``; :meth:`stop` ends it and every process it started."""

    def __init__(self, home: Path, database_url: str, extra_env: dict[str, str]):
        """``database_url``: an empty PostgreSQL database's SQLAlchemy URL (the suite's ``postgres`` fixture);
        ``extra_env`` is added to the environment and wins over the settings below."""
        self.home = home
        self.port = free_port()
        self.database_url = database_url.replace("postgresql://", "postgresql+psycopg://", 1)
        # The embedded stack's own environment (scripts/env.sh, what `make airflow` runs: its executor with warm
        # workers and its scheduler settings), then this instance's home, database and port.
        self.env = {
            **_embedded_environment(home),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            # No runs from the schedule: a test makes the runs it checks (backfills, triggers).
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.database_url,
            # psycopg 3 is async too (Airflow would otherwise derive an asyncpg URL, a driver not installed).
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": self.database_url,
            "AIRFLOW__API__PORT": str(self.port),
            # The scheduler's and triggerer's log servers, on ports of their own (8793 and 8794 by default: the
            # second instance on a machine, another test file's in the suite's other process, ran without).
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{self.port}",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.port}/execution/",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            # A database error's answer (a 500) carries PostgreSQL's own message, not only an id for the log
            # (whose entry names the statement, not the error): a failed test says what the database said.
            "AIRFLOW__API__EXPOSE_STACKTRACE": "True",
            # This interpreter's airflow (env.sh puts the checkout's .venv first; the suite may run from another).
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
            **extra_env,
        }
        self.env.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)
        self.process: subprocess.Popen[bytes] | None = None
        self.log = home / "standalone.log"
        self.url = f"http://127.0.0.1:{self.port}"
        self._engine: Any = None

    def cli(self, *args: str, timeout: float = 600) -> str:
        """Run an ``airflow`` command against this instance; its output, or an error with the output."""
        done = subprocess.run(
            [AIRFLOW, *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"airflow {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
            )
        return done.stdout

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.cli("db", "migrate")
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [AIRFLOW, "standalone"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def api_server_ready(self) -> bool:
        """The api-server answers its task API and its REST API, which reads the metadata database: its first
        request to each builds it (seconds, once per api-server process, whoever asks first)."""
        return all(answers(f"{self.url}{path}") for path in ("/execution/health", "/api/v2/monitor/health"))

    def stop(self) -> None:
        """End standalone and every process under it (its services start their own workers and sessions)."""
        import psutil

        if self.process is None:
            return
        try:
            parent = psutil.Process(self.process.pid)
            processes = [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            processes = []
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.terminate()
        _, alive = psutil.wait_procs(processes, timeout=30)
        for process in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(alive, timeout=30)
        self.process.wait(timeout=30)
        self.process = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def query(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        """Rows of a read-only query on the metadata database (migrated by :meth:`start`)."""
        import sqlalchemy

        if self._engine is None:
            self._engine = sqlalchemy.create_engine(self.database_url)
        with self._engine.connect() as connection:
            return [tuple(row) for row in connection.execute(sqlalchemy.text(sql), params)]

    def wait_for(self, what: str, condition: Callable[[], Any], timeout: float) -> Any:
        """Poll ``condition`` until it is truthy; fail naming ``what`` with the log's tail if it never is."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                break
            if value := condition():
                return value
            time.sleep(2)
        tail = self.log.read_text(errors="replace")[-6000:] if self.log.exists() else ""
        raise AssertionError(f"timed out waiting for {what}; airflow standalone's log ends:\n{tail}")

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        rows = self.query(
            "SELECT run_id, state, logical_date, run_type, conf FROM dag_run WHERE dag_id = :dag ORDER BY logical_date",
            dag=dag_id,
        )
        return [
            {
                "run_id": r[0],
                "state": r[1],
                "logical_date": r[2] and r[2].isoformat(),
                "run_type": r[3],
                "conf": r[4],
            }
            for r in rows
        ]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        rows = self.query(
            "SELECT task_id, state FROM task_instance WHERE dag_id = :dag AND run_id = :run",
            dag=dag_id,
            run=run_id,
        )
        return {task: str(state) for task, state in rows}

    def dag_parsed(self, dag_id: str) -> bool:
        return bool(self.query("SELECT 1 FROM serialized_dag WHERE dag_id = :dag", dag=dag_id))

    def unpause(self, dag_id: str) -> None:
        self.cli("dags", "unpause", dag_id)

    def backfill(self, dag_id: str, start: str, end: str, conf: dict[str, Any]) -> str:
        return self.cli(
            "backfill",
            "create",
            "--dag-id",
            dag_id,
            "--from-date",
            start,
            "--to-date",
            end,
            "--dag-run-conf",
            json.dumps(conf),
            "--max-active-runs",
            "1",
        )
