"""Reference profile: the statistics drift needs, computed on the engine that prepared the window.

Drift compares a profile with a profile, so it never re-reads training data, and the profile holds what
Evidently's own tests need, exactly or with a stated error bound:

- per category (and the label): the exact count of every value, and the nulls;
- per number: the exact count, nulls, min, max, mean and standard deviation (the sum of squared deviations
  from the mean, in a second pass, so nothing cancels), and a **bucketed copy of the values**: every value
  falls in a bucket, and a bucket keeps its exact count and the exact mean of its values. Buckets are
  ``BODY_WIDTH`` standard deviations wide near the mean and ``TAIL_WIDTH`` of the distance from the mean
  further out (``asinh`` spacing), so the tails, where one outlier row sits, are as exact as the body. A
  column with few distinct values (a flag, a code, an age) keeps each value in its own bucket: exact.

Replacing every value by its bucket's mean moves the values of a bucket by, on average, at most the
standard deviation of the values within it, so the Wasserstein distance to any distribution moves by at
most ``abs_error / rows``, which the profile records (the sum over buckets of count x that spread; each
bucket keeps the sums of its values' distances from its lower edge, and of their squares, so the spread is
computed without cancellation). Everything is computed by pandas functions that
each engine runs on its partitions (:meth:`pipelines.engines.base.Engine.aggregate`), so Dask and Spark
compute the same statistics.

:func:`reference_frame` renders a profile as a deterministic sample, which Evidently draws its
histograms from; the scores do not come from it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines.data.contract import Contract

if TYPE_CHECKING:
    from pipelines.engines import Engine, Table

PROFILE_FILE = "_profile.json"
REFERENCE_PROFILE_ARTIFACT = "reference_profile.json"
VERSION = 2
BODY_WIDTH = 0.001  # bucket width near the mean, in standard deviations
TAIL_WIDTH = 0.001  # bucket width far from the mean, as a share of the distance from the mean
DIGITS = 12  # significant digits kept of a bucket's mean

PARTIALS = pa.schema(
    [
        ("column", pa.string()),
        ("kind", pa.string()),  # rows | null | value | stats | squares | bucket | m2
        ("key", pa.string()),
        ("count", pa.int64()),
        ("total", pa.float64()),
        ("dev", pa.float64()),  # a bucket: the sum of each value's distance from the bucket's lower edge
        ("dev2", pa.float64()),  # ... and of its square: the spread within the bucket, well conditioned
        ("low", pa.float64()),
        ("high", pa.float64()),
    ]
)
KEYS = ["column", "kind", "key"]
HOW: Mapping[str, Any] = {
    "count": "sum",
    "total": "sum",
    "dev": "sum",
    "dev2": "sum",
    "low": "min",
    "high": "max",
}


def categorical_columns(contract: Contract) -> list[str]:
    return [*contract.categorical_features, contract.label]


def _finite(frame: pd.DataFrame, name: str) -> np.ndarray:
    values = pd.to_numeric(frame[name], errors="raise").to_numpy(dtype="float64", na_value=np.nan)
    return values[np.isfinite(values)]


def _rows(records: list[tuple[Any, ...]]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(records, columns=PARTIALS.names)
    floats = {name: "float64" for name in PARTIALS.names[4:]}
    return frame.astype({"count": "int64", **floats})


def first_pass(frame: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """One partition's row count, per column its nulls, per number its count, sum, min and max, per
    category the count of each value."""
    records: list[tuple[Any, ...]] = [("", "rows", "", len(frame), 0.0, 0.0, 0.0, 0.0, 0.0)]
    for name in contract.numeric_features:
        values = _finite(frame, name)
        records.append((name, "null", "", len(frame) - len(values), 0.0, 0.0, 0.0, 0.0, 0.0))
        if len(values):
            total, squares = float(values.sum()), float(np.dot(values, values))
            records.append((name, "stats", "", len(values), total, 0.0, squares, values.min(), values.max()))
    for name in categorical_columns(contract):
        nulls = 0
        for value, count in frame[name].value_counts(dropna=False).items():
            if pd.isna(value):  # one hashing pass counts the values and the nulls
                nulls += int(count)
            else:
                records.append((name, "value", str(value), int(count), 0.0, 0.0, 0.0, 0.0, 0.0))
        records.append((name, "null", "", nulls, 0.0, 0.0, 0.0, 0.0, 0.0))
    return _rows(records)


def bucket_scale(std: float) -> float:
    return max(std, 1e-12) * BODY_WIDTH / TAIL_WIDTH


def bucket_keys(values: np.ndarray, mean: float, std: float) -> np.ndarray:
    """Each value's bucket: ``BODY_WIDTH`` std wide near the mean, ``TAIL_WIDTH`` relative far out."""
    return np.floor(np.arcsinh((values - mean) / bucket_scale(std)) / TAIL_WIDTH).astype("int64")


