"""Train: a torch MLP (in-process, or DDP ranks under torchrun), or a scikit-learn model, logged to one MLflow run.

The hyperparameters come from the dataset's model settings file (:mod:`pipelines.training.model_settings`).
The torch family trains in this process when the training split is small (``CT_TRAIN_WORLD_SIZE=auto``,
below ``CT_TRAIN_PROCESSES_FROM_ROWS`` rows) and otherwise spawns ``world_size`` ranks with torchrun that
rendezvous over TCP on loopback (gloo on the CPU, nccl when every rank has its own GPU); each reads and trains
on its own part of the split and DDP averages the gradients. On a GPU with bfloat16 the forward runs under
autocast in bfloat16 (the model settings' ``precision``). Both stop early on the validation split's loss.
The driver never reads the training split: it writes a job folder on the data root
(:mod:`pipelines.training.job`) that the ranks read, report to, checkpoint in and commit their result to; a
restarted rank or a retried task resumes there from the last checkpoint.

A run is idempotent per training identity: the run key is the caller's prefix plus a hash of everything that
decides the model (dataset version, family, resolved hyperparameters, world size and device, seed, code and
library versions). A retry of the same training finds the finished MLflow run and returns it untouched; any
change trains a new model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import importlib.metadata
import json
import logging
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import Metric

from pipelines.data import datasets, runlog, storage
from pipelines.data.contract import Contract, dataset_contract
from pipelines.data.features import feature_names
from pipelines.data.moments import split_moments
from pipelines.data.profile import PROFILE_FILE, REFERENCE_PROFILE_ARTIFACT
from pipelines.evaluation.metrics import classification_metrics
from pipelines.host import usable_cores
from pipelines.release import tracking
from pipelines.release.history import exclusive
from pipelines.settings import MODEL_FAMILIES, Settings
from pipelines.training import job as jobs
from pipelines.training import launchers, shards
from pipelines.training.arrays import TrainingData
from pipelines.training.job import Job, NonFiniteLossError, SplitChangedError
from pipelines.training.model_settings import (
    ModelSettings,
    TrainingConfigError,
    choose_family,
    load_model_settings,
    resolved_hyperparameters,
)

log = logging.getLogger(__name__)

# Bump when a change to this package changes what a model learns from the same data and settings: every
# training identity changes with it, so a retry after an upgrade trains again instead of reusing the old run.
# 3: ranks read their own parts of the split and scale with the prepare stage's moments.
# 4: validation in slices sized by the model's width; the forward's dtype (precision) in the runtime.
# 5: each rank's dropout draws from a stream of its own (every rank dropped the same rows of its batch).
TRAINING_CODE_VERSION = "5"


@dataclass(frozen=True)
class FitInputs:
    """What a family's fit is given: where the prepared splits are, and where a training job may live."""

    settings: Settings
    dataset_uri: str
    manifest: datasets.Manifest
    contract: Contract
    job_uri: str  # the run key's folder on the data root

    @property
    def features(self) -> list[str]:
        return feature_names(self.contract)


@dataclass(frozen=True)
class TrainingPlan:
    """Everything that decides the trained model; its hash is the training's identity."""

    family: str
    dataset_version: str
    hyperparameters: dict[str, Any]
    # torch: world size, device, backend and the forward's dtype (a DDP result depends on them); sklearn: {}
    runtime: dict[str, Any]
    seed: int
    code_version: str
    libraries: dict[str, str]
    # split -> the digest of its rows' order (the manifest's row_order), which the ranks' parts and the batches
    # are cut from: the same rows in another order (a dataset prepared before prepare sorted its splits, in its
    # engine's order) train another model.
    row_order: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def identity(self) -> str:
        parts = dataclasses.asdict(self)
        if not parts["row_order"]:  # a dataset prepared before 2026-12-06: its runs keep their identities
            del parts["row_order"]
        canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def model_config(self, n_features: int) -> dict[str, Any]:
        """What the model's ``config.json`` holds: enough to rebuild it, and how it was trained."""
        return {
            **self.hyperparameters,
            **self.runtime,
            "seed": self.seed,
            "n_features": n_features,
            "family": self.family,
        }


@dataclass(frozen=True)
class FitReport:
    """What a family's fit reports besides its weights: loss curves by name and summary metrics."""

    curves: dict[str, list[float]]
    metrics: dict[str, float]
    resumed_from: list[dict[str, int]] = dataclasses.field(default_factory=list)
    # rank -> the host it ran on (a launched job's ranks report it); empty for a family that has no ranks
    hosts: dict[int, str] = dataclasses.field(default_factory=dict)


