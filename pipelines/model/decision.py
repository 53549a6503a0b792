"""The decision rule of every model: a probability at or above the threshold is labelled 1.

Training's accuracy, evaluation's metrics and serving's labels all read it from here.
"""

from __future__ import annotations

import numpy as np

DECISION_THRESHOLD = 0.5


def labels(probability: np.ndarray) -> np.ndarray:
    """0/1 labels (int64) of predicted probabilities."""
    return (np.asarray(probability) >= DECISION_THRESHOLD).astype("int64")
