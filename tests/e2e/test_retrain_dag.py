"""The real `retrain` DAG through Airflow (dag.test): bootstrap, then a drifted day, then broken data."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory):
    state = tmp_path_factory.mktemp("e2e")
    mp = pytest.MonkeyPatch()
    for key, value in {"CT_STATE_DIR": str(state), "CT_ROWS_PER_DAY": "4000", "CT_TRAIN_EPOCHS": "4"}.items():
        mp.setenv(key, value)
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(DAGS_DIR)).dags["retrain"]
    yield dag, state
    mp.undo()


def _run(dag, day: dt.date, conf: dict):
    logical = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    return dag.test(logical_date=logical, run_conf=conf)


def test_retrain_dag_bootstraps_then_judges_a_challenger(airflow_env):
    from pipelines import history, runlog, tracking
    from pipelines.settings import get_settings

    dag, state = airflow_env
    first = _run(dag, dt.date(2026, 11, 20), {"scenario": "none"})
    assert first.state == "success"
    second = _run(dag, dt.date(2026, 11, 21), {"scenario": "concept_drift", "model_family": "sklearn"})
    assert second.state == "success"

    settings = get_settings()
    client = tracking.configure(settings)
    champion = tracking.version_by_alias(client, settings.model_name, "champion")
    assert champion is not None
    for tag in (
        "dataset.hash",
        "dataset.uri",
        "airflow.dag_id",
        "airflow.run_id",
        "git.commit",
        "model.family",
    ):
        assert champion.tags.get(tag), f"champion lacks lineage tag {tag}"
    assert champion.tags["airflow.dag_id"] == "retrain"

    records = runlog.read_records(settings, dt.date(2026, 11, 21))
    decision = records["gate"]["result"]
    assert decision["decision"] in ("promote", "reject") and decision["champion_version"] is not None
    assert any(rule["rule"] == "min_improvement" for rule in decision["rules"])
    run_id = client.get_model_version(settings.model_name, str(decision["challenger_version"])).run_id
    assert {a.path for a in client.list_artifacts(run_id, "drift")} == {
        "drift/drift.html",
        "drift/drift.json",
    }
    assert Path(records["drift"]["result"]["html"]).exists()
    rows = history.read(settings, settings.model_name)
    assert rows and all(r["dag_id"] == "retrain" and r["run_id"] for r in rows)
    assert rows[0]["from_version"] is None and rows[0]["outcome"] == "promoted"
    if decision["decision"] == "promote":
        assert int(champion.version) == decision["challenger_version"]
        assert rows[-1]["to_version"] == decision["challenger_version"]
        assert json.loads(rows[-1]["decision"])["decision"] == "promote"
    else:
        assert "promote" not in records


def test_broken_data_stops_the_run_before_training(airflow_env):
    from pipelines import tracking
    from pipelines.settings import get_settings

    dag, _ = airflow_env
    settings = get_settings()
    client = tracking.configure(settings)
    versions_before = len(client.search_model_versions(f"name = '{settings.model_name}'"))
    champion_before = tracking.version_by_alias(client, settings.model_name, "champion")
    run = _run(dag, dt.date(2026, 11, 22), {"scenario": "schema_break"})
    assert run.state == "failed"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["validate"] == "failed"
    assert states["train"] in ("upstream_failed", None)
    assert len(client.search_model_versions(f"name = '{settings.model_name}'")) == versions_before
    assert (
        tracking.version_by_alias(client, settings.model_name, "champion").version == champion_before.version
    )
    # The failing day is quarantined with its report, and nothing was committed for it.
    from pipelines import storage
    from pipelines.validate import quarantine_uri

    folder = quarantine_uri(settings.resolved_data_root, settings.dataset, dt.date(2026, 11, 22))
    assert storage.read_json(storage.join(folder, "validation.json"))["ok"] is False
    assert not storage.exists(
        storage.raw_uri(settings.resolved_data_root, settings.dataset, dt.date(2026, 11, 22))
    )


def test_a_real_dataset_from_its_own_source_runs_the_whole_dag(airflow_env, tmp_path, monkeypatch):
    """scikit-learn's breast cancer data, as daily CSV exports at a user's URI: nothing tuned to the demo."""
    from pipelines import tracking
    from pipelines.samples import write_sample
    from pipelines.settings import get_settings

    dag, _ = airflow_env
    monkeypatch.setenv("CT_SOURCE_URI", str(tmp_path / "exports" / "bc-{ds}.csv"))
    monkeypatch.setenv("CT_WINDOW_DAYS", "3")
    day = dt.date(2026, 11, 20)
    settings = get_settings(dataset="breast_cancer")
    write_sample(settings, "breast_cancer", day, days=3)
    demo_champion = tracking.version_by_alias(
        tracking.configure(get_settings()), "ct-transactions", "champion"
    )

    run = _run(dag, day, {"dataset": "breast_cancer", "model_family": "torch", "engine": "spark"})
    assert run.state == "success"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["generate"] == "skipped" and states["validate"] == "success"
    client = tracking.configure(settings)
    champion = tracking.version_by_alias(client, "ct-breast_cancer", "champion")
    assert champion is not None and champion.tags["dataset.engine"] == "spark"
    run_data = client.get_run(champion.run_id).data
    assert run_data.metrics["val_roc_auc"] > 0.9
    assert int(run_data.params["train_rows"]) > 300  # the whole 3-day window, 569 rows, was read
    # The demo dataset's champion is another registered model, untouched.
    after = tracking.version_by_alias(client, "ct-transactions", "champion")
    assert demo_champion is not None and after.version == demo_champion.version
