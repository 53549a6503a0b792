"""The real `retrain` DAG through Airflow (dag.test): bootstrap, then a drifted day, then broken data.

Each test has its own state folder (data, MLflow registry, promotion history); a test that needs a
champion makes its own (`_seed_champions`), so that any one of them runs alone or in any order.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

# Airflow's task runner cancels a SIGALRM timer when a task ends, pytest-timeout's among them: the thread method
# is the one that still ends a test hung in a DAG run (tests/unit/test_suite_timeouts.py)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900, method="thread")]

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
SEED_DAY = dt.date(2026, 11, 20)
AIRFLOW_URL = "http://airflow.test:8123"  # the tasks' [api] base_url: where MLflow runs link back to


@pytest.fixture(scope="module")
def airflow_db():
    """Airflow's metadata database (in the session's throwaway Airflow home), migrated once."""
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)


@pytest.fixture
def airflow_env(airflow_db, tmp_path, monkeypatch):
    """The `retrain` DAG, freshly parsed, and this test's own, empty state folder.

    The DAG's tasks build their settings from the environment, so the state folder is set there. The
    DAG is parsed per test: dag.test keeps a run's conf as the DAG's params.
    """
    from airflow.dag_processing.dagbag import BundleDagBag

    state = tmp_path / "state"
    for key, value in {
        "CT_STATE_DIR": str(state),
        "CT_ROWS_PER_DAY": "4000",
        "CT_TRAIN_EPOCHS": "4",
        "AIRFLOW__API__BASE_URL": AIRFLOW_URL,  # the address MLflow's runs link back to
    }.items():
        monkeypatch.setenv(key, value)
    return BundleDagBag(dag_folder=str(DAGS_DIR), bundle_path=DAGS_DIR).dags["retrain"], state


def _seed_champions(count: int) -> list[int]:
    """Register ``count`` versions of the demo model, each promoted over the one before; their numbers.

    scikit-learn on one prepared day, outside Airflow: the champion (the last) and the history behind it
    that a test needs, made by that test.
    """
    from pipelines.data.generate import generate
    from pipelines.data.prepare import prepare
    from pipelines.data.validate import validate
    from pipelines.release import tracking
    from pipelines.release.promote import move_champion
    from pipelines.release.register import register
    from pipelines.settings import get_settings
    from pipelines.training.train import train

    settings = get_settings()
    generate(settings, SEED_DAY, "none")
    validate(settings, SEED_DAY)
    dataset_uri = prepare(settings, SEED_DAY, "dask")["uri"]
    versions: list[int] = []
    for n in range(count):
        trained = train(settings, SEED_DAY, dataset_uri, tracking.RunContext(f"test/seed-{n}"), "sklearn")
        version = register(settings, SEED_DAY, trained["run_id"])["version"]
        move_champion(settings, version, versions[-1] if versions else None, trigger="test seed")
        versions.append(version)
    return versions


DEFAULTS = {
    "dataset": "transactions",
    "engine": "dask",
    "model_family": "torch",
    "scenario": "none",
    "dry_run": False,
}


def _run(dag, day: dt.date, conf: dict):
    """One run; every param is given, since dag.test keeps an earlier run's conf as the DAG's params."""
    logical = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    return dag.test(logical_date=logical, run_conf=DEFAULTS | conf)


def test_retrain_dag_bootstraps_then_judges_a_challenger(airflow_env):
    from pipelines.data import runlog
    from pipelines.release import history, tracking
    from pipelines.settings import get_settings

    dag, state = airflow_env
    first = _run(dag, dt.date(2026, 11, 20), {"scenario": "none"})
    assert first.state == "success"
    second = _run(dag, dt.date(2026, 11, 21), {"scenario": "concept_drift", "model_family": "sklearn"})
    assert second.state == "success"
    assert second.get_task_instance("prune").state == "success"  # retention ran once the day was decided

    settings = get_settings()
    client = tracking.configure(settings)
    champion = tracking.version_by_alias(client, settings.model_name, "champion")
    assert champion is not None
    for tag in (
        "dataset.hash",
        "dataset.uri",
        "airflow.dag_id",
        "airflow.run_id",
        "airflow.run_url",
        "git.commit",
        "model.family",
    ):
        assert champion.tags.get(tag), f"champion lacks lineage tag {tag}"
    assert champion.tags["airflow.dag_id"] == "retrain"
    # The version links back to the Airflow run that made it (Airflow's [api] base_url, quoted run id).
    run_url = tracking.airflow_run_url(AIRFLOW_URL, "retrain", champion.tags["airflow.run_id"])
    assert run_url.startswith("http://airflow.test:8123/dags/retrain/runs/")
    assert champion.tags["airflow.run_url"] == run_url
    assert client.get_run(champion.run_id).data.tags["airflow.run_url"] == run_url

    records = runlog.read_records(settings, dt.date(2026, 11, 21))
    # validate wrote the demo's day first, with the scenario the run asked for.
    assert records["generate"]["result"]["scenario"] == "concept_drift"
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
    assert [r["outcome"] for r in rows[:2]] == ["pending", "promoted"]  # written ahead, then completed
    assert (
        rows[1]["from_version"] is None and rows[1]["ref"] == rows[0]["id"] and not history.unresolved(rows)
    )
    if decision["decision"] == "promote":
        assert int(champion.version) == decision["challenger_version"]
        assert rows[-1]["to_version"] == decision["challenger_version"]
        assert json.loads(rows[-1]["decision"])["decision"] == "promote"
    else:
        assert "promote" not in records


def test_broken_data_stops_the_run_before_training(airflow_env):
    from pipelines.release import tracking
    from pipelines.settings import get_settings

    dag, _ = airflow_env
    seeds = _seed_champions(1)
    settings = get_settings()
    client = tracking.configure(settings)
    versions_before = len(client.search_model_versions(f"name = '{settings.model_name}'"))
    champion_before = tracking.version_by_alias(client, settings.model_name, "champion")
    assert int(champion_before.version) == seeds[-1]
    run = _run(dag, dt.date(2026, 11, 22), {"scenario": "schema_break"})
    assert run.state == "failed"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["validate"] == "failed"
    assert states["train"] in ("upstream_failed", None)
    assert len(client.search_model_versions(f"name = '{settings.model_name}'")) == versions_before
    champion_after = tracking.version_by_alias(client, settings.model_name, "champion")
    assert (champion_after and champion_after.version) == (champion_before and champion_before.version)
    # The failing day is quarantined with its report, and nothing was committed for it.
    from pipelines.data import storage
    from pipelines.data.quarantine import quarantine_uri

    folder = quarantine_uri(settings.resolved_data_root, settings.dataset, dt.date(2026, 11, 22))
    assert storage.read_json(storage.join(folder, "validation.json"))["ok"] is False
    assert not storage.exists(
        storage.raw_uri(settings.resolved_data_root, settings.dataset, dt.date(2026, 11, 22))
    )


def test_a_champion_alias_moved_outside_the_gate_stops_the_run_at_its_start(airflow_env):
    from pipelines.release import audit, history, tracking
    from pipelines.settings import get_settings

    dag, _ = airflow_env
    other, recorded = _seed_champions(2)
    settings = get_settings()
    client = tracking.configure(settings)
    assert history.champion(history.read(settings, settings.model_name)) == recorded
    client.set_registered_model_alias(settings.model_name, "champion", str(other))  # MLflow's alias editor
    try:
        run = _run(dag, dt.date(2026, 11, 23), {})
        states = {ti.task_id: ti.state for ti in run.get_task_instances()}
        assert run.state == "failed" and states["validate"] == "failed"
        assert states["train"] in ("upstream_failed", None)
    finally:
        repaired = audit.check(settings, repair=True)
    assert repaired["repaired"] and repaired["consistent"]
    assert int(tracking.version_by_alias(client, settings.model_name, "champion").version) == recorded


def test_a_real_dataset_from_its_own_source_runs_the_whole_dag(airflow_env, tmp_path, monkeypatch):
    """scikit-learn's breast cancer data, as daily CSV exports at a user's URI: nothing tuned to the demo."""
    from pipelines.data.samples import write_sample
    from pipelines.release import tracking
    from pipelines.settings import get_settings

    dag, _ = airflow_env
    (demo_champion,) = _seed_champions(1)
    monkeypatch.setenv("CT_SOURCE_URI", str(tmp_path / "exports" / "bc-{ds}.csv"))
    monkeypatch.setenv("CT_WINDOW_DAYS", "3")
    day = dt.date(2026, 11, 20)
    settings = get_settings(dataset="breast_cancer")
    write_sample(settings, "breast_cancer", day, days=3)

    run = _run(dag, day, {"dataset": "breast_cancer", "model_family": "torch", "engine": "spark"})
    assert run.state == "success"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["validate"] == "success"
    client = tracking.configure(settings)
    champion = tracking.version_by_alias(client, "ct-breast_cancer", "champion")
    assert champion is not None and champion.tags["dataset.engine"] == "spark"
    run_data = client.get_run(champion.run_id).data
    assert run_data.metrics["val_roc_auc"] > 0.9
    assert int(run_data.params["train_rows"]) > 300  # the whole 3-day window, 569 rows, was read
    # The demo dataset's champion is another registered model, untouched.
    after = tracking.version_by_alias(client, "ct-transactions", "champion")
    assert int(after.version) == demo_champion


def _approval_policy(tmp_path: Path) -> Path:
    """A policy that lets any working challenger through the gate, so that the person's answer decides."""
    path = tmp_path / "approval_policy.yaml"
    path.write_text(
        "version: 1\nprimary_metric: roc_auc\nhigher_is_better: true\nmin_improvement: -1\n"
        "min_holdout_rows: 1\nbootstrap: {tolerance: 1}\napproval: required\n"
    )
    return path