def resolve_device(
    requested: str, step_work: int | None = None, gpu_from_step_work: int = 0, on_this_host: bool = True
) -> str:
    """The torch device to train on. ``auto``: a CUDA device when torch sees one and a step's work (``step_work``,
    the MLP's parameters times the rows of one step; None when unknown) is at least ``gpu_from_step_work``; the
    CPU otherwise. A GPU step has a fixed cost (kernel launches) that a small model's step on one CPU thread
    undercuts: measured with ``bench/train.py`` on 2026-12-04, the demo MLP (3,201 parameters, batch 256) trained
    at 113,800 samples/s on an NVIDIA H200 (2.2 ms a step) against 327,000 on one CPU thread of this project's
    2-core machine; one CPU thread matches that GPU step at about 70,000 parameters at batch 256 and 10,500 at
    batch 1024, 11-18 million parameter-rows a step. ``on_this_host``: whether the ranks train on this host's
    devices (else ``cuda`` is taken as asked: Spark's executors have their own)."""
    import torch

    if requested == "auto":
        if not torch.cuda.is_available():
            return "cpu"
        return "cuda" if step_work is None or step_work >= gpu_from_step_work else "cpu"
    if requested == "cuda" and on_this_host and not torch.cuda.is_available():
        raise TrainingConfigError("CT_TRAIN_DEVICE=cuda but torch sees no CUDA device")
    return requested


def _gpu_has_bf16(in_this_process: bool) -> bool:
    """Whether this host's GPU computes in bfloat16 natively (Ampere and later; torch's emulation on older GPUs
    does not count). Asked in a child process when ranks will be launched, so that the task itself opens no CUDA
    context on a GPU a rank is about to use (on a GPU in exclusive-process mode the rank could not)."""
    if in_this_process:
        import torch

        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import torch; print(torch.cuda.is_bf16_supported(including_emulation=False))",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return probe.stdout.strip() == "True"


def resolve_compute_dtype(precision: str, device: str, in_this_process: bool = True) -> str:
    """The dtype the MLP's forward runs in: ``auto`` is bfloat16 on a CUDA device that supports it natively (under
    autocast; the weights, optimiser state and logged model stay float32), float32 elsewhere. ``bf16`` asks for it
    on any device (a CPU without bfloat16 instructions runs it, slowly); ``fp32`` never. ``in_this_process``:
    whether this process will train (else the GPU is asked from a child process)."""
    import torch

    if precision == "fp32":
        return "float32"
    bf16_gpu = device == "cuda" and _gpu_has_bf16(in_this_process)
    if precision == "bf16":
        if device == "cuda" and not bf16_gpu:
            raise TrainingConfigError(
                f"precision: bf16 in the model settings, but the GPU ({torch.cuda.get_device_name()}) does not "
                "support bfloat16; use precision: fp32 or auto"
            )
        return "bfloat16"
    if precision != "auto":
        raise TrainingConfigError(f"precision must be auto, fp32 or bf16, not {precision!r}")
    return "bfloat16" if bf16_gpu else "float32"


def mlp_parameters(n_features: int, hidden_sizes: list[int] | tuple[int, ...]) -> int:
    """Trainable parameters of the MLP (weights and biases), without building it."""
    widths = [n_features, *hidden_sizes, 1]
    return sum(a * b + b for a, b in zip(widths, widths[1:], strict=False))


def resolve_world_size(
    requested: int | str,
    processes_from_rows: int,
    train_rows: int,
    device: str,
    parameters: int = 0,
    processes_from_parameters: int | None = None,
) -> int:
    """Ranks to train with on this host; an integer is taken as it is.

    ``auto``: below ``processes_from_rows`` training rows, one in-process rank. From there, on CUDA one rank
    per GPU; on the CPU one rank per core only for a model of at least ``processes_from_parameters``
    parameters, else still one in-process rank. Measured on 2 cores (``bench/train.py``): two gloo ranks ran the
    demo MLP (3,000 parameters) at 0.37 of twice one rank's samples/s, so one rank stays 0.87-0.95x plain torch
    on both cores; a 512-512-256 MLP (400,000) at 0.86, 1.05x plain torch, where one rank on one thread was
    0.61x. A step of a small model is too short to pay for its all-reduce; a big one's is not.
    """
    if requested != "auto":
        if int(requested) < 1:
            raise TrainingConfigError(f"CT_TRAIN_WORLD_SIZE must be auto or at least 1, not {requested}")
        return int(requested)
    if train_rows < processes_from_rows:
        return 1
    if device == "cuda":
        import torch

        return max(1, torch.cuda.device_count())
    if processes_from_parameters is None or parameters < processes_from_parameters:
        return 1
    return _cores()


def _cores() -> int:
    return usable_cores()


