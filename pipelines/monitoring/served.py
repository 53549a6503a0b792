"""What serving answered in an interval, in one pass on the engine: the statistics a monitor verdict needs.

The prediction log's rows (:mod:`pipelines.serving.predlog`) are filtered to the interval and summarised
partition by partition as rows that add up (:func:`pipelines.data.profile.column_partials`'s partials):

- the features' profile, the same statistics the champion's reference profile holds, so the gate's drift
  tests (:mod:`pipelines.evaluation.drift_stats`) apply unchanged;
- the served probabilities' profile, of the rows the champion answered only (prediction drift);
- the rows per model version; and per feature the rows whose value lies outside the contract (below its
  min, above its max, not one of its allowed values), with the rows that hold any such value.

Pure pandas: each engine runs :func:`served_partials` on its partitions and combines the rows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from pipelines.data.contract import Contract
from pipelines.data.profile import Scheme, column_statistics, partial_rows, profile_of

PROBABILITY = "probability"
LOG_READ = ["served_at", "model_version", PROBABILITY]  # beside the features
# Probabilities lie in [0, 1]: buckets of 1/8 x BODY_WIDTH around 0.5, whatever a partition holds.
PROBABILITY_SCHEME: Scheme = (-3, 4)
_ZEROS = (0.0, 0.0, 0.0, 0.0, 0.0)


# The first double past int64's range: a whole number of that size or more is kept a float.
_INT64_END = 2.0**63


def whole_numbers_as_ints(column: pd.Series) -> pd.Series:
    """A column of floats with its whole numbers as integers (its text ``"1"``, not ``"1.0"``); any other column
    as it is.

    A value list's values are text, ints or booleans (the contract has no float values), and the log writes an
    integer column as int64; but Arrow hands an int64 column that holds a null to pandas as float64, in the
    partitions that hold one only. Keyed as read, the same value 1 was ``"1.0"`` there and ``"1"`` elsewhere
    and in the reference profile and the contract: out of the domain, and counted apart, in as many rows as
    the engine happened to cut with a null in them. Made integers, a value has one key whatever the cut: the
    nullable ``Int64`` when every value is whole (the log's case), else objects, whole numbers as ints and the
    rest (1.5 from another writer, infinities) as the floats they are.
    """
    if column.dtype.kind != "f":
        return column
    values = column.to_numpy(dtype="float64", na_value=np.nan)
    known = ~np.isnan(values)
    whole = known & (np.trunc(values) == values) & (np.abs(values) < _INT64_END)  # not the infinities
    ints = np.where(whole, values, 0.0).astype("int64")
    if np.array_equal(whole, known):
        return pd.Series(pd.arrays.IntegerArray(ints, ~whole), index=column.index, name=column.name)
    mixed = values.astype(object)
    mixed[whole] = ints[whole].tolist()
    return pd.Series(mixed, index=column.index, name=column.name)


def _is_text(column: pd.Series) -> bool:
    """Strings, or categories that are strings (Parquet's dictionary-encoded text as the engines read it)."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return pd.api.types.infer_dtype(column.cat.categories, skipna=True) in ("string", "empty")
    return isinstance(column.dtype, pd.StringDtype)


def outside_masks(
    frame: pd.DataFrame, contract: Contract, seen: dict[str, set[str]] | None = None
) -> dict[str, np.ndarray]:
    """Per feature with a domain, the rows whose value lies outside it (a null is not outside).

    ``seen``: the values (as text) each category holds in ``frame``, when a count of them is at hand: a
    category none of whose values lies outside gets an empty mask without another pass over its rows.
    """
    masks = {}
    for name in contract.feature_columns:
        spec = contract.columns[name]
        column = frame[name]
        if spec.allowed is not None:
            # 1 as "1", as the contract lists it, in a float column too
            column = whole_numbers_as_ints(column)
            allowed = {str(value) for value in spec.allowed}
            if seen is not None and name in seen and seen[name] <= allowed:
                masks[name] = np.zeros(len(frame), dtype=bool)
                continue
            present = column.notna().to_numpy()
            text = column if _is_text(column) else column.astype(str)
            masks[name] = present & ~text.isin(allowed).to_numpy(dtype=bool, na_value=False)
        elif spec.min is not None or spec.max is not None:
            values = pd.to_numeric(column, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
            low = -np.inf if spec.min is None else spec.min
            high = np.inf if spec.max is None else spec.max
            masks[name] = (values < low) | (values > high)  # NaN compares False
    return masks


def _in_interval(frame: pd.DataFrame, start: dt.datetime, end: dt.datetime) -> pd.DataFrame:
    """The rows served in [start, end); the frame itself when all are.

    The engines already filter the log as they read it (``Engine.aggregate_parquet(between=...)``), so this
    only checks: a partition function must not count a row outside its interval, whoever read the rows.
    """
    served_at = frame["served_at"]
    if not isinstance(served_at.dtype, pd.DatetimeTZDtype):  # Spark's own reader hands over naive UTC times
        served_at = pd.to_datetime(served_at, utc=True)
    inside = ((served_at >= pd.Timestamp(start)) & (served_at < pd.Timestamp(end))).to_numpy()
    return frame if inside.all() else frame[inside]


def served_partials(
    frame: pd.DataFrame,
    contract: Contract,
    champion: int | None,
    start: dt.datetime,
    end: dt.datetime,
    schemes: Mapping[str, Scheme] | None = None,
) -> pd.DataFrame:
    """One partition's partials of the rows served in [start, end); the features bucketed by ``schemes`` (the
    reference profile's, so that the profile does not depend on how the engine partitioned the log), the
    probabilities by :data:`PROBABILITY_SCHEME`."""
    frame = _in_interval(frame, start, end)
    # Each value of a list (categories, and numbers with allowed values) keyed alike in every partition.
    listed = {
        name: whole_numbers_as_ints(frame[name])
        for name in contract.feature_columns
        if contract.columns[name].allowed is not None and frame[name].dtype.kind == "f"
    }
    if listed:
        frame = frame.assign(**listed)
    records, buckets = column_statistics(
        frame, contract.numeric_features, contract.categorical_features, schemes
    )
    seen: dict[str, set[str]] = {}
    for name, kind, key, *_ in records:
        if kind == "value":
            seen.setdefault(name, set()).add(key)
    if champion is not None:
        answering = frame["model_version"].to_numpy() == champion
        answered = frame[[PROBABILITY]]  # one column's copy, not the frame's
        answered = answered if answering.all() else answered[answering]
        found, found_buckets = column_statistics(
            answered, [PROBABILITY], [], {PROBABILITY: PROBABILITY_SCHEME}
        )
        records += [record for record in found if record[1] != "rows"]  # the rows are the partition's
        buckets += found_buckets
    # Read as floats where a row has no version (a log from another writer: serving always writes one): each
    # version counted by its number, and the rows with none apart, never taken for a version "1.0".
    versions = frame["model_version"]
    records += [
        ("model_version", "value", str(int(version)), int(count), *_ZEROS)
        for version, count in versions.value_counts().items()
    ]
    if unversioned := int(versions.isna().sum()):
        records.append(("model_version", "missing", "", unversioned, *_ZEROS))
    masks = outside_masks(frame, contract, seen)
    for name, mask in masks.items():
        records.append((name, "outside", "", int(mask.sum()), *_ZEROS))
    any_outside = np.logical_or.reduce(list(masks.values())) if masks else np.zeros(len(frame), bool)
    records.append(("", "outside_rows", "", int(np.count_nonzero(any_outside)), *_ZEROS))
    return partial_rows(records, buckets)


def served_figures(found: pd.DataFrame, contract: Contract, champion: int | None) -> dict[str, Any]:
    """The interval's figures from the combined partials: rows, versions, the profiles, out-of-domain counts."""
    features = profile_of(
        found[found["column"] != PROBABILITY],
        contract.numeric_features,
        contract.categorical_features,
        contract.dataset,
        "served",
    )
    versions = found[(found["column"] == "model_version") & (found["kind"] == "value")]
    by_version = {int(key): int(count) for key, count in zip(versions["key"], versions["count"], strict=True)}
    outside = found[found["kind"] == "outside"]
    predictions = None
    if champion is not None:
        predictions = profile_of(
            found[found["column"] == PROBABILITY], [PROBABILITY], [], contract.dataset, "served"
        )["columns"][PROBABILITY]
    return {
        "rows": features["rows"],
        "rows_by_version": dict(sorted(by_version.items())),
        "rows_without_version": int(
            found.loc[(found["column"] == "model_version") & (found["kind"] == "missing"), "count"].sum()
        ),
        "champion_rows": by_version.get(champion, 0) if champion is not None else 0,
        "profile": features,
        "predictions": predictions,
        "outside": {
            name: int(count) for name, count in zip(outside["column"], outside["count"], strict=True)
        },
        "outside_rows": int(found.loc[found["kind"] == "outside_rows", "count"].sum()),
    }
