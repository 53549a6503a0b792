"""Reference profile: the statistics drift needs, computed on the engine that prepared the window.

Drift compares a profile with a profile, so it never re-reads training data, and the profile holds what
Evidently's own tests need, exactly or with a stated error bound, computed in two passes (the second does
the work):

- per category (and the label): the exact count of every value, and the nulls;
- per number: the exact count, nulls, min, max, mean and standard deviation (sums of distances from a
  centre near the mean, so nothing cancels), and a **bucketed copy of the values**: every value falls in a
  bucket, and a bucket keeps its exact count and the exact mean of its values. Buckets are ``BODY_WIDTH``
  of a scale near the standard deviation wide near a centre near the mean, and ``TAIL_WIDTH`` of the
  distance from it further out (``asinh`` spacing), so the tails, where one outlier row sits, are as exact
  as the body. The scale and centre are rounded to powers of two and taken from the number's mean and std
  over the whole table, in a first pass of moments (:func:`window_schemes`): every partition buckets with
  the same scheme, so their buckets add up on the engine and the buckets are the same however the rows were
  partitioned (a partition given no scheme picks its own, :func:`scheme_of`). A column with few distinct
  values (a flag, a code, an age) keeps each value in its own bucket: exact.

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
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines.data.contract import Contract
from pipelines.data.moments import spread

if TYPE_CHECKING:
    from pipelines.engines import Engine, Table

PROFILE_FILE = "_profile.json"
REFERENCE_PROFILE_ARTIFACT = "reference_profile.json"
VERSION = 2
BODY_WIDTH = 0.001  # bucket width near the mean, in standard deviations
TAIL_WIDTH = 0.001  # bucket width far from the mean, as a share of the distance from the mean

PARTIALS = pa.schema(
    [
        ("column", pa.string()),
        ("kind", pa.string()),  # rows | null | value | moments | bucket
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
    finite = np.isfinite(values)
    return values if finite.all() else values[finite]  # a column without nulls: not copied a second time


Buckets = tuple[str, str, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def partial_rows(records: Sequence[tuple[Any, ...]], buckets: Sequence[Buckets] = ()) -> pd.DataFrame:
    """Rows of :data:`PARTIALS` from ``records`` (tuples in its order) and ``buckets`` (per numeric column: its
    name, its scheme, and its buckets' keys, counts, totals and sums of distance and of its square), built
    column by column: a frame per column and a concatenation of them took 1-2 ms more per partition."""
    fields = list(zip(*records, strict=True)) if records else [()] * len(PARTIALS.names)
    text: list[list[np.ndarray]] = [[np.array(values, dtype=object)] for values in fields[:3]]
    numbers: list[list[np.ndarray]] = [
        [np.array(values, dtype="int64" if i == 3 else "float64")] for i, values in enumerate(fields[3:], 3)
    ]
    for name, scheme, keys, counts, totals, dev, dev2 in buckets:
        rows = len(keys)
        text[0].append(np.full(rows, name, dtype=object))
        text[1].append(np.full(rows, "bucket", dtype=object))
        text[2].append(np.array([f"{scheme}:{key}" for key in keys.tolist()], dtype=object))
        for found, values in zip(numbers[:4], (counts.astype("int64"), totals, dev, dev2), strict=True):
            found.append(values)
        for found in numbers[4:]:  # low and high: a bucket's edges are its key's
            found.append(np.zeros(rows))
    columns = [np.concatenate(parts) for parts in [*text, *numbers]]
    return pd.DataFrame(dict(zip(PARTIALS.names, columns, strict=True)), copy=False)


Scheme = tuple[int, int]  # (e, m): buckets of scale 2**e around the centre m * 2**e


def scheme_from(mean: float, std: float) -> Scheme:
    """The bucket scheme of values of this mean and (population) std: scale 2**e near the std, centre m * 2**e
    near the mean. Values that are all equal (std 0, or rounding noise: :func:`~pipelines.data.moments.spread`)
    take a scale of a thousandth of their size."""
    magnitude = std if spread(std, mean) > 0 else max(abs(mean), 1.0) * 1e-3
    e = int(np.round(snapped(np.log2(magnitude))))
    return e, int(np.round(snapped(mean / 2.0**e)))


def snapped(value: float) -> float:
    """``value`` to 12 significant digits, where its last bits must not decide anything: before it is rounded to
    a whole number here, and as the value of a one-value bucket in a Jensen-Shannon test. Engines combine a window's
    moments in other orders and differ in the last bits, and a mean of whole numbers often falls on a half
    exactly (40 / 2**4 = 2.5), where 2.5 and 2.5000000000000004 round apart, so the window's buckets (and a
    Jensen-Shannon score binned on them) depended on how its rows were partitioned."""
    return float(f"{value:.12g}")


def scheme_of(values: np.ndarray) -> Scheme:
    """A partition's own bucket scheme (:func:`scheme_from` its values), for a partition given none.

    Rounded to powers of two, partitions of one window almost always choose the same scheme, so their
    buckets add up on the engine; where two differ, both schemes' buckets are kept (each is exact about its
    rows), and the moments are combined exactly. But a statistic that bins the buckets (Jensen-Shannon on a
    many-valued number) then depends on how the rows were partitioned: a profile of a table is made with one
    scheme per column, the window's (:func:`window_schemes`).
    """
    return scheme_from(float(values.mean()), float(values.std()))


def bucket_keys(values: np.ndarray, centre: float, scale: float) -> np.ndarray:
    """Each value's bucket: ``BODY_WIDTH`` scales wide near the centre, ``TAIL_WIDTH`` relative far out."""
    return np.floor(np.arcsinh((values - centre) / (scale * BODY_WIDTH / TAIL_WIDTH)) / TAIL_WIDTH).astype(
        "int64"
    )