def _answer(day: dt.date, option: str, who: str) -> dict | None:
    """Answer the run's open approval request as Airflow's HITL API handler does (PATCH .../hitlDetails).

    The same three steps as the handler, without HTTP: record who chose what on the request, then resume
    the parked task with the response as its event (the handler's ``handle_event_submit``).
    """
    from airflow.models.dagrun import DagRun
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.trigger import handle_event_submit
    from airflow.triggers.base import TriggerEvent
    from airflow.utils import timezone
    from airflow.utils.session import create_session

    with create_session() as session:
        ti = (
            session.query(TaskInstance)
            .join(DagRun, (DagRun.dag_id == TaskInstance.dag_id) & (DagRun.run_id == TaskInstance.run_id))
            .filter(TaskInstance.dag_id == "retrain", TaskInstance.task_id == "approve")
            .filter(TaskInstance.state == "awaiting_input")
            .filter(DagRun.logical_date == dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC))
            .one_or_none()
        )
        if ti is None:
            return None
        detail = session.query(HITLDetail).filter(HITLDetail.ti_id == ti.id).one()
        asked = {"subject": detail.subject, "body": detail.body, "options": list(detail.options)}
        detail.responded_by = {"id": who, "name": who}
        detail.responded_at = timezone.utcnow()
        detail.chosen_options = [option]
        detail.params_input = {}
        session.add(detail)
        handle_event_submit(TriggerEvent(detail.as_resume_event_payload()), task_instance=ti, session=session)
        return asked


