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
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipelines.data.contract import Contract

if TYPE_CHECKING:
    from pipelines.engines import Engine, Table

LEVELS = [round(i / 100, 2) for i in range(101)]
PROFILE_FILE = "_profile.json"
REFERENCE_PROFILE_ARTIFACT = "reference_profile.json"
VERSION = 1


def _categorical_columns(contract: Contract) -> list[str]:
    return [*contract.categorical_features, contract.label]


def build_profile(engine: Engine, raw: Table, contract: Contract) -> dict[str, Any]:
    """The profile of a table of raw rows, aggregated by the engine that holds it (one pass on Dask)."""
    numeric, categorical = contract.numeric_features, _categorical_columns(contract)
    stats = engine.column_stats(raw, numeric, categorical, LEVELS)
    rows = stats.rows
    columns: dict[str, Any] = {}
    for name in numeric:
        nulls = stats.nulls[name]
        columns[name] = {
            "kind": "numeric",
            "nulls": nulls,
            "null_share": nulls / rows if rows else 0.0,
            "min": stats.minimum[name],
            "max": stats.maximum[name],
            "mean": stats.mean[name],
            "std": stats.std[name],
            "quantiles": stats.quantiles[name],
        }
    for name in categorical:
        nulls = stats.nulls[name]
        counts = sorted(stats.counts[name].items(), key=lambda kv: str(kv[0]))
        columns[name] = {
            "kind": "categorical",
            "nulls": nulls,
            "null_share": nulls / rows if rows else 0.0,
            "counts": {str(k): int(v) for k, v in counts},
        }
    return {
        "version": VERSION,
        "dataset": contract.dataset,
        "rows": rows,
        "levels": LEVELS,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "columns": columns,
    }


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
