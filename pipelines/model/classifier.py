"""The model a version holds: contract-driven features plus a torch MLP or a scikit-learn estimator.

It is logged to MLflow as a ``python_function`` model whose signature is the contract's raw feature
columns, so a client sends the same fields the data has, and the feature rules run inside the model.
torch is imported only when a torch model's native weights are loaded (:mod:`pipelines.model.mlp`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel, PythonModelContext

from pipelines.data.contract import Contract
from pipelines.data.features import FeatureEncoder
from pipelines.host import usable_cores
from pipelines.model.decision import labels

ONNX_RUNTIMES = {"onnx": "onnx", "onnx-int8": "onnx_int8"}  # serving runtime -> artifact key


class OnnxRuntimeError(RuntimeError):
    """ONNX Runtime refused a graph or failed to run it (its own exceptions derive from Exception alone)."""


def _onnx_errors() -> tuple[type[BaseException], ...]:
    """ONNX Runtime's exception classes, by name, as its pybind module defines them."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = (
        "Fail",
        "InvalidArgument",
        "NoSuchFile",
        "NoModel",
        "EngineError",
        "RuntimeException",
        "InvalidProtobuf",
        "ModelLoaded",
        "NotImplemented",
        "InvalidGraph",
        "EPFail",
        "NotFound",
    )
    return tuple(getattr(state, name) for name in names if hasattr(state, name))


def onnx_session(model: bytes, threads: int) -> Any:
    """An ONNX Runtime session on one graph, on ``threads`` threads (0: one per usable core);
    :class:`OnnxRuntimeError` when the graph does not load."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or usable_cores()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except _onnx_errors() as exc:
        raise OnnxRuntimeError(f"ONNX Runtime cannot load the graph: {type(exc).__name__}: {exc}") from exc


class ChurnClassifier(PythonModel):
    """pyfunc wrapper: raw rows in, ``probability`` and ``label`` out.

    A torch model also carries its ONNX export (float32 and int8); :meth:`use_runtime` switches scoring
    to ONNX Runtime on either. ``native`` (torch or scikit-learn) is the default everywhere.
    """

    runtime = "native"
    _session: Any = None
    _native: Callable[[np.ndarray], np.ndarray]
    onnx_models: dict[str, bytes]  # serving runtime name -> the ONNX graph, read at load

    def load_context(self, context: PythonModelContext) -> None:
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
            import torch

            from pipelines.model.mlp import load_mlp, predict_proba_mlp

            torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
            self.mlp = load_mlp(context.artifacts["weights"], self.config)
            self._native = lambda features: predict_proba_mlp(self.mlp, features)
        else:
            import joblib

            self.estimator = joblib.load(context.artifacts["weights"])
            self._native = lambda features: self.estimator.predict_proba(features)[:, 1].astype("float64")

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
            return self._run_onnx(features)
        return self._native(features)

    def _run_onnx(self, features: np.ndarray) -> np.ndarray:
        try:
            return self._session.run(None, {"features": features})[0].astype("float64")
        except _onnx_errors() as exc:
            raise OnnxRuntimeError(
                f"ONNX Runtime failed on {self.runtime}: {type(exc).__name__}: {exc}"
            ) from exc

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        probability = self.predict_proba(model_input)
        return pd.DataFrame({"probability": probability, "label": labels(probability)})


def project_model(pyfunc: Any) -> ChurnClassifier | None:
    """The :class:`ChurnClassifier` inside a loaded pyfunc model; None for any other model."""
    inner = pyfunc.unwrap_python_model() if hasattr(pyfunc, "unwrap_python_model") else None
    return inner if isinstance(inner, ChurnClassifier) else None
