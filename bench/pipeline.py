"""A demo day's whole DAG run against the sum of its stages' own work.

Runs the real ``retrain`` DAG with ``airflow dags test`` on a fresh state for the demo's two days (the first
bootstraps a champion, the second trains a challenger the gate judges against it), and prints per task:
the stage's own seconds (its run record, the work of the ``pipelines`` function alone) and the task's
seconds in Airflow (imports, XCom and state updates included). The ratio of the DAG run's duration to the
sum of the stages is what orchestration costs; the goals are a train stage of at most 3 s on the demo day
and a DAG run of at most 1.3x the stages' sum.

    python bench/pipeline.py [--rows-per-day 20000] [--family torch]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AIRFLOW = str(Path(sys.executable).parent / "airflow")
DAYS = [("2026-11-20", "none"), ("2026-11-21", "concept_drift")]
GOAL_TRAIN_SECONDS, GOAL_RATIO = 3.0, 1.3


def _environment(state: Path, rows: int) -> dict[str, str]:
    home = state / "airflow"
    return {
        **os.environ,
        "CT_STATE_DIR": str(state),
        "CT_ROWS_PER_DAY": str(rows),
        "CT_SERVE_POLL_SECONDS": "0",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    }


def _stage_seconds(state: Path, day: str) -> dict[str, float]:
    folder = state / "data" / "runs" / "transactions" / f"ds={day}"
    return {p.stem: json.loads(p.read_text())["seconds"] for p in sorted(folder.glob("*.json"))}


def _airflow_times(database: Path, day: str) -> tuple[float, dict[str, float]]:
    """The DAG run's duration and each task's, from Airflow's own records."""

    def seconds(start: str, end: str) -> float:
        return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()

    with sqlite3.connect(database) as connection:
        (run_id,) = connection.execute(
            "SELECT run_id FROM dag_run WHERE dag_id = 'retrain' AND logical_date LIKE ? ORDER BY id DESC LIMIT 1",
            (f"{day}%",),
        ).fetchone()
        tasks = connection.execute(
            "SELECT task_id, start_date, end_date FROM task_instance WHERE run_id = ? AND start_date IS NOT NULL",
            (run_id,),
        ).fetchall()
    # `dags test` leaves the run's own start at its logical date: the run lasts from its first task's start
    # to its last task's end.
    first, last = min(t[1] for t in tasks), max(t[2] for t in tasks if t[2])
    return seconds(first, last), {task: seconds(s, e) for task, s, e in tasks if e}


def run_day(env: dict[str, str], state: Path, day: str, scenario: str, family: str) -> dict[str, object]:
    conf = json.dumps({"scenario": scenario, "model_family": family})
    started = time.perf_counter()
    done = subprocess.run(
        [AIRFLOW, "dags", "test", "retrain", day, "-c", conf], env=env, capture_output=True, text=True
    )
    command_seconds = time.perf_counter() - started
    if done.returncode != 0 or "state=success" not in done.stdout + done.stderr:
        sys.exit(f"the DAG run for {day} failed:\n{(done.stdout + done.stderr)[-4000:]}")
    run_seconds, tasks = _airflow_times(state / "airflow" / "airflow.db", day)
    return {
        "day": day,
        "command": command_seconds,
        "run": run_seconds,
        "tasks": tasks,
        "stages": _stage_seconds(state, day),
    }


def report(result: dict[str, object]) -> None:
    stages: dict[str, float] = result["stages"]  # type: ignore[assignment]
    tasks: dict[str, float] = result["tasks"]  # type: ignore[assignment]
    print(f"\n{result['day']}: stage seconds (the pipelines function) and task seconds (in Airflow)")
    print(f"  {'task':<18}{'stage s':>10}{'task s':>10}{'overhead s':>12}")
    for task, seconds in sorted(tasks.items(), key=lambda item: -item[1]):
        own = stages.get(task)
        shown = f"{own:10.2f}" if own is not None else f"{'-':>10}"
        overhead = f"{seconds - own:12.2f}" if own is not None else f"{'-':>12}"
        print(f"  {task:<18}{shown}{seconds:10.2f}{overhead}")
    total = sum(stages.values())
    run, command = float(result["run"]), float(result["command"])  # type: ignore[arg-type]
    print(f"  sum of stages {total:.2f} s; sum of tasks {sum(tasks.values()):.2f} s")
    print(
        f"  DAG run (Airflow's start to end) {run:.2f} s = {run / total:.2f}x the stages (goal {GOAL_RATIO}x)"
    )
    print(f"  `airflow dags test` command {command:.2f} s = {command / total:.2f}x the stages")
    train = stages.get("train")
    if train is not None:
        print(f"  train stage {train:.2f} s (goal {GOAL_TRAIN_SECONDS} s)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows-per-day", type=int, default=20_000)
    parser.add_argument("--family", choices=["torch", "sklearn"], default="torch")
    args = parser.parse_args()
    print(
        f"{dt.date.today()} on {platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"{args.rows_per_day} rows a day, family {args.family}"
    )
    with tempfile.TemporaryDirectory(prefix="ct-bench-pipeline-") as tmp:
        state = Path(tmp)
        env = _environment(state, args.rows_per_day)
        (state / "airflow").mkdir(parents=True)
        subprocess.run([AIRFLOW, "db", "migrate"], env=env, capture_output=True, check=True)
        for day, scenario in DAYS:
            report(run_day(env, state, day, scenario, args.family))


if __name__ == "__main__":
    main()
