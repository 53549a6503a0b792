"""The real `retrain` DAG through Airflow (dag.test): bootstrap, then a drifted day, then broken data."""

from __future__ import annotations

import datetime as dt
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
    from pipelines import runlog, tracking
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
    if decision["decision"] == "promote":
        assert int(champion.version) == decision["challenger_version"]
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