def bucket_edges(keys: np.ndarray, mean: float, std: float) -> np.ndarray:
    """The lower edge of each bucket."""
    return mean + bucket_scale(std) * np.sinh(keys * TAIL_WIDTH)


def _bucketed(values: np.ndarray, mean: float, std: float) -> tuple[np.ndarray, ...]:
    """Key, count, sum, and the sums of distance (and its square) from the lower edge, per bucket.

    Linear time: the keys of one partition are a dense range of integers, counted with ``bincount``.
    """
    keys = bucket_keys(values, mean, std)
    first = keys.min()
    index = keys - first
    present = np.arange(index.max() + 1) + first
    distance = values - bucket_edges(present, mean, std)[index]
    counts = np.bincount(index)
    found = counts > 0
    sums = [np.bincount(index, weights)[found] for weights in (values, distance, distance * distance)]
    return (present[found], counts[found], *sums)


def second_pass(
    frame: pd.DataFrame, contract: Contract, moments: Mapping[str, tuple[float, float]]
) -> pd.DataFrame:
    """One partition's buckets per number and its squared deviations from the mean."""
    names: list[np.ndarray] = []
    kinds: list[np.ndarray] = []
    parts: list[tuple[np.ndarray, ...]] = []
    for name, (mean, std) in moments.items():
        values = _finite(frame, name)
        if not len(values):
            continue
        deviations = values - mean
        m2 = float(np.dot(deviations, deviations))
        names.append(np.array([name]))
        kinds.append(np.array(["m2"]))
        parts.append((np.array([0]), np.array([0]), np.array([m2]), np.zeros(1), np.zeros(1)))
        bucketed = _bucketed(values, mean, std)
        names.append(np.full(len(bucketed[0]), name, dtype=object))
        kinds.append(np.full(len(bucketed[0]), "bucket", dtype=object))
        parts.append(bucketed)
    if not parts:
        return _rows([])
    keys, counts, totals, dev, dev2 = (np.concatenate(arrays) for arrays in zip(*parts, strict=True))
    return pd.DataFrame(
        {
            "column": np.concatenate(names).astype(object),
            "kind": np.concatenate(kinds).astype(object),
            "key": keys.astype(str).astype(object),
            "count": counts.astype("int64"),
            "total": totals.astype("float64"),
            "dev": dev.astype("float64"),
            "dev2": dev2.astype("float64"),
            "low": np.zeros(len(keys)),
            "high": np.zeros(len(keys)),
        }
    )


def build_profile(engine: Engine, raw: Table, contract: Contract) -> dict[str, Any]:
    """The profile of a table of raw rows, in two passes on the engine that holds it."""
    # Each pass reads only the columns it needs (Parquet column projection on both engines).
    features = engine.select(raw, [*contract.numeric_features, *categorical_columns(contract)])
    first = engine.aggregate(features, lambda f: first_pass(f, contract), PARTIALS, KEYS, HOW)
    rows = int(first.loc[first["kind"] == "rows", "count"].sum())
    nulls = first[first["kind"] == "null"].set_index("column")["count"]
    stats = first[first["kind"] == "stats"].set_index("column")
    moments = {}
    for name in contract.numeric_features:
        if name in stats.index and stats.loc[name, "count"] > 0:
            count, total = int(stats.loc[name, "count"]), float(stats.loc[name, "total"])
            moments[name] = (total / count, _rough_std(first, name, count, total / count))
    numbers = engine.select(raw, list(moments))
    second = engine.aggregate(numbers, lambda f: second_pass(f, contract, moments), PARTIALS, KEYS, HOW)
    columns: dict[str, Any] = {}
    for name in contract.numeric_features:
        columns[name] = _numeric(name, int(nulls.get(name, 0)), stats, second, moments.get(name))
    for name in categorical_columns(contract):
        values = first[(first["column"] == name) & (first["kind"] == "value")]
        counts = sorted(zip(values["key"], values["count"], strict=True))
        columns[name] = {
            "kind": "categorical",
            "nulls": int(nulls.get(name, 0)),
            "counts": {str(k): int(v) for k, v in counts},
        }
    for column in columns.values():
        column["null_share"] = column["nulls"] / rows if rows else 0.0
    return {
        "version": VERSION,
        "dataset": contract.dataset,
        "rows": rows,
        "engine": engine.name,
        "bucket_widths": {"body_std": BODY_WIDTH, "tail_relative": TAIL_WIDTH},
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "columns": columns,
    }