def bucket_edges(keys: np.ndarray, centre: float | np.ndarray, scale: float | np.ndarray) -> np.ndarray:
    """The lower edge of each bucket."""
    return centre + scale * BODY_WIDTH / TAIL_WIDTH * np.sinh(keys * TAIL_WIDTH)


def _bucketed(values: np.ndarray, centre: float, scale: float) -> tuple[np.ndarray, ...]:
    """Key, count, sum, and the sums of distance (and its square) from the lower edge, per bucket.

    Linear time: the keys of one partition are a dense range of integers, counted with ``bincount``. Whole
    numbers over a range narrower than the rows (an age, a count of days) are counted per value first, and
    only the distinct values are bucketed: the same buckets, their counts and the sums of their values exact.
    """
    weights = None
    low, high = float(values.min()), float(values.max())
    if high - low < len(values) // 4 and np.array_equal(values, np.floor(values)):
        per_value = np.bincount((values - low).astype("int64"))
        offsets = np.flatnonzero(per_value)
        values, weights = offsets + low, per_value[offsets].astype("float64")
    keys = bucket_keys(values, centre, scale)
    first = keys.min()
    index = keys - first
    present = np.arange(index.max() + 1) + first
    distance = values - bucket_edges(present, centre, scale)[index]
    if weights is None:
        counts = np.bincount(index)
        sums = [values, distance, distance * distance]
    else:
        counts = np.bincount(index, weights).astype("int64")
        sums = [values * weights, distance * weights, distance * distance * weights]
    found = counts > 0
    return (present[found], counts[found], *[np.bincount(index, s)[found] for s in sums])


def partition_profile(
    frame: pd.DataFrame, contract: Contract, schemes: Mapping[str, Scheme] | None = None
) -> pd.DataFrame:
    """One partition's statistics of the contract's features and label (:func:`column_partials`)."""
    return column_partials(frame, contract.numeric_features, categorical_columns(contract), schemes)


def column_partials(
    frame: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    schemes: Mapping[str, Scheme] | None = None,
) -> pd.DataFrame:
    """One partition's statistics, as rows that add up across partitions (:data:`HOW`).

    The row count; per column its nulls; per number its scheme's count, min, max and the sums of the
    values' distance from the scheme's centre and of its square, and its buckets; per category the count of
    each value. A number's scheme is ``schemes``' (the same in every partition) or, when it has none, the
    partition's own (:func:`scheme_of`).
    """
    return partial_rows(*column_statistics(frame, numeric, categorical, schemes))


def _moments(name: str, values: np.ndarray, e: int, m: int) -> tuple[Any, ...]:
    """A number's record of its count, min, max and the sums of its values' distance from the scheme's centre
    and of its square (well conditioned: the centre is near the mean)."""
    centred = values - m * 2.0**e
    return (
        name,
        "moments",
        f"{e}:{m}",
        len(values),
        0.0,
        float(centred.sum()),
        # Not np.dot: BLAS's threads spin after each call, and beside an engine's other threads on
        # 2 cores that doubled the CPU of the monitor's pass (1.80 s instead of 0.84 s for 2M rows).
        float(np.einsum("i,i->", centred, centred)),
        float(values.min()),
        float(values.max()),
    )


