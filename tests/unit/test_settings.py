"""Settings: the environment, derived paths that follow the dataset, names checked before they become paths."""

import pytest

from pipelines.settings import get_settings


def test_model_name_and_policy_follow_the_dataset():
    assert get_settings(dataset="breast_cancer").model_name == "ct-breast_cancer"
    assert get_settings(dataset="breast_cancer").resolved_policy_path.name == "breast_cancer.yaml"
    assert get_settings(dataset="transactions").resolved_policy_path.name == "promotion_policy.yaml"
    assert get_settings(model_name="mine").model_name == "mine"


def test_settings_read_the_prefixed_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CT_ENGINE", "spark")
    monkeypatch.setenv("CT_STATE_DIR", str(tmp_path))
    settings = get_settings()
    assert settings.engine == "spark"
    assert settings.resolved_data_root == str(tmp_path / "data")
    assert settings.tracking_uri == f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"


def test_settings_refuse_a_bad_engine(monkeypatch):
    monkeypatch.setenv("CT_ENGINE", "hadoop")
    with pytest.raises(ValueError, match="engine"):
        get_settings()


def test_settings_are_immutable_and_copies_derive_again(tmp_path):
    from pydantic import ValidationError

    settings = get_settings(state_dir=tmp_path, dataset="breast_cancer")
    with pytest.raises(ValidationError, match="frozen"):
        settings.dataset = "transactions"
    other = settings.replace(dataset="transactions")
    assert (other.model_name, other.resolved_contract_path.name) == ("ct-transactions", "transactions.yaml")
    assert other.resolved_data_root == settings.resolved_data_root == str(tmp_path / "data")
    copied = settings.model_copy(update={"dataset": "transactions"})  # pydantic's copy validates here too
    assert (
        copied.model_name == "ct-transactions" and copied.resolved_policy_path.name == "promotion_policy.yaml"
    )
    named = get_settings(model_name="mine").replace(dataset="transactions")
    assert named.model_name == "mine"  # an explicit name stays


@pytest.mark.parametrize("name", ["../outside", "a/b", "", "x y", "sales.v2", "~root"])
def test_a_dataset_name_that_is_not_a_plain_name_is_refused(monkeypatch, name):
    with pytest.raises(ValueError, match="may hold only letters, digits, '_' and '-'"):
        get_settings(dataset=name)
    monkeypatch.setenv("CT_DATASET", name)
    with pytest.raises(ValueError, match="dataset"):
        get_settings()
    monkeypatch.delenv("CT_DATASET")
    with pytest.raises(ValueError, match="may hold only"):
        get_settings().replace(dataset=name)


def test_a_copy_refuses_an_unknown_setting_and_derives_without_reading_the_environment(monkeypatch):
    settings = get_settings(dataset="breast_cancer")
    with pytest.raises(ValueError, match="unknown settings: datset"):
        settings.replace(datset="transactions")
    monkeypatch.setenv("CT_MODEL_NAME", "set-after-the-fact")
    monkeypatch.setenv("CT_ENGINE", "spark")
    copy = settings.replace(dataset="transactions")
    assert (copy.model_name, copy.engine) == ("ct-transactions", "dask")
    assert copy.replace(dataset="breast_cancer").model_name == "ct-breast_cancer"  # still derived


def test_serving_replicas_are_a_comma_separated_list_of_http_urls(monkeypatch):
    monkeypatch.setenv("CT_SERVE_URLS", " http://serving-a:8000/, http://serving-b:8000 ,")
    assert get_settings().serve_urls == ("http://serving-a:8000", "http://serving-b:8000")
    monkeypatch.setenv("CT_SERVE_URLS", "")
    assert get_settings().serve_urls == ()
    monkeypatch.setenv("CT_SERVE_URLS", "serving-a:8000")
    with pytest.raises(ValueError, match="'serving-a:8000' is not http"):
        get_settings()


def test_a_spark_connect_server_is_an_sc_url(monkeypatch):
    monkeypatch.setenv("CT_SPARK_REMOTE", " sc://spark-connect:15002 ")
    assert get_settings().spark_remote == "sc://spark-connect:15002"
    monkeypatch.setenv("CT_SPARK_REMOTE", "sc://spark-connect:15002/;token=secret;use_ssl=true")
    assert get_settings().spark_remote == "sc://spark-connect:15002/;token=secret;use_ssl=true"
    monkeypatch.setenv("CT_SPARK_REMOTE", "")
    assert get_settings().spark_remote is None  # a driver in the task
    monkeypatch.setenv("CT_SPARK_REMOTE", "sc://[::1]:15002/")
    assert get_settings().spark_remote == "sc://[::1]:15002/"
    monkeypatch.setenv("CT_SPARK_REMOTE", "sc://spark-connect;token=secret")
    with pytest.raises(ValueError, match="token=\\*\\*\\*") as refused:
        get_settings()
    assert "secret" not in str(refused.value)
    for wrong in ("spark-connect:15002", "spark://master:7077", "sc://spark-connect:15002/path"):
        monkeypatch.setenv("CT_SPARK_REMOTE", wrong)
        with pytest.raises(ValueError, match=f"Spark Connect URL '{wrong}' is not sc://host"):
            get_settings()


@pytest.mark.parametrize(
    "variable, value",
    [
        ("CT_TRAIN_TIMEOUT_S", "inf"),
        ("CT_TRAIN_RENDEZVOUS_TIMEOUT_S", "inf"),
        ("CT_TRAINING_JOBS_KEEP_DAYS", "inf"),
        ("CT_PREDICTION_LOG_FLUSH_SECONDS", "inf"),
        ("CT_SERVE_POLL_SECONDS", "nan"),
        ("CT_TRAIN_TIMEOUT_S", "1e12"),
        ("CT_PREPARED_KEEP_DAYS", "10000000000"),
        ("CT_MONITOR_LABEL_LOOKBACK_DAYS", "10000000000"),
        ("CT_WINDOW_DAYS", "10000000000"),
    ],
)
def test_a_time_setting_that_no_timer_or_date_can_hold_is_refused_naming_it(monkeypatch, variable, value):
    """'inf' read as "no limit" passed the settings and failed far from them (a timer's or a timedelta's
    OverflowError in the task, naming nothing); NaN passes every bound. Both, and sizes past a century of days
    or thirty days of seconds, are refused where the setting is read, naming it."""
    import datetime as dt
    import threading

    from pydantic import ValidationError

    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=variable.removeprefix("CT_").lower()):
        get_settings()
    # the largest values taken still make a date, a deadline and a timer
    from pipelines.settings import MAX_DAYS, MAX_TIMEOUT_S

    assert dt.date(2026, 12, 6) - dt.timedelta(days=MAX_DAYS) > dt.date.min
    assert dt.datetime.now(dt.UTC) + dt.timedelta(seconds=MAX_TIMEOUT_S) < dt.datetime.max.replace(
        tzinfo=dt.UTC
    )
    assert MAX_TIMEOUT_S < threading.TIMEOUT_MAX