def _rough_std(first: pd.DataFrame, name: str, count: int, mean: float) -> float:
    """A scale for the buckets' width only (the profile's std comes from the second pass, exactly)."""
    mine = first[first["column"] == name]
    squares = float(mine.loc[mine["kind"] == "stats", "dev2"].sum())
    variance = squares / count - mean * mean  # may cancel for a large mean: then the range decides
    spread = float(
        mine.loc[mine["kind"] == "stats", "high"].max() - mine.loc[mine["kind"] == "stats", "low"].min()
    )
    if variance > (spread * 1e-6) ** 2:
        return float(np.sqrt(variance))
    return spread / 4 if spread > 0 else 1.0


def _numeric(
    name: str, nulls: int, stats: pd.DataFrame, second: pd.DataFrame, moment: tuple[float, float] | None
) -> dict[str, Any]:
    if moment is None:
        return {
            "kind": "numeric",
            "nulls": nulls,
            "count": 0,
            "min": None,
            "max": None,
            "mean": None,
            "std": None,
            "abs_error": 0.0,
            "buckets": {"mean": [], "count": [], "exact": []},
        }
    mine = second[second["column"] == name]
    buckets = mine[mine["kind"] == "bucket"].assign(key=lambda f: f["key"].astype("int64")).sort_values("key")
    count = int(stats.loc[name, "count"])
    m2 = float(mine.loc[mine["kind"] == "m2", "total"].sum())
    n = buckets["count"].to_numpy(dtype="float64")
    means = buckets["total"].to_numpy() / n
    # Each value sits within its bucket's spread of the bucket's mean: mean |x - mean| <= the spread's std.
    spread = np.sqrt(np.clip(buckets["dev2"].to_numpy() / n - (buckets["dev"].to_numpy() / n) ** 2, 0, None))
    keys = buckets["key"].to_numpy()
    widths = bucket_edges(keys + 1, *moment) - bucket_edges(keys, *moment)
    exact = spread <= 1e-6 * widths  # one value in the bucket (what is left is rounding)
    spread[exact] = 0.0
    return {
        "kind": "numeric",
        "nulls": nulls,
        "count": count,
        "min": float(stats.loc[name, "low"]),
        "max": float(stats.loc[name, "high"]),
        "mean": moment[0],
        "std": float(np.sqrt(m2 / count)),  # population std, as Evidently's np.std
        "abs_error": float((n * spread).sum()),
        "buckets": {
            "mean": [float(f"{m:.{DIGITS}g}") for m in means],
            "count": [int(c) for c in buckets["count"]],
            "exact": [bool(e) for e in exact],
        },
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
            buckets = stats["buckets"]
            if buckets["count"]:  # the buckets' distribution function, read at evenly spaced points
                cumulative = np.cumsum(np.array(buckets["count"], dtype=float))
                positions = (np.arange(present) + 0.5) / max(present, 1) * cumulative[-1]
                picked = np.searchsorted(cumulative, positions, side="right")
                values[:present] = np.array(buckets["mean"], dtype=float)[picked]
        else:
            labels = list(stats["counts"])
            parts = _allocate(np.array([stats["counts"][k] for k in labels], dtype=float), present)
            values = np.array([None] * rows, dtype=object)
            values[:present] = np.repeat(np.array(labels, dtype=object), parts)
            if name == contract.label:
                values = np.array([None if v is None else int(v) for v in values], dtype=object)
        out[name] = values[rng.permutation(rows)]
    return pd.DataFrame(out)
