"""A demo day's whole DAG run against the sum of its stages' own work.

Runs the real ``retrain`` DAG for the demo's two days (the first bootstraps a champion, the second trains a
challenger the gate judges against it) from a fresh state, two ways:

- ``scheduler``: what ``make airflow`` runs and a team deploys: ``airflow standalone`` (scheduler, api-server,
  dag-processor, triggerer) with the embedded stack's settings (``scripts/env.sh``: the LocalExecutor with
  warm workers, ``plugins/ct_executor.py``), its metadata on PostgreSQL; each day triggered as a user would.
- ``dags-test``: what ``make demo`` runs: ``airflow dags test``, every task in one fresh process.

It prints per task the stage's own seconds (its run record, the work of the ``pipelines`` function alone)
and the task's seconds in Airflow (imports, XCom and state updates included). The DAG run's duration over
the sum of the stages is what orchestration costs; the goals are a train stage of at most 3 s on a demo
day and a DAG run of at most 1.3x the stages' sum. Before the first day, both ways create the stores a
deployment creates at its start (Airflow's database, MLflow's store).

    python bench/pipeline.py [--rows-per-day 20000] [--family torch] [--way scheduler|dags-test|both]
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
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.scheduler import Airflow  # noqa: E402  (the suite's real Airflow, also what this bench starts)

AIRFLOW = str(Path(sys.executable).parent / "airflow")
PIPELINES = str(Path(sys.executable).parent / "pipelines")
DAYS = [("2026-11-20", "none"), ("2026-11-21", "concept_drift")]
GOAL_TRAIN_SECONDS, GOAL_RATIO = 3.0, 1.3
# The stages a task runs, where they are not just its own (the demo's day is written by the validate task).
TASK_STAGES = {"validate": ("generate", "validate")}


def _ct_environment(state: Path, rows: int) -> dict[str, str]:
    return {"CT_STATE_DIR": str(state), "CT_ROWS_PER_DAY": str(rows), "CT_SERVE_POLL_SECONDS": "0"}


def _create_stores(env: dict[str, str]) -> None:
    """MLflow's store and the promotion history, as a deployment has them before its first run (this also
    checks the record, as ``validate`` does)."""
    subprocess.run([PIPELINES, "history", "--check"], env=env, capture_output=True, check=True)


def _stage_seconds(state: Path, day: str) -> dict[str, float]:
    folder = state / "data" / "runs" / "transactions" / f"ds={day}"
    return {p.stem: json.loads(p.read_text())["seconds"] for p in sorted(folder.glob("*.json"))}


def _seconds(start: dt.datetime, end: dt.datetime) -> float:
    return (end - start).total_seconds()


# ---- the scheduler ---------------------------------------------------------------------------------------


def run_scheduler_day(airflow: Airflow, state: Path, day: str, scenario: str, family: str) -> dict[str, Any]:
    conf = json.dumps({"scenario": scenario, "model_family": family})
    airflow.cli("dags", "trigger", "retrain", "--logical-date", f"{day}T00:00:00+00:00", "--conf", conf)

    def finished() -> dict[str, Any] | None:
        runs = [r for r in airflow.runs("retrain") if r["logical_date"].startswith(day)]
        return runs[0] if runs and runs[0]["state"] in ("success", "failed") else None

    run = airflow.wait_for(f"the DAG run of {day}", finished, timeout=1800)
    if run["state"] != "success":
        sys.exit(f"the DAG run for {day} failed: {airflow.task_states('retrain', run['run_id'])}")
    ((start, end),) = airflow.query(
        "SELECT start_date, end_date FROM dag_run WHERE run_id = :run", run=run["run_id"]
    )
    tasks = airflow.query(
        "SELECT task_id, start_date, end_date FROM task_instance WHERE run_id = :run AND end_date IS NOT NULL"
        " AND start_date IS NOT NULL",
        run=run["run_id"],
    )
    return {
        "day": day,
        "run": _seconds(start, end),
        "tasks": {task: _seconds(s, e) for task, s, e in tasks},
        "stages": _stage_seconds(state, day),
    }


def bench_scheduler(tmp: Path, rows: int, family: str) -> list[dict[str, Any]]:
    import pgserver

    server = pgserver.get_server(str(tmp / "postgres"), cleanup_mode="stop")
    state = tmp / "state"
    airflow = Airflow(tmp / "airflow", server.get_uri(), _ct_environment(state, rows))
    try:
        started = time.perf_counter()
        airflow.start()
        airflow.wait_for("the retrain DAG to be parsed", lambda: airflow.dag_parsed("retrain"), timeout=600)
        airflow.wait_for("the api-server", airflow.api_server_ready, timeout=300)
        print(f"  Airflow up in {time.perf_counter() - started:.1f} s (scheduler, workers warm, api-server)")
        _create_stores(airflow.env)
        airflow.unpause("retrain")
        results = [run_scheduler_day(airflow, state, day, scenario, family) for day, scenario in DAYS]
        results[-1]["scheduler_idle_cpu"] = _idle_cpu(airflow)
        return results
    finally:
        airflow.stop()
        server.cleanup()


def _idle_cpu(airflow: Airflow) -> float:
    """The scheduler process's CPU share over 10 s with nothing to run (its idle passes, 0.2 s apart)."""
    import psutil

    assert airflow.process is not None
    scheduler = next(
        p for p in psutil.Process(airflow.process.pid).children(recursive=True) if "scheduler" in p.cmdline()
    )
    scheduler.cpu_percent(None)
    time.sleep(10)
    return float(scheduler.cpu_percent(None))


