"""The plugin in a real Airflow (``airflow standalone`` on PostgreSQL, plugins/ as its plugins folder) over a
real MLflow store: it loads, refuses anonymous requests, shows the champion and the versions a rollback may
target, triggers the rollback DAG as the signed-in user, and links the retrain DAG's tasks to MLflow."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.scheduler import Airflow

pytestmark = pytest.mark.slow

MLFLOW_UI = "http://mlflow.test:5000"
USERS = {"admin": "admin", "viewer": "viewer"}  # simple auth manager: name -> password (roles alike)


def _seed(state: Path):
    """A registry with three versions, each from a real MLflow run with metrics and lineage tags; v1 then v3
    promoted (history: v1 was champion before), v2 the challenger with a file altered after registration."""
    from pipelines.release import integrity, tracking
    from pipelines.release.promote import move_champion
    from pipelines.settings import get_settings

    settings = get_settings(state_dir=state)
    client = tracking.configure(settings)
    experiment = tracking.experiment_id(client, settings)
    client.create_registered_model(settings.model_name)
    runs = {}
    for number in (1, 2, 3):
        run = client.create_run(experiment)
        client.log_metric(run.info.run_id, "val_auc", 0.8 + number / 100)
        client.log_metric(run.info.run_id, "holdout_auc", 0.79 + number / 100)
        client.set_terminated(run.info.run_id)
        source = state / "models" / f"v{number}"
        source.mkdir(parents=True)
        (source / "MLmodel").write_text(f"version: {number}\n")
        tags = integrity.tags_for(integrity.build_manifest(source)) | {
            "dataset.version": f"dataset-{number}",
            "gate.decision": "reject" if number == 2 else "promote",
            "airflow.run_url": f"http://airflow.test/dags/retrain/runs/run{number}",
        }
        client.create_model_version(
            settings.model_name, source.resolve().as_uri(), run_id=run.info.run_id, tags=tags
        )
        runs[number] = run.info.run_id
    move_champion(settings, 1, None, trigger="test", reason="bootstrap")
    move_champion(settings, 3, 1, trigger="test", reason="better")
    client.set_registered_model_alias(settings.model_name, tracking.CHALLENGER, "2")
    (state / "models" / "v2" / "MLmodel").write_text("version: 2, altered\n")
    return settings, experiment, runs


@pytest.fixture(scope="module")
def airflow(tmp_path_factory, postgres):
    root = tmp_path_factory.mktemp("plugin")
    seeded = _seed(root / "state")
    service = Airflow(
        root / "airflow",
        postgres.database("airflow_plugin"),
        {
            "CT_STATE_DIR": str(root / "state"),
            "CT_MLFLOW_UI_URL": MLFLOW_UI,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
        },
    )
    service.home.mkdir(parents=True, exist_ok=True)  # scripts/env.sh, read by Airflow(), made it
    (service.home / "simple_auth_manager_passwords.json.generated").write_text(json.dumps(USERS))
    service.start()
    try:
        service.wait_for("the API server", service.api_server_ready, timeout=600)
        for dag_id in ("retrain", "rollback"):
            service.wait_for(
                f"the {dag_id} DAG to be parsed", lambda d=dag_id: service.dag_parsed(d), timeout=600
            )
        service.seeded = seeded
        yield service
    finally:
        service.stop()


def _client(airflow: Airflow, user: str | None = None) -> httpx.Client:
    headers = {}
    if user is not None:
        answer = httpx.post(
            f"{airflow.url}/auth/token", json={"username": user, "password": USERS[user]}, timeout=60
        )
        assert answer.status_code == 201, answer.text
        headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
    return httpx.Client(base_url=airflow.url, headers=headers, timeout=120)


def test_the_plugin_loads_with_its_links_app_and_navigation_entry(airflow):
    listed = json.loads(airflow.cli("plugins", "-o", "json"))
    plugin = next(p for p in listed if p["name"] == "continuous_training")
    assert len(plugin["operator_extra_links"]) == 4
    assert plugin["fastapi_apps"][0]["url_prefix"] == "/ct"
    with _client(airflow, "admin") as admin:
        served = admin.get("/api/v2/plugins").json()["plugins"]
    plugin = next(p for p in served if p["name"] == "continuous_training")
    assert [(v["name"], v["href"]) for v in plugin["external_views"]] == [
        ("Models", "/ct/models"),
        ("MLflow", MLFLOW_UI),
    ]


def test_anonymous_requests_are_refused(airflow):
    with _client(airflow) as anonymous:
        assert anonymous.get("/ct/models").status_code == 401
        assert anonymous.get("/ct/models/overview.json").status_code == 401
        page = anonymous.get("/ct/models", headers={"Accept": "text/html"})
        assert page.status_code == 401 and "Sign in to Airflow" in page.text
        refused = anonymous.post("/ct/models/rollback", data={"dataset": "transactions", "to_version": "1"})
        assert refused.status_code == 401
        forged = anonymous.get("/ct/models", headers={"Authorization": "Bearer not-a-token"})
        assert forged.status_code in (401, 403)
    assert airflow.runs("rollback") == []


def test_a_signed_in_user_sees_the_champion_the_versions_and_only_verified_candidates(airflow):
    with _client(airflow, "admin") as admin:
        found = admin.get("/ct/models/overview.json").json()
        page = admin.get("/ct/models")
    assert (found["champion"], found["recorded_champion"], found["challenger"]) == (3, 3, 2)
    assert found["problem"] is None
    assert [v["version"] for v in found["versions"]] == [3, 2, 1]
    assert [v["aliases"] for v in found["versions"]] == [["champion"], ["challenger"], []]
    newest = found["versions"][0]
    assert newest["metrics"] == {"holdout_auc": pytest.approx(0.82), "val_auc": pytest.approx(0.83)}
    assert (newest["dataset_version"], newest["gate_decision"]) == ("dataset-3", "promote")
    assert newest["mlflow_url"] == f"{MLFLOW_UI}/#/models/ct-transactions/versions/3"
    # v1 was champion before and its files match; v2's file was altered after registration: refused.
    assert [c["version"] for c in found["candidates"]] == [1]
    assert [v for v, _ in found["refused"]] == [2] and "altered: MLmodel" in found["refused"][0][1]
    assert [(h["action"], h["to_version"], h["outcome"]) for h in found["history"]][:2] == [
        ("promote", 3, "promoted"),
        ("promote", 3, "pending"),
    ]
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    form = re.search(r'<select id="to_version".*?</select>', page.text, re.S)
    assert form is not None and re.findall(r'<option value="(\d+)"', form.group(0)) == ["1"]
    assert "Trigger the rollback DAG" in page.text and "<script src" not in page.text


def test_a_viewer_may_look_but_not_roll_back(airflow):
    with _client(airflow, "viewer") as viewer:
        page = viewer.get("/ct/models")
        assert page.status_code == 200 and "may not trigger" in page.text
        refused = viewer.post(
            "/ct/models/rollback", data={"dataset": "transactions", "to_version": "1", "reason": "try it"}
        )
        assert refused.status_code == 403
    assert airflow.runs("rollback") == []


def test_a_rollback_triggers_the_rollback_dag_as_the_signed_in_user(airflow):
    with _client(airflow, "admin") as admin:
        not_offered = admin.post(
            "/ct/models/rollback", data={"dataset": "transactions", "to_version": "2", "reason": "try v2"}
        )
        assert not_offered.status_code == 400 and "not a version to roll back to" in not_offered.text
        no_reason = admin.post(
            "/ct/models/rollback", data={"dataset": "transactions", "to_version": "1", "reason": "  "}
        )
        assert no_reason.status_code == 400
        foreign = admin.post(
            "/ct/models/rollback",
            data={"dataset": "transactions", "to_version": "1", "reason": "v3 misbehaves"},
            headers={"Origin": "http://elsewhere.example"},
        )
        assert foreign.status_code == 403
        # Signed in by the browser's cookie, which SameSite=lax sends from any page of the site (another port
        # of the host): the post must name Airflow's own page; one that names none was let through.
        token = admin.headers["Authorization"].removeprefix("Bearer ")
        with httpx.Client(base_url=airflow.url, cookies={"_token": token}, timeout=120) as browser:
            form = {"dataset": "transactions", "to_version": "1", "reason": "v3 misbehaves"}
            assert browser.get("/ct/models/overview.json").status_code == 200  # the cookie signs it in
            for headers in ({}, {"Origin": "null"}, {"Referer": "http://elsewhere.example/page"}):
                refused = browser.post("/ct/models/rollback", data=form, headers=headers)
                assert refused.status_code == 403, (headers, refused.text)
        # A form made under another champion (posted again after its rollback ran, or left open while a
        # promotion ran): it rolled back the newer champion under the old reason.
        stale = admin.post(
            "/ct/models/rollback",
            data={
                "dataset": "transactions",
                "to_version": "1",
                "reason": "v2 misbehaves",
                "from_version": "2",
            },
        )
        assert stale.status_code == 409 and "v3 is champion now; the form was made when v2 was" in stale.text
        # A form made when no version was champion on the record: it sent no champion, and rolled back the one a
        # promotion made since.
        unchampioned = admin.post(
            "/ct/models/rollback",
            data={
                "dataset": "transactions",
                "to_version": "1",
                "reason": "v2 misbehaves",
                "from_version": "none",
            },
        )
        assert unchampioned.status_code == 409, unchampioned.text
        assert "v3 is champion now; the form was made when no version was" in unchampioned.text
        assert airflow.runs("rollback") == []
        page = admin.get("/ct/models?dataset=transactions")
        assert '<input type="hidden" name="from_version" value="3">' in page.text
        done = admin.post(
            "/ct/models/rollback",
            data={
                "dataset": "transactions",
                "to_version": "1",
                "reason": "v3 misbehaves",
                "from_version": "3",
            },
            headers={"Accept": "text/html"},
        )
        assert done.status_code == 201, done.text
        (run,) = airflow.runs("rollback")
        assert run["run_id"] in done.text and "is paused" in done.text  # nobody asked to unpause it
        unpaused = admin.post(
            "/ct/models/rollback",
            data={"dataset": "transactions", "to_version": "1", "reason": "v3 misbehaves", "unpause": "true"},
        )
        assert unpaused.status_code == 201, unpaused.text
    assert run["conf"] == {
        "dataset": "transactions",
        "to_version": 1,
        "reason": "v3 misbehaves",
        "from_version": 3,
    }
    (who,) = airflow.query("SELECT triggering_user_name FROM dag_run WHERE run_id = :r", r=run["run_id"])
    assert who == ("admin",)
    # The unpause is in Airflow's audit log as its own toggle records it, and on the trigger's row.
    assert airflow.query("SELECT is_paused FROM dag WHERE dag_id = 'rollback'") == [(False,)]
    logged = airflow.query("SELECT event, owner, extra FROM log WHERE dag_id = 'rollback' ORDER BY id")
    assert [(event, owner) for event, owner, _ in logged] == [
        ("trigger_dag_run", "admin"),
        ("patch_dag", "admin"),
        ("trigger_dag_run", "admin"),
    ], logged
    assert [
        json.loads(extra).get("unpaused", json.loads(extra).get("is_paused")) for *_, extra in logged
    ] == [
        False,
        False,
        True,
    ]


def test_the_retrain_tasks_link_to_their_mlflow_pages(airflow):
    settings, experiment, runs = airflow.seeded
    name = settings.model_name
    returned = {
        "train": {"run_id": runs[3], "val_metrics": {"auc": 0.83}},
        "register": {"name": name, "version": 3, "run_id": runs[3], "tags": {}},
        "drift": {"drift_share": 0.0, "mlflow_artifacts": f"runs:/{runs[3]}/drift"},
        "gate": {"decision": "promote", "challenger_version": 3, "champion_version": 1},
        "promote": {"name": name, "champion": 3, "previous": 1, "changed": True},
    }
    run_page = f"{MLFLOW_UI}/#/experiments/{experiment}/runs/{runs[3]}"
    expected = {
        "train": ("MLflow run", run_page),
        "register": ("MLflow model version", f"{MLFLOW_UI}/#/models/{name}/versions/3"),
        "drift": ("Drift report", f"{run_page}/artifacts/drift/drift.html"),
        "gate": ("Decision record", f"{run_page}/artifacts/gate/decision.md"),
        "promote": ("MLflow model version", f"{MLFLOW_UI}/#/models/{name}/versions/3"),
    }
    with _client(airflow, "admin") as admin:
        links = {"MLflow run", "MLflow model version", "Drift report", "Decision record"}
        # A run of the paused DAG: its task instances exist, nothing executes; the returns are set here.
        created = admin.post("/api/v2/dags/retrain/dagRuns", json={"logical_date": None})
        assert created.status_code == 200, created.text
        run_path = (
            f"/api/v2/dags/retrain/dagRuns/{quote(created.json()['dag_run_id'], safe='')}/taskInstances"
        )
        # Registered on the retrain DAG's @task tasks (Airflow's task listing does not show plugin links;
        # its links endpoint does), each empty until its task has returned.
        for task_id in ("train", "register", "evaluate", "drift", "gate", "promote"):
            found = admin.get(f"{run_path}/{task_id}/links").json()["extra_links"]
            assert found == dict.fromkeys(links), (task_id, found)
        for task_id, value in returned.items():
            put = admin.post(
                f"{run_path}/{task_id}/xcomEntries", json={"key": "return_value", "value": value}
            )
            assert put.status_code == 201, put.text
        for task_id, (link, url) in expected.items():
            found = admin.get(f"{run_path}/{task_id}/links").json()["extra_links"]
            assert found == dict.fromkeys(links) | {link: url}, task_id
        assert admin.get(f"{run_path}/evaluate/links").json()["extra_links"] == dict.fromkeys(links)
