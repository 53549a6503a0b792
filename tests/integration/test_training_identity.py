"""The run key is the training's identity, on real MLflow: a retry reuses its run, any change trains anew."""

from __future__ import annotations

import pytest

from pipelines.data.generate import generate
from pipelines.data.prepare import prepare
from pipelines.data.validate import validate
from pipelines.release import tracking
from pipelines.settings import get_settings
from pipelines.training.train import train
from tests.days import DAY

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """One prepared demo day of 1,200 rows (about 840 training rows)."""
    settings = get_settings(state_dir=tmp_path_factory.mktemp("identity"), rows_per_day=1200)
    generate(settings, DAY, "none")
    validate(settings, DAY)
    return settings.state_dir, prepare(settings, DAY, "dask")["uri"]


def _settings(state_dir, **changes):
    defaults = {"train_epochs": 2, "train_world_size": "auto", "train_device": "cpu", "seed": 7}
    return get_settings(state_dir=state_dir, rows_per_day=1200, **(defaults | changes))


def test_same_configuration_reuses_the_run_and_any_change_trains_a_new_one(prepared, tmp_path):
    state_dir, uri = prepared
    context = tracking.RunContext("retrain/2026-11-20", "retrain", "run-1")
    first = train(_settings(state_dir), DAY, uri, context, "torch")
    assert first["run_key"] == f"retrain/2026-11-20/{first['training_identity']}"
    run = tracking.configure(_settings(state_dir)).get_run(first["run_id"])
    params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
    assert params["max_epochs"] == "2" and params["hidden_sizes"] == "[64, 32]"
    assert params["early_stopping.patience"] == "10" and params["launcher"] == "in-process"
    assert params["world_size"] == "1" and params["training_identity"] == first["training_identity"]
    assert tags["ct.training_identity"] == first["training_identity"] and tags["dataset.version"]
    assert tags["ct.run_key"] == first["run_key"] and tags["airflow.run_id"] == "run-1"
    assert 1 <= metrics["stopped_epoch"] <= 2 and metrics["best_val_loss"] > 0
    # The loss curves: one point per epoch trained, in order, logged in one batch.
    client = tracking.configure(_settings(state_dir))
    for curve in ("train_loss", "val_loss"):
        history = client.get_metric_history(first["run_id"], curve)
        assert [point.step for point in history] == list(range(1, int(metrics["stopped_epoch"]) + 1))
    assert min(p.value for p in client.get_metric_history(first["run_id"], "val_loss")) == pytest.approx(
        metrics["best_val_loss"]
    )

    # A retry of the same training (another DAG run id, same prefix): the finished run is reused.
    retry = tracking.RunContext("retrain/2026-11-20", "retrain", "run-1-retry")
    assert train(_settings(state_dir), DAY, uri, retry, "torch")["run_id"] == first["run_id"]

    # CT_TRAIN_EPOCHS changed: a new identity, a new run.
    more_epochs = train(_settings(state_dir, train_epochs=3), DAY, uri, context, "torch")
    assert more_epochs["run_id"] != first["run_id"]
    assert more_epochs["training_identity"] != first["training_identity"]

    # Hidden sizes changed in the model settings file: a new run, logged with its sizes.
    model_file = tmp_path / "model.yaml"
    model_file.write_text("torch: {hidden_sizes: [16]}\n")
    narrow = train(_settings(state_dir, model_settings_path=model_file), DAY, uri, context, "torch")
    assert narrow["run_id"] not in {first["run_id"], more_epochs["run_id"]}
    narrow_run = tracking.configure(_settings(state_dir)).get_run(narrow["run_id"])
    assert narrow_run.data.params["hidden_sizes"] == "[16]"

    # And each is reused on its own retry.
    assert (
        train(_settings(state_dir, train_epochs=3), DAY, uri, retry, "torch")["run_id"]
        == more_epochs["run_id"]
    )
    assert (
        train(_settings(state_dir, model_settings_path=model_file), DAY, uri, retry, "torch")["run_id"]
        == narrow["run_id"]
    )