def _run_and_answer(dag, day: dt.date, conf: dict, option: str, who: str = "reviewer"):
    """Run the DAG; a second thread plays the person who answers the approval request once it is asked.

    dag.test keeps the run alive while the approve task waits for input (dag.test must own the main
    thread, for its signal handlers); the answer flips the task back to scheduled, as the UI's does.
    """
    import threading
    import time

    from sqlalchemy.exc import SQLAlchemyError

    asked: dict = {}
    done = threading.Event()

    def person() -> None:
        # Until the run ends: an answer given in the instant the task parks itself (80 ms after it started, on a
        # fast run) was overwritten by the parking's own write, the task waited for input again with the
        # response recorded, and the run hung (CI, 2026-12-06). Such a task is answered again, as a person
        # would click again; a task that resumed is no longer awaiting input, so it is never answered twice.
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            try:
                answered = _answer(day, option, who)
            except SQLAlchemyError as exc:  # the run holds the database; keep trying, report the last error
                asked["error"] = repr(exc)
                answered = None
            if answered:
                asked.clear()
                asked.update(answered)
            if done.wait(0.5):  # no event tells us the request is open: look again, until the run ends
                return

    thread = threading.Thread(target=person, daemon=True)
    thread.start()
    try:
        run = _run(dag, day, conf)
    finally:
        done.set()
        thread.join(timeout=30)
    return run, asked if "body" in asked else None


