"""The MLflow adapter's pure parts: run keys that cannot break a registry filter, links to Airflow runs."""

import pytest


def test_run_keys_cannot_break_a_registry_filter():
    from pipelines.release.tracking import RunContext

    assert RunContext("retrain/2026-11-20/torch/abc123").run_key
    with pytest.raises(ValueError, match="run key"):
        RunContext("x' or '1'='1")


@pytest.mark.parametrize("key", ["../../elsewhere", "retrain/../../x", "/retrain", "retrain//x", "retrain/."])
def test_a_run_key_stays_below_the_training_jobs_folder(key):
    """A run key names the training's job folder below <data_root>/training/<dataset>/: `pipelines train
    --run-key ../../x` wrote its job (checkpoints, weights) outside it, where no retention looks."""
    from pipelines.release.tracking import RunContext

    with pytest.raises(ValueError, match="parts between '/' may not be empty, '.' or '..'"):
        RunContext(key)
    assert RunContext("manual__2026-12-06T13:49:00.123+00:00/a.b").run_key  # dots inside a part are fine


def test_a_run_links_back_to_its_airflow_run_page_when_it_has_one():
    from pipelines.release.tracking import RunContext, airflow_run_url

    run_id = "manual__2026-11-30T16:41:43.416900+00:00"
    url = airflow_run_url("http://airflow.example:8080/", "retrain", run_id)
    assert (
        url
        == "http://airflow.example:8080/dags/retrain/runs/manual__2026-11-30T16%3A41%3A43.416900%2B00%3A00"
    )
    assert RunContext("retrain/2026-11-30", "retrain", run_id, url).tags()["airflow.run_url"] == url
    assert "airflow.run_url" not in RunContext("cli/2026-11-30").tags()  # the CLI has no Airflow run


def test_artifact_downloads_draw_no_progress_bar_on_stderr_unless_the_user_asks(tmp_path, monkeypatch):
    import mlflow

    from pipelines.release.tracking import configure
    from pipelines.settings import get_settings

    # (set, then deleted: monkeypatch puts back whatever was there before, so configure's setdefault does not
    # outlive the test)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "unset")
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    configure(get_settings(state_dir=tmp_path))
    assert mlflow.environment_variables.MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.get() is False
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "true")
    configure(get_settings(state_dir=tmp_path))
    assert mlflow.environment_variables.MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.get() is True


def test_an_error_is_unavailable_through_its_causes_but_not_through_a_context_it_hid():
    """A bug raised "from None" while handling a timeout is a bug (exit 1 with its traceback), not a service
    out of reach (exit 4)."""
    import requests

    from pipelines.release.tracking import unavailable

    def wrapped(suppress: bool) -> BaseException:
        try:
            try:
                raise requests.ConnectionError("refused")
            except requests.ConnectionError as exc:
                if suppress:
                    raise KeyError("a bug") from None
                raise RuntimeError("the registry call failed") from exc
        except (KeyError, RuntimeError) as outer:
            return outer
        raise AssertionError

    assert unavailable(wrapped(suppress=False))
    assert not unavailable(wrapped(suppress=True))


def test_a_postgresql_out_of_reach_is_unavailable_and_its_answers_are_not(tmp_path):
    """A promotion history (or registry) on a PostgreSQL that refused the connection exited 1 with a traceback
    of 54 frames, where a service out of reach exits 4 and is run again."""
    import socket

    import psycopg
    import sqlalchemy as sa

    from pipelines.release.tracking import unavailable

    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    engine = sa.create_engine(
        f"postgresql+psycopg://ct:x@127.0.0.1:{port}/ct", connect_args={"connect_timeout": 5}
    )
    with pytest.raises(sa.exc.OperationalError) as refused:
        engine.connect()
    assert unavailable(refused.value)
    restarting = psycopg.errors.CannotConnectNow("the database system is starting up")
    assert unavailable(sa.exc.OperationalError("SELECT 1", {}, restarting))
    # answers of a server that is there: a bug or a request to fix, never "run it again"
    assert not unavailable(sa.exc.ProgrammingError("SELECT", {}, psycopg.errors.UndefinedTable("no table")))
    assert not unavailable(sa.exc.OperationalError("SELECT", {}, psycopg.errors.QueryCanceled("cancelled")))
    with pytest.raises(sa.exc.OperationalError) as missing:  # SQLite's OperationalError: not a connection
        sa.create_engine(f"sqlite:///{tmp_path}/x.db").connect().execute(sa.text("SELECT * FROM nope"))
    assert not unavailable(missing.value)
