"""The `pipelines` CLI: exit codes and messages a person or a script can act on."""

from typer.testing import CliRunner

from pipelines.cli import app

runner = CliRunner()


def _env(tmp_path):
    return {"CT_STATE_DIR": str(tmp_path), "CT_ROWS_PER_DAY": "1500"}


def test_validate_exits_0_on_good_data_and_1_with_the_violations(tmp_path):
    env = _env(tmp_path)
    assert runner.invoke(app, ["generate", "-d", "2026-11-20"], env=env).exit_code == 0
    good = runner.invoke(app, ["validate", "-d", "2026-11-20"], env=env)
    assert good.exit_code == 0
    assert (
        good.output.strip() == "OK transactions v1 2026-11-20: 1500 rows in 1 day(s) hold the contract (dask)"
    )
    assert (
        runner.invoke(
            app, ["generate", "-d", "2026-11-20", "--scenario", "missing_values"], env=env
        ).exit_code
        == 0
    )
    bad = runner.invoke(app, ["validate", "-d", "2026-11-20"], env=env)
    assert bad.exit_code == 1
    assert "| amount | not_nullable |" in bad.output  # the report, as a table
    assert "quarantined:" in bad.output


def test_a_stage_without_its_input_says_which_command_to_run(tmp_path):
    result = runner.invoke(app, ["train", "-d", "2026-11-20"], env=_env(tmp_path))
    assert result.exit_code != 0
    assert "pipelines prepare -d 2026-11-20" in result.output


def test_a_bad_date_is_refused(tmp_path):
    result = runner.invoke(app, ["generate", "-d", "20/11/2026"], env=_env(tmp_path))
    assert result.exit_code == 2


def test_a_request_it_cannot_run_exits_2_naming_what_to_change_without_a_traceback(tmp_path):
    """A choice outside its list, a setting out of range, a file or a day's data not there: exit 2 with a
    line that names it, where a bug exits 1 with its traceback."""
    cases = [
        (["generate", "-d", "2026-11-20", "--scenario", "bogus"], {}, "'bogus' is not one of"),
        (["validate", "-d", "2026-11-20", "--engine", "foo"], {}, "'foo' is not one of"),
        (["monitor", "-d", "2026-11-20", "--engine", "foo"], {}, "'foo' is not one of"),
        (["train", "-d", "2026-11-20", "--family", "foo"], {}, "'foo' is not one of"),
        (["train", "-d", "2026-11-20", "--run-key", "a b"], {}, "may hold only"),
        (["generate", "-d", "2026-11-20"], {"CT_ROWS_PER_DAY": "250000"}, "CT_ROWS_PER_DAY"),
        (["generate", "-d", "2026-11-20"], {"CT_SEED": "-1"}, "CT_SEED"),
        (["generate", "-d", "2026-11-20"], {"CT_DATASET": "bikeshare"}, "has no demo generator"),
        (["validate", "-d", "2026-11-20"], {"CT_DATASET": "nosuch"}, "contract file not found"),
        (["validate", "-d", "2026-11-25"], {}, "error: no data for 2026-11-25"),
        (["prepare", "-d", "2026-11-20"], {}, "error: No committed dataset"),
        (["prepare", "-d", "2026-11-20"], {"CT_POLICY_PATH": str(tmp_path)}, "is a folder, not a file"),
        (["register", "-d", "2026-11-20", "--run-id", "deadbeef"], {}, "Run with id=deadbeef not found"),
        (["prune", "-d", "2999-01-01"], {}, "counts back from 2999-01-01, which is after today"),
        # --version 0 counted as none given, and scored the date's registered version.
        (["evaluate", "-d", "2026-11-20", "--version", "0"], {}, "greater than or equal to 1"),
        # These three were a ValueError's traceback (exit 1), and burned the DAG task's retries.
        (
            ["validate", "-d", "2026-11-20"],
            {"CT_SOURCE_URI": "${CT_TEST_UNSET_LAKE}/tx/ds={ds}"},
            "names the environment variable(s) CT_TEST_UNSET_LAKE, which are not set",
        ),
        (["validate", "-d", "2026-11-20"], {"CT_SOURCE_URI": "/lake/{day}/tx"}, "unknown placeholder 'day'"),
        (
            ["generate", "-d", "2026-11-20"],
            {"CT_SOURCE_URI": "/lake/{ds}"},
            "CT_SOURCE_URI is set (/lake/{ds})",
        ),
        (["monitor", "prune", "-d", "2999-01-01"], {}, "counts back from 2999-01-01, which is after today"),
        # 99999 served on 34463 (the socket layer takes a port modulo 2^16)
        (["serve"], {"CT_SERVE_PORT": "99999"}, "CT_SERVE_PORT"),
        (["serve", "--port", "99999"], {}, "less than or equal to 65535"),
        # passed the data stages, then failed training with scikit-learn's error, naming no setting
        (["generate", "-d", "2026-11-20"], {"CT_SEED": str(2**32)}, "CT_SEED"),
        (["history", "--limit", "0"], {}, "greater than or equal to 1"),  # 0 printed every row
        # an OverflowError's traceback; a name that is no sample blamed CT_DATASET for the argument
        (
            ["sample-data", "breast_cancer", "--end", "0001-01-03", "--days", "5"],
            {},
            "5 days ending on 0001-01-03 start before the year 1",
        ),
        (["sample-data", "../x", "--end", "2026-11-20"], {}, "unknown sample data set '../x'; choose one of"),
        # SQLAlchemy's ArgumentError, or a ValueError, with their tracebacks (exit 1)
        (
            ["history"],
            {"CT_PROMOTION_DB": "notaurl"},
            "(CT_PROMOTION_DB): Value error, not a database URL",
        ),
        (
            ["history"],
            {"CT_MLFLOW_TRACKING_URI": "http://127.0.0.1:1"},
            "is not a database: set CT_PROMOTION_DB",
        ),
        # an address this host does not have: uvicorn logged it and exited 3, "the gate rejects"
        (["serve", "--host", "203.0.113.7", "--port", "8000"], {}, "cannot serve on 203.0.113.7:8000"),
    ]
    for args, env, expected in cases:
        result = runner.invoke(app, args, env=_env(tmp_path / "state") | env)
        assert result.exit_code == 2, (args, env, result.output, result.exception)
        assert expected in result.output and "Traceback" not in result.output, (args, env, result.output)


