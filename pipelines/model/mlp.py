"""The torch side of the model: the MLP, its probability head, and its ONNX exports.

Imported only where torch is needed: training, and loading a torch model's native weights. A scikit-learn
model, or a torch model served on ONNX Runtime's graph alone, never needs it at import time.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipelines.data.moments import FLOAT32_NOISE, spread


class ChurnMLP(nn.Module):
    """A small MLP on standardised features; mean and std are buffers, so they travel with the weights."""

    mean: torch.Tensor
    std: torch.Tensor

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
        # A constant feature (its std 0, or rounding noise) is not scaled: divided by a noise std of 6.5e-11
        # (another file layout gave 2e-11), a served value a cent away reached the first layer as 1.5e8.
        kept = spread(std, mean, FLOAT32_NOISE)
        self.std.copy_(torch.as_tensor(np.where(kept > 1e-12, kept, 1.0), dtype=torch.float32))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net((features - self.mean) / self.std).squeeze(-1)


def load_mlp(state_path: str | Path, config: dict[str, Any]) -> ChurnMLP:
    """The MLP a model's ``config.json`` describes, with its trained weights, in inference mode."""
    hidden = config["hidden_sizes"] if "hidden_sizes" in config else config["hidden"]  # "hidden": before v2
    model = ChurnMLP(config["n_features"], tuple(hidden), config["dropout"])
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


def predict_proba_mlp(model: ChurnMLP, features: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        logits = model(torch.as_tensor(features, dtype=torch.float32))
        return torch.sigmoid(logits).numpy().astype("float64")
