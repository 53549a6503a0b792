"""Retrain requests of two datasets that queue behind a running retrain, through a real scheduler: the one run
that consumes both retrains the newer and asks again for the other, which starts a run of its own; the ask
cleared and re-run asks for nothing twice.

The requests are posted as a person (or another system) posts asset events, through the REST API, so the test
needs no monitor run; the running retrain they queue behind is a manual run whose tasks cannot start (the
default pool is emptied), so both requests wait, as they do behind a real retrain that takes an hour.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import httpx
import pytest

from tests.scheduler import Airflow

pytestmark = pytest.mark.slow
ADMIN = {"admin": "admin"}


@pytest.fixture
def airflow(tmp_path, postgres):
    env = {
        "CT_STATE_DIR": str(tmp_path / "state"),
        # The daily run would start for yesterday as soon as the DAG is unpaused: it starts today.
        "CT_START_DATE": dt.datetime.now(dt.UTC).date().isoformat(),
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "True",  # asset-triggered runs are the scheduler's
    }
    service = Airflow(tmp_path / "airflow", postgres.database("airflow_requests"), env)
    service.home.mkdir(parents=True, exist_ok=True)
    (service.home / "simple_auth_manager_passwords.json.generated").write_text(json.dumps(ADMIN))
    service.start()
    yield service
    service.stop()


def _api(airflow: Airflow) -> httpx.Client:
    token = httpx.post(
        f"{airflow.url}/auth/token", json={"username": "admin", "password": ADMIN["admin"]}, timeout=60
    )
    assert token.status_code == 201, token.text
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    return httpx.Client(base_url=f"{airflow.url}/api/v2", headers=headers, timeout=120)


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _asked(airflow: Airflow, dataset: str) -> list[dict[str, Any]]:
    """The events of a dataset's retrain-request asset, oldest first."""
    rows = airflow.query(
        "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE a.uri = :uri ORDER BY e.id",
        uri=f"ct-retrain://{dataset}/",
    )
    return [_json(row[0]) for row in rows]


def _consumed(airflow: Airflow, run_id: str) -> list[dict[str, Any]]:
    rows = airflow.query(
        "SELECT e.extra FROM asset_event e JOIN dagrun_asset_event d ON d.event_id = e.id "
        "JOIN dag_run r ON r.id = d.dag_run_id WHERE r.dag_id = 'retrain' AND r.run_id = :run ORDER BY e.id",
        run=run_id,
    )
    return [_json(row[0]) for row in rows]


def _requeued(airflow: Airflow, run_id: str, tries: int = 1) -> dict[str, Any] | None:
    """The requeue task's answer in ``run_id`` once it has succeeded ``tries`` times, else None."""
    done = airflow.query(
        "SELECT state, try_number FROM task_instance WHERE dag_id = 'retrain' AND run_id = :run "
        "AND task_id = 'requeue'",
        run=run_id,
    )
    if not done or done[0][0] != "success" or done[0][1] < tries:
        return None
    value = airflow.query(
        "SELECT value FROM xcom WHERE dag_id = 'retrain' AND run_id = :run AND task_id = 'requeue' "
        "AND key = 'return_value'",
        run=run_id,
    )
    return _json(value[0][0]) if value else None


def _asset_runs(airflow: Airflow, count: int):
    def check() -> list[dict[str, Any]] | None:
        runs = [r for r in airflow.runs("retrain") if r["run_type"] == "asset_triggered"]
        return runs if len(runs) >= count else None

    return check


def _fail(api: httpx.Client, run_id: str) -> None:
    """Mark a run failed, as a person does from the UI: its tasks that have not ended stop."""
    answer = api.patch(f"/dags/retrain/dagRuns/{run_id}", json={"state": "failed"})
    assert answer.status_code == 200, answer.text


def _request(dataset: str, interval: str) -> dict[str, Any]:
    """A request as the monitor emits it (a day no source holds: the run's own training fails at validate)."""
    return {"dataset": dataset, "day": "2011-01-05", "interval": interval, "reason": "test: features drifted"}


