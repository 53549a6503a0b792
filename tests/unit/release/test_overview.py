"""The Models view's pure helpers: MLflow UI addresses, link targets from task returns, rows, rollback choice."""

from __future__ import annotations

import datetime as dt

import pytest

from pipelines.data import storage
from pipelines.release import history, overview
from pipelines.release.overview import MlflowTarget

UI = "http://mlflow.example:5000"


def test_run_artifact_and_version_pages_follow_the_mlflow_ui_routes():
    assert overview.mlflow_run_url(UI + "/", "3", "abc123") == f"{UI}/#/experiments/3/runs/abc123"
    assert (
        overview.mlflow_run_url(UI, "3", "abc123", "gate/decision.md")
        == f"{UI}/#/experiments/3/runs/abc123/artifacts/gate/decision.md"
    )
    assert (
        overview.mlflow_model_version_url(UI, "ct-transactions", 7)
        == f"{UI}/#/models/ct-transactions/versions/7"
    )
    assert overview.mlflow_model_url(UI, "ct-transactions") == f"{UI}/#/models/ct-transactions"
    # An MLflow UI served under a path prefix keeps it.
    assert overview.mlflow_run_url("https://ml.example/mlflow/", "1", "r").startswith(
        "https://ml.example/mlflow/#/"
    )


def test_each_task_return_becomes_its_mlflow_page():
    assert overview.train_target({"run_id": "r1", "val_metrics": {}}) == MlflowTarget(run_id="r1")
    registered = {"name": "ct-tx", "version": 4, "run_id": "r1", "tags": {}}
    assert overview.version_target(registered) == MlflowTarget(model="ct-tx", version=4)
    promoted = {"name": "ct-tx", "champion": 4, "previous": 2, "changed": True}
    assert overview.version_target(promoted) == MlflowTarget(model="ct-tx", version=4)
    dry_run = {"name": "ct-tx", "champion": 2, "previous": 2, "changed": False, "would_promote": 4}
    assert overview.version_target(dry_run) == MlflowTarget(model="ct-tx", version=4)
    drifted = {"drift_share": 0.1, "mlflow_artifacts": "runs:/r1/drift"}
    assert overview.drift_target(drifted) == MlflowTarget(run_id="r1", artifact_path="drift/drift.html")
    decided = {"decision": "reject", "challenger_version": 4, "champion_version": 2}
    assert overview.decision_target(decided, registered) == MlflowTarget(
        run_id="r1", artifact_path="gate/decision.md"
    )


@pytest.mark.parametrize(
    "returned", [None, {}, "r1", {"run_id": ""}, {"run_id": 5}, ["r1"], {"name": "ct-tx", "version": True}]
)
def test_a_task_that_returned_nothing_usable_gets_no_link(returned):
    assert overview.train_target(returned) is None
    assert overview.version_target(returned) is None
    assert overview.drift_target(returned) is None


def test_no_link_for_a_drift_uri_or_decision_that_is_not_this_runs():
    assert overview.drift_target({"mlflow_artifacts": "s3://bucket/drift"}) is None
    assert overview.drift_target({"mlflow_artifacts": "runs:/"}) is None
    registered = {"name": "ct-tx", "version": 4, "run_id": "r1"}
    assert overview.decision_target(None, registered) is None  # the gate has not decided yet
    assert overview.decision_target({"challenger_version": 5}, registered) is None
    assert overview.decision_target({"challenger_version": 4}, None) is None


def test_a_target_page_needs_what_it_names():
    assert MlflowTarget(model="m", version=2).url(UI, None) == f"{UI}/#/models/m/versions/2"
    with pytest.raises(ValueError, match="experiment id"):
        MlflowTarget(run_id="r1").url(UI, None)
    with pytest.raises(ValueError, match="a run or a model version"):
        MlflowTarget().url(UI, "1")