def test_policy_command_checks_the_file_and_prints_the_schema(tmp_path):
    import json

    ok = runner.invoke(app, ["policy"], env=_env(tmp_path))
    assert ok.exit_code == 0 and ok.output.startswith("OK ") and "slice:channel" in ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "version: 1\nprimary_metric: roc_auc\nhigher_is_better: true\nslices: [{column: amount, max_regression: 0.1}]\n"
    )
    refused = runner.invoke(app, ["policy", str(bad)], env=_env(tmp_path))
    assert (
        refused.exit_code == 1 and "slices.0.column: 'amount' is not a categorical feature" in refused.output
    )
    schema = json.loads(runner.invoke(app, ["policy", "--schema"], env=_env(tmp_path)).output)
    assert {"bootstrap", "slices", "latency", "approval", "dry_run"} <= set(schema["properties"])


def test_drift_compare_prints_each_columns_test_score_bound_and_verdict(tmp_path):
    import datetime as dt
    import json

    from pipelines.data.generate import generate_day

    for name, scenario in (("june", "none"), ("july", "covariate_shift")):
        (tmp_path / name).mkdir()
        frame = generate_day(dt.date(2026, 7, 1), seed=3, rows=3000, scenario=scenario)
        frame.to_parquet(tmp_path / name / "part-0.parquet", index=False)
    args = ["drift", "compare", "--reference", str(tmp_path / "june"), "--current", str(tmp_path / "july")]
    result = runner.invoke(app, args, env=_env(tmp_path / "state"))
    assert result.exit_code == 0, result.output
    found = json.loads(result.output[result.output.index("{") :])
    assert found["engine"] == "dask" and found["reference_rows"] == found["current_rows"] == 3000
    amount = found["columns"]["amount"]
    assert amount["method"] == "wasserstein" and amount["drifted"] and amount["error_bound"] < 0.005
    assert found["columns"]["plan"]["method"] == "jensenshannon" and "churned" not in found["columns"]
    missing = runner.invoke(
        app, ["drift", "compare", "--reference", str(tmp_path / "nowhere"), "--current", "x"]
    )
    assert missing.exit_code == 1 and "no Parquet files under" in missing.output
    (tmp_path / "short").mkdir()
    frame.drop(columns=["age"]).to_parquet(tmp_path / "short" / "part-0.parquet", index=False)
    args = ["drift", "compare", "--reference", str(tmp_path / "june"), "--current", str(tmp_path / "short")]
    short = runner.invoke(app, args, env=_env(tmp_path / "state"))  # was a raw KeyError
    assert short.exit_code == 1 and "has no column 'age' of the transactions contract" in short.output
    assert "Traceback" not in short.output
    frame.to_csv(
        tmp_path / "july.csv", index=False
    )  # a CSV export: pyarrow's ArrowInvalid, with its traceback
    args = [
        "drift",
        "compare",
        "--reference",
        str(tmp_path / "june"),
        "--current",
        str(tmp_path / "july.csv"),
    ]
    csv = runner.invoke(app, args, env=_env(tmp_path / "state"))
    assert csv.exit_code == 1 and f"{tmp_path / 'july.csv'} is not a Parquet file" in csv.output
    assert "--date is required" in runner.invoke(app, ["drift"], env=_env(tmp_path / "state")).output