@pytest.mark.timeout(1800)
def test_requests_of_two_datasets_queued_behind_a_retrain_each_start_a_run(airflow):
    airflow.wait_for("the retrain DAG to be parsed", lambda: airflow.dag_parsed("retrain"), timeout=600)
    airflow.wait_for("the API server", airflow.api_server_ready, timeout=600)
    api = _api(airflow)
    airflow.cli("pools", "set", "default_pool", "0", "emptied by the test: no task starts")
    airflow.unpause("retrain")  # an asset's consumer must be unpaused when the event comes
    airflow.cli("dags", "trigger", "retrain")  # the retrain the requests queue behind
    manual = [r for r in airflow.runs("retrain") if r["run_type"] == "manual"]
    assert len(manual) == 1
    assets = {uri: asset_id for asset_id, uri in airflow.query("SELECT id, uri FROM asset")}
    for dataset, interval in (("breast_cancer", "2026-12-06T0900-1h"), ("bikeshare", "2026-12-06T1000-1h")):
        answer = api.post(
            "/assets/events",
            json={"asset_id": assets[f"ct-retrain://{dataset}/"], "extra": _request(dataset, interval)},
        )
        assert answer.status_code == 200, answer.text

    def queued() -> bool:
        rows = airflow.query("SELECT count(*) FROM asset_dag_run_queue WHERE target_dag_id = 'retrain'")
        return rows[0][0] == 2

    airflow.wait_for("both requests to queue behind the running retrain", queued, timeout=120)
    _fail(api, manual[0]["run_id"])
    airflow.cli("pools", "set", "default_pool", "128", "the default pool")

    # One run consumes both requests: it retrains the newer (bikeshare) and asks again for breast_cancer.
    first = airflow.wait_for("the run the requests started", _asset_runs(airflow, 1), timeout=600)[0]
    assert {e["dataset"] for e in _consumed(airflow, first["run_id"])} == {"breast_cancer", "bikeshare"}
    answer = airflow.wait_for(
        "the first run's requeue", lambda: _requeued(airflow, first["run_id"]), timeout=600
    )
    assert answer == {"retrains": "bikeshare", "asked_again": ["breast_cancer"], "already_asked": []}
    asked = _asked(airflow, "breast_cancer")
    assert len(asked) == 2 and asked[1]["requeued_by"] == first["run_id"]
    assert {k: asked[1][k] for k in ("dataset", "day", "interval")} == {
        "dataset": "breast_cancer",
        "day": "2011-01-05",
        "interval": "2026-12-06T0900-1h",
    }
    _fail(api, first["run_id"])  # its own training would fail at validate: no source holds the day

    # The ask again starts a run of its own, after the first: it retrains breast_cancer, and passes nothing on.
    runs = airflow.wait_for("the run the ask again started", _asset_runs(airflow, 2), timeout=600)
    second = next(r for r in runs if r["run_id"] != first["run_id"])
    assert [e["dataset"] for e in _consumed(airflow, second["run_id"])] == ["breast_cancer"]
    answer = airflow.wait_for(
        "the second run's requeue", lambda: _requeued(airflow, second["run_id"]), timeout=600
    )
    assert answer == {"retrains": "breast_cancer", "asked_again": [], "already_asked": []}
    _fail(api, second["run_id"])

    # The first run's requeue cleared and run again, as a person re-runs a task: it finds its ask, and does not
    # ask twice (a second event would start a second retrain of breast_cancer).
    cleared = api.post(
        "/dags/retrain/clearTaskInstances",
        json={
            "dag_run_id": first["run_id"],
            "task_ids": ["requeue"],
            "dry_run": False,
            "only_failed": False,
            "reset_dag_runs": True,
        },
    )
    assert cleared.status_code == 200, cleared.text
    answer = airflow.wait_for(
        "the cleared requeue", lambda: _requeued(airflow, first["run_id"], tries=2), timeout=600
    )
    assert answer == {"retrains": "bikeshare", "asked_again": [], "already_asked": ["breast_cancer"]}
    assert len(_asked(airflow, "breast_cancer")) == 2
    assert len(airflow.runs("retrain")) == 3  # the manual run, and one run per dataset
