"""The training's identity: what goes into the run key, and what changes it."""

import dataclasses
import hashlib
import json

import pytest

from pipelines.data.datasets import Manifest
from pipelines.settings import get_settings
from pipelines.training import train as training
from pipelines.training.model_settings import ModelSettings, TrainingConfigError
from pipelines.training.train import FAMILIES, plan_training, resolve_world_size


def _manifest(content_hash: str = "c" * 64, **extra) -> Manifest:
    return Manifest(
        uri="memory://features",
        rows=1000,
        schema={},
        content_hash=content_hash,
        created_at="2026-11-20T00:00:00+00:00",
        extra={"split_rows": {"train": 700, "validation": 150, "holdout": 150}, **extra},
    )


def _plan(family="torch", settings=None, model_settings=None, manifest=None):
    defaults = {"train_device": "cpu", "train_world_size": "auto", "train_epochs": None, "seed": 7}
    settings = get_settings(**(defaults | (settings or {})))
    return plan_training(
        settings,
        model_settings or ModelSettings(),
        FAMILIES[family],
        "memory://features",
        manifest or _manifest(dataset_version="v" * 64),
    )


def test_the_same_configuration_has_the_same_identity():
    first, second = _plan(), _plan()
    assert first == second and first.identity == second.identity
    assert len(first.identity) == 16 and int(first.identity, 16) >= 0
    assert first.runtime == {"device": "cpu", "world_size": 1, "backend": "none", "compute_dtype": "float32"}
    assert first.libraries["torch"] and first.code_version == training.TRAINING_CODE_VERSION
    assert _plan("sklearn").runtime == {} and set(_plan("sklearn").libraries) == {"scikit-learn"}


@pytest.mark.parametrize(
    "change",
    [
        {"settings": {"train_epochs": 150}},
        {"model_settings": ModelSettings.model_validate({"torch": {"hidden_sizes": [128, 64]}})},
        {"model_settings": ModelSettings.model_validate({"torch": {"early_stopping": None}})},
        {"settings": {"train_world_size": 2}},
        {"settings": {"seed": 8}},
        {"manifest": _manifest(dataset_version="w" * 64)},
        {"family": "sklearn"},
        {"model_settings": ModelSettings.model_validate({"torch": {"precision": "bf16"}})},
    ],
    ids=[
        "epochs",
        "hidden_sizes",
        "early_stopping",
        "world_size",
        "seed",
        "dataset_version",
        "family",
        "precision",
    ],
)
def test_any_change_to_what_decides_the_model_changes_the_identity(change):
    assert _plan(**change).identity != _plan().identity


def test_the_code_and_library_versions_are_part_of_the_identity(monkeypatch):
    before = _plan()
    monkeypatch.setattr(training, "TRAINING_CODE_VERSION", "999")
    assert _plan().identity != before.identity
    assert dataclasses.replace(before, libraries={"torch": "0.0.1"}).identity != before.identity


def test_builds_of_one_torch_release_give_one_run_key_and_one_request_key(monkeypatch):
    """A date re-run on a host with torch's CUDA wheel where it first ran on the CPU wheel trained again and
    registered a second version: the build's label was part of both keys, which the ranks ignore."""
    import importlib.metadata

    installed = importlib.metadata.version
    settings = get_settings(train_device="cpu", seed=7)
    found = {}
    for label in ("+cpu", "+cu126", ""):

        def version(name: str, label: str = label) -> str:
            return installed(name).split("+")[0] + label if name == "torch" else installed(name)

        monkeypatch.setattr(training.importlib.metadata, "version", version)
        plan = _plan()
        found[label] = (plan.identity, training.request_identity(plan, settings), plan.libraries["torch"])
    assert len(set(found.values())) == 1, found
    assert "+" not in found[""][2]


def test_another_family_s_settings_and_the_file_s_family_do_not_change_the_identity():
    other = ModelSettings.model_validate({"family": "sklearn", "sklearn": {"max_iter": 5}})
    assert _plan(model_settings=other).identity == _plan().identity