# ---- airflow dags test -----------------------------------------------------------------------------------


def _dags_test_environment(state: Path, rows: int) -> dict[str, str]:
    home = state / "airflow"
    return {
        **os.environ,
        **_ct_environment(state, rows),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    }


def _dags_test_times(database: Path, day: str) -> tuple[float, dict[str, float]]:
    """The DAG run's duration and each task's, from Airflow's own records."""
    with sqlite3.connect(database) as connection:
        (run_id,) = connection.execute(
            "SELECT run_id FROM dag_run WHERE dag_id = 'retrain' AND logical_date LIKE ? ORDER BY id DESC LIMIT 1",
            (f"{day}%",),
        ).fetchone()
        tasks = connection.execute(
            "SELECT task_id, start_date, end_date FROM task_instance WHERE run_id = ? AND start_date IS NOT NULL",
            (run_id,),
        ).fetchall()
    parse = dt.datetime.fromisoformat
    # `dags test` leaves the run's own start at its logical date: the run lasts from its first task's start
    # to its last task's end.
    first, last = min(parse(t[1]) for t in tasks), max(parse(t[2]) for t in tasks if t[2])
    return _seconds(first, last), {task: _seconds(parse(s), parse(e)) for task, s, e in tasks if e}


def bench_dags_test(tmp: Path, rows: int, family: str) -> list[dict[str, Any]]:
    state = tmp / "state"
    env = _dags_test_environment(state, rows)
    (state / "airflow").mkdir(parents=True)
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, capture_output=True, check=True)
    _create_stores(env)
    results = []
    for day, scenario in DAYS:
        conf = json.dumps({"scenario": scenario, "model_family": family})
        started = time.perf_counter()
        done = subprocess.run(
            [AIRFLOW, "dags", "test", "retrain", day, "-c", conf], env=env, capture_output=True, text=True
        )
        command = time.perf_counter() - started
        if done.returncode != 0 or "state=success" not in done.stdout + done.stderr:
            sys.exit(f"the DAG run for {day} failed:\n{(done.stdout + done.stderr)[-4000:]}")
        run, tasks = _dags_test_times(state / "airflow" / "airflow.db", day)
        results.append(
            {"day": day, "run": run, "command": command, "tasks": tasks, "stages": _stage_seconds(state, day)}
        )
    return results


# ---- the report ------------------------------------------------------------------------------------------


def report(result: dict[str, Any]) -> None:
    stages: dict[str, float] = result["stages"]
    tasks: dict[str, float] = result["tasks"]
    print(f"\n  {result['day']}: stage seconds (the pipelines function) and task seconds (in Airflow)")
    print(f"    {'task':<18}{'stage s':>10}{'task s':>10}{'overhead s':>12}")
    for task, seconds in sorted(tasks.items(), key=lambda item: -item[1]):
        ran = [stages[stage] for stage in TASK_STAGES.get(task, (task,)) if stage in stages]
        own = sum(ran) if ran else None
        shown = f"{own:10.2f}" if own is not None else f"{'-':>10}"
        overhead = f"{seconds - own:12.2f}" if own is not None else f"{'-':>12}"
        print(f"    {task:<18}{shown}{seconds:10.2f}{overhead}")
    total = sum(stages.values())
    run = float(result["run"])
    print(f"    sum of stages {total:.2f} s; sum of tasks {sum(tasks.values()):.2f} s")
    print(f"    DAG run {run:.2f} s = {run / total:.2f}x the stages (goal {GOAL_RATIO}x)")
    if "command" in result:
        command = float(result["command"])
        print(f"    `airflow dags test` command {command:.2f} s = {command / total:.2f}x the stages")
    train = stages.get("train")
    if train is not None:
        print(f"    train stage {train:.2f} s (goal {GOAL_TRAIN_SECONDS} s)")
    if "scheduler_idle_cpu" in result:
        print(f"    the scheduler idle between runs: {result['scheduler_idle_cpu']:.1f}% of one core")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows-per-day", type=int, default=20_000)
    parser.add_argument("--family", choices=["torch", "sklearn"], default="torch")
    parser.add_argument("--way", choices=["scheduler", "dags-test", "both"], default="both")
    args = parser.parse_args()
    print(
        f"{dt.date.today()} on {platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"{args.rows_per_day} rows a day, family {args.family}"
    )
    ways = {
        "scheduler": ("the scheduler with warm workers (`make airflow`, a deployment)", bench_scheduler),
        "dags-test": ("`airflow dags test`, one cold process (`make demo`)", bench_dags_test),
    }
    for way, (title, bench) in ways.items():
        if args.way not in (way, "both"):
            continue
        print(f"\n# {title}")
        with tempfile.TemporaryDirectory(prefix=f"ct-bench-pipeline-{way}-") as tmp:
            for result in bench(Path(tmp), args.rows_per_day, args.family):
                report(result)


if __name__ == "__main__":
    main()