def test_a_version_row_keeps_validation_and_holdout_metrics_and_its_lineage():
    row = overview.version_row(
        version=3,
        created_ms=int(dt.datetime(2026, 11, 30, 17, 2, tzinfo=dt.UTC).timestamp() * 1000),
        aliases=["champion"],
        tags={"dataset.version": "dv1", "gate.decision": "promote", "airflow.run_url": "http://af/run"},
        run_id="r3",
        metrics={"val_auc": 0.91234, "holdout_auc": 0.9, "champion_holdout_auc": 0.8, "train_seconds": 3.0},
        experiment_id="2",
        ui_url=UI,
        model="ct-tx",
    )
    assert row.metrics == {"holdout_auc": 0.9, "val_auc": 0.91234}
    assert row.created == "2026-11-30 17:02 UTC"
    assert (row.dataset_version, row.gate_decision, row.airflow_run_url) == (
        "dv1",
        "promote",
        "http://af/run",
    )
    assert row.mlflow_url == f"{UI}/#/models/ct-tx/versions/3"
    assert row.run_url == f"{UI}/#/experiments/2/runs/r3"
    bare = overview.version_row(
        version=1,
        created_ms=None,
        aliases=(),
        tags={},
        run_id=None,
        metrics={},
        experiment_id=None,
        ui_url=UI,
        model="m",
    )
    assert (bare.created, bare.run_url, bare.gate_decision) == ("", None, None)


def test_a_link_from_an_mlflow_tag_is_shown_only_when_it_is_a_web_address():
    """A javascript: URL in the version's airflow.run_url tag was rendered as the link's href: one click ran it
    in Airflow's origin as the signed-in user (it triggered a rollback and unpaused its DAG)."""

    def shown(url):
        tags = {"airflow.run_url": url}
        return overview.version_row(
            version=3,
            created_ms=None,
            aliases=(),
            tags=tags,
            run_id=None,
            metrics={},
            experiment_id=None,
            ui_url=UI,
            model="m",
        ).airflow_run_url

    assert (
        shown("https://airflow.example/dags/retrain/runs/r1")
        == "https://airflow.example/dags/retrain/runs/r1"
    )
    assert shown("HTTP://af:8080/run") == "HTTP://af:8080/run"
    for refused in (
        "javascript:fetch('/ct/models/rollback',{method:'POST'})",
        " JavaScript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "vbscript:msgbox",
        "//evil.example/x",
        "http:///no-host",
        "http://[::1",
        "",
    ):
        assert shown(refused) is None, refused


def test_formatting():
    assert overview.format_metric(0.912345) == "0.9123"
    assert overview.format_metric(123456.0) == "123,456"
    assert overview.format_metric(None) == ""
    assert overview.format_timestamp(None) == ""


def _row(id_, to, outcome, from_=None, **more):
    return {
        "id": id_,
        "to_version": to,
        "from_version": from_,
        "outcome": outcome,
        "action": "promote",
    } | more


HISTORY = [
    _row(1, 1, "pending"),
    _row(2, 1, "promoted", ref=1),
    _row(3, 2, "rejected", 1),
    _row(4, 3, "promoted", 1),
    _row(5, 4, "conflict", 3),
    _row(6, 1, "rolled_back", 3),
    _row(7, 3, "promoted", 1),
]


def test_earlier_champions_are_the_moves_of_the_history_most_recent_first():
    assert overview.earlier_champions(HISTORY) == [3, 1]
    assert set(history.MOVED) == {"promoted", "rolled_back", "repaired"}


def test_rollback_order_puts_earlier_champions_first_and_never_offers_the_champion():
    assert overview.rollback_order([1, 2, 3, 4, 5], HISTORY, champion=3, limit=10) == [1, 5, 4, 2]
    assert overview.rollback_order([1, 2, 3, 4, 5], HISTORY, champion=3, limit=2) == [1, 5]
    assert overview.rollback_order([4, 5], HISTORY, champion=3, limit=10) == [5, 4]  # v1 is gone
    assert overview.rollback_order([1, 2], [], champion=None, limit=10) == [2, 1]
    assert overview.rollback_order([1], [], champion=1, limit=10) == []
    assert overview.rollback_order([1, 2], [], champion=None, limit=0) == []