def torch_runtime(
    settings: Settings, train_rows: int, parameters: int = 0, hyperparameters: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The torch family's device, world size, DDP backend and compute dtype for a training split of
    ``train_rows`` rows, a model of ``parameters`` and the model settings' ``hyperparameters`` (its ``precision``
    and ``batch_size``).

    The world size is part of the identity (a rank's part and the global batch follow from it); the launcher
    is not recorded apart from it: the same ranks learn the same model whatever started them.
    """
    import torch

    hyperparameters = hyperparameters or {}
    precision = hyperparameters.get("precision", "auto")
    batch = hyperparameters.get("batch_size")
    # Spark's ranks run on its executors, whose GPUs are theirs: a driver without one (an Airflow worker) does
    # not refuse cuda, and `auto` precision there is float32 (whether an executor's GPU has bfloat16 is not
    # known here; `precision: bf16` asks for it).
    executors_gpus = settings.train_launcher == "spark" and settings.train_device == "cuda"
    device = resolve_device(
        settings.train_device,
        parameters * batch if parameters and batch else None,
        settings.train_gpu_from_step_work,
        on_this_host=not executors_gpus,
    )
    local = resolve_world_size(
        settings.train_world_size,
        settings.train_processes_from_rows,
        train_rows,
        device,
        parameters,
        settings.train_processes_from_parameters,
    )
    world_size = launchers.world_size_of(settings, local)
    in_process = world_size == 1 and settings.train_launcher == "local"
    if executors_gpus:
        dtype = "bfloat16" if precision == "bf16" else "float32"
    else:
        dtype = resolve_compute_dtype(precision, device, in_process)
    if in_process:  # no launcher, no process group
        return {"device": device, "world_size": 1, "backend": "none", "compute_dtype": dtype}
    remote = settings.train_launcher != "local" or not isinstance(world_size, int)
    if device == "cuda" and (remote or torch.cuda.device_count() >= int(world_size)):
        backend = "nccl"  # a remote node's GPUs are its own: every rank is taken to have one
    else:
        backend = "gloo"
    return {"device": device, "world_size": world_size, "backend": backend, "compute_dtype": dtype}


def make_job(inputs: FitInputs, plan: TrainingPlan) -> Job:
    """The job the ranks read: the splits' folders, the features, the prepare stage's scaling, the config."""
    # First: the dataset must still be the version planned from, before anything is read of it
    layouts = _layouts(inputs.dataset_uri, inputs.manifest)
    features = inputs.features
    moments = inputs.manifest.extra.get("train_moments")
    if moments is None or moments.get("features") != features:  # prepared before the moments were written
        log.info("the dataset's manifest has no training moments; computing them from the split")
        computed = split_moments(
            datasets.folder_files(storage.split_uri(inputs.dataset_uri, "train")), features
        )
        moments = {"features": features, **computed.to_json()}
    settings = inputs.settings
    return Job(
        uri=inputs.job_uri,
        train_uri=storage.split_uri(inputs.dataset_uri, "train"),
        validation_uri=storage.split_uri(inputs.dataset_uri, "validation"),
        train_rows=int(moments["rows"]),
        validation_rows=_split_rows(inputs.dataset_uri, inputs.manifest)["validation"],
        layouts=layouts,
        features=features,
        label=inputs.contract.label,
        mean=list(moments["mean"]),
        std=list(moments["std"]),
        config=plan.model_config(len(features)),
        checkpoint_every_steps=settings.train_checkpoint_every_steps,
        collective_timeout_s=settings.train_rendezvous_timeout_s,
        threads_per_rank=_threads_per_rank(settings, plan, len(features)),
    )


def _layouts(dataset_uri: str, manifest: datasets.Manifest) -> dict[str, str]:
    """Each split's sequence of rows, which every rank's read is held to: the manifest's row order, or for a
    dataset whose manifest has none, its files' cut. The dataset must still hold the rows, in the order, that this
    task planned from (its run key and the job's scaling are theirs); prepared again with the same rows in the same
    order (on the other engine, say), it does."""
    _check_as_planned(dataset_uri, manifest)
    layouts = {}
    for split in ("train", "validation"):
        folder, uri = storage.split_folder(split), storage.split_uri(dataset_uri, split)
        order = manifest.row_order.get(folder)
        layouts[folder] = shards.layout([] if order else shards.row_groups(datasets.folder_files(uri)), order)
    return layouts


def _check_as_planned(dataset_uri: str, planned: datasets.Manifest) -> None:
    """Raise :class:`SplitChangedError` when ``dataset_uri`` no longer holds the rows, in the order, that this
    task planned from (its manifest's content hash and row order): what was read since may be another version's,
    and the run key, the scaling and the reference profile are the planned one's. Called after a read."""
    now = datasets.read_manifest(dataset_uri)
    if (now.content_hash, now.row_order) != (planned.content_hash, planned.row_order):
        raise SplitChangedError(
            f"{dataset_uri} was prepared again with other rows or in another order (its manifest of "
            f"{now.created_at}, content hash {now.content_hash[:12]}) since this task planned from it (manifest of "
            f"{planned.created_at}, content hash {planned.content_hash[:12]}): the run key and scaling are the old "
            "version's; the task's retry plans from the dataset as it is now"
        )


def _threads_per_rank(settings: Settings, plan: TrainingPlan, n_features: int) -> int | None:
    """Torch's intra-op threads per rank: a Spark executor task holds one core (``spark.task.cpus``); an in-process
    rank takes every core for an MLP of ``CT_TRAIN_PROCESSES_FROM_PARAMETERS`` or more (its matrices pay for
    threads: 1.6x one thread's samples/s for a 400,000-parameter MLP on 2 cores) and one thread for a smaller one;
    launched ranks split their node's cores (None)."""
    if settings.train_launcher == "spark":  # never in-process
        return 1
    if plan.runtime["backend"] == "none":
        big = (
            mlp_parameters(n_features, plan.hyperparameters["hidden_sizes"])
            >= settings.train_processes_from_parameters
        )
        return _cores() if big else 1
    return None


def _launch(settings: Settings, job: Job, world_size: Any) -> str:
    """The launcher's output; a rank's non-finite loss (it marked the job) is raised as that, not the launch."""
    try:
        if settings.train_launcher == "spark":
            return launchers.run_spark(settings, job, world_size)
        if settings.train_launcher == "torchrun":
            return launchers.run_torchrun(settings, job, world_size)
        return launchers.run_local(settings, job, world_size)
    except launchers.TrainingLaunchError as exc:
        if (fatal := jobs.read_fatal(job.uri)) is not None:
            raise jobs.fatal_error(fatal, str(exc)) from exc
        raise


def train_torch(inputs: FitInputs, plan: TrainingPlan, out_dir: Path) -> FitReport:
    """Train the MLP into ``out_dir/weights.pt``: in this process for one rank, else under torchrun; resume from
    the job's last checkpoint, or take its committed result, when an earlier attempt left one."""
    from pipelines.training import ddp_worker

    job = make_job(inputs, plan)
    world_size = plan.runtime["world_size"]
    settings = inputs.settings
    history = jobs.read_history(job.uri)
    if history is not None:
        log.info("the training in %s finished in an earlier attempt; taking its result", job.uri)
    elif plan.runtime["backend"] == "none":
        job.write()
        log.info(
            "training in-process on %s in %s (%d rows)",
            plan.runtime["device"],
            plan.runtime["compute_dtype"],
            job.train_rows,
        )
        history = ddp_worker.run_in_process(job)
        if history.resumed_from:
            log.warning("the training resumed from an earlier attempt's checkpoint: %s", history.resumed_from)
    else:
        job.write()
        # Per attempt: a failure no restart cures, and the reports (an earlier attempt's would name nodes and
        # ranks that are not in this one).
        for stale in (jobs.FATAL_FILE, "status", "nodes"):
            storage.remove(job.path(stale))
        log.info(
            "launching %s DDP ranks with the %s launcher (%s on %s, %s)",
            world_size,
            settings.train_launcher,
            plan.runtime["backend"],
            plan.runtime["device"],
            plan.runtime["compute_dtype"],
        )
        output = _launch(settings, job, world_size)
        history = jobs.read_history(job.uri)
        if history is not None and history.resumed_from:  # it recovered: say from what
            log.warning(
                "the ranks were restarted and resumed from checkpoints %s; the launcher said:\n%s",
                history.resumed_from,
                output[-4000:],
            )
        if history is None:
            raise launchers.TrainingLaunchError(
                f"the launch ended without an error but rank 0 committed no result in {job.uri}:\n"
                + jobs.describe_ranks(job.uri, world_size if isinstance(world_size, int) else 0)
            )
    (out_dir / "weights.pt").write_bytes(storage.read_bytes(job.path(jobs.RESULT_WEIGHTS)))
    return FitReport(
        curves={"train_loss": history.train_loss, "val_loss": history.val_loss},
        metrics={
            "stopped_epoch": history.epochs_run,
            "best_epoch": history.best_epoch,
            "best_val_loss": history.best_val_loss,
            "resumes": len(history.resumed_from),
            "train_samples_per_second": history.samples / history.fit_seconds if history.fit_seconds else 0.0,
        },
        resumed_from=history.resumed_from,
        hosts={rank: str(status["host"]) for rank, status in sorted(jobs.read_statuses(job.uri).items())},
    )


def train_sklearn(inputs: FitInputs, plan: TrainingPlan, out_dir: Path) -> FitReport:
    """Fit gradient-boosted trees into ``out_dir/weights.joblib``, stopping early on the validation split."""
    import joblib
    from sklearn.ensemble import HistGradientBoostingClassifier

    data = _read_arrays(inputs)
    params = dict(plan.hyperparameters)
    estimator = HistGradientBoostingClassifier(**params, random_state=plan.seed)
    if params["early_stopping"]:
        estimator.fit(data.x_train, data.y_train, X_val=data.x_validation, y_val=data.y_validation)
    else:
        estimator.fit(data.x_train, data.y_train)
    _check_finite_boosting(estimator, data.x_validation)
    joblib.dump(estimator, out_dir / "weights.joblib")
    metrics: dict[str, float] = {"stopped_iteration": int(estimator.n_iter_)}
    curves: dict[str, list[float]] = {}
    if params["early_stopping"]:  # scores are negative losses; entry 0 is the ensemble before any tree
        curves = {
            "train_loss": [-float(v) for v in estimator.train_score_[1:]],
            "val_loss": [-float(v) for v in estimator.validation_score_[1:]],
        }
        best = int(np.argmin(curves["val_loss"]))
        metrics |= {"best_iteration": best + 1, "best_val_loss": curves["val_loss"][best]}
    return FitReport(curves=curves, metrics=metrics)


def _check_finite_boosting(estimator: Any, x_validation: np.ndarray) -> None:
    """A boosting whose loss or predictions went NaN or infinite logs no model, as a torch training does not: it
    answered 0.0 for every row with a NaN validation loss."""
    for name, scores in (("training", estimator.train_score_), ("validation", estimator.validation_score_)):
        if len(scores) and not np.isfinite(scores).all():
            at = int(np.flatnonzero(~np.isfinite(scores))[0])
            raise NonFiniteLossError(
                f"the {name} loss of the boosting is {-scores[at]} at iteration {at} of {len(scores) - 1}: "
                "lower the model settings' sklearn learning_rate"
            )
    if not np.isfinite(estimator.predict_proba(x_validation)).all():
        raise NonFiniteLossError(
            "the boosting's validation probabilities are not all finite: no model is logged"
        )


def _no_runtime(
    settings: Settings, train_rows: int, parameters: int, hyperparameters: dict[str, Any]
) -> dict[str, Any]:
    return {}


def _torch_requirements() -> list[str]:
    import onnxruntime
    import torch

    return [f"torch=={torch.__version__.split('+')[0]}", f"onnxruntime=={onnxruntime.__version__}"]


def _sklearn_requirements() -> list[str]:
    import sklearn

    return [f"scikit-learn=={sklearn.__version__}"]


@dataclass(frozen=True)
class Family:
    """What differs between model families: how one is fitted, what it writes, what it needs to load."""

    name: str
    fit: Callable[[FitInputs, TrainingPlan, Path], FitReport]
    # launch choices that change the result, from the training rows, the parameters and the hyperparameters
    runtime: Callable[[Settings, int, int, dict[str, Any]], dict[str, Any]]
    libraries: tuple[str, ...]  # distributions whose version is part of the training's identity
    weights: str  # the file ``fit`` writes into the output folder
    requirements: Callable[[], list[str]]  # pip pins of what loading it needs, besides MLflow, pandas, numpy
    onnx: bool  # whether it carries ONNX exports


FAMILIES: dict[str, Family] = {
    "torch": Family(
        "torch", train_torch, torch_runtime, ("torch",), "weights.pt", _torch_requirements, onnx=True
    ),
    "sklearn": Family(
        "sklearn",
        train_sklearn,
        _no_runtime,
        ("scikit-learn",),
        "weights.joblib",
        _sklearn_requirements,
        onnx=False,
    ),
}
assert set(FAMILIES) == set(MODEL_FAMILIES), "one entry per model family of the settings"


def _parameters(hyperparameters: dict[str, Any], manifest: datasets.Manifest) -> int:
    """The MLP's parameters for this dataset (0 for a family without hidden layers)."""
    features = manifest.extra.get("features")
    if "hidden_sizes" not in hyperparameters or not features:
        return 0
    return mlp_parameters(len(features), hyperparameters["hidden_sizes"])


def plan_training(
    settings: Settings,
    model_settings: ModelSettings,
    spec: Family,
    dataset_uri: str,
    manifest: datasets.Manifest,
) -> TrainingPlan:
    """Resolve everything that decides the model, before any data is read."""
    hyperparameters = resolved_hyperparameters(settings, model_settings, spec.name)
    return TrainingPlan(
        family=spec.name,
        dataset_version=str(manifest.extra.get("dataset_version") or manifest.content_hash),
        hyperparameters=hyperparameters,
        runtime=spec.runtime(
            settings,
            _split_rows(dataset_uri, manifest)["train"],
            _parameters(hyperparameters, manifest),
            hyperparameters,
        ),
        seed=settings.seed,
        code_version=TRAINING_CODE_VERSION,
        # By release, as the ranks compare them: a date re-run on a host with torch's CUDA build (+cu126) where
        # it first ran on the CPU wheel (+cpu) had another run key and request key, trained again and
        # registered a second version.
        libraries={name: jobs.release(importlib.metadata.version(name)) for name in spec.libraries},
        row_order={
            split: manifest.row_order[folder]
            for split in ("train", "validation")
            if (folder := storage.split_folder(split)) in manifest.row_order
        },
    )


#: The run's key as asked for: the run key's prefix and :func:`request_identity`.
REQUEST_KEY_TAG = "ct.request_key"


def request_identity(plan: TrainingPlan, settings: Settings) -> str:
    """The training's identity with what the host chose (the world size ``auto`` made of its cores, the device
    ``auto`` made of its GPUs, the dtype made of that device) left as the settings ask for it. Two hosts given
    the same request train different models when they choose differently, but a re-run of a date that one of
    them trained reuses that run: it is the same request. So does a re-run whose rows the prepare stage, run
    again on another engine, wrote in another order (the same dataset version)."""
    asked = {
        name: getattr(settings, name)
        for name in (
            "train_device",
            "train_world_size",
            "train_processes_from_rows",
            "train_processes_from_parameters",
            "train_gpu_from_step_work",
            "train_launcher",
            "train_nnodes",
            "train_procs_per_node",
        )
    }
    parts = dataclasses.asdict(plan) | {"runtime": asked if plan.runtime else {}}
    del parts["row_order"]
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def find_finished_run(
    client: mlflow.MlflowClient, settings: Settings, run_key: str, tag: str = "ct.run_key"
) -> Any | None:
    """The finished MLflow run whose ``tag`` (the run key, or :data:`REQUEST_KEY_TAG`) is ``run_key``."""
    runs = client.search_runs(
        [tracking.experiment_id(client, settings)],
        filter_string=f"tags.`{tag}` = '{run_key}' and attributes.status = 'FINISHED'",
        max_results=1,
        order_by=["attributes.start_time ASC"],  # the first, should two hosts each have trained one
    )
    return runs[0] if runs else None


def load_trained_model(
    family: Family, out_dir: Path, contract: Contract, config: dict[str, Any]
) -> tuple[Any, dict[str, str]]:
    """Write the model's artifacts beside the weights and load them exactly as MLflow will at serving time."""
    from pipelines.model.classifier import ChurnClassifier

    (out_dir / "contract.json").write_text(contract.model_dump_json())
    (out_dir / "config.json").write_text(json.dumps({**config, "family": family.name}))
    artifacts = {
        "contract": str(out_dir / "contract.json"),
        "config": str(out_dir / "config.json"),
        "weights": str(out_dir / family.weights),
    }
    model = ChurnClassifier()
    model.load_context(type("Context", (), {"artifacts": artifacts})())
    if family.onnx:  # the ONNX exports travel with the model (and its manifest)
        from pipelines.model.mlp import export_onnx

        artifacts |= export_onnx(model.mlp, config["n_features"], out_dir)
        model.load_context(type("Context", (), {"artifacts": artifacts})())
    return model, artifacts


def log_model(
    family: Family, model: Any, artifacts: dict[str, str], example: pd.DataFrame
) -> mlflow.models.model.ModelInfo:
    """Log the pyfunc model with its signature (raw feature columns) and an input example."""
    from mlflow.models import infer_signature

    from pipelines.model.classifier import ChurnClassifier

    example = example[model.contract.feature_columns].reset_index(drop=True)
    signature = infer_signature(example, model.predict(None, example))
    requirements = [f"mlflow=={mlflow.__version__}", f"pandas=={pd.__version__}", f"numpy=={np.__version__}"]
    requirements += family.requirements()
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=ChurnClassifier(),
        artifacts=artifacts,
        signature=signature,
        input_example=example.head(3),
        pip_requirements=requirements,
    )


@runlog.stage("train")
def train(
    settings: Settings,
    logical_date: dt.date,
    dataset_uri: str,
    context: tracking.RunContext,
    family: str | None = None,
) -> dict[str, Any]:
    """Train one model family on the prepared dataset; return the MLflow run id and validation metrics.

    The run key is ``context.run_key`` plus the training's identity: a retry of the same training reuses its
    finished run; a changed dataset, family, hyperparameter, world size, device, seed or code trains anew,
    unless only what the host chose for ``auto`` changed (:func:`request_identity`): that run is reused.
    """
    model_settings = load_model_settings(settings.resolved_model_settings_path)
    family = choose_family(settings, model_settings, family)
    if family not in FAMILIES:
        raise ValueError(f"unknown model family '{family}'; choose {' or '.join(FAMILIES)}")
    spec = FAMILIES[family]
    manifest = datasets.read_manifest(dataset_uri)
    plan = plan_training(settings, model_settings, spec, dataset_uri, manifest)
    request_key = f"{context.run_key}/{request_identity(plan, settings)}"
    context = dataclasses.replace(context, run_key=f"{context.run_key}/{plan.identity}")
    client = tracking.configure(settings)
    # One process trains a run key at a time: two (the CLI and the DAG on one day, a task Airflow took for dead
    # and its retry) would share the job folder's checkpoints and each log and register a model.
    with exclusive(settings, *training_lock(settings, context.run_key)):
        if existing := find_finished_run(client, settings, context.run_key):
            log.info(
                "run key %s already trained as MLflow run %s; reusing it",
                context.run_key,
                existing.info.run_id,
            )
            # A task killed after its run ended, before it removed them.
            if not settings.train_keep_checkpoints:
                storage.remove(job_uri(settings, context.run_key))
            return _result(existing.info.run_id, existing.data.metrics, existing.data.tags)
        with contextlib.ExitStack() as request:
            if request_key != context.run_key:  # one host at a time trains a request, whatever it chooses
                request.enter_context(exclusive(settings, *training_lock(settings, request_key)))
            if existing := find_finished_run(client, settings, request_key, REQUEST_KEY_TAG):
                # A host that chose another runtime (its cores, its GPUs) trained this request: the date's model
                # is that one, not a second one that a re-run here would register beside it.
                log.info(
                    "the same request (%s) was trained as MLflow run %s with another runtime (%s); reusing it",
                    request_key,
                    existing.info.run_id,
                    existing.data.tags.get("ct.run_key"),
                )
                return _result(existing.info.run_id, existing.data.metrics, existing.data.tags)
            run_id = _train_and_log(
                settings, logical_date, dataset_uri, manifest, context, spec, plan, request_key
            )
    finished = client.get_run(run_id)
    return _result(run_id, finished.data.metrics, finished.data.tags)


def _split_rows(dataset_uri: str, manifest: datasets.Manifest) -> dict[str, int]:
    """Rows of the training and validation splits; an empty one is an error that names it."""
    known = manifest.extra.get("split_rows") or {}
    rows = {
        split: int(known[split])
        if split in known
        else datasets.count_rows(storage.split_uri(dataset_uri, split))
        for split in ("train", "validation")
    }
    for split, count in rows.items():
        if not count:
            raise datasets.EmptySplitError(
                f"the {split} split of {dataset_uri} is empty: training needs both a training and a "
                "validation split (early stopping and the validation metrics read it)"
            )
    return rows


def check_world_size(split_rows: dict[str, int], world_size: int | str) -> None:
    """Every rank needs rows of both splits (an elastic launch: as many as its largest world)."""
    if isinstance(world_size, int):
        ranks = world_size
    else:  # "MIN:MAXxP"
        nodes, per_node = world_size.split("x")
        ranks = int(nodes.split(":")[1]) * int(per_node)
    for split, count in split_rows.items():
        if count < ranks:
            raise TrainingConfigError(
                f"the {split} split has {count} rows, fewer than the {ranks} ranks of this training: lower "
                "CT_TRAIN_WORLD_SIZE (or the nodes), or train on more data"
            )


def _read_arrays(inputs: FitInputs) -> TrainingData:
    """The whole training and validation splits as arrays: for a family that fits in one process."""
    names, label = inputs.features, inputs.contract.label
    train_frame = datasets.read_split(inputs.dataset_uri, "train", [*names, label])
    validation = datasets.read_split(inputs.dataset_uri, "validation", [*names, label])
    # The rows the run key names: a dataset prepared again since the plan was read whole here, under the old key.
    _check_as_planned(inputs.dataset_uri, inputs.manifest)
    return TrainingData(
        x_train=train_frame[names].to_numpy("float32"),
        y_train=train_frame[label].to_numpy(),
        x_validation=validation[names].to_numpy("float32"),
        y_validation=validation[label].to_numpy(),
    )


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _identity_tags(plan: TrainingPlan) -> dict[str, str]:
    return {
        "ct.training_identity": plan.identity,
        "ct.training_identity.parts": json.dumps(dataclasses.asdict(plan), sort_keys=True),
        "dataset.version": plan.dataset_version,
        "training.code_version": plan.code_version,
        **{f"training.library.{name}": version for name, version in plan.libraries.items()},
    }


def _run_params(plan: TrainingPlan, split_rows: dict[str, int], launcher: str) -> dict[str, Any]:
    return {
        **_flatten(plan.hyperparameters),
        **plan.runtime,
        "launcher": launcher,
        "seed": plan.seed,
        "family": plan.family,
        "code_version": plan.code_version,
        "training_identity": plan.identity,
        "train_rows": split_rows["train"],
        "validation_rows": split_rows["validation"],
    }


def _train_and_log(
    settings: Settings,
    logical_date: dt.date,
    dataset_uri: str,
    manifest: datasets.Manifest,
    context: tracking.RunContext,
    spec: Family,
    plan: TrainingPlan,
    request_key: str,
) -> str:
    """Fit, validate and log one model under a new MLflow run; return its id."""
    contract = dataset_contract(settings)
    split_rows = _split_rows(dataset_uri, manifest)
    if spec.name == "torch":
        check_world_size(split_rows, plan.runtime["world_size"])
    validation = datasets.read_split(dataset_uri, "validation")
    # The training window's reference profile travels with the model (drift checks read it, not the data): read
    # with the validation split, both held to the version this run's key names.
    profile = storage.read_json(storage.join(dataset_uri, PROFILE_FILE))
    _check_as_planned(dataset_uri, manifest)
    inputs = FitInputs(settings, dataset_uri, manifest, contract, job_uri(settings, context.run_key))
    tags = {
        **context.tags(),
        **_identity_tags(plan),
        REQUEST_KEY_TAG: request_key,
        "model.family": spec.name,
        "dataset.uri": dataset_uri,
        "dataset.hash": manifest.content_hash,
        "dataset.engine": str(manifest.extra.get("engine")),
        "logical_date": logical_date.isoformat(),
    }
    with (
        tempfile.TemporaryDirectory(prefix="ct-train-") as tmp,
        mlflow.start_run(run_name=f"{spec.name}-{logical_date}", tags=tags) as run,
    ):
        started = time.perf_counter()
        report = spec.fit(inputs, plan, Path(tmp))
        seconds = time.perf_counter() - started
        if report.resumed_from:
            first = report.resumed_from[0]
            mlflow.set_tags(
                {
                    "training.resumed": "true",
                    "training.resumed_from": json.dumps(report.resumed_from),
                    "training.resumed_from.first": f"epoch {first['epoch']}, step {first['step']}",
                }
            )
        if report.hosts:  # where each rank ran: the task's host, or a cluster's executors
            mlflow.set_tag("training.hosts", json.dumps({str(r): h for r, h in report.hosts.items()}))
        # Validation scores the model as it will be served: raw columns in, the contract's features inside.
        config = plan.model_config(len(inputs.features))
        model, artifacts = load_trained_model(spec, Path(tmp), contract, config)
        validation_metrics = classification_metrics(
            validation[contract.label].to_numpy(), model.predict_proba(validation)
        )
        launcher = settings.train_launcher if plan.runtime.get("backend", "none") != "none" else "in-process"
        mlflow.log_params(_run_params(plan, split_rows, launcher))
        # The curves go in one batch (MLflow splits it into its own batch limits): a call per epoch and
        # curve costs a store transaction each, seconds for a few hundred epochs.
        now = int(time.time() * 1000)
        curve_points = [
            Metric(name, float(value), now, step)
            for name, curve in report.curves.items()
            for step, value in enumerate(curve, start=1)
        ]
        mlflow.MlflowClient().log_batch(run.info.run_id, metrics=curve_points, synchronous=True)
        mlflow.log_metrics(
            {f"val_{k}": v for k, v in validation_metrics.items()}
            | report.metrics
            | {"train_seconds": seconds}
        )
        model_info = log_model(spec, model, artifacts, validation)
        mlflow.set_tag("ct.model_uri", model_info.model_uri)
        mlflow.log_dict(profile, REFERENCE_PROFILE_ARTIFACT)
        mlflow.set_tag("reference_profile", f"runs:/{run.info.run_id}/{REFERENCE_PROFILE_ARTIFACT}")
    if not settings.train_keep_checkpoints:  # the model is logged: its checkpoints have served their purpose
        storage.remove(inputs.job_uri)
    log.info(
        "trained %s (%s) in %.1fs: %s; validation %s",
        spec.name,
        plan.identity,
        seconds,
        report.metrics,
        validation_metrics,
    )
    return str(run.info.run_id)


def training_lock(settings: Settings, run_key: str) -> tuple[str, str]:
    """The name of the lock one training of ``run_key`` holds (:func:`exclusive`), and what it says it guards."""
    return f"ct-train:{settings.dataset}:{run_key}", f"the training of run key {run_key} ({settings.dataset})"


def jobs_root(settings: Settings) -> str:
    """The folder of the dataset's training jobs on the data root."""
    return storage.join(settings.resolved_data_root, "training", settings.dataset)


def job_uri(settings: Settings, run_key: str) -> str:
    """The training job's folder on the data root: one per run key (the identity is its last part)."""
    return storage.join(jobs_root(settings), run_key)


def _result(run_id: str, metrics: dict[str, float], tags: dict[str, str]) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "model_uri": tags.get("ct.model_uri"),
        "family": tags.get("model.family"),
        "run_key": tags.get("ct.run_key"),
        "training_identity": tags.get("ct.training_identity"),
        "dataset_hash": tags.get("dataset.hash"),
        "val_metrics": {k[4:]: v for k, v in metrics.items() if k.startswith("val_")},
    }