def test_approval_granted_then_rejected(airflow_env, tmp_path, monkeypatch):
    """approval: required makes the run wait for a person; Approve promotes, Reject records who said no."""
    from pipelines.release import history, tracking
    from pipelines.release.promote import rollback
    from pipelines.settings import get_settings

    dag, _ = airflow_env
    (before,) = _seed_champions(1)
    monkeypatch.setenv("CT_POLICY_PATH", str(_approval_policy(tmp_path)))
    settings = get_settings()
    client = tracking.configure(settings)
    assert int(tracking.version_by_alias(client, settings.model_name, "champion").version) == before

    run, asked = _run_and_answer(dag, dt.date(2026, 11, 23), {"model_family": "sklearn"}, "Approve")
    assert asked is not None, "the run never asked for approval"
    assert "Promotion decision" in asked["body"] and "confidence_interval" in asked["body"]
    assert asked["options"] == ["Approve", "Reject"]
    # The subject renders the dataset the gate pushed (the one this run trains). A run the monitor asked for
    # another dataset, where the params' default differs, is not run here: this checks the template renders.
    assert re.fullmatch(r"Promote transactions model v\d+\?", asked["subject"]), asked["subject"]
    assert run.state == "success"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["approve"] == "success" and states["promote"] == "success"
    assert states["record_rejection"] == "skipped"
    approved = int(tracking.version_by_alias(client, settings.model_name, "champion").version)
    assert approved != before
    last = history.read(settings, settings.model_name)[-1]
    assert (last["outcome"], last["from_version"], last["to_version"]) == ("promoted", before, approved)
    assert last["trigger"] == "gate (manual), approved by reviewer"  # a person started the run

    # The gate lets the next challenger through too; this time the person says no.
    run, asked = _run_and_answer(
        dag, dt.date(2026, 11, 24), {"model_family": "sklearn", "scenario": "concept_drift"}, "Reject"
    )
    assert asked is not None and run.state == "success"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["promote"] == "skipped" and states["record_rejection"] == "success"
    assert int(tracking.version_by_alias(client, settings.model_name, "champion").version) == approved
    last = history.read(settings, settings.model_name)[-1]
    assert (last["action"], last["outcome"], last["from_version"]) == ("approval", "rejected", approved)
    assert last["reason"].startswith("rejected by ")

    # A person rolls the approved version back; the first day's run again brings the same version to the
    # gate, and a second approval cannot undo the rollback. The refusal is final: recorded once, not retried.
    rollback(settings, before, "approved model misbehaves", trigger="test")
    rows = len(history.read(settings, settings.model_name))
    run, asked = _run_and_answer(dag, dt.date(2026, 11, 23), {"model_family": "sklearn"}, "Approve")
    assert asked is not None and run.state == "failed"
    tries = {ti.task_id: (ti.state, ti.try_number) for ti in run.get_task_instances()}
    assert tries["promote"] == ("failed", 1)
    added = history.read(settings, settings.model_name)[rows:]
    assert [(row["outcome"], row["to_version"]) for row in added] == [("refused", approved)]
    assert int(tracking.version_by_alias(client, settings.model_name, "champion").version) == before


def test_rollback_dag_from_the_trigger_form(airflow_env, tmp_path, monkeypatch):
    import httpx
    from airflow.dag_processing.dagbag import BundleDagBag

    from pipelines.release import history, promote, tracking
    from pipelines.settings import get_settings
    from tests.serving_models import ServerProcess

    rollback_dag = BundleDagBag(dag_folder=str(DAGS_DIR), bundle_path=DAGS_DIR).dags["rollback"]
    first, previous, current = _seed_champions(3)
    settings = get_settings()
    client = tracking.configure(settings)
    assert int(tracking.version_by_alias(client, settings.model_name, "champion").version) == current
    assert promote.previous_champion(settings, current) == previous
    # A serving app that does not poll: only the rollback task's call can make it swap.
    server = ServerProcess(
        settings, tmp_path / "serve.log", CT_SERVE_POLL_SECONDS="0", CT_SERVE_ADMIN_TOKEN="t0k"
    )
    monkeypatch.setenv("CT_SERVE_URLS", server.url)
    monkeypatch.setenv("CT_SERVE_ADMIN_TOKEN", "t0k")
    try:
        assert server.wait_ready()["model_version"] == current
        run = rollback_dag.test(run_conf={"reason": "bad predictions reported by support"})
        assert run.state == "success"
        assert httpx.get(f"{server.url}/v1/model").json()["version"] == previous
    finally:
        server.stop()
    assert int(tracking.version_by_alias(client, settings.model_name, "champion").version) == previous
    last = history.read(settings, settings.model_name)[-1]
    assert (last["action"], last["outcome"], last["from_version"], last["to_version"]) == (
        "rollback",
        "rolled_back",
        current,
        previous,
    )
    assert last["reason"] == "bad predictions reported by support" and last["dag_id"] == "rollback"

    run = rollback_dag.test(run_conf={"reason": "back to the first model", "to_version": first})
    assert run.state == "success"
    assert int(tracking.version_by_alias(client, settings.model_name, "champion").version) == first
    refused = rollback_dag.test(run_conf={"reason": "to a version that does not exist", "to_version": 999})
    assert refused.state == "failed"
    assert int(tracking.version_by_alias(client, settings.model_name, "champion").version) == first
