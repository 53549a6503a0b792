"""Evidently's drift tests applied to two profiles (:mod:`pipelines.data.profile`), not to raw rows.

The same definitions as Evidently 0.7's ``wasserstein`` and ``jensenshannon`` stat tests, on the same
figures, computed from the profiles' exact counts and bucketed values:

- **Wasserstein distance (normed)**: ``scipy.stats.wasserstein_distance`` between the two windows, divided
  by ``max(std(reference), 0.001)`` (the population std). On the profiles' buckets (each bucket's exact
  mean, weighted by its exact count) it differs from the raw rows' by at most the two profiles'
  ``abs_error / count`` over the norm: that bound is reported with the score.
- **Jensen-Shannon distance** (natural log): over the union of the values seen, each value's share of the
  non-null rows, exact for categories and for numbers whose values each sit in their own bucket. For a
  number with more than 20 values in the reference, Evidently bins both windows on Sturges' edges over the
  combined range; here the buckets are binned by their means, which can misplace a bucket that straddles
  an edge (reported as ``error_bound: null``).

Evidently drops nulls (and infinities) before a test; so do the profiles. The test of each column comes
from the contract (:meth:`pipelines.data.contract.Contract.drift_test`), never from the day's data. The
label's drift is reported apart and never counted among drifted features.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats
from scipy.spatial import distance

from pipelines.data.contract import Contract
from pipelines.data.profile import snapped

NORM_FLOOR = 0.001  # Evidently's floor of the reference's std
HISTOGRAM_FROM = 20  # Evidently bins a number with more distinct reference values than this


def _buckets(column: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    buckets = column["buckets"]
    return np.asarray(buckets["mean"], dtype="float64"), np.asarray(buckets["count"], dtype="float64")


def wasserstein_norm(reference: dict[str, Any], current: dict[str, Any]) -> tuple[float, float]:
    """(score, bound on its distance from the score on the raw rows)."""
    ref_values, ref_counts = _buckets(reference)
    cur_values, cur_counts = _buckets(current)
    norm = max(float(reference["std"]), NORM_FLOOR)
    score = stats.wasserstein_distance(ref_values, cur_values, ref_counts, cur_counts) / norm
    bound = (reference["abs_error"] / reference["count"] + current["abs_error"] / current["count"]) / norm
    return float(score), float(bound)


def _shares(counts: dict[Any, float], keys: list[Any]) -> np.ndarray:
    total = sum(counts.values())
    return np.array([counts.get(key, 0.0) / total for key in keys])


def _value_counts(column: dict[str, Any]) -> tuple[dict[Any, float], bool]:
    """Each distinct value's count, and whether that is exact (every bucket holds one value)."""
    if column["kind"] == "categorical":
        return {k: float(v) for k, v in column["counts"].items()}, True
    values, counts = _buckets(column)
    found: dict[Any, float] = {}
    for value, count in zip(values.tolist(), counts.tolist(), strict=True):
        # A one-value bucket's value is its mean, a float sum over count: 0.1 summed in another order (another
        # day, engine or partitioning) is 0.09999999999999871 or 0.10000000000000059, and as exact keys the
        # same values were two, and the score the largest there is (0.83) for the same rows.
        key = snapped(value)
        found[key] = found.get(key, 0.0) + count
    return found, all(column["buckets"]["exact"])


def jensenshannon(reference: dict[str, Any], current: dict[str, Any]) -> tuple[float, float | None]:
    """(score, 0.0 when exact, None when binned from buckets)."""
    ref_counts, ref_exact = _value_counts(reference)
    cur_counts, cur_exact = _value_counts(current)
    if reference["kind"] == "numeric" and (len(ref_counts) > HISTOGRAM_FROM or not ref_exact):
        return _binned_jensenshannon(reference, current), None
    keys = sorted(set(ref_counts) | set(cur_counts), key=str)
    score = distance.jensenshannon(_shares(ref_counts, keys), _shares(cur_counts, keys))
    return float(score), 0.0 if ref_exact and cur_exact else None


