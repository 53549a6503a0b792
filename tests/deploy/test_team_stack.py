"""The team deployment for real: the repo's Dockerfile and docker-compose.yaml in Podman containers.

The stack is built offline and started from the same ``docker-compose.yaml`` a team runs (the env file adds
only image names, ports and three knobs), and everything below goes through its published ports: Airflow's
REST API, the MLflow server, the serving proxy. Runs go through the real scheduler, Redis and the Celery
workers; data is prepared on the Dask cluster and, as clients of the stack's Spark Connect server, on the Spark
cluster (no task starts a Spark driver for it), and the torch model's two DDP ranks train on the Spark workers
(``CT_TRAIN_LAUNCHER=spark``), one per worker container. On a machine that cannot run containers the module is
skipped with the reason.
"""

from __future__ import annotations

import json
import secrets
import time
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.deploy.stack import AirflowApi, Stack, wait_until, why_no_containers

pytestmark = [pytest.mark.slow, pytest.mark.deploy, pytest.mark.timeout(5400)]

FIRST_DAY, SECOND_DAY = "2026-11-20", "2026-11-21"
READER_PASSWORD = secrets.token_urlsafe(18)
MODEL = "ct-transactions"
ROW = {
    "amount": 120.5,
    "age": 41,
    "tenure_days": 900,
    "num_txn_30d": 12,
    "avg_basket": 35.0,
    "channel": "app",
    "region": "north",
    "plan": "plus",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Any:
    why = why_no_containers()
    if why is not None:
        print(f"tests/deploy skipped: {why}")
        pytest.skip(why)
    stack = Stack(tmp_path_factory.mktemp("deploy"))
    stack.before = stack.snapshot()
    try:
        stack.build_images()
        stack.write_env(
            # Runs are the test's own: no scheduled run starts when a DAG is unpaused.
            AIRFLOW_USE_JOB_SCHEDULE="false",
            # A task whose worker was killed is failed (and retried) after 60 s without a heartbeat, not 300.
            AIRFLOW_TASK_HEARTBEAT_TIMEOUT="60",
            CT_SERVE_POLL_SECONDS="5",
            # Two Celery workers: one is killed during a run.
            AIRFLOW_WORKERS="2",
            # Training moves onto the Spark cluster: two workers of one core, a rank on each.
            SPARK_WORKERS="2",
            SPARK_WORKER_CORES="1",
            CT_TRAIN_LAUNCHER="spark",
            CT_TRAIN_WORLD_SIZE="2",
            # A second person, who reads; a password of the env file's own, as the admin's.
            AIRFLOW_USERS="admin:admin,reader:viewer",
            AIRFLOW_USER_PASSWORDS=f"reader:{READER_PASSWORD}",
        )
        stack.up()
        yield stack
    finally:
        stack.say(f"deploy timings (s): {stack.timings}")
        stack.down()
    # Torn down: Podman holds what it held before, nothing more and nothing less.
    after = stack.snapshot()
    assert after == stack.before, {
        k: (after[k] ^ stack.before[k]) for k in after if after[k] != stack.before[k]
    }


@pytest.fixture(scope="module")
def airflow(stack: Stack) -> AirflowApi:
    api = AirflowApi(
        f"http://127.0.0.1:{stack.ports['AIRFLOW_PORT']}", stack.secrets["AIRFLOW_ADMIN_PASSWORD"]
    )
    for dag_id in ("retrain", "rollback"):
        api.wait_for_dag(dag_id)
        api.unpause(dag_id)
    return api


@pytest.fixture(scope="module")
def mlflow_url(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.ports['MLFLOW_PORT']}"


@pytest.fixture(scope="module")
def pipeline_auth(stack: Stack) -> tuple[str, str]:
    return stack.secrets["CT_MLFLOW_USERNAME"], stack.secrets["CT_MLFLOW_PASSWORD"]


@pytest.fixture(scope="module")
def runs(stack: Stack, airflow: AirflowApi) -> dict[str, Any]:
    """Two retrain runs through the REST API: a normal day on Dask, then a drifted day on Spark during whose
    ``train`` the Celery worker running it is killed."""
    found: dict[str, Any] = {}
    started = time.monotonic()
    first = airflow.trigger("retrain", {"scenario": "none", "engine": "dask"}, f"{FIRST_DAY}T01:00:00+00:00")
    assert airflow.wait("retrain", first, timeout=1200)["state"] == "success", _failure(stack, airflow, first)
    found["first_s"] = round(time.monotonic() - started, 1)
    stack.say(f"deploy: retrain {FIRST_DAY} (dask) took {found['first_s']} s")
    stack.say(_timeline(airflow, first))

    started = time.monotonic()
    second = airflow.trigger(
        "retrain", {"scenario": "concept_drift", "engine": "spark"}, f"{SECOND_DAY}T01:00:00+00:00"
    )
    train = wait_until(
        "train of the second run running",
        lambda: _running(airflow.task_instances("retrain", second).get("train")),
        timeout=900,
        every=0.5,
    )
    worker = _worker_named(stack, train["hostname"])
    stack.podman("kill", worker)
    found["killed"] = {"container": worker, "hostname": train["hostname"], "try": train["try_number"]}
    stack.say(f"deploy: killed {worker} during train (try {train['try_number']})")
    assert airflow.wait("retrain", second, timeout=1800)["state"] == "success", _failure(
        stack, airflow, second
    )
    found["second_s"] = round(time.monotonic() - started, 1)
    stack.say(f"deploy: retrain {SECOND_DAY} (spark, a worker killed in train) took {found['second_s']} s")
    stack.say(_timeline(airflow, second))
    found.update(first=first, second=second)
    return found


def _timeline(airflow: AirflowApi, run_id: str) -> str:
    """Each task of a run in the order it started: seconds queued (from queued to started) and seconds run,
    for reading where a run's time went."""
    parsed = [
        (ti["start_date"], task, ti)
        for task, ti in airflow.task_instances("retrain", run_id).items()
        if ti.get("start_date")
    ]
    lines = [f"deploy: tasks of {run_id} (queued s / ran s / try):"]
    for start, task, ti in sorted(parsed):
        queued = _seconds(ti.get("queued_when"), start)
        ran = round(ti["duration"], 1) if ti.get("duration") is not None else None
        lines.append(f"  {start[11:19]} {task}: {queued} / {ran} / {ti['try_number']}")
    return "\n".join(lines)


def _seconds(since: str | None, until: str) -> float | None:
    if not since:
        return None
    return round((datetime.fromisoformat(until) - datetime.fromisoformat(since)).total_seconds(), 1)


def _running(ti: dict[str, Any] | None) -> dict[str, Any] | None:
    return ti if ti and ti["state"] == "running" and ti.get("hostname") else None


def _worker_named(stack: Stack, hostname: str) -> str:
    for item in stack.containers():
        name = item["Names"][0]
        if "_airflow-worker_" in name and stack.hostname_of(name) == hostname:
            return str(name)
    raise AssertionError(f"no airflow-worker container has the hostname {hostname}")


def _failure(stack: Stack, airflow: AirflowApi, run_id: str) -> str:
    states = {
        t: (ti["state"], ti["try_number"]) for t, ti in airflow.task_instances("retrain", run_id).items()
    }
    workers = [i["Names"][0] for i in stack.containers() if "_airflow-worker_" in i["Names"][0]]
    return f"{run_id}: {states}\n" + "\n".join(stack.logs(w, 80) for w in workers)


def test_every_service_is_healthy_and_replicated(stack):
    states = stack.health()
    services = {name.split("_")[1] for name in states}
    assert services >= {
        "postgres",
        "redis",
        "mlflow",
        "mlflow-init",
        "airflow-init",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "airflow-worker",
        "spark-master",
        "spark-worker",
        "spark-connect",
        "dask-scheduler",
        "dask-worker",
        "serving-a",
        "serving-b",
        "serving-proxy",
    }, services
    assert sum("_dask-worker_" in name for name in states) == 2
    assert sum("_airflow-worker_" in name for name in states) == 2
    assert sum("_spark-worker_" in name for name in states) == 2
    assert {s for n, s in states.items() if "init" not in n} == {"healthy"}, states
    assert {stack.exit_code(n) for n in states if "-init_" in n} == {0}
    workers = httpx.get(f"http://127.0.0.1:{stack.ports['SPARK_UI_PORT']}/json/", timeout=10).json()
    assert [w["state"] for w in workers["workers"]] == ["ALIVE", "ALIVE"], workers["workers"]


def test_a_second_airflow_user_signs_in_with_the_env_files_password_that_no_log_shows(stack, airflow):
    """Airflow's simple auth manager made up a password for every user but admin and printed it in the API
    server's log, for whoever reads the logs, and made up another when the container was recreated."""
    url = f"http://127.0.0.1:{stack.ports['AIRFLOW_PORT']}"
    token = httpx.post(
        f"{url}/auth/token", json={"username": "reader", "password": READER_PASSWORD}, timeout=30
    )
    assert token.status_code == 201, token.text
    reader = {"Authorization": f"Bearer {token.json()['access_token']}"}
    assert httpx.get(f"{url}/api/v2/dags/retrain", headers=reader, timeout=30).status_code == 200
    paused = httpx.patch(f"{url}/api/v2/dags/retrain", json={"is_paused": True}, headers=reader, timeout=30)
    assert paused.status_code == 403, paused.text  # a viewer
    logged = stack.podman("logs", stack.container("airflow-apiserver"))
    log = logged.stdout + logged.stderr
    assert "Uvicorn running" in log or "Application startup complete" in log, log[-3000:]  # the log it is
    assert READER_PASSWORD not in log and "Password for user" not in log


def test_an_alias_change_without_the_pipelines_account_is_refused(stack, runs, mlflow_url):
    url = f"{mlflow_url}/api/2.0/mlflow/registered-models/alias"
    # serving's account reads, as people do by default, and reading is all it may do
    reader = (stack.secrets["CT_SERVING_MLFLOW_USERNAME"], stack.secrets["CT_SERVING_MLFLOW_PASSWORD"])
    before = httpx.get(url, params={"name": MODEL, "alias": "champion"}, auth=reader, timeout=30)
    assert before.status_code == 200, before.text
    champion = before.json()["model_version"]["version"]
    body = {"name": MODEL, "alias": "champion", "version": "2" if champion == "1" else "1"}
    unauthenticated = httpx.post(url, json=body, timeout=30)
    assert unauthenticated.status_code == 401, unauthenticated.text
    refused = httpx.post(url, json=body, auth=reader, timeout=30)
    assert refused.status_code == 403, refused.text
    answer = httpx.get(url, params={"name": MODEL, "alias": "champion"}, auth=reader, timeout=30).json()
    assert answer["model_version"]["version"] == champion, "a refused change moved the alias"


def test_two_retrain_runs_through_the_scheduler_and_celery_workers(
    stack, airflow, runs, mlflow_url, pipeline_auth
):
    second = airflow.task_instances("retrain", runs["second"])
    assert second["train"]["try_number"] >= 2, "the killed attempt of train was not retried"
    assert {ti["state"] for t, ti in second.items() if t not in ("approve", "record_rejection")} == {
        "success"
    }
    decision = airflow.xcom("retrain", runs["second"], "gate")
    assert decision["decision"] == "promote", decision
    assert decision["started_by"]["by"] == "manual", decision["started_by"]
    # promote told both replicas (CT_SERVE_URLS), and each answered serving the new version
    told = airflow.xcom("retrain", runs["second"], "promote")["serving"]
    assert [(t["http_status"], t["serving"]) for t in told] == [(200, 2), (200, 2)], told
    # the registry is MLflow's PostgreSQL database, not a file in the server's container
    stored = stack.podman(
        "exec",
        stack.container("postgres"),
        "psql",
        "-U",
        "ct",
        "-d",
        "mlflow",
        "-tAc",
        "select name from registered_models",
    ).stdout.split()
    assert stored == [MODEL], stored

    # exactly one model version per run, though the second run's train was killed and retried
    with httpx.Client(base_url=f"{mlflow_url}/api/2.0/mlflow", auth=pipeline_auth, timeout=30) as mlflow:
        versions = mlflow.get("/model-versions/search", params={"filter": f"name='{MODEL}'"}).json()
        by_version = {int(v["version"]): v for v in versions["model_versions"]}
        assert sorted(by_version) == [1, 2], sorted(by_version)
        champion = mlflow.get("/registered-models/alias", params={"name": MODEL, "alias": "champion"}).json()
        assert champion["model_version"]["version"] == "2"
        tags = {t["key"]: t["value"] for t in champion["model_version"].get("tags", [])}
        assert tags["logical_date"].startswith(SECOND_DAY) and tags["airflow.run_id"] == runs["second"], tags
        assert tags["dataset.engine"] == "spark" and tags["dataset.version"], tags
        run = mlflow.get("/runs/get", params={"run_id": champion["model_version"]["run_id"]}).json()["run"]
        assert run["info"]["artifact_uri"].startswith("mlflow-artifacts:"), run["info"]["artifact_uri"]
        experiment = run["info"]["experiment_id"]
        # both models trained on the Spark cluster: a DDP rank in each spark-worker container
        spark_hosts = sorted(
            stack.hostname_of(i["Names"][0]) for i in stack.containers() if "_spark-worker_" in i["Names"][0]
        )
        for version in by_version.values():
            trained = mlflow.get("/runs/get", params={"run_id": version["run_id"]}).json()["run"]["data"]
            params = {p["key"]: p["value"] for p in trained["params"]}
            assert (params["launcher"], params["world_size"], params["backend"]) == ("spark", "2", "gloo"), (
                params
            )
            hosts = json.loads({t["key"]: t["value"] for t in trained["tags"]}["training.hosts"])
            assert sorted(hosts.values()) == spark_hosts and len(set(spark_hosts)) == 2, (hosts, spark_hosts)
    # the second run's data stages ran on Spark as clients of the spark-connect service: no application but the
    # Connect server's and the two trainings' ever registered with the master (a driver in a task would be one
    # named "continuous-training")
    master = httpx.get(f"http://127.0.0.1:{stack.ports['SPARK_UI_PORT']}/json/", timeout=10).json()
    active = [app["name"] for app in master["activeapps"]]
    completed = [app["name"] for app in master["completedapps"]]
    names = active + completed
    assert active.count("Spark Connect server") == 1, (active, completed)
    # (the killed attempt's training driver may still be listed as active: its container went down with it)
    assert {name for name in names if not name.startswith("ct-train-")} == {"Spark Connect server"}, names
    assert sum(name.startswith("ct-train-") for name in completed) >= 2, completed
    # the drift report, read back through the server's artifact proxy
    report = httpx.get(
        f"{mlflow_url}/api/2.0/mlflow-artifacts/artifacts/{experiment}/{run['info']['run_id']}/artifacts/drift/drift.json",
        auth=pipeline_auth,
        timeout=60,
    )
    assert report.status_code == 200, report.text[:300]
    assert report.json()["columns"], "the drift report names no column"


def _through_proxy(stack: Stack, n: int = 40) -> dict[str, set[int]]:
    """Upstream replica address -> the model versions it answered with, over ``n`` requests to the proxy."""
    seen: dict[str, set[int]] = {}
    with httpx.Client(base_url=f"http://127.0.0.1:{stack.ports['SERVING_PORT']}", timeout=30) as http:
        for _ in range(n):
            answer = http.post("/v1/predict", json={"rows": [ROW]})
            if answer.status_code == 503:  # no replica has a model yet (the proxy sends a 503 to the next)
                seen.setdefault(answer.headers.get("x-upstream", "?"), set()).add(0)
                continue
            assert answer.status_code == 200, answer.text
            seen.setdefault(answer.headers["x-upstream"], set()).add(int(answer.headers["x-model-version"]))
    return seen


def test_both_serving_replicas_answer_with_the_new_champion(stack, runs):
    seen = wait_until(
        "both replicas serving v2",
        lambda: (s := _through_proxy(stack)) and len(s) == 2 and all(v == {2} for v in s.values()) and s,
        timeout=120,
        every=2,
    )
    assert len(seen) == 2


def test_a_rollback_through_the_rest_api_swaps_both_replicas(stack, airflow, runs):
    run = airflow.trigger("rollback", {"reason": "deploy test: back to the first model"}, None)
    assert airflow.wait("rollback", run, timeout=600)["state"] == "success"
    result = airflow.xcom("rollback", run, "roll_back")
    told = result.get("serving") or []
    assert len(told) == 2 and {r.get("serving") for r in told} == {1}, told
    seen = _through_proxy(stack)
    assert len(seen) == 2 and all(v == {1} for v in seen.values()), seen