def test_monitor_policy_checks_the_file_and_names_a_bad_key(tmp_path):
    shipped = runner.invoke(app, ["monitor", "policy"], env=_env(tmp_path))
    assert shipped.exit_code == 0 and shipped.output.startswith("OK ") and "cooldown 6 h" in shipped.output
    bad = tmp_path / "policy.yaml"
    bad.write_text("feature_drift: {critical_columns: [agee]}\n")
    refused = runner.invoke(app, ["monitor", "policy", str(bad)], env=_env(tmp_path))
    assert refused.exit_code == 1 and "'agee', which is not a feature" in refused.output
    schema = runner.invoke(app, ["monitor", "policy", "--schema"], env=_env(tmp_path))
    assert schema.exit_code == 0 and '"retrain_on"' in schema.output


def test_monitor_needs_a_date_and_history_needs_figures(tmp_path):
    no_date = runner.invoke(app, ["monitor"], env=_env(tmp_path))
    assert no_date.exit_code != 0 and "--date is required" in no_date.output
    empty = runner.invoke(app, ["monitor", "history"], env=_env(tmp_path))
    assert empty.exit_code == 1 and "pipelines monitor -d <date>" in empty.output
    import datetime as dt

    tomorrow = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)  # not over whenever this runs
    early = runner.invoke(app, ["monitor", "-d", tomorrow.isoformat()], env=_env(tmp_path))
    assert early.exit_code == 2 and f"{tomorrow}T0000-24h ends at" in early.output, early.output


def test_monitor_prune_lists_then_removes_and_a_pruned_day_is_refused_by_name(tmp_path):
    import json
    from pathlib import Path

    log = Path(tmp_path) / "data" / "predictions" / "ct-transactions"
    for day in ("2026-07-01", "2026-11-29"):
        (log / f"ds={day}").mkdir(parents=True)
        (log / f"ds={day}" / "part-1-ab.parquet").write_bytes(b"rows")
    listed = runner.invoke(app, ["monitor", "prune", "--dry-run", "-d", "2026-11-30"], env=_env(tmp_path))
    assert listed.exit_code == 0, listed.output
    found = json.loads(listed.output[listed.output.index("{\n") :])  # after MLflow's log lines
    assert found["prediction_log_before"] == "2026-09-01"  # the shipped policy keeps 90 days of log
    assert [uri.rsplit("/", 1)[-1] for uri in found["prediction_log_removed"]] == ["ds=2026-07-01"]
    assert (log / "ds=2026-07-01").exists()
    assert runner.invoke(app, ["monitor", "prune", "-d", "2026-11-30"], env=_env(tmp_path)).exit_code == 0
    assert sorted(p.name for p in log.iterdir()) == ["ds=2026-11-29"]
    refused = runner.invoke(app, ["monitor", "-d", "2026-07-01"], env=_env(tmp_path))
    assert refused.exit_code == 2 and "before 2026-09-01 was removed by retention" in refused.output


def test_train_exits_2_while_another_process_trains_its_run_key(tmp_path):
    import json

    from pipelines.release.history import exclusive
    from pipelines.settings import get_settings
    from pipelines.training.train import training_lock

    env = _env(tmp_path)
    for args in (
        ["generate", "-d", "2026-11-20"],
        ["validate", "-d", "2026-11-20"],
        ["prepare", "-d", "2026-11-20"],
    ):
        assert runner.invoke(app, args, env=env).exit_code == 0, args
    train = ["train", "-d", "2026-11-20", "--family", "sklearn"]
    first = runner.invoke(app, train, env=env)
    assert first.exit_code == 0, first.output
    key = json.loads(first.stdout)["run_key"]
    settings = get_settings(state_dir=tmp_path, rows_per_day=1500)
    with exclusive(settings, *training_lock(settings, key)):
        busy = runner.invoke(app, train, env=env)
    assert busy.exit_code == 2 and f"the training of run key {key}" in busy.output, busy.output
    assert "Traceback" not in busy.output


def test_prune_lists_old_prepared_windows_then_removes_them(tmp_path):
    import json
    import os
    from pathlib import Path

    features = Path(tmp_path) / "data" / "features" / "transactions"
    for day in ("2026-10-01", "2026-11-29"):
        (features / f"ds={day}").mkdir(parents=True)
        (features / f"ds={day}" / "_manifest.json").write_text("{}")
        os.utime(features / f"ds={day}" / "_manifest.json", (0, 0))  # written long ago: no run reads it now
    listed = runner.invoke(app, ["prune", "--dry-run", "-d", "2026-11-30"], env=_env(tmp_path))
    assert listed.exit_code == 0, listed.output
    found = json.loads(listed.output[listed.output.index("{\n") :])  # after MLflow's log lines
    assert found["prepared_before"] == "2026-10-31"  # CT_PREPARED_KEEP_DAYS: 30
    assert [uri.rsplit("/", 1)[-1] for uri in found["prepared_removed"]] == ["ds=2026-10-01"]
    assert (features / "ds=2026-10-01").exists()
    assert runner.invoke(app, ["prune", "-d", "2026-11-30"], env=_env(tmp_path)).exit_code == 0
    assert sorted(p.name for p in features.iterdir()) == ["ds=2026-11-29"]