def test_two_torchrun_ranks_are_another_training_than_one_rank(prepared):
    state_dir, uri = prepared
    context = tracking.RunContext("retrain/2026-11-20")
    one = train(_settings(state_dir), DAY, uri, context, "torch")
    two = train(_settings(state_dir, train_world_size=2), DAY, uri, context, "torch")
    assert two["run_id"] != one["run_id"]
    params = tracking.configure(_settings(state_dir)).get_run(two["run_id"]).data.params
    assert params["launcher"] == "local" and params["world_size"] == "2" and params["backend"] == "gloo"
    assert two["val_metrics"]["roc_auc"] > 0.6


def test_sklearn_stops_early_on_the_validation_split_and_logs_its_parameters(prepared):
    state_dir, uri = prepared
    trained = train(_settings(state_dir), DAY, uri, tracking.RunContext("retrain/2026-11-20"), "sklearn")
    run = tracking.configure(_settings(state_dir)).get_run(trained["run_id"])
    assert run.data.params["max_iter"] == "300" and run.data.params["early_stopping"] == "True"
    assert run.data.metrics["stopped_iteration"] <= 300 and run.data.metrics["best_val_loss"] > 0
    assert trained["val_metrics"]["roc_auc"] > 0.6


def test_a_run_key_another_process_is_training_fails_at_once_and_trains_nothing(prepared):
    """The CLI and the DAG train a day under one run key, and Airflow may start a retry beside a task it took for
    dead: the second would share the first's job folder and register a second model."""
    from pipelines.release.history import LockHeldError, exclusive
    from pipelines.training.train import training_lock

    state_dir, uri = prepared
    settings = _settings(state_dir)
    first = train(settings, DAY, uri, tracking.RunContext("cli/2026-11-20", "cli", "run-a"), "sklearn")
    key = f"busy/2026-11-20/{first['training_identity']}"
    busy = tracking.RunContext("busy/2026-11-20", "retrain", "run-b")
    client = tracking.configure(settings)

    experiment = client.get_run(first["run_id"]).info.experiment_id

    def runs_of(run_key: str) -> list:
        return client.search_runs([experiment], f"tags.`ct.run_key` = '{run_key}'")

    # Another process's training, as the lock sees it.
    with exclusive(settings, *training_lock(settings, key)):
        with pytest.raises(LockHeldError, match=f"the training of run key {key} \\(transactions\\) is held"):
            train(settings, DAY, uri, busy, "sklearn")
        assert runs_of(key) == []
    # Once it lets go, the key trains (and a retry then reuses the run).
    done = train(settings, DAY, uri, busy, "sklearn")
    assert done["run_key"] == key and len(runs_of(key)) == 1
    assert train(settings, DAY, uri, busy, "sklearn")["run_id"] == done["run_id"]


def test_a_date_trained_on_a_host_with_other_cores_is_reused_not_trained_again(prepared, monkeypatch):
    """World size auto is one rank per core for a big model: a re-run of the date on a worker with another
    number of cores had another identity, trained again and registered a second model for the date."""
    from pipelines.training import train as training

    state_dir, uri = prepared
    big = {"train_processes_from_parameters": 1, "train_processes_from_rows": 1}  # auto: one rank per core
    context = tracking.RunContext("hosts/2026-11-20")
    monkeypatch.setattr(training, "_cores", lambda: 1)
    one_core = train(_settings(state_dir, **big), DAY, uri, context, "torch")
    monkeypatch.setattr(training, "_cores", lambda: 2)
    assert training.torch_runtime(_settings(state_dir, **big), 800, 5000)["world_size"] == 2
    again = train(_settings(state_dir, **big), DAY, uri, context, "torch")
    assert again["run_id"] == one_core["run_id"]  # the same request: its run, not a 2-rank one
    # Asked for otherwise (two ranks named), it is another request, and trains.
    named = train(_settings(state_dir, **big, train_world_size=2), DAY, uri, context, "torch")
    assert named["run_id"] != one_core["run_id"]
