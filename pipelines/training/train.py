"""Train: a torch MLP with DistributedDataParallel, or a scikit-learn model, logged to one MLflow run.

The torch family spawns ``world_size`` processes that rendezvous over TCP on loopback (gloo on the CPU,
nccl when every rank has its own GPU); each trains on its shard of the data and gradients are averaged by
DDP. A run is idempotent per run key: a retry finds the finished MLflow run and returns it untouched.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
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

from pipelines.data import datasets, runlog, storage
from pipelines.data.contract import Contract, dataset_contract
from pipelines.data.features import feature_names
from pipelines.data.profile import PROFILE_FILE, REFERENCE_PROFILE_ARTIFACT
from pipelines.evaluation.metrics import classification_metrics
from pipelines.release import tracking
from pipelines.settings import MODEL_FAMILIES, Settings

log = logging.getLogger(__name__)

TORCH_DEFAULTS: dict[str, Any] = {
    "hidden": [64, 32],
    "dropout": 0.1,
    "lr": 2e-3,
    "batch_size": 256,
    "weight_decay": 1e-4,
}
SKLEARN_DEFAULTS: dict[str, Any] = {"max_iter": 200, "learning_rate": 0.08, "max_leaf_nodes": 31}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def resolve_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("CT_TRAIN_DEVICE=cuda but torch sees no CUDA device")
    return requested


def train_torch(
    x_train: np.ndarray, y_train: np.ndarray, settings: Settings, out_dir: Path
) -> tuple[dict[str, Any], list[float]]:
    """Train the MLP over ``settings.train_world_size`` DDP processes into ``out_dir/weights.pt``."""
    import torch

    device = resolve_device(settings.train_device)
    world_size = settings.train_world_size
    backend = "nccl" if device == "cuda" and torch.cuda.device_count() >= world_size else "gloo"
    config = {
        **TORCH_DEFAULTS,
        "epochs": settings.train_epochs,
        "seed": settings.seed,
        "device": device,
        "backend": backend,
        "world_size": world_size,
        "n_features": int(x_train.shape[1]),
    }
    data_path = out_dir / "train.npz"
    np.savez(
        data_path,
        x=x_train.astype("float32"),
        y=y_train.astype("float32"),
        mean=x_train.mean(axis=0),
        std=x_train.std(axis=0),
    )
    config_path = out_dir / "ddp_config.json"
    config_path.write_text(json.dumps(config))
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc-per-node",
        str(world_size),
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"127.0.0.1:{_free_port()}",
        "-m",
        "pipelines.training.ddp_worker",
        str(data_path),
        str(config_path),
        str(out_dir),
    ]
    log.info("launching %d DDP ranks (%s on %s)", world_size, backend, device)
    completed = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    data_path.unlink()
    if completed.returncode != 0:
        tail = (completed.stdout + completed.stderr)[-4000:]
        raise RuntimeError(f"DDP training failed (exit {completed.returncode}); last output:\n{tail}")
    return config, json.loads((out_dir / "curve.json").read_text())


def train_sklearn(
    x_train: np.ndarray, y_train: np.ndarray, settings: Settings, out_dir: Path
) -> tuple[dict[str, Any], list[float]]:
    """Fit gradient-boosted trees into ``out_dir/weights.joblib``."""
    import joblib
    from sklearn.ensemble import HistGradientBoostingClassifier

    config = {**SKLEARN_DEFAULTS, "seed": settings.seed}
    estimator = HistGradientBoostingClassifier(
        max_iter=config["max_iter"],
        learning_rate=config["learning_rate"],
        max_leaf_nodes=config["max_leaf_nodes"],
        early_stopping=True,
        random_state=config["seed"],
    )
    estimator.fit(x_train, y_train)
    joblib.dump(estimator, out_dir / "weights.joblib")
    return config, [float(v) for v in -estimator.validation_score_]


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
    fit: Callable[[np.ndarray, np.ndarray, Settings, Path], tuple[dict[str, Any], list[float]]]
    weights: str  # the file ``fit`` writes into the output folder
    curve: str  # the name its training curve is logged under
    requirements: Callable[[], list[str]]  # pip pins of what loading it needs, besides MLflow, pandas, numpy
    onnx: bool  # whether it carries ONNX exports


FAMILIES: dict[str, Family] = {
    "torch": Family("torch", train_torch, "weights.pt", "train_loss", _torch_requirements, onnx=True),
    "sklearn": Family(
        "sklearn", train_sklearn, "weights.joblib", "early_stopping_loss", _sklearn_requirements, onnx=False
    ),
}
assert set(FAMILIES) == set(MODEL_FAMILIES), "one entry per model family of the settings"


def _find_finished_run(client: mlflow.MlflowClient, settings: Settings, run_key: str) -> Any | None:
    runs = client.search_runs(
        [tracking.experiment_id(client, settings)],
        filter_string=f"tags.`ct.run_key` = '{run_key}' and attributes.status = 'FINISHED'",
        max_results=1,
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
    """Train one model family on the prepared dataset; return the MLflow run id and validation metrics."""
    family = family or settings.model_family
    if family not in FAMILIES:
        raise ValueError(f"unknown model family '{family}'; choose {' or '.join(FAMILIES)}")
    spec = FAMILIES[family]
    client = tracking.configure(settings)
    if existing := _find_finished_run(client, settings, context.run_key):
        log.info(
            "run key %s already trained as MLflow run %s; reusing it", context.run_key, existing.info.run_id
        )
        return _result(existing.info.run_id, existing.data.metrics, existing.data.tags)

    contract = dataset_contract(settings)
    manifest = datasets.read_manifest(dataset_uri)
    names = feature_names(contract)
    train_frame = datasets.read_split(dataset_uri, "train")
    validation = datasets.read_split(dataset_uri, "validation")
    x_train, y_train = train_frame[names].to_numpy("float32"), train_frame[contract.label].to_numpy()
    tags = {
        **context.tags(),
        "model.family": family,
        "dataset.uri": dataset_uri,
        "dataset.hash": manifest.content_hash,
        "dataset.engine": str(manifest.extra.get("engine")),
        "logical_date": logical_date.isoformat(),
    }
    with (
        tempfile.TemporaryDirectory(prefix="ct-train-") as tmp,
        mlflow.start_run(run_name=f"{family}-{logical_date}", tags=tags) as run,
    ):
        started = time.perf_counter()
        config, curve = spec.fit(x_train, y_train, settings, Path(tmp))
        seconds = time.perf_counter() - started
        # Validation scores the model as it will be served: raw columns in, the contract's features inside.
        model, artifacts = load_trained_model(spec, Path(tmp), contract, config)
        validation_metrics = classification_metrics(
            validation[contract.label].to_numpy(), model.predict_proba(validation)
        )
        mlflow.log_params(
            {
                **{k: v for k, v in config.items() if k != "n_features"},
                "family": family,
                "train_rows": len(x_train),
            }
        )
        for step, value in enumerate(curve):
            mlflow.log_metric(spec.curve, value, step=step)
        mlflow.log_metrics(
            {f"val_{k}": v for k, v in validation_metrics.items()} | {"train_seconds": seconds}
        )
        model_info = log_model(spec, model, artifacts, validation)
        mlflow.set_tag("ct.model_uri", model_info.model_uri)
        # The training window's reference profile travels with the model: drift checks read it, not the data.
        mlflow.log_dict(
            storage.read_json(storage.join(dataset_uri, PROFILE_FILE)), REFERENCE_PROFILE_ARTIFACT
        )
        mlflow.set_tag("reference_profile", f"runs:/{run.info.run_id}/{REFERENCE_PROFILE_ARTIFACT}")
        run_id = run.info.run_id
    log.info("trained %s in %.1fs: validation %s", family, seconds, validation_metrics)
    finished = client.get_run(run_id)
    return _result(run_id, finished.data.metrics, finished.data.tags)


def _result(run_id: str, metrics: dict[str, float], tags: dict[str, str]) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "model_uri": tags.get("ct.model_uri"),
        "family": tags.get("model.family"),
        "dataset_hash": tags.get("dataset.hash"),
        "val_metrics": {k[4:]: v for k, v in metrics.items() if k.startswith("val_")},
    }
