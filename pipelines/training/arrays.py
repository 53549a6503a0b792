"""The arrays one training reads, kept apart from torch so the scikit-learn family never imports it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class TrainingData:
    """Features and labels of the training and validation splits (validation drives early stopping)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_validation: np.ndarray
    y_validation: np.ndarray

    def save(self, path: Path) -> None:
        """Write the arrays as one ``.npz`` file, for ranks in other processes."""
        np.savez(path, **asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> TrainingData:
        with np.load(path) as arrays:
            return cls(**{name: arrays[name] for name in arrays.files})