def column_statistics(
    frame: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    schemes: Mapping[str, Scheme] | None = None,
) -> tuple[list[tuple[Any, ...]], list[Buckets]]:
    """:func:`column_partials`' rows before they are made a frame (:func:`partial_rows`): the records, the
    first of them the row count, and each number's buckets; for a caller that adds rows of its own."""
    records: list[tuple[Any, ...]] = [("", "rows", "", len(frame), 0.0, 0.0, 0.0, 0.0, 0.0)]
    buckets: list[Buckets] = []
    for name in numeric:
        values = _finite(frame, name)
        records.append((name, "null", "", len(frame) - len(values), 0.0, 0.0, 0.0, 0.0, 0.0))
        if not len(values):
            continue
        e, m = schemes[name] if schemes is not None and name in schemes else scheme_of(values)
        records.append(_moments(name, values, e, m))
        keys, counts, totals, dev, dev2 = _bucketed(values, m * 2.0**e, 2.0**e)
        buckets.append((name, f"{e}:{m}", keys, counts, totals, dev, dev2))
    for name in categorical:
        nulls = 0
        counts = frame[name].value_counts(dropna=False)  # one hashing pass counts the values and the nulls
        # A category no row of the partition holds is not counted (a dictionary read from Parquet holds every
        # value of the row groups read, a row group the interval cuts included), nor looped over.
        for value, count in counts[counts.to_numpy() > 0].items():
            if pd.isna(value):
                nulls += int(count)
            else:
                records.append((name, "value", str(value), int(count), 0.0, 0.0, 0.0, 0.0, 0.0))
        records.append((name, "null", "", nulls, 0.0, 0.0, 0.0, 0.0, 0.0))
    return records, buckets


def window_schemes(engine: Engine, table: Table, numeric: list[str]) -> dict[str, Scheme]:
    """Each number's bucket scheme from its mean and std over the whole table (a first, cheap pass: the
    engine's moments): the same however the engine partitioned the rows, so a profile made with them is
    too. (Engines agree on the moments but for their last bits: a scheme rounds them to powers of two.)"""
    if not numeric:
        return {}
    found = engine.moments(engine.select(table, numeric), numeric)
    return {name: scheme_from(mean, std) for name, (_, mean, std) in found.items()}


def build_profile(engine: Engine, raw: Table, contract: Contract) -> dict[str, Any]:
    """The profile of a table of raw rows on the engine that holds it (only the features and the label are
    read): a pass for each number's scheme (:func:`window_schemes`), then one for the statistics."""
    features = engine.select(raw, [*contract.numeric_features, *categorical_columns(contract)])
    schemes = window_schemes(engine, features, contract.numeric_features)
    found = engine.aggregate(features, lambda f: partition_profile(f, contract, schemes), PARTIALS, KEYS, HOW)
    return profile_of(
        found, contract.numeric_features, categorical_columns(contract), contract.dataset, engine.name
    )


def profile_of(
    found: pd.DataFrame, numeric: list[str], categorical: list[str], dataset: str, engine: str
) -> dict[str, Any]:
    """A profile from the partials of :func:`column_partials`, combined across partitions.

    The partials are split by column and kind once (not filtered again per column: a day of served traffic
    has some 12,000 bucket rows, and filtering them per column took most of the 65 ms this took).
    """
    rows = int(found.loc[found["kind"] == "rows", "count"].sum())
    parts = {key: part for key, part in found.groupby(["column", "kind"], sort=False)}
    nothing = found.iloc[:0]

    def part(name: str, kind: str) -> pd.DataFrame:
        return parts.get((name, kind), nothing)

    def nulls(name: str) -> int:
        return int(part(name, "null")["count"].sum())

    columns: dict[str, Any] = {}
    for name in numeric:
        columns[name] = _numeric(name, part(name, "moments"), part(name, "bucket")) | {"nulls": nulls(name)}
    for name in categorical:
        values = part(name, "value")
        counts = sorted(zip(values["key"], values["count"], strict=True))
        columns[name] = {
            "kind": "categorical",
            "nulls": nulls(name),
            "counts": {str(k): int(v) for k, v in counts},
        }
    for column in columns.values():
        column["null_share"] = column["nulls"] / rows if rows else 0.0
    return {
        "version": VERSION,
        "dataset": dataset,
        "rows": rows,
        "engine": engine,
        "bucket_widths": {"body_scale": BODY_WIDTH, "tail_relative": TAIL_WIDTH},
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "columns": columns,
    }


def frame_profile(
    frame: pd.DataFrame, numeric: list[str], categorical: list[str], dataset: str
) -> dict[str, Any]:
    """The profile of a pandas frame on this process (small data: a holdout's predictions)."""
    partials = column_partials(frame, numeric, categorical)
    found = partials.groupby(KEYS, sort=False).agg(dict(HOW)).reset_index()
    return profile_of(found, numeric, categorical, dataset, "pandas")