def test_a_candidate_says_what_it_is():
    row = overview.version_row(
        version=2,
        created_ms=0,
        aliases=(),
        tags={"gate.decision": "reject"},
        run_id=None,
        metrics={"val_auc": 0.8, "holdout_auc": 0.75, "val_f1": 0.5},
        experiment_id=None,
        ui_url=UI,
        model="m",
    )
    label = overview.candidate_label(2, row, was_champion=True)
    assert (
        label
        == "v2 · 1970-01-01 00:00 UTC · gate: reject · holdout_auc 0.7500 · val_auc 0.8000 · champion before"
    )
    assert overview.candidate_label(9, None, was_champion=False) == "v9"


def test_the_history_view_is_newest_first_with_the_gates_verdict_and_the_airflow_run():
    rows = [
        _row(
            1,
            1,
            "promoted",
            dag_id="retrain",
            run_id="manual__2026-11-30T10:00:00+00:00",
            decision='{"decision": "promote"}',
        ),
        _row(2, 2, "rejected", 1, dag_id=None, run_id=None, decision="not json"),
    ]
    view = overview.history_view(rows, "http://airflow:8080/")
    assert [r["id"] for r in view] == [2, 1]
    assert "decision" not in view[0]
    assert view[0]["gate"] is None and view[0]["run_url"] is None
    assert view[1]["gate"] == "promote"
    assert (
        view[1]["run_url"]
        == "http://airflow:8080/dags/retrain/runs/manual__2026-11-30T10%3A00%3A00%2B00%3A00"
    )
    assert overview.history_view(rows, None)[1]["run_url"] is None


def test_a_drift_row_from_the_stage_record():
    record = {
        "finished_at": "2026-11-30T10:00:00+00:00",
        "result": {
            "drift_share": 0.25,
            "drifted_columns": 1,
            "columns": {"a": {}, "b": {}, "c": {}, "d": {}},
            "reference": "champion",
            "reference_version": 3,
        },
    }
    row = overview.drift_row("2026-11-29", record)
    assert (row.day, row.drift_share, row.drifted_columns, row.columns) == ("2026-11-29", 0.25, 1, 4)
    assert row.reference == "champion v3" and row.finished_at == "2026-11-30T10:00:00+00:00"
    empty = overview.drift_row("2026-11-29", {})
    assert (empty.drift_share, empty.columns, empty.reference) == (None, None, None)


def test_recent_drift_reads_the_newest_run_records_only(settings):
    root = settings.resolved_data_root
    for day in (dt.date(2026, 11, 27), dt.date(2026, 11, 28), dt.date(2026, 11, 30)):
        uri = storage.run_record_uri(root, settings.dataset, day, "drift")
        storage.write_json_atomic(uri, {"result": {"drift_share": day.day / 100}})
    # A day whose run stopped before drift, and a stray folder, are passed over.
    storage.write_json_atomic(
        storage.run_record_uri(root, settings.dataset, dt.date(2026, 11, 29), "train"), {}
    )
    storage.write_json_atomic(storage.join(root, "runs", settings.dataset, "notes", "x.json"), {})
    rows = overview.recent_drift(settings, limit=2)
    assert [(r.day, r.drift_share) for r in rows] == [("2026-11-30", 0.3), ("2026-11-28", 0.28)]
    assert overview.recent_drift(settings.replace(dataset="bikeshare")) == []


def test_a_verification_is_remembered_for_its_time_only():
    calls = []

    def verify() -> str | None:
        calls.append(1)
        return "altered: MLmodel"

    remembered = overview.VerifiedVersions(ttl_s=3600)
    assert remembered.check(("uri", "m", "1", "d"), verify) == "altered: MLmodel"
    assert remembered.check(("uri", "m", "1", "d"), verify) == "altered: MLmodel"
    assert len(calls) == 1
    remembered.check(("uri", "m", "1", "other digest"), verify)  # a new manifest is checked anew
    assert len(calls) == 2
    forgetful = overview.VerifiedVersions(ttl_s=0)
    forgetful.check(("k",), verify)
    forgetful.check(("k",), verify)
    assert len(calls) == 4


def test_known_datasets_are_those_with_a_contract_and_the_configured_one(settings):
    assert {"transactions", "bikeshare", "breast_cancer"} <= set(overview.known_datasets(settings))
    assert "my_own" in overview.known_datasets(settings.replace(dataset="my_own"))
