"""The loop closed through a real scheduler: drifted traffic served by the real app, the monitor DAG asks for a
retrain through the dataset's asset, and the retrain DAG runs on it with no person involved; a second ask
inside the cooldown is suppressed and recorded, and starts nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import time

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient

from pipelines.data import storage
from pipelines.data.generate import generate, generate_day
from pipelines.monitoring import verdict
from pipelines.monitoring.monitor import read_figures, read_triggers
from pipelines.release import history, tracking
from pipelines.serving.app import create_app, wait_until_ready
from pipelines.settings import INCLUDE_DIR, get_settings
from tests.days import DAY
from tests.monitoring_lab import request_rows, today, train_champion
from tests.scheduler import Airflow

pytestmark = pytest.mark.slow
ADMIN = {"admin": "admin"}


def _serve_drifted(settings, day: dt.date) -> None:
    """Today's source, shifted (the demo's covariate shift), sent through the real app with its join keys."""
    generate(settings, day, "covariate_shift")
    frame = generate_day(day, settings.seed, settings.rows_per_day, "covariate_shift")
    rows = request_rows(frame.head(1000), keyed=1000)
    with TestClient(create_app(settings)) as http:
        wait_until_ready(http)
        for start in range(0, len(rows), 100):
            assert http.post("/v1/predict", json={"rows": rows[start : start + 100]}).status_code == 200


@pytest.fixture
def loop(tmp_path, postgres):
    day = today(margin_minutes=10)
    policy = yaml.safe_load((INCLUDE_DIR / "monitoring_policy.yaml").read_text())
    policy["triggers"]["after_promotion_hours"] = 0  # the champion is promoted minutes before the traffic
    policy_path = tmp_path / "monitoring.yaml"
    policy_path.write_text(yaml.safe_dump(policy))
    env = {
        "CT_STATE_DIR": str(tmp_path / "state"),
        "CT_ROWS_PER_DAY": "1500",
        "CT_MODEL_FAMILY": "sklearn",
        "CT_MONITORING_POLICY_PATH": str(policy_path),
        "CT_SERVE_POLL_SECONDS": "0",
        # The retrain DAG's daily run would start for yesterday as soon as it is unpaused: it starts today.
        "CT_START_DATE": day.isoformat(),
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "True",  # asset-triggered runs are the scheduler's
    }
    settings = get_settings(
        state_dir=tmp_path / "state",
        rows_per_day=1500,
        model_family="sklearn",
        monitoring_policy_path=policy_path,
    )
    champion = train_champion(settings, DAY)
    _serve_drifted(settings, day)
    service = Airflow(tmp_path / "airflow", postgres.database("airflow_monitor"), env)
    service.home.mkdir(parents=True, exist_ok=True)  # its REST API's admin, for a clear as a person makes it
    (service.home / "simple_auth_manager_passwords.json.generated").write_text(json.dumps(ADMIN))
    service.start()
    yield service, settings, champion, day
    service.stop()


def _finished(airflow: Airflow, dag_id: str, run_type: str, count: int):
    def check() -> list[dict] | None:
        runs = [r for r in airflow.runs(dag_id) if r["run_type"] == run_type]
        return runs if len(runs) >= count and all(r["state"] in ("success", "failed") for r in runs) else None

    return check


def _settled(airflow: Airflow, dag_id: str):
    def check() -> dict[str, list[dict]] | None:
        runs = [r for r in airflow.runs(dag_id) if r["run_type"] == "scheduled"]
        return {"runs": runs} if runs and all(r["state"] in ("success", "failed") for r in runs) else None

    return check


def _clear(airflow: Airflow, dag_id: str, run_id: str) -> None:
    """Clear a run's tasks through the REST API, as a person re-runs it from the UI."""
    token = httpx.post(
        f"{airflow.url}/auth/token", json={"username": "admin", "password": ADMIN["admin"]}, timeout=60
    )
    assert token.status_code == 201, token.text
    cleared = httpx.post(
        f"{airflow.url}/api/v2/dags/{dag_id}/clearTaskInstances",
        json={"dag_run_id": run_id, "dry_run": False, "only_failed": False, "reset_dag_runs": True},
        headers={"Authorization": f"Bearer {token.json()['access_token']}"},
        timeout=120,
    )
    assert cleared.status_code == 200, cleared.text
    assert {t["task_id"] for t in cleared.json()["task_instances"]} == {"monitor", "prune"}, cleared.text


def _asset_events(airflow: Airflow, dataset: str) -> list[dict]:
    rows = airflow.query(
        "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE a.uri = :uri ORDER BY e.id",
        uri=f"ct-retrain://{dataset}/",
    )
    return [json.loads(r[0]) if isinstance(r[0], str) else r[0] for r in rows]