def _binned_jensenshannon(reference: dict[str, Any], current: dict[str, Any]) -> float:
    """Sturges' bins over the combined range, as Evidently bins a many-valued number."""
    low, high = min(reference["min"], current["min"]), max(reference["max"], current["max"])
    bins = int(np.ceil(np.log2(reference["count"] + current["count"]))) + 1
    edges = np.linspace(low, high, bins + 1) if high > low else np.array([low - 0.5, low + 0.5])
    shares = []
    for column in (reference, current):
        values, counts = _buckets(column)
        # A bucket is placed by its mean, a float sum over its count, whose last bits depend on how the rows were
        # partitioned: snapped, so that a mean on an edge falls on the same side for every engine, and clipped to
        # the exact extremes, so that a value repeated at the min or max (a capped rate) is never a hair outside
        # the range, where np.histogram dropped its whole bucket (a score of 0.31 for the same rows).
        placed = np.clip([snapped(value) for value in values.tolist()], low, high)
        shares.append(np.histogram(placed, edges, weights=counts)[0] / column["count"])
    return float(distance.jensenshannon(shares[0], shares[1]))


TESTS = {"wasserstein": wasserstein_norm, "jensenshannon": jensenshannon}
DISPLAY = {"wasserstein": "Wasserstein distance (normed)", "jensenshannon": "Jensen-Shannon distance"}


def _present(column: dict[str, Any]) -> int:
    if column["kind"] == "numeric":
        return int(column["count"])
    return int(sum(column["counts"].values()))


def compare_column(
    reference: dict[str, Any], current: dict[str, Any], method: str, threshold: float
) -> dict[str, Any]:
    """One column's test: method, threshold, score, verdict (the score to 6 decimals >= threshold), and the
    score's error bound."""
    result: dict[str, Any] = {
        "method": method,
        "threshold": threshold,
        "reference_rows": _present(reference),
        "current_rows": _present(current),
    }
    if not result["reference_rows"] and not result["current_rows"]:  # null on both sides: nothing moved
        return result | {
            "score": None,
            "drifted": False,
            "error_bound": None,
            "detail": "no values on either side (every row null): nothing to compare",
        }
    if not result["reference_rows"] or not result["current_rows"]:
        return result | {
            "score": None,
            "drifted": True,
            "error_bound": None,
            "detail": "no values on one side",
        }
    score, bound = TESTS[method](reference, current)
    # Judged to 6 decimals, as the gate judges its figures: a score summed in another order (another engine,
    # another split of the rows) differs in its last bits, and must not move a verdict at the threshold.
    return result | {"score": score, "drifted": round(score, 6) >= threshold, "error_bound": bound}


def compare_features(
    reference: dict[str, Any], current: dict[str, Any], contract: Contract
) -> dict[str, Any]:
    """Every feature's test, and the drifted count and share of the features."""
    columns = {}
    for name in contract.feature_columns:
        method, threshold = contract.drift_test(name)
        columns[name] = compare_column(
            reference["columns"][name], current["columns"][name], method, threshold
        )
    drifted = sum(1 for column in columns.values() if column["drifted"])
    return {"drifted_columns": drifted, "drift_share": drifted / len(columns), "columns": columns}


def compare(reference: dict[str, Any], current: dict[str, Any], contract: Contract) -> dict[str, Any]:
    """Every feature's test, the drifted count and share of the features, and the label's drift apart."""
    features = compare_features(reference, current, contract)
    label_method, label_threshold = contract.drift_test(contract.label)
    label = compare_column(
        reference["columns"][contract.label],
        current["columns"][contract.label],
        label_method,
        label_threshold,
    )
    return {
        **features,
        "label": label,
        "reference_rows": reference["rows"],
        "current_rows": current["rows"],
    }
