"""The served model: contract-driven features plus a torch MLP or a scikit-learn estimator.

It is logged to MLflow as a ``python_function`` model whose signature is the contract's raw feature
columns, so a client sends the same fields the data has, and the feature rules run inside the model.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch
from torch import nn

from pipelines.contract import Contract
from pipelines.features import FeatureEncoder

DECISION_THRESHOLD = 0.5


class ChurnMLP(nn.Module):
    """A small MLP on standardised features; mean and std are buffers, so they travel with the weights."""

    def __init__(self, n_features: int, hidden: tuple[int, ...] = (64, 32), dropout: float = 0.1):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        layers: list[nn.Module] = []
        width = n_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def set_scaling(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.std.copy_(torch.as_tensor(np.where(std > 1e-12, std, 1.0), dtype=torch.float32))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net((features - self.mean) / self.std).squeeze(-1)


def load_mlp(state_path: str | Path, config: dict[str, Any]) -> ChurnMLP:
    model = ChurnMLP(config["n_features"], tuple(config["hidden"]), config["dropout"])
    model.load_state_dict(torch.load(state_path, map_location="cpu", weights_only=True))
    model.eval()
    return model


class ProbabilityHead(nn.Module):
    """The MLP with its sigmoid: what is exported to ONNX, so the graph returns probabilities."""

    def __init__(self, mlp: ChurnMLP):
        super().__init__()
        self.mlp = mlp

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mlp(features))


ONNX_RUNTIMES = {"onnx": "onnx", "onnx-int8": "onnx_int8"}  # serving runtime -> artifact key


def export_onnx(mlp: ChurnMLP, n_features: int, out_dir: Path) -> dict[str, str]:
    """The MLP as ONNX (float32) and its int8 dynamic quantization; artifact key -> file path."""
    import warnings

    from onnxruntime.quantization import QuantType, quantize_dynamic

    head = ProbabilityHead(mlp).eval()
    fp32, int8 = out_dir / "model.onnx", out_dir / "model.int8.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # the TorchScript exporter's deprecation note; it is the one for this graph
        torch.onnx.export(
            head,
            (torch.zeros(2, n_features),),
            str(fp32),
            input_names=["features"],
            output_names=["probability"],
            dynamic_axes={"features": {0: "rows"}, "probability": {0: "rows"}},
            dynamo=False,
        )
    mlp.eval()  # export restores the wrapper's mode on the way out; keep the MLP in inference mode
    logging.disable(logging.WARNING)  # quantize_dynamic's advice on pre-processing goes to the root logger
    try:
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    finally:
        logging.disable(logging.NOTSET)
    return {"onnx": str(fp32), "onnx_int8": str(int8)}


def onnx_session(model: bytes, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def predict_proba_mlp(model: ChurnMLP, features: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        logits = model(torch.as_tensor(features, dtype=torch.float32))
        return torch.sigmoid(logits).numpy().astype("float64")


class ChurnClassifier(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: raw rows in, ``probability`` and ``label`` out.

    A torch model also carries its ONNX export (float32 and int8); :meth:`use_runtime` switches scoring
    to ONNX Runtime on either. ``native`` (torch or scikit-learn) is the default everywhere.
    """

    runtime = "native"
    _session: Any = None

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.contract = Contract.model_validate_json(Path(context.artifacts["contract"]).read_text())
        self.config = json.loads(Path(context.artifacts["config"]).read_text())
        self.encoder = FeatureEncoder(self.contract)
        # Read now: the verified copy the model was loaded from may be a temporary folder.
        self.onnx_models = {
            name: Path(context.artifacts[key]).read_bytes()
            for name, key in ONNX_RUNTIMES.items()
            if key in context.artifacts
        }
        if self.config["family"] == "torch":
            torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
            self.mlp = load_mlp(context.artifacts["weights"], self.config)
        else:
            import joblib

            self.estimator = joblib.load(context.artifacts["weights"])

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return self.predict_proba_columns(frame)

    def use_runtime(self, runtime: str, threads: int = 1) -> None:
        """Score with ``native`` or one of the ONNX exports (``onnx``, ``onnx-int8``) from now on."""
        if runtime == "native":
            self.runtime, self._session = "native", None
            return
        available = getattr(self, "onnx_models", {})
        if runtime not in available:
            have = ", ".join(["native", *available]) or "native"
            raise ValueError(f"this model has no {runtime} runtime (it has: {have})")
        self._session = onnx_session(available[runtime], threads)
        self.runtime = runtime

    def predict_proba_columns(self, columns: Any) -> np.ndarray:
        """Probabilities from raw feature columns (a DataFrame or a mapping of arrays): serving's fast path."""
        features = self.encoder.matrix(columns)
        if self._session is not None:
            return self._session.run(None, {"features": features})[0].astype("float64")
        if self.config["family"] == "torch":
            return predict_proba_mlp(self.mlp, features)
        return self.estimator.predict_proba(features)[:, 1].astype("float64")

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        probability = self.predict_proba(model_input)
        return pd.DataFrame(
            {"probability": probability, "label": (probability >= DECISION_THRESHOLD).astype("int64")}
        )
