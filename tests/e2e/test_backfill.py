"""A backfill of old dates through a real scheduler: history runs, one run per day, in order."""

from __future__ import annotations

import pytest

from tests.scheduler import Airflow

pytestmark = pytest.mark.slow

# Years before today, as a user's history is. Logical dates fall at 01:00 (the schedule's time), and the
# range is inclusive: 2011-02-13 to 2011-02-15T01:00 holds three of them.
START, END = "2011-02-13", "2011-02-15T01:00:00+00:00"


@pytest.fixture
def airflow(tmp_path, postgres):
    service = Airflow(
        tmp_path / "airflow",
        postgres.database("airflow_backfill"),
        {
            "CT_STATE_DIR": str(tmp_path / "state"),
            "CT_ROWS_PER_DAY": "1500",
            "CT_SERVE_POLL_SECONDS": "0",
        },
    )
    service.start()
    yield service
    service.stop()


@pytest.mark.timeout(2400)  # three whole DAG runs, a task process each, on 2 cores that may be busy
def test_a_backfill_of_three_old_days_runs_each_day_through_the_scheduler(airflow, tmp_path):
    airflow.wait_for("the retrain DAG to be parsed", lambda: airflow.dag_parsed("retrain"), timeout=600)
    airflow.backfill("retrain", START, END, {"model_family": "sklearn"})
    # A paused DAG runs nothing, backfills included. (Unpausing also schedules the newest interval with the
    # default params for a user; this Airflow runs nothing from the schedule, see tests/scheduler.py.)
    airflow.unpause("retrain")

    def finished() -> list[dict] | None:
        runs = [r for r in airflow.runs("retrain") if r["run_type"] == "backfill"]
        done = len(runs) == 3 and all(r["state"] in ("success", "failed") for r in runs)
        return runs if done else None

    runs = airflow.wait_for("three backfill runs to finish", finished, timeout=3600)
    # The tasks ran on warm workers: the scheduler imported the stages' libraries before forking them.
    assert "preloaded" in airflow.log.read_text(errors="replace"), "the scheduler did not preload"
    for run in runs:
        assert run["state"] == "success", (run, airflow.task_states("retrain", run["run_id"]))
        assert run["run_type"] == "backfill"
    assert [r["logical_date"][:10] for r in runs] == ["2011-02-13", "2011-02-14", "2011-02-15"]

    # Each run worked on its own day's data: one model version per day, tagged with that day.
    from pipelines.release.tracking import configure
    from pipelines.settings import get_settings

    settings = get_settings(state_dir=tmp_path / "state")
    client = configure(settings)
    versions = client.search_model_versions(f"name = '{settings.model_name}'")
    days = sorted(v.tags["logical_date"] for v in versions if v.tags["logical_date"] < "2026")
    assert days == ["2011-02-13", "2011-02-14", "2011-02-15"]
