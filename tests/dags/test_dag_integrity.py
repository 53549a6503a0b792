"""Every DAG imports cleanly, states its defaults, and has the expected task graph."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
DAG_FILES = sorted(DAGS_DIR.glob("*.py"))
# A person's one-off action: retried after a conflict, it would roll back a champion that changed meanwhile.
ONE_SHOT = {("rollback", "roll_back")}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import BundleDagBag

    return BundleDagBag(dag_folder=str(DAGS_DIR), bundle_path=DAGS_DIR)


def test_the_dag_folder_imports_clean(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == {p.stem for p in DAG_FILES}


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.stem)
def test_dag_integrity(dagbag, path):
    """One file, one DAG named after it, stating its defaults; params that explain themselves; no heavy imports."""
    dag_id = path.stem
    assert dag_id in dagbag.dags, f"{path.name} defines no DAG named {dag_id}"
    dag = dagbag.dags[dag_id]
    assert dag.tags, f"{dag_id} has no tags"
    assert dag.doc_md, f"{dag_id} has no doc_md"
    assert dag.catchup is False, f"{dag_id} catches up"
    assert dag.max_active_runs == 1, f"{dag_id} may run twice at once"
    assert dag.start_date.tzinfo is not None and dag.start_date.utcoffset() == dt.timedelta(0)
    for task in dag.tasks:
        if (dag_id, task.task_id) in ONE_SHOT:
            assert task.retries == 0
            continue
        assert task.retries >= 2, f"{dag_id}.{task.task_id} has {task.retries} retries"
        assert task.retry_delay.total_seconds() > 0
    for name in dag.params:
        param = dag.params.get_param(name)
        assert param.schema.get("title"), f"{dag_id} param {name} has no title"
        assert param.description, f"{dag_id} param {name} has no description"
    heavy = ("pandas", "numpy", "torch", "pyspark", "mlflow", "evidently", "dask", "sklearn", "pipelines")
    for line in path.read_text().splitlines():
        if line.startswith(("import ", "from ")):
            module = line.split()[1].split(".")[0]
            assert module not in heavy, f"{path.name}: top-level import of {module}"


def test_retrain_graph(dagbag):
    dag = dagbag.dags["retrain"]
    assert dag.max_active_runs == 1
    edges = {(t.task_id, d) for t in dag.tasks for d in t.downstream_task_ids}
    assert edges == {
        ("validate", "prepare"),
        ("prepare", "train"),
        ("prepare", "evaluate"),
        ("prepare", "drift"),
        ("train", "register"),
        ("register", "evaluate"),
        ("register", "drift"),
        ("evaluate", "gate"),
        ("drift", "gate"),
        ("gate", "route"),
        ("gate", "promote"),
        ("gate", "record_rejection"),
        ("gate", "prune"),
        ("route", "approve"),
        ("route", "promote"),
        ("approve", "promote"),
        ("approve", "record_rejection"),
    }
    # promote runs after route or after an approval; a branch that picks neither skips it directly
    assert dag.get_task("promote").trigger_rule == "none_failed_min_one_success"
    approve = dag.get_task("approve")
    assert approve.options == ["Approve", "Reject"] and approve.defaults == ["Reject"]
    assert approve.options_mapping == {"Approve": "promote", "Reject": "record_rejection"}
    assert dag.params["dry_run"] is False
    params = dag.params
    assert params["engine"] == "dask" and params["model_family"] == "default" and params["scenario"] == "none"
    assert params["dataset"] == "transactions"
    # The run starts at validate (which writes the demo's day itself): no task only a demo would run. Beside it,
    # requeue passes on the requests of other datasets that came with the run's, whatever validate says.
    assert sorted(t.task_id for t in dag.roots) == ["requeue", "validate"]
    assert dag.get_task("requeue").downstream_task_ids == set()


def test_rollback_dag_form(dagbag):
    dag = dagbag.dags["rollback"]
    assert type(dag.timetable).__name__ == "NullTimetable"  # triggered by a person only
    assert [t.task_id for t in dag.tasks] == ["roll_back"]
    params = dag.params
    assert params["to_version"] is None and params["dataset"] == "transactions"
    reason = params.get_param("reason").schema
    assert reason["minLength"] >= 1


def test_monitor_emits_retrain_requests_that_the_retrain_dag_is_scheduled_on(dagbag):
    from common.assets import RETRAIN_REQUESTS, datasets, retrain_request

    monitor = dagbag.dags["monitor"]
    assert [t.task_id for t in monitor.tasks] == ["monitor", "prune"]
    assert monitor.get_task("prune").upstream_task_ids == {"monitor"}
    # Only through the alias: a plain Asset outlet would get an event on every successful hour.
    assert monitor.get_task("monitor").outlets == [RETRAIN_REQUESTS]
    timetable = dagbag.dags["retrain"].timetable
    assert type(timetable).__name__ == "AssetOrTimeSchedule"
    assert timetable.timetable.expression == "0 1 * * *"  # still daily
    listened = {asset.uri for asset in timetable.asset_condition.objects}
    assert datasets() and listened == {retrain_request(name).uri for name in datasets()}
    assert type(timetable.asset_condition).__name__ == "AssetAny"  # any one dataset's request starts a run
    # The retrain run asks again, through the same alias, for the other datasets' requests it consumed; it reads
    # each dataset's events to ask for none twice.
    requeue = dagbag.dags["retrain"].get_task("requeue")
    assert requeue.outlets == [RETRAIN_REQUESTS]
    assert {asset.uri for asset in requeue.inlets} == listened


def test_every_dag_takes_the_dataset_by_the_settings_own_name_rule(dagbag):
    """The trigger form refuses a dataset name exactly when the settings would (the DAGs' pattern is a copy:
    a DAG file imports no pipelines module while it is parsed)."""
    import re

    from pipelines.settings import DATASET_NAME

    for dag_id in ("retrain", "monitor", "rollback"):
        schema = dagbag.dags[dag_id].params.get_param("dataset").schema
        assert schema["pattern"] == DATASET_NAME.pattern, dag_id
        for name in ("transactions", "bike-share_2", "../etc", "a b", "", "x;y"):
            assert bool(re.search(schema["pattern"], name)) == bool(DATASET_NAME.match(name)), name


def test_every_dags_dataset_is_the_deployments_by_default(monkeypatch):
    """CT_DATASET, which the CLI and serving read, is also what a scheduled run of each DAG acts on; a name the
    rule refuses fails the import, naming the variable."""
    from airflow.dag_processing.dagbag import BundleDagBag

    monkeypatch.setenv("CT_DATASET", "bikeshare")
    bag = BundleDagBag(dag_folder=str(DAGS_DIR), bundle_path=DAGS_DIR)
    assert {dag_id: dag.params["dataset"] for dag_id, dag in bag.dags.items()} == {
        p.stem: "bikeshare" for p in DAG_FILES
    }
    monkeypatch.setenv("CT_DATASET", "../x")
    broken = BundleDagBag(dag_folder=str(DAGS_DIR), bundle_path=DAGS_DIR)
    assert len(broken.import_errors) == len(DAG_FILES)
    assert all("CT_DATASET='../x'" in error for error in broken.import_errors.values())


def test_the_train_task_is_stopped_past_the_training_timeout_and_its_margin(dagbag, monkeypatch):
    """A training in the task's own process (one rank) has no launcher to stop it at CT_TRAIN_TIMEOUT_S: hung, it
    held the run's lock and the DAG's one active run for good. The task's limit is that timeout and an hour for
    the rest of the task, read as the settings read it; a value they refuse fails the import, naming it."""
    from airflow.dag_processing.dagbag import BundleDagBag

    from pipelines.settings import MAX_TIMEOUT_S, Settings

    default = Settings.model_fields["train_timeout_s"].default
    assert dagbag.dags["retrain"].get_task("train").execution_timeout == dt.timedelta(
        seconds=default, hours=1
    )
    monkeypatch.setenv("CT_TRAIN_TIMEOUT_S", "600")
    bag = BundleDagBag(dag_folder=str(DAGS_DIR), bundle_path=DAGS_DIR)
    assert bag.dags["retrain"].get_task("train").execution_timeout == dt.timedelta(minutes=70)
    for refused in ("inf", "nan", "0", "ten", str(MAX_TIMEOUT_S + 1)):
        monkeypatch.setenv("CT_TRAIN_TIMEOUT_S", refused)
        broken = BundleDagBag(dag_folder=str(DAGS_DIR), bundle_path=DAGS_DIR)
        assert any("CT_TRAIN_TIMEOUT_S" in error for error in broken.import_errors.values()), refused


def test_every_dags_engine_is_the_deployments_by_default(monkeypatch):
    """CT_ENGINE, which the CLI reads, is also what a scheduled run (and one the monitor asks for) runs on: the
    engine param's fixed default, dask, overrode it in every run nobody triggered by hand. A value the settings
    refuse fails the import, naming the variable."""
    from airflow.dag_processing.dagbag import BundleDagBag

    from pipelines.settings import ENGINE_NAMES

    monkeypatch.setenv("CT_ENGINE", "spark")
    bag = BundleDagBag(dag_folder=str(DAGS_DIR), bundle_path=DAGS_DIR)
    engines = {dag_id: dag.params["engine"] for dag_id, dag in bag.dags.items() if "engine" in dag.params}
    assert engines == {"retrain": "spark", "monitor": "spark"}
    for dag_id in engines:  # the form offers what the settings take
        assert tuple(bag.dags[dag_id].params.get_param("engine").schema["enum"]) == ENGINE_NAMES
    monkeypatch.setenv("CT_ENGINE", "flink")
    broken = BundleDagBag(dag_folder=str(DAGS_DIR), bundle_path=DAGS_DIR)
    assert sorted(broken.import_errors) == sorted(f"{name}.py" for name in engines)
    assert all("CT_ENGINE='flink'" in error for error in broken.import_errors.values())
