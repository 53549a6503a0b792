"""The gate's statistics: a paired bootstrap of the improvement, and the metric per slice.

Everything here is pure numpy/scipy on arrays of labels and predicted probabilities, so it is unit-tested
without a model. The metrics are :mod:`pipelines.evaluation.metrics`' vectorised ones, so scipy's bootstrap
scores a whole batch of resamples in one call.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

from pipelines.evaluation.metrics import METRICS, metric, sign

_BATCH_CELLS = 4_000_000  # resamples x rows scored per vectorised call: bounds the bootstrap's memory


def improvement(name: str, labels: np.ndarray, challenger: np.ndarray, champion: np.ndarray) -> float:
    """How much better the challenger is, in the metric's units: positive is better for any metric."""
    return sign(name) * (metric(name, labels, challenger) - metric(name, labels, champion))


MAX_UNDEFINED_SHARE = 0.05  # resamples whose metric is undefined (one class) an interval may leave out


def paired_bootstrap(
    name: str,
    labels: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray,
    *,
    resamples: int,
    confidence: float,
    seed: int,
    max_rows: int | None = None,
) -> dict[str, Any]:
    """Percentile confidence interval of the improvement, resampling rows (both models on the same rows).

    Pairing is what makes the interval tight: both models are scored on every resample, so the noise
    of which rows happen to be in the holdout cancels out of the difference. A holdout above ``max_rows``
    is bootstrapped on a seeded random sample of ``max_rows`` rows (the point estimate uses every row).
    Resamples whose metric is undefined (one class, for ``roc_auc``) are left out of the interval, up to
    :data:`MAX_UNDEFINED_SHARE` of them; more is a ValueError that says how many.
    """
    labels = np.asarray(labels, dtype="float64")
    challenger = np.asarray(challenger, dtype="float64")
    champion = np.asarray(champion, dtype="float64")
    if not (len(labels) == len(challenger) == len(champion)):
        raise ValueError("labels and both models' predictions must have one value per holdout row")
    if len(labels) < 2:
        raise ValueError("a bootstrap needs at least 2 holdout rows")
    rng = np.random.default_rng(seed)
    full = (labels, challenger, champion)
    if max_rows is not None and len(labels) > max_rows:
        keep = np.sort(rng.choice(len(labels), size=max_rows, replace=False))
        labels, challenger, champion = labels[keep], challenger[keep], champion[keep]
    score, direction = METRICS[name], sign(name)

    def statistic(y: np.ndarray, p1: np.ndarray, p2: np.ndarray, axis: int = -1) -> np.ndarray:
        return direction * (score(y, p1) - score(y, p2))

    result = stats.bootstrap(
        (labels, challenger, champion),
        statistic,
        paired=True,
        vectorized=True,
        n_resamples=resamples,
        batch=max(1, _BATCH_CELLS // len(labels)),
        confidence_level=confidence,
        method="percentile",
        rng=rng,
    )
    distribution = result.bootstrap_distribution
    undefined = int(np.isnan(distribution).sum())
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if undefined:
        # A resample of one class has no AUC: the interval is over the resamples that have both, when they
        # are nearly all; else the holdout holds too few of a class for an interval, and says so.
        if undefined > MAX_UNDEFINED_SHARE * resamples:
            raise ValueError(
                f"{undefined} of {resamples} bootstrap resamples of {len(labels)} rows hold one class only "
                f"({int(labels.sum())} positive rows): too few of a class for a {name} interval; widen the "
                "window or the holdout"
            )
        alpha = (1 - confidence) / 2
        defined = distribution[~np.isnan(distribution)]
        low, high = (float(v) for v in np.percentile(defined, [100 * alpha, 100 * (1 - alpha)]))
    return {
        "metric": name,
        "improvement": float(statistic(*full)),
        "ci_low": low,
        "ci_high": high,
        "confidence": confidence,
        "resamples": resamples,
        "rows_resampled": len(labels),
        "undefined_resamples": undefined,
        "method": "paired bootstrap, percentile interval",
        "p_not_better": float(np.mean(distribution[~np.isnan(distribution)] <= 0))
        if undefined < resamples
        else None,
    }


def slice_metrics(
    name: str,
    labels: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray,
    groups: np.ndarray,
    min_rows: int,
) -> list[dict[str, Any]]:
    """Both models' metric on each value of a slice column; values with too few rows or one class are skipped."""
    labels = np.asarray(labels, dtype="float64")
    groups = np.asarray(groups, dtype=object)
    out = []
    for value in sorted({str(g) for g in groups}):
        mask = groups.astype(str) == value
        rows = int(mask.sum())
        entry: dict[str, Any] = {"value": value, "rows": rows}
        y = labels[mask]
        if rows < min_rows:
            entry["skipped"] = f"{rows} rows, fewer than {min_rows}"
        elif name == "roc_auc" and len(np.unique(y)) < 2:
            entry["skipped"] = "only one class in this slice"
        else:
            chal, champ = metric(name, y, challenger[mask]), metric(name, y, champion[mask])
            entry |= {"challenger": chal, "champion": champ, "regression": sign(name) * (champ - chal)}
        out.append(entry)
    return out
