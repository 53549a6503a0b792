"""The monitor's MLflow runs: one per dataset and interval, in the experiment every dataset's monitor shares."""

from __future__ import annotations

import datetime as dt

from pipelines.monitoring.monitor import Interval, _log_to_mlflow
from pipelines.release import tracking
from pipelines.settings import get_settings


def _result(tmp_path, dataset: str, champion: int) -> dict:
    folder = tmp_path / "reports" / dataset
    folder.mkdir(parents=True)
    for name in ("monitor.html", "monitor.json", "metrics.prom"):
        (folder / name).write_text(f"{dataset} {name}")
    return {
        "champion": champion,
        "rows": 10 * champion,
        "signals": [{"signal": "feature_drift", "value": 0.1 * champion}],
        "verdict": {"status": "not_needed"},
        "state": "ok",
        "engine": "spark",
        "pass_on": "task",
        "report": str(folder),
    }


def test_two_datasets_judging_the_same_hour_keep_a_run_each(tmp_path):
    interval = Interval.of(dt.date(2026, 11, 30), 14)
    runs = {}
    for dataset, champion in (("transactions", 3), ("bikeshare", 5)):
        settings = get_settings(state_dir=tmp_path / "state", dataset=dataset)
        result = _result(tmp_path, dataset, champion)
        _log_to_mlflow(settings, tracking.configure(settings), interval, result)
        runs[dataset] = result["mlflow_run_id"]
    assert runs["transactions"] != runs["bikeshare"]
    client = tracking.configure(get_settings(state_dir=tmp_path / "state"))
    for dataset, champion in (("transactions", 3), ("bikeshare", 5)):
        run = client.get_run(runs[dataset])
        assert run.data.tags["dataset"] == dataset and run.data.tags["champion_version"] == str(champion)
        assert run.data.metrics["served_rows"] == 10 * champion
        assert run.data.tags["engine"] == "spark" and run.data.tags["pass_on"] == "task"
    again = _result(tmp_path / "again", "transactions", 3)  # the same interval judged again: the same run
    settings = get_settings(state_dir=tmp_path / "state", dataset="transactions")
    _log_to_mlflow(settings, tracking.configure(settings), interval, again)
    assert again["mlflow_run_id"] == runs["transactions"]


def test_retention_deletes_the_old_intervals_runs_of_its_dataset_only(tmp_path):
    from pipelines.monitoring.policy import MonitoringPolicy
    from pipelines.monitoring.retention import prune

    today = dt.datetime.now(dt.UTC).date()
    old, recent = today - dt.timedelta(days=40), today - dt.timedelta(days=5)
    runs = {}
    # Every run started now: an old interval's run is one judged late, or again.
    for dataset, day in (("transactions", old), ("transactions", recent), ("bikeshare", old)):
        settings = get_settings(state_dir=tmp_path / "state", dataset=dataset)
        result = _result(tmp_path / str(day), dataset, 3)
        _log_to_mlflow(settings, tracking.configure(settings), Interval.of(day, 14), result)
        runs[dataset, day] = result["mlflow_run_id"]
    # The runs of intervals more than 30 days before today go, of this dataset only.
    settings = get_settings(state_dir=tmp_path / "state", dataset="transactions")
    policy = MonitoringPolicy.model_validate({"retention": {"reports_days": 30}})
    client = tracking.configure(settings)
    assert prune(settings, policy, today, client, dry_run=True)["runs_deleted"] == [runs["transactions", old]]
    assert client.get_run(runs["transactions", old]).info.lifecycle_stage == "active"
    assert prune(settings, policy, today, client)["runs_deleted"] == [runs["transactions", old]]
    stages = {key: client.get_run(run).info.lifecycle_stage for key, run in runs.items()}
    assert stages == {
        ("transactions", old): "deleted",
        ("transactions", recent): "active",
        ("bikeshare", old): "active",
    }
    assert prune(settings, policy, today, client)["runs_deleted"] == []  # a re-run: nothing more
