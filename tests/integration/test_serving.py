"""Serving on real MLflow versions: the API, hot swap under load, broken and slow versions, the log."""

from __future__ import annotations

import contextlib
import json
import os
import re
import string
import tempfile
import threading
import time
from collections import Counter

import httpx
import mlflow
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from pipelines.data import datasets
from pipelines.data.generate import generate
from pipelines.data.prepare import prepare
from pipelines.data.validate import validate
from pipelines.release import tracking
from pipelines.release.promote import move_champion
from pipelines.release.register import register
from pipelines.serving.api import PredictResponse
from pipelines.serving.app import create_app, wait_until_ready
from pipelines.settings import get_settings
from pipelines.training.train import train
from tests.days import DAY
from tests.serving_models import (
    ProxyProcess,
    ServerProcess,
    model_artifacts,
    register_model,
    signature_of,
    slow_model,
)

pytestmark = pytest.mark.slow
TOKEN = "test-admin-token"
FIELDS = ["amount", "age", "tenure_days", "num_txn_30d", "avg_basket", "channel", "region", "plan"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One trained scikit-learn model (v1 of the default name) and holdout rows to send."""
    root = tmp_path_factory.mktemp("serving")
    settings = get_settings(state_dir=root / "state", rows_per_day=3000, serve_poll_seconds=0.3)
    generate(settings, DAY, "none")
    validate(settings, DAY)
    prepared = prepare(settings, DAY, "dask")
    trained = train(settings, DAY, prepared["uri"], tracking.RunContext("test/serving"), "sklearn")
    version = register(settings, DAY, trained["run_id"])["version"]
    move_champion(settings, version, None, trigger="test")
    client = tracking.configure(settings)
    artifacts = model_artifacts(client, settings.model_name, version, root / "base")
    frame = datasets.read_split(prepared["uri"], "holdout", FIELDS).head(200)
    rows = json.loads(frame.to_json(orient="records"))
    return settings, (artifacts, signature_of(settings.model_name, version)), rows, root


def _family(served, name: str, copies: int) -> tuple:
    """``copies`` good versions of the trained model under a new registered name; the first is champion."""
    settings, artifacts, rows, root = served
    named = get_settings(
        state_dir=settings.state_dir, model_name=name, serve_admin_token=TOKEN, serve_poll_seconds=0.3
    )
    versions = [register_model(named, name, *artifacts) for _ in range(copies)]
    move_champion(named, versions[0], None, trigger="test")
    return named, versions


def test_api_contract_and_openapi(served):
    settings, _, rows, _ = served
    app_settings = get_settings(
        state_dir=settings.state_dir, serve_admin_token=TOKEN, serve_max_body_bytes=4096
    )
    with TestClient(create_app(app_settings)) as http:
        assert wait_until_ready(http)["model_version"] == 1
        by_rows = http.post("/v1/predict", json={"rows": rows[:3]})
        assert by_rows.status_code == 200 and by_rows.headers["x-model-version"] == "1"
        columns = {name: [row[name] for row in rows[:3]] for name in FIELDS}
        by_columns = http.post("/v1/predict", json={"columns": columns}, headers={"X-Request-Id": "cols-1"})
        assert by_columns.json()["request_id"] == by_columns.headers["x-request-id"] == "cols-1"
        assert len(by_rows.json()["request_id"]) == 32  # none sent: a random one
        PredictResponse.model_validate(by_rows.json())  # the answer is what the OpenAPI document says
        assert by_columns.json()["predictions"] == by_rows.json()["predictions"]
        assert [p["label"] for p in by_rows.json()["predictions"]] == [
            int(p["probability"] >= 0.5) for p in by_rows.json()["predictions"]
        ]
        # every response carries the version, errors included; errors are JSON with a detail
        for response in (http.get("/health"), http.get("/nope"), http.post("/v1/predict", json={})):
            assert response.headers["x-model-version"] == "1"
        assert http.get("/nope").json() == {"detail": "Not Found"}
        expect = {
            (b'{"rows": [{"amount": 1}]}', "text/plain"): (415, "Content-Type must be application/json"),
            (b"x" * 5000, "application/json"): (413, "over 4096 bytes"),
            (b"", "application/json"): (400, "empty body"),
            (b'{"rows": [', "application/json"): (400, "not valid JSON"),
        }
        for (body, content_type), (status, text) in expect.items():
            answer = http.post("/v1/predict", content=body, headers={"content-type": content_type})
            assert answer.status_code == status and text in answer.json()["detail"], answer.text
        chunked = http.post(
            "/v1/predict",
            content=iter([b"[" * 3000, b"]" * 3000]),
            headers={"content-type": "application/json"},
        )
        assert chunked.status_code == 413  # no Content-Length: the stream is cut at the limit
        wrong = [
            ({"rows": [{**rows[0], "age": "40"}]}, "rows[0].age: expected integer, got string"),
            ({"rows": [{**rows[0], "age": 40.5}]}, "rows[0].age: expected integer, got number"),
            ({"rows": [rows[0], {**rows[0], "extra": 1}]}, "rows[1].extra: unexpected field"),
            (
                {"rows": [{k: v for k, v in rows[0].items() if k != "region"}]},
                "rows[0].region: required field is missing",
            ),
            ({"rows": [{**rows[0], "channel": None}]}, "rows[0].channel: required field is null"),
            ({"columns": {**columns, "plan": ["pro"]}}, "columns.plan: 1 values, the other columns have 3"),
            ({"rows": [rows[0]], "columns": columns}, 'send exactly one of "rows" or "columns"'),
        ]
        for payload, detail in wrong:
            answer = http.post("/v1/predict", json=payload)
            assert (answer.status_code, answer.json()["detail"]) == (422, detail)
        assert http.post(
            "/v1/predict", json={"rows": [{**rows[0], "avg_basket": None, "age": 40.0}]}
        ).is_success

        described = http.get("/v1/model")
        assert described.headers.get_list("x-model-version") == ["1"]  # once, from the model described
        model = described.json()
        tags = tracking.configure(settings).get_model_version(settings.model_name, "1").tags
        assert model["sha256"] == tags["ct.artifact_sha256"] and model["version"] == 1
        assert [i["name"] for i in model["inputs"]] == FIELDS

        document = http.get("/openapi.json").json()
        schema = document["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["application/json"][
            "schema"
        ]
        row_schema = schema["oneOf"][0]["properties"]["rows"]["items"]
        assert row_schema["properties"]["age"] == {"type": ["integer"], "minimum": 18, "maximum": 100}
        assert row_schema["properties"]["avg_basket"] == {
            "type": ["number", "null"],
            "minimum": 0.0,
            "maximum": 100000.0,
        }
        assert "avg_basket" not in row_schema["required"] and row_schema["additionalProperties"] is False
        assert set(document["paths"]["/v1/predict"]["post"]["responses"]) == {
            "200",
            "400",
            "413",
            "415",
            "422",
            "503",
        }
        assert "X-Model-Version" in document["paths"]["/v1/model"]["get"]["responses"]["200"]["headers"]

        assert http.post("/admin/reload").status_code == 401
        assert http.post("/admin/reload", headers={"authorization": "Bearer wrong"}).status_code == 401
        assert (
            http.post("/admin/reload", headers={"authorization": f"Bearer {TOKEN}"}).json()["status"]
            == "unchanged"
        )
        metrics = http.get("/metrics").text
        for family in (
            "ct_serve_requests_total",
            "ct_serve_request_seconds_bucket",
            "ct_serve_batch_rows_bucket",
            "ct_serve_model_version 1.0",
            "ct_serve_model_load_failures_total",
        ):
            assert family in metrics
    with TestClient(create_app(get_settings(state_dir=settings.state_dir))) as http:
        refused = http.post("/admin/reload", headers={"authorization": f"Bearer {TOKEN}"})
        assert refused.status_code == 403 and "CT_SERVE_ADMIN_TOKEN" in refused.json()["detail"]


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _malformed(rows: list[dict]) -> st.SearchStrategy[tuple[bytes, str]]:
    good = json.dumps({"rows": rows[:2]}).encode()
    json_type = st.just("application/json")
    field = st.sampled_from(FIELDS)
    wrong_value = _json_values.filter(lambda v: not isinstance(v, int | float) or isinstance(v, bool))
    mistyped = st.builds(
        lambda f, v: json.dumps({"rows": [{**rows[0], f: v}]}).encode(),
        st.sampled_from(FIELDS[:4]),
        wrong_value,
    )
    missing = st.builds(
        lambda f: json.dumps({"rows": [{k: v for k, v in rows[0].items() if k != f}]}).encode(),
        field.filter(lambda f: f != "avg_basket"),
    )
    extra = st.builds(
        lambda k, v: json.dumps({"rows": [{**rows[0], k: v}]}).encode(),
        st.text(string.ascii_letters, min_size=1, max_size=10).filter(lambda k: k not in FIELDS),
        _json_values,
    )
    bodies = st.one_of(
        st.builds(lambda n: good[:n], st.integers(0, len(good) - 2)),  # truncated (and empty)
        st.binary(min_size=1, max_size=64).map(lambda b: b"\xff" + b),  # invalid UTF-8
        st.sampled_from(
            [
                b'{"rows": [{"amount": NaN}]}',
                b'{"rows": [{"amount": Infinity}]}',
                b'{"rows": [{"amount": -Infinity}]}',
                b"[" * 2000 + b"]" * 2000,
                b'{"rows": []}',
                b"null",
                b"[]",
                b'"rows"',
                b'{"columns": {}}',
            ]
        ),
        st.builds(lambda n: b'{"a":' * n + b"1" + b"}" * n, st.integers(600, 3000)),  # deep nesting
        mistyped,
        missing,
        extra,
        _json_values.filter(lambda v: not isinstance(v, dict)).map(lambda v: json.dumps(v).encode()),
    )
    typed = st.tuples(bodies, json_type)
    wrong_type = st.tuples(
        st.just(good),
        st.sampled_from(["text/plain", "application/x-www-form-urlencoded", "", "application/xml"]),
    )
    huge = st.tuples(
        st.integers(5, 6).map(lambda m: b'{"rows": [' + b"1," * (m * 1024 * 1024 // 2) + b"1]}"), json_type
    )
    return st.one_of(*[typed] * 12, wrong_type, wrong_type, huge)


def test_a_thousand_malformed_requests_get_4xx_and_the_server_stays_up(served, tmp_path):
    settings, _, rows, _ = served
    server = ServerProcess(settings, tmp_path / "server.log", CT_PREDICTION_LOG="false")
    try:
        server.wait_ready()
        statuses: Counter[int] = Counter()
        with httpx.Client(base_url=server.url, timeout=30) as http:

            @hsettings(
                max_examples=1000,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(request=_malformed(rows))
            def check(request: tuple[bytes, str]) -> None:
                body, content_type = request
                headers = {"content-type": content_type} if content_type else {}
                answer = http.post("/v1/predict", content=body, headers=headers)
                statuses[answer.status_code] += 1
                assert 400 <= answer.status_code < 500, (body[:200], answer.status_code, answer.text)
                assert "Traceback" not in answer.text and answer.json()["detail"]

            check()
            assert sum(statuses.values()) == 1000
            assert server.process.poll() is None
            assert http.post("/v1/predict", json={"rows": rows[:1]}).status_code == 200
        assert {400, 413, 415, 422} <= set(statuses), statuses
    finally:
        server.stop()


def test_promotions_under_load_never_fail_a_request_nor_go_back(served, tmp_path):
    _, (artifacts, signature), rows, _ = served
    named, versions = _family(served, "ct-serving-load", 4)
    bad_weights = tmp_path / "weights.joblib"
    bad_weights.write_bytes(b"this is not a model")
    corrupt = register_model(named, named.model_name, artifacts | {"weights": str(bad_weights)}, signature)
    server = ServerProcess(
        named,
        tmp_path / "server.log",
        CT_SERVE_ADMIN_TOKEN=TOKEN,
        CT_SERVE_POLL_SECONDS="0.5",
        CT_PREDICTION_LOG_FLUSH_SECONDS="0.5",
    )
    notify = get_settings(
        state_dir=named.state_dir, model_name=named.model_name, serve_urls=server.url, serve_admin_token=TOKEN
    )
    stop = threading.Event()
    seen: dict[int, list[int]] = {}
    failures: list[str] = []

    def client(index: int) -> None:
        order = seen.setdefault(index, [])
        with httpx.Client(base_url=server.url, timeout=30) as http:
            while not stop.is_set():
                batch = rows[index : index + 1 + index % 3]
                answer = http.post("/v1/predict", json={"rows": batch})
                if answer.status_code != 200:
                    failures.append(f"{answer.status_code}: {answer.text}")
                    continue
                version = int(answer.headers["x-model-version"])
                assert answer.json()["model_version"] == version and len(answer.json()["predictions"]) == len(
                    batch
                )
                order.append(version)

    try:
        assert server.wait_ready()["model_version"] == versions[0]
        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        moves = [(versions[1], True), (corrupt, True), (versions[2], False), (versions[3], True)]
        expected = versions[0]
        for target, told in moves:
            result = move_champion(notify if told else named, target, expected, trigger="test")
            expected = target
            if told:
                assert result["serving"][0]["http_status"] == (500 if target == corrupt else 200), result
                assert result["serving"][0]["serving"] == (versions[1] if target == corrupt else target)
            else:  # not told: the poller finds it
                deadline = time.monotonic() + 30
                while httpx.get(f"{server.url}/ready").json()["model_version"] != target:
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
            time.sleep(1.0)
        stop.set()
        for thread in threads:
            thread.join(60)
        metrics = httpx.get(f"{server.url}/metrics").text
    finally:
        stop.set()
        server.stop()
    assert failures == []
    total = sum(len(order) for order in seen.values())
    assert total > 200, total
    for order in seen.values():
        assert order == sorted(order), "a client saw an older version after a newer one"
        assert order[-1] == versions[3]
    served_versions = set().union(*map(set, seen.values()))
    assert corrupt not in served_versions and {versions[0], versions[1], versions[3]} <= served_versions
    failed_loads = next(
        m for m in metrics.splitlines() if m.startswith('ct_serve_model_load_failures_total{reason="load"}')
    )
    assert float(failed_loads.split()[-1]) >= 1  # the poller may have tried it before the admin call did
    assert "ct_serve_model_swaps_total 4.0" in metrics
    logged = pd.read_parquet(named.prediction_log_uri)  # hive partitions: ds=<day>
    assert len(logged) == sum(len(rows[i : i + 1 + i % 3]) * len(seen[i]) for i in seen)
    assert set(logged["model_version"]) == served_versions
    assert {"served_at", "probability", "label", *FIELDS} <= set(logged.columns)


def test_ready_is_503_while_a_slow_model_loads_then_200(served, tmp_path):
    settings, (artifacts, signature), rows, _ = served
    model, slow_artifacts, code = slow_model(tmp_path, artifacts, delay_s=3.0)
    name = "ct-serving-slow"
    named = get_settings(state_dir=settings.state_dir, model_name=name, serve_poll_seconds=0.3)
    version = register_model(named, name, slow_artifacts, signature, python_model=model, code_paths=code)
    move_champion(named, version, None, trigger="test")
    with TestClient(create_app(named)) as http:
        started = time.monotonic()
        loading, answers = [], []
        while (ready := http.get("/ready")).status_code == 503:
            loading.append(ready.json()["detail"])
            assert http.get("/health").status_code == 200
            answers.append(http.post("/v1/predict", json={"rows": rows[:1]}).status_code)
            time.sleep(0.1)
        # the load may finish between /ready and /v1/predict: only the last answer may be a 200
        assert answers.count(503) >= 10 and 200 not in answers[:-1]
        assert ready.json()["model_version"] == version and time.monotonic() - started >= 2.5
        assert f"loading v{version}" in loading
        assert http.post("/v1/predict", json={"rows": rows[:1]}).status_code == 200


def test_unusable_versions_leave_the_old_model_serving(served, tmp_path):
    named, versions = _family(served, "ct-serving-broken", 1)
    _, (artifacts, _), rows, _ = served
    no_signature = register_model(named, named.model_name, artifacts, None)
    # No poller: it would race the admin reload to the refused version, and the failures counted would be
    # 1 or 2 by timing. This test is about the admin reload; the poller's part is the holder's unit tests'.
    once = named.model_copy(update={"serve_poll_seconds": 0.0})
    with TestClient(create_app(once)) as http:
        wait_until_ready(http)
        move_champion(named, no_signature, versions[0], trigger="test")
        answer = http.post("/admin/reload", headers={"authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 500 and "no input signature" in answer.json()["error"]
        assert answer.json()["serving"] == versions[0]
        assert http.post("/v1/predict", json={"rows": rows[:2]}).headers["x-model-version"] == str(
            versions[0]
        )
        assert 'ct_serve_model_load_failures_total{reason="signature"} 1.0' in http.get("/metrics").text
        assert "no input signature" in http.get("/health").json()["last_error"]


def _predict_schema(document: dict) -> dict:
    return document["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["application/json"]


def test_values_outside_the_contract_are_refused_naming_field_row_value_and_allowed(served):
    settings, _, rows, _ = served
    with TestClient(create_app(get_settings(state_dir=settings.state_dir, prediction_log=False))) as http:
        wait_until_ready(http)
        outside = [
            ("channel", "abc", "'abc' is not one of 'web', 'app', 'store'"),
            ("channel", "web\x00", "'web\\x00' is not one of 'web', 'app', 'store'"),  # a NUL char
            ("channel", "Web", "'Web' is not one of 'web', 'app', 'store'"),
            ("plan", "basik", "'basik' is not one of 'basic', 'plus', 'pro'"),  # misspelt
            ("region", "north ", "'north ' is not one of 'north', 'south', 'east', 'west'"),
            ("age", 0, "0 is below the minimum 18"),
            ("age", 101, "101 is above the maximum 100"),
            ("amount", -1.5, "-1.5 is below the minimum 0"),
            ("avg_basket", 1e6, "1000000 is above the maximum 100000"),
        ]
        for field, value, problem in outside:
            sent = [rows[0], rows[1], {**rows[2], field: value}]
            answer = http.post("/v1/predict", json={"rows": sent})
            assert (answer.status_code, answer.json()["detail"]) == (422, f"rows[2].{field}: {problem}")
            columns = {name: [row[name] for row in sent] for name in FIELDS}
            answer = http.post("/v1/predict", json={"columns": columns})
            assert (answer.status_code, answer.json()["detail"]) == (422, f"columns.{field}[2]: {problem}")
        assert http.post("/v1/predict", json={"rows": [{**rows[0], "age": 18, "amount": 0}]}).is_success
        metrics = http.get("/metrics").text
        assert 'ct_serve_out_of_domain_rows_total{action="refused",field="channel"} 6.0' in metrics

        document = http.get("/openapi.json").json()
        body = _predict_schema(document)
        row_schema = body["schema"]["oneOf"][0]["properties"]["rows"]["items"]
        assert row_schema["properties"]["channel"] == {"type": ["string"], "enum": ["web", "app", "store"]}
        assert row_schema["properties"]["num_txn_30d"] == {"type": ["integer"], "minimum": 0, "maximum": 1000}
        # the example is the model's MLflow input example (3 rows), and "Try it out" sends it with success
        tracking.configure(settings)
        logged = mlflow.models.Model.load(f"models:/{settings.model_name}/1").load_input_example(
            f"models:/{settings.model_name}/1"
        )
        example = body["example"]
        assert example == {"rows": json.loads(logged.to_json(orient="records"))} and len(example["rows"]) == 3
        assert http.post("/v1/predict", json=example).status_code == 200
        for form in body["schema"]["oneOf"]:
            assert http.post("/v1/predict", json=form["examples"][0]).status_code == 200
        assert "out_of_domain" in document["components"]["schemas"]["Prediction"]["properties"]

    flagging = get_settings(state_dir=settings.state_dir, prediction_log=False, serve_out_of_domain="flag")
    with TestClient(create_app(flagging)) as http:
        wait_until_ready(http)
        sent = [rows[0], {**rows[1], "channel": "abc", "age": 0}]
        answer = http.post("/v1/predict", json={"rows": sent})
        assert answer.status_code == 200, answer.text
        first, second = answer.json()["predictions"]
        assert "out_of_domain" not in first and second["out_of_domain"] == ["age", "channel"]
        assert 0 <= second["probability"] <= 1
        metrics = http.get("/metrics").text
        assert 'ct_serve_out_of_domain_rows_total{action="flagged",field="age"} 1.0' in metrics


def test_docs_and_redoc_are_served_from_the_app_itself(served):
    """/docs and /redoc load their scripts and styles from the app, never from a CDN: they work offline."""
    settings, _, _, _ = served
    with TestClient(create_app(get_settings(state_dir=settings.state_dir, prediction_log=False))) as http:
        wait_until_ready(http)
        for page, wanted in (("/docs", {"swagger-ui-bundle.js", "swagger-ui.css"}), ("/redoc", {"redoc"})):
            html = http.get(page)
            assert html.status_code == 200 and "text/html" in html.headers["content-type"]
            assert "/openapi.json" in html.text and "fonts.googleapis" not in html.text
            urls = set(re.findall(r'(?:src|href)\s*=\s*["\']([^"\']+)["\']', html.text))
            assert all(any(w in url for url in urls) for w in wanted), urls
            for url in urls:
                assert url.startswith("/") and not url.startswith("//"), f"{page} loads {url} from elsewhere"
                asset = http.get(url)
                assert asset.status_code == 200 and len(asset.content) > 1000, (url, asset.status_code)
                if url.endswith(".js"):
                    assert "javascript" in asset.headers["content-type"]
        assert http.get("/openapi.json").json()["paths"].keys() >= {"/v1/predict", "/health"}
        assert "/docs" not in http.get("/openapi.json").json()["paths"]
        metrics = http.get("/metrics").text
        assert 'route="/redoc"' in metrics and 'route="/docs"' in metrics


def test_a_failing_prediction_log_never_fails_a_request(served, tmp_path):
    settings, _, rows, _ = served
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the log's folder should be")
    broken = get_settings(
        state_dir=settings.state_dir,
        data_root=str(blocker),
        prediction_log_flush_rows=1,
        prediction_log_max_buffer_rows=5,
    )
    with TestClient(create_app(broken)) as http:
        wait_until_ready(http)
        for _ in range(10):
            assert http.post("/v1/predict", json={"rows": rows[:1]}).status_code == 200
        deadline = time.monotonic() + 10
        while "ct_serve_prediction_log_failures_total 0.0" in (metrics := http.get("/metrics").text):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        dropped = next(
            line for line in metrics.splitlines() if line.startswith("ct_serve_prediction_log_dropped")
        )
        assert float(dropped.split()[-1]) >= 1  # the bounded buffer filled up, and says how much it dropped
        assert http.post("/v1/predict", json={"rows": rows[:1]}).status_code == 200


def test_a_scikit_learn_champion_is_served_without_importing_torch(served):
    """Serving imports torch only for a torch champion: a fresh process serving this one never loads it."""
    import subprocess
    import sys

    settings, _, rows, _ = served
    script = (
        "import json, sys\n"
        "from fastapi.testclient import TestClient\n"
        "from pipelines.serving.app import create_app, wait_until_ready\n"
        "from pipelines.settings import get_settings\n"
        "with TestClient(create_app(get_settings())) as http:\n"
        "    ready = wait_until_ready(http)\n"
        f"    answer = http.post('/v1/predict', json={{'rows': {rows[:2]!r}}})\n"
        "print(json.dumps({'ready': ready, 'status': answer.status_code, 'torch': 'torch' in sys.modules}))\n"
    )
    env = {
        "CT_STATE_DIR": str(settings.state_dir),
        "CT_SERVE_POLL_SECONDS": "0",
        "CT_PREDICTION_LOG": "false",
    }
    done = subprocess.run(
        [sys.executable, "-c", script], env=os.environ | env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["ready"]["model_version"] == 1 and found["status"] == 200
    assert found["torch"] is False


def test_a_pyfunc_that_reads_its_artifacts_when_it_predicts_is_served_and_its_files_go_with_it(
    tmp_path, monkeypatch
):
    """The verified copy was removed before the warm-up: such a model (it works under mlflow models serve)
    failed its warm-up with FileNotFoundError on every try, and could never be served."""
    import gc

    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from pipelines.serving.holder import ModelHolder
    from pipelines.serving.metrics import ServingMetrics
    from tests.serving_models import LazyWeight

    settings = get_settings(state_dir=tmp_path / "state", model_name="lazy")
    weight = tmp_path / "weight.txt"
    weight.write_text("0.25")
    signature = ModelSignature(inputs=Schema([ColSpec("double", "x")]))
    first = register_model(settings, "lazy", {"weight": str(weight)}, signature, python_model=LazyWeight())
    move_champion(settings, first, None, trigger="test", reason="a lazy model")
    # The holder's copies go to a temporary folder of this test's own: another test's server (in this process or
    # the suite's other one) makes copies of its own version 1 in the shared one, with the same prefix.
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    copies = lambda: set(private.glob(f"ct-serve-v{first}-*"))  # noqa: E731
    holder = ModelHolder(settings, ServingMetrics())
    assert holder.refresh().status == "swapped", holder.last_error
    probability, _ = holder.current.predict({"x": np.array([1.0, 2.0])})
    assert probability.tolist() == [0.25, 0.25]

    kept = copies()
    assert len(kept) == 1  # this version's verified copy, while it serves
    second = register_model(settings, "lazy", {"weight": str(weight)}, signature, python_model=LazyWeight())
    move_champion(settings, second, first, trigger="test", reason="the next one")
    assert holder.refresh().status == "swapped" and holder.current.version == second
    gc.collect()
    assert not any(path.exists() for path in kept)  # swapped out and unreferenced: its files are gone


def test_behind_the_stacks_proxy_a_replica_with_no_model_leaves_its_predictions_to_the_other(
    served, tmp_path
):
    """deploy/nginx.conf passed a replica's 503 on to the client: a replica starting, or whose first champion
    was refused, answered its share of the predictions 503 while the other served (nginx sends a POST to the
    next replica only when told to)."""
    settings, _, rows, _ = served
    named, (version,) = _family(served, "ct-serving-proxy", 1)
    serving = ServerProcess(named, tmp_path / "serving.log", CT_PREDICTION_LOG="false")
    empty = ServerProcess(
        get_settings(state_dir=settings.state_dir, model_name="ct-serving-proxy-no-champion"),
        tmp_path / "empty.log",
        CT_PREDICTION_LOG="false",
    )
    proxy = None
    try:
        serving.wait_ready()
        deadline = time.monotonic() + 120
        while True:  # up, with no model to serve
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{empty.url}/health", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline and empty.process.poll() is None, empty.log_path.read_text()
            time.sleep(0.1)
        assert httpx.post(f"{empty.url}/v1/predict", json={"rows": rows[:1]}).status_code == 503
        proxy = ProxyProcess(f"127.0.0.1:{serving.port}", f"127.0.0.1:{empty.port}", tmp_path)
        proxy.wait_ready()
        answers = [
            httpx.post(f"{proxy.url}/v1/predict", json={"rows": rows[:1]}, timeout=30) for _ in range(20)
        ]
    finally:
        for process in (proxy, empty, serving):
            if process is not None:
                process.stop()
    assert [answer.status_code for answer in answers] == [200] * 20, [a.text for a in answers]
    assert {answer.json()["model_version"] for answer in answers} == {version}
    upstreams = [answer.headers["x-upstream"] for answer in answers]
    # the replica with no model was asked, and its 503 sent on: "<empty>, <serving>"
    assert f"127.0.0.1:{empty.port}, 127.0.0.1:{serving.port}" in upstreams, upstreams