def _key_numbers(keys: pd.Series, fields: int, column: str) -> np.ndarray:
    """The numbers of keys written as ``fields`` whole numbers joined by colons (a scheme ``e:m``, a bucket
    ``e:m:k``), one row per key: checked and parsed by Arrow at once (pandas' ``str.split`` took 6 ms per 1,000
    keys). A key of another form is refused, naming it and its column."""
    import pyarrow.compute as pc

    text = pa.array(keys.to_numpy(dtype=object), pa.string())
    form = "^-?[0-9]+" + "(:-?[0-9]+)" * (fields - 1) + "$"
    wrong = np.flatnonzero(
        ~pc.fill_null(pc.match_substring_regex(text, form), False).to_numpy(zero_copy_only=False)
    )
    if len(wrong):
        raise ValueError(
            f"{column}: profile keys must be {fields} whole numbers joined by ':', got {keys.iloc[wrong[0]]!r}"
        )
    split = pc.split_pattern(text, ":")
    numbers = pc.cast(pc.list_flatten(split), pa.float64()).to_numpy(zero_copy_only=False)
    return numbers.reshape(len(keys), fields)


def _combined_moments(name: str, schemes: pd.DataFrame) -> tuple[int, float, float]:
    """A number's count, mean and population std (as Evidently's ``np.std``) from its schemes' moments rows,
    combined exactly whichever schemes the partitions took."""
    e_m = _key_numbers(schemes["key"], 2, name)
    centres = e_m[:, 1] * 2.0 ** e_m[:, 0]
    n, s1, s2 = (schemes[c].to_numpy(dtype="float64") for c in ("count", "dev", "dev2"))
    count = int(n.sum())
    if not count:
        return 0, float("nan"), float("nan")
    mean = float((n * centres + s1).sum() / count)
    offset = mean - centres  # the scheme centres are near the mean: nothing cancels
    m2 = float((s2 - 2 * offset * s1 + n * offset**2).sum())
    return count, mean, float(np.sqrt(max(m2, 0.0) / count))


def _numeric(name: str, schemes: pd.DataFrame, buckets: pd.DataFrame) -> dict[str, Any]:
    """A number's statistics from its aggregated rows (its schemes' moments, its buckets): exact moments
    combined over the schemes, buckets."""
    if schemes.empty:
        empty: dict[str, list[Any]] = {"mean": [], "count": [], "exact": []}
        return {
            "kind": "numeric",
            "count": 0,
            "min": None,
            "max": None,
            "mean": None,
            "std": None,
            "abs_error": 0.0,
            "buckets": empty,
        }
    count, mean, std = _combined_moments(name, schemes)
    parts = _key_numbers(buckets["key"], 3, name)
    scale = 2.0 ** parts[:, 0]
    lower = bucket_edges(parts[:, 2], parts[:, 1] * scale, scale)
    widths = bucket_edges(parts[:, 2] + 1, parts[:, 1] * scale, scale) - lower
    counts = buckets["count"].to_numpy(dtype="float64")
    means = buckets["total"].to_numpy() / counts
    # Each value sits within its bucket's spread of the bucket's mean: mean |x - mean| <= the spread's std.
    dev, dev2 = buckets["dev"].to_numpy() / counts, buckets["dev2"].to_numpy() / counts
    spread = np.sqrt(np.clip(dev2 - dev**2, 0, None))
    exact = spread <= 1e-6 * widths  # one value in the bucket (what is left is rounding)
    spread[exact] = 0.0
    order = np.argsort(means, kind="stable")
    return {
        "kind": "numeric",
        "count": count,
        "min": float(schemes["low"].min()),
        "max": float(schemes["high"].max()),
        "mean": mean,
        "std": std,
        "abs_error": float((counts * spread).sum()),
        # The scheme most of its rows were bucketed by: a later pass over other rows may take it (the monitor).
        "scheme": [int(v) for v in _key_numbers(schemes["key"], 2, name)[int(np.argmax(schemes["count"]))]],
        "buckets": {
            "mean": [float(m) for m in means[order]],  # full precision: a large mean over a tiny spread
            "count": [int(c) for c in counts[order]],
            "exact": [bool(x) for x in exact[order]],
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
    profile: dict[str, Any],
    contract: Contract,
    rows: int = 5_000,
    seed: int = 0,
    columns: list[str] | None = None,
) -> pd.DataFrame:
    """A deterministic sample of ``rows`` rows whose every column (default: features and label) follows the
    profile's distribution."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name in columns if columns is not None else [*contract.feature_columns, contract.label]:
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