def test_a_registry_out_of_reach_or_a_held_promotion_lock_exits_4_for_a_retry(tmp_path, monkeypatch):
    """Not the request's fault and not a bug: one line naming what did not answer, exit 4, no traceback."""
    from pipelines.release import history
    from pipelines.settings import get_settings

    away = {
        **_env(tmp_path),
        "CT_MLFLOW_TRACKING_URI": "http://127.0.0.1:9",  # the discard port: refused at once
        "CT_PROMOTION_DB": f"sqlite:///{tmp_path}/promotions.db",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    }
    for args in (["rollback", "--reason", "bad model"], ["history", "--check"]):
        result = runner.invoke(app, args, env=away)
        assert result.exit_code == 4, (args, result.output)
        assert "out of reach" in result.output and "127.0.0.1" in result.output
        assert "Traceback" not in result.output
    monkeypatch.setattr(history, "LOCK_TIMEOUT_S", 0)
    with history.promotion_lock(get_settings(state_dir=tmp_path), "ct-transactions"):
        held = runner.invoke(app, ["rollback", "--to", "1", "--reason", "bad model"], env=_env(tmp_path))
    assert held.exit_code == 4 and "held its lock" in held.output, held.output


def test_serve_on_a_port_in_use_exits_4_naming_it_not_3_the_gates_rejection(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(app, ["serve", "--port", str(port)], env=_env(tmp_path))
    assert result.exit_code == 4, (result.output, result.exception)
    assert f"cannot serve on 127.0.0.1:{port}: the port is in use" in result.output


def test_register_of_a_run_that_logged_no_model_exits_2_naming_the_run(tmp_path):
    """A failed or killed training's run, the one a person passes by hand: a ValueError's traceback, exit 1."""
    from mlflow import MlflowClient

    from pipelines.release import tracking
    from pipelines.settings import get_settings

    env = _env(tmp_path)
    settings = get_settings(state_dir=tmp_path)
    tracking.configure(settings)
    client = MlflowClient()
    experiment = client.create_experiment("a-failed-training")
    run = client.create_run(experiment).info.run_id
    client.set_terminated(run, "FAILED")
    result = runner.invoke(app, ["register", "-d", "2026-11-20", "--run-id", run], env=env)
    assert result.exit_code == 2, (result.output, result.exception)
    assert f"MLflow run {run} has no ct.model_uri tag" in result.output and "Traceback" not in result.output


def test_a_promotion_history_on_a_postgresql_out_of_reach_exits_4_with_one_line(tmp_path):
    import socket

    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    env = _env(tmp_path) | {"CT_PROMOTION_DB": f"postgresql+psycopg://ct:x@127.0.0.1:{port}/ct"}
    result = runner.invoke(app, ["history"], env=env)
    assert result.exit_code == 4, (result.output, result.exception)
    assert "Connection refused" in result.output and "Traceback" not in result.output


def test_a_version_this_machine_cannot_hold_exits_4_with_one_line_and_records_nothing(tmp_path):
    """A download short of disk (here: a manifest of 2**62 bytes, refused before a byte is fetched) is this
    machine's state, not the version's fault: one line, exit 4 for a retry, no refused row in the history."""
    import json

    from mlflow import MlflowClient

    from pipelines.release import history, integrity, tracking
    from pipelines.settings import get_settings

    settings = get_settings(state_dir=tmp_path)
    tracking.configure(settings)
    files = tmp_path / "model"
    files.mkdir()
    (files / "MLmodel").write_text("flavors: {}\n")
    huge = {"files": {"MLmodel": {"sha256": "0" * 64, "bytes": 2**62}}, "total_bytes": 2**62}
    client = MlflowClient()
    client.create_registered_model(settings.model_name)
    client.create_model_version(
        settings.model_name,
        str(files),
        tags={integrity.MANIFEST_TAG: json.dumps(huge), integrity.DIGEST_TAG: integrity.digest(huge)},
    )
    result = runner.invoke(app, ["rollback", "--to", "1", "--reason", "bad model"], env=_env(tmp_path))
    assert result.exit_code == 4, (result.output, result.exception)
    assert "this machine could not hold it" in result.output and "needs 4,611,686,018,427,387,904 bytes" in (
        result.output
    )
    assert "Traceback" not in result.output
    assert history.read(settings, settings.model_name) == []
