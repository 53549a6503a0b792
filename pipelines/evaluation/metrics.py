"""Classification metrics: their names, which direction is better, and one vectorised definition of each.

The one home of every metric the project computes. Each function takes labels and predicted probabilities
and works along the last axis, so training's validation score, evaluation's holdout score, the gate's
bootstrap (which scores a whole batch of resamples in one call) and the slices all use the same code.
Pure numpy; scipy is imported only when a ROC AUC is computed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, get_args

import numpy as np

from pipelines.model.decision import DECISION_THRESHOLD

MetricName = Literal["roc_auc", "accuracy", "log_loss", "brier"]
METRIC_NAMES: tuple[str, ...] = get_args(MetricName)
HIGHER_IS_BETTER: dict[str, bool] = {"roc_auc": True, "accuracy": True, "log_loss": False, "brier": False}
#: The values each metric can take: a threshold outside them could never be met (or always is).
RANGE: dict[str, tuple[float, float]] = {
    "roc_auc": (0.0, 1.0),
    "accuracy": (0.0, 1.0),
    "log_loss": (0.0, math.inf),
    "brier": (0.0, 1.0),
}
EPS = 1e-7  # probabilities are clipped to [EPS, 1 - EPS] before log loss and Brier


def _roc_auc(labels: np.ndarray, probability: np.ndarray) -> np.ndarray:
    """ROC AUC along the last axis (Mann-Whitney U with average ranks for ties); NaN when a class is absent."""
    from scipy.stats import rankdata

    ranks = rankdata(probability, axis=-1)
    positives = labels.sum(axis=-1)
    negatives = labels.shape[-1] - positives
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((ranks * labels).sum(axis=-1) - positives * (positives + 1) / 2) / (positives * negatives)


def _accuracy(labels: np.ndarray, probability: np.ndarray) -> np.ndarray:
    return ((probability >= DECISION_THRESHOLD) == (labels > 0.5)).mean(axis=-1)


def _log_loss(labels: np.ndarray, probability: np.ndarray) -> np.ndarray:
    p = np.clip(probability, EPS, 1 - EPS)
    return -(labels * np.log(p) + (1 - labels) * np.log(1 - p)).mean(axis=-1)


def _brier(labels: np.ndarray, probability: np.ndarray) -> np.ndarray:
    return ((np.clip(probability, EPS, 1 - EPS) - labels) ** 2).mean(axis=-1)


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "roc_auc": _roc_auc,
    "accuracy": _accuracy,
    "log_loss": _log_loss,
    "brier": _brier,
}
assert set(METRICS) == set(METRIC_NAMES) == set(HIGHER_IS_BETTER), "one entry per metric name"


def metric(name: str, labels: np.ndarray, probability: np.ndarray) -> float:
    """One metric of one set of predictions."""
    return float(METRICS[name](np.asarray(labels, dtype="float64"), np.asarray(probability, dtype="float64")))


def sign(name: str) -> float:
    """+1 for a metric where higher is better, -1 otherwise: ``sign * (a - b) > 0`` means a is better."""
    return 1.0 if HIGHER_IS_BETTER[name] else -1.0


def classification_metrics(labels: np.ndarray, probability: np.ndarray) -> dict[str, float]:
    """Every metric of predicted probabilities, and the row count; both classes must be present.

    Log loss and Brier clip the probabilities to [EPS, 1 - EPS]; ROC AUC ranks them as they are, as the
    bootstrap and the slices do, so a point estimate and its interval come from one definition.
    """
    labels = np.asarray(labels, dtype="float64")
    probability = np.asarray(probability, dtype="float64")
    if len(np.unique(labels)) < 2:
        raise ValueError("metrics need both classes in the labels; the scored set has one")
    if not np.isfinite(probability).all():
        raise ValueError(f"{int((~np.isfinite(probability)).sum())} predicted probabilities are not finite")
    return {name: metric(name, labels, probability) for name in METRIC_NAMES} | {"rows": float(len(labels))}