def test_the_splits_row_order_is_part_of_the_identity_and_not_of_the_request():
    """The same rows prepared by another engine come in another order: another model, under another identity;
    a re-run of the date asks for the same training, and reuses the date's run."""
    manifest = _manifest(dataset_version="v" * 64)
    ordered = dataclasses.replace(manifest, row_order={"split=train": "1" * 16, "split=validation": "2" * 16})
    other = dataclasses.replace(ordered, row_order={"split=train": "3" * 16, "split=validation": "2" * 16})
    plans = [_plan(manifest=m) for m in (manifest, ordered, other)]
    assert plans[0].row_order == {} and plans[1].row_order == {"train": "1" * 16, "validation": "2" * 16}
    assert len({plan.identity for plan in plans}) == 3
    before = {k: v for k, v in dataclasses.asdict(plans[0]).items() if k != "row_order"}  # as identities were
    assert (
        plans[0].identity
        == hashlib.sha256(json.dumps(before, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
    )
    settings = get_settings(train_device="cpu", train_world_size="auto", seed=7)
    assert len({training.request_identity(plan, settings) for plan in plans}) == 1


def test_the_dataset_version_falls_back_to_the_content_hash():
    assert _plan(manifest=_manifest("d" * 64)).dataset_version == "d" * 64
    assert _plan(manifest=_manifest("d" * 64, dataset_version="v1")).dataset_version == "v1"


def test_world_size_auto_launches_ranks_for_big_data_on_gpus_or_for_a_big_model_on_cores(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(training, "_cores", lambda: 6)
    assert resolve_world_size("auto", 1000, 999, "cpu", 10**6, 1000) == 1  # small data: in-process
    assert resolve_world_size("auto", 1000, 10**9, "cpu", 999, 1000) == 1  # small model: its steps are short
    assert resolve_world_size("auto", 1000, 10**9, "cpu", 1000, 1000) == 6
    assert resolve_world_size("auto", 1000, 999, "cuda", 10**6, 1000) == 1
    assert resolve_world_size("auto", 1000, 1000, "cuda", 0, 1000) == 4
    assert (
        training.mlp_parameters(17, [512, 512, 256])
        == 17 * 512 + 512 + 512 * 512 + 512 + 512 * 256 + 256 + 257
    )
    assert resolve_world_size(3, 1000, 10, "cpu") == 3
    assert resolve_world_size(1, 0, 10**9, "cpu") == 1
    with pytest.raises(ValueError, match="at least 1"):
        resolve_world_size(0, 1000, 10, "cpu")


def test_run_params_hold_every_hyperparameter_and_the_launch():
    plan = _plan()
    params = training._run_params(plan, {"train": 7, "validation": 3}, "in-process")
    flat_keys = {"hidden_sizes", "dropout", "learning_rate", "weight_decay", "batch_size", "max_epochs"}
    assert flat_keys | {"early_stopping.patience", "early_stopping.min_delta"} <= set(params)
    assert params["launcher"] == "in-process" and params["world_size"] == 1
    assert params["train_rows"] == 7 and params["validation_rows"] == 3
    assert params["training_identity"] == plan.identity
    tags = training._identity_tags(plan)
    assert tags["ct.training_identity"] == plan.identity and tags["dataset.version"] == "v" * 64


def test_the_forward_runs_in_bfloat16_on_a_gpu_that_has_it_and_in_float32_elsewhere(monkeypatch):
    import torch

    from pipelines.training.train import resolve_compute_dtype

    assert resolve_compute_dtype("auto", "cpu") == "float32"
    assert resolve_compute_dtype("bf16", "cpu") == "bfloat16"  # asked for: CPU autocast runs it
    assert (
        _plan(model_settings=ModelSettings.model_validate({"torch": {"precision": "bf16"}})).runtime[
            "compute_dtype"
        ]
        == "bfloat16"
    )
    asked: list[bool] = []
    monkeypatch.setattr(
        training, "_gpu_has_bf16", lambda in_this_process: asked.append(in_this_process) or True
    )
    assert resolve_compute_dtype("auto", "cuda") == "bfloat16"
    assert resolve_compute_dtype("auto", "cuda", in_this_process=False) == "bfloat16"
    assert asked == [True, False]  # launched ranks: asked from a child process, not in the task's
    assert resolve_compute_dtype("fp32", "cuda") == "float32"
    monkeypatch.setattr(training, "_gpu_has_bf16", lambda in_this_process: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda: "Tesla V100")
    assert resolve_compute_dtype("auto", "cuda") == "float32"
    with pytest.raises(
        TrainingConfigError, match=r"precision: bf16 .* \(Tesla V100\) does not support bfloat16"
    ):
        resolve_compute_dtype("bf16", "cuda")


def test_an_in_process_rank_takes_every_core_for_a_big_mlp_and_one_thread_for_a_small_one(monkeypatch):
    monkeypatch.setattr(training, "_cores", lambda: 6)
    big = ModelSettings.model_validate({"torch": {"hidden_sizes": [512, 512, 256]}})
    features = 17

    def threads(model_settings=None, **settings):
        plan = _plan(settings=settings, model_settings=model_settings)
        return training._threads_per_rank(get_settings(**settings), plan, features)

    assert threads() == 1  # the demo MLP: its matrices are too small for threads to pay
    assert threads(big) == 6
    assert threads(big, train_world_size=2) is None  # launched ranks split their node's cores
    assert threads(big, train_launcher="spark", train_world_size=2) == 1  # an executor task holds one core


def test_device_auto_trains_a_small_step_on_the_cpu_even_on_a_gpu_host(monkeypatch):
    """A GPU step has a fixed cost that a small MLP's step on one CPU thread undercuts (the demo MLP on an H200:
    113,800 samples/s against 327,000 on one CPU thread), so ``auto`` weighs the step's work, not only the GPU."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(training, "_gpu_has_bf16", lambda in_this_process: True)
    big = ModelSettings.model_validate({"torch": {"hidden_sizes": [512, 512, 256], "batch_size": 1024}})
    features = {"features": [f"f{i}" for i in range(16)]}

    def runtime(model_settings=None, **settings):
        return _plan(
            settings={"train_device": "auto"} | settings,
            model_settings=model_settings,
            manifest=_manifest(**features),
        ).runtime

    assert runtime() == {  # the demo MLP: 3,201 parameters x 256 rows a step
        "device": "cpu",
        "world_size": 1,
        "backend": "none",
        "compute_dtype": "float32",
    }
    assert runtime(big)["device"] == "cuda" and runtime(big)["compute_dtype"] == "bfloat16"
    assert runtime(train_gpu_from_step_work=0)["device"] == "cuda"  # the GPU whenever there is one
    assert runtime(train_device="cuda")["device"] == "cuda"  # asked for: taken as it is
    assert training.resolve_device("auto", 16_000_000, 16_000_000) == "cuda"
    assert training.resolve_device("auto", 15_999_999, 16_000_000) == "cpu"
    assert training.resolve_device("auto", None, 16_000_000) == "cuda"  # a family without a step's size
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runtime(big)["device"] == "cpu"
    with pytest.raises(TrainingConfigError, match="CT_TRAIN_DEVICE=cuda but torch sees no CUDA device"):
        runtime(train_device="cuda")


def test_spark_s_ranks_train_on_the_executors_gpus_whatever_the_driver_has(monkeypatch):
    """CT_TRAIN_LAUNCHER=spark with CT_TRAIN_DEVICE=cuda: the ranks run on the executors, with their own GPUs;
    a driver without one (an Airflow worker) refused it. `auto` precision is float32 there (the executors'
    GPUs are not seen from the driver); `precision: bf16` asks for bfloat16."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    features = {"features": [f"f{i}" for i in range(16)]}
    spark = {"train_launcher": "spark", "train_device": "cuda", "train_world_size": 2}

    def runtime(model_settings=None, **settings):
        return _plan(settings=settings, model_settings=model_settings, manifest=_manifest(**features)).runtime

    assert runtime(**spark) == {
        "device": "cuda",
        "world_size": 2,
        "backend": "nccl",
        "compute_dtype": "float32",
    }
    bf16 = ModelSettings.model_validate({"torch": {"precision": "bf16"}})
    assert runtime(bf16, **spark)["compute_dtype"] == "bfloat16"
    with pytest.raises(TrainingConfigError, match="CT_TRAIN_DEVICE=cuda but torch sees no CUDA device"):
        runtime(train_device="cuda", train_world_size=2)  # the local launcher's ranks are this host's
