"""Reference profile: a compact summary of a training window, computed on the engine that prepared it.

Per numeric feature: row and null counts, min, max, mean, standard deviation and the 101 percentiles; per
category (and the label): the frequency of each value and the null count. The profile is a few kilobytes
whatever the window's size. It is written beside the prepared data, logged with the model version, and
drift checks compare profiles, so they never re-read training data.

Drift needs samples for Evidently; :func:`reference_frame` renders a profile as a deterministic sample
(each numeric column is the profile's quantile function at evenly spaced points, each category repeated in
proportion to its frequency). Both sides of a drift report are rendered the same way.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd

from pipelines.contract import Contract

LEVELS = [round(i / 100, 2) for i in range(101)]
PROFILE_FILE = "_profile.json"
REFERENCE_PROFILE_ARTIFACT = "reference_profile.json"
VERSION = 1


def _number(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def _profile(
    contract: Contract, rows: int, numeric: dict[str, dict[str, Any]], categorical: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    columns: dict[str, Any] = {}
    for name, stats in numeric.items():
        nulls = int(stats["nulls"])
        columns[name] = {
            "kind": "numeric",
            "nulls": nulls,
            "null_share": nulls / rows if rows else 0.0,
            **{k: _number(stats[k]) for k in ("min", "max", "mean", "std")},
            "quantiles": [float(q) for q in stats["quantiles"]],
        }
    for name, stats in categorical.items():
        nulls = int(stats["nulls"])
        counts = {str(k): int(v) for k, v in sorted(stats["counts"].items(), key=lambda kv: str(kv[0]))}
        columns[name] = {
            "kind": "categorical",
            "nulls": nulls,
            "null_share": nulls / rows if rows else 0.0,
            "counts": counts,
        }
    return {
        "version": VERSION,
        "dataset": contract.dataset,
        "rows": int(rows),
        "levels": LEVELS,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "columns": columns,
    }


def _categorical_columns(contract: Contract) -> list[str]:
    return [*contract.categorical_features, contract.label]


def profile_dask(raw: Any, contract: Contract) -> dict[str, Any]:
    """The profile of a Dask frame of raw rows, computed in one pass of the cluster."""
    import dask

    numeric = contract.numeric_features
    lazy = {
        "rows": raw.shape[0],
        "nulls": raw[[*numeric, *_categorical_columns(contract)]].isna().sum(),
        "min": raw[numeric].min(),
        "max": raw[numeric].max(),
        "mean": raw[numeric].mean(),
        "std": raw[numeric].std(),
        "quantiles": {c: raw[c].dropna().quantile(LEVELS) for c in numeric},
        "counts": {c: raw[c].value_counts(dropna=True) for c in _categorical_columns(contract)},
    }
    (done,) = dask.compute(lazy)
    numeric_stats = {
        c: {
            "nulls": done["nulls"][c],
            "min": done["min"][c],
            "max": done["max"][c],
            "mean": done["mean"][c],
            "std": done["std"][c],
            "quantiles": done["quantiles"][c].to_numpy().tolist(),
        }
        for c in numeric
    }
    categorical = {
        c: {"nulls": done["nulls"][c], "counts": done["counts"][c].to_dict()}
        for c in _categorical_columns(contract)
    }
    return _profile(contract, int(done["rows"]), numeric_stats, categorical)


def profile_spark(raw: Any, contract: Contract) -> dict[str, Any]:
    """The profile of a Spark frame of raw rows: one aggregation, approximate percentiles, value counts."""
    from pyspark.sql import functions as F

    numeric = contract.numeric_features
    categorical_columns = _categorical_columns(contract)
    aggregates = [F.count(F.lit(1)).alias("rows")]
    for c in [*numeric, *categorical_columns]:
        aggregates.append(F.sum(F.col(c).isNull().cast("long")).alias(f"{c}__nulls"))
    for c in numeric:
        value = F.col(c).cast("double")
        aggregates += [
            F.min(value).alias(f"{c}__min"),
            F.max(value).alias(f"{c}__max"),
            F.mean(value).alias(f"{c}__mean"),
            F.stddev_samp(value).alias(f"{c}__std"),
            F.percentile_approx(value, LEVELS, 10_000).alias(f"{c}__quantiles"),
        ]
    row = raw.agg(*aggregates).first().asDict()
    numeric_stats = {
        c: {
            "nulls": row[f"{c}__nulls"] or 0,
            "min": row[f"{c}__min"],
            "max": row[f"{c}__max"],
            "mean": row[f"{c}__mean"],
            "std": row[f"{c}__std"],
            "quantiles": row[f"{c}__quantiles"] or [],
        }
        for c in numeric
    }
    categorical = {}
    for c in categorical_columns:
        counts = raw.where(F.col(c).isNotNull()).groupBy(c).count().collect()
        categorical[c] = {"nulls": row[f"{c}__nulls"] or 0, "counts": {r[0]: r[1] for r in counts}}
    return _profile(contract, int(row["rows"]), numeric_stats, categorical)


def _allocate(weights: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` into integer parts proportional to ``weights`` (largest remainder)."""
    if total <= 0 or weights.sum() <= 0:
        return np.zeros(len(weights), dtype=int)
    exact = weights / weights.sum() * total
    parts = np.floor(exact).astype(int)
    order = np.argsort(-(exact - parts), kind="stable")
    parts[order[: total - parts.sum()]] += 1
    return parts


def reference_frame(
    profile: dict[str, Any], contract: Contract, rows: int = 5_000, seed: int = 0
) -> pd.DataFrame:
    """A deterministic sample of ``rows`` rows whose every column follows the profile's distribution."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name in [*contract.feature_columns, contract.label]:
        stats = profile["columns"][name]
        present = rows - int(round(rows * stats["null_share"]))
        if stats["kind"] == "numeric":
            values = np.full(rows, np.nan)
            if stats["quantiles"]:
                positions = (np.arange(present) + 0.5) / max(present, 1)
                values[:present] = np.interp(positions, profile["levels"], stats["quantiles"])
        else:
            labels = list(stats["counts"])
            parts = _allocate(np.array([stats["counts"][k] for k in labels], dtype=float), present)
            values = np.array([None] * rows, dtype=object)
            values[:present] = np.repeat(np.array(labels, dtype=object), parts)
            if name == contract.label:
                values = np.array([None if v is None else int(v) for v in values], dtype=object)
        out[name] = values[rng.permutation(rows)]
    return pd.DataFrame(out)


def load_logged_profile(artifact_uri: str) -> dict[str, Any]:
    """A profile logged with a model version (``runs:/<run>/reference_profile.json``)."""
    import json

    import mlflow

    return json.loads(mlflow.artifacts.load_text(artifact_uri))
