"""Classification metrics shared by training, evaluation and the gate."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, brier_score_loss, log_loss, roc_auc_score

from pipelines.model import DECISION_THRESHOLD

HIGHER_IS_BETTER = {"roc_auc": True, "accuracy": True, "log_loss": False, "brier": False}


def classification_metrics(labels: np.ndarray, probability: np.ndarray) -> dict[str, float]:
    """ROC AUC, accuracy, log loss and Brier score of predicted probabilities."""
    labels = np.asarray(labels)
    probability = np.clip(np.asarray(probability, dtype="float64"), 1e-7, 1 - 1e-7)
    if len(np.unique(labels)) < 2:
        raise ValueError("metrics need both classes in the labels; the scored set has one")
    return {
        "roc_auc": float(roc_auc_score(labels, probability)),
        "accuracy": float(accuracy_score(labels, probability >= DECISION_THRESHOLD)),
        "log_loss": float(log_loss(labels, probability)),
        "brier": float(brier_score_loss(labels, probability)),
        "rows": float(len(labels)),
    }