@pytest.mark.timeout(3000)
def test_drift_in_served_traffic_starts_a_retrain_with_no_person_involved(loop):
    airflow, settings, champion, day = loop
    for dag_id in ("monitor", "retrain"):
        airflow.wait_for(
            f"the {dag_id} DAG to be parsed", lambda d=dag_id: airflow.dag_parsed(d), timeout=600
        )
    airflow.unpause("retrain")  # an asset's consumer must be unpaused when the event comes
    airflow.cli("dags", "trigger", "monitor")  # judges the hour up to now: the traffic just sent
    airflow.unpause("monitor")
    monitored = airflow.wait_for("the monitor run", _finished(airflow, "monitor", "manual", 1), timeout=900)
    assert monitored[0]["state"] == "success", airflow.task_states("monitor", monitored[0]["run_id"])

    asked = [t for t in read_triggers(settings) if t["status"] == verdict.TRIGGERED]
    assert len(asked) == 1 and "feature_drift" in asked[0]["reasons"], read_triggers(settings)
    events = _asset_events(airflow, "transactions")
    assert len(events) == 1 and events[0]["day"] == day.isoformat() and events[0]["champion"] == champion
    assert "features drifted" in events[0]["reason"] and events[0]["figures"]["feature_drift"] >= 0.3
    # The run cleared and run again: the monitor asks Airflow for the interval's event, finds it, and does not
    # ask twice (it asks again only when its record says it asked and Airflow holds no event of it).
    _clear(airflow, "monitor", monitored[0]["run_id"])
    rerun = airflow.wait_for(
        "the cleared monitor run", _finished(airflow, "monitor", "manual", 1), timeout=900
    )
    assert rerun[0]["state"] == "success", airflow.task_states("monitor", rerun[0]["run_id"])
    judged = next(f for f in read_figures(settings) if f["interval"] == asked[0]["interval"])
    assert judged["status"] == verdict.TRIGGERED, judged  # the interval asked: its figures keep saying so
    start = dt.datetime.fromisoformat(judged["start"])  # the report is filed under the day it starts on
    report = storage.join(
        settings.monitoring_uri, "reports", f"ds={start.date()}", judged["interval"], "monitor.json"
    )
    assert storage.read_json(report)["verdict"]["status"] == verdict.ALREADY  # this judgement's own verdict
    assert len(_asset_events(airflow, "transactions")) == 1

    retrained = airflow.wait_for(
        "the retrain run the asset started", _finished(airflow, "retrain", "asset_triggered", 1), timeout=2400
    )
    assert len(retrained) == 1
    assert retrained[0]["state"] == "success", airflow.task_states("retrain", retrained[0]["run_id"])
    assert not [r for r in airflow.runs("retrain") if r["run_type"] == "scheduled"]

    # It trained on the day the monitor judged, says what started it, and the gate decided.
    client = tracking.configure(settings)
    runs = client.search_runs(
        [tracking.experiment_id(client, settings)], filter_string="tags.`ct.started_by` = 'monitor'"
    )
    assert len(runs) == 1 and runs[0].data.tags["airflow.run_id"] == retrained[0]["run_id"]
    assert "features drifted" in runs[0].data.tags["ct.start_reason"]
    gate = storage.read_json(storage.run_record_uri(settings.resolved_data_root, "transactions", day, "gate"))
    assert gate["result"]["decision"] in ("promote", "reject")
    if gate["result"]["decision"] == "promote":
        last = history.read(settings, settings.model_name)[-1]
        assert last["trigger"].startswith("gate (monitor)")
        assert json.loads(last["decision"])["started_by"]["by"] == "monitor"

    # A second look inside the cooldown asks again, and is suppressed: recorded, no event, no run. It is asked
    # for after the first's interval ends (a run by hand judges to the end of its minute; in the same minute it
    # would judge the same interval, and say so).
    first_end = dt.datetime.fromisoformat(asked[0]["at"])
    while dt.datetime.now(dt.UTC) <= first_end:
        time.sleep(1)
    airflow.cli("dags", "trigger", "monitor")
    monitored = airflow.wait_for(
        "the second monitor run", _finished(airflow, "monitor", "manual", 2), timeout=900
    )
    assert all(r["state"] == "success" for r in monitored)
    # The scheduled run made when the DAG was unpaused (for the last 5 past gone by) judged its whole hours; its
    # retries included, it ends, and in success (pendulum's times once failed every one of them).
    scheduled = airflow.wait_for(
        "the scheduled monitor runs to end", _settled(airflow, "monitor"), timeout=900
    )
    for run in scheduled["runs"]:
        assert run["state"] == "success", airflow.task_states("monitor", run["run_id"])
    suppressed = [t for t in read_triggers(settings) if t["status"] == verdict.SUPPRESSED]
    assert suppressed and suppressed[-1]["detail"].startswith("cooldown"), read_triggers(settings)
    assert len(_asset_events(airflow, "transactions")) == 1
    assert len([r for r in airflow.runs("retrain") if r["run_type"] == "asset_triggered"]) == 1
