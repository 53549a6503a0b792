"""The pieces of Dask's sort: each partition's sort (Arrow's), and the ranges of the first two keys' values that cut
the rows into partitions. The whole sort, on Dask and Spark alike, is in tests/integration/test_engines.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.pandas import column, data_frames

from pipelines.engines.dask_engine import _range_cuts, _range_of, sorted_frame

TEXT = st.one_of(st.none(), st.text(alphabet="aAbBäz\x00 ", max_size=3))
FLOAT = st.one_of(st.none(), st.sampled_from([np.nan, -0.0, 0.0, 1.5, -2.0, np.inf, -np.inf]))


def _null(value):
    return value is None or value != value


@settings(max_examples=200, deadline=None)
@given(
    data_frames(
        [
            column("s", elements=TEXT, dtype=object),
            column("x", elements=FLOAT, dtype=float),
            column("n", elements=st.integers(-3, 3), dtype="int64"),
        ]
    ),
    st.permutations(["s", "x", "n"]),
)
def test_a_partition_is_sorted_in_python_s_order_nan_and_null_last_ties_in_their_order(frame, keys):
    """Against Python's own sort, as Spark sorts (strings by code point, so by UTF-8 bytes): pandas' sort by several
    keys factorises them, and takes "\\x00" for "" (so keeps them as they came)."""
    found = sorted_frame(frame, keys)
    order = sorted(
        range(len(frame)),
        key=lambda i: tuple((1,) if _null(frame[k].iat[i]) else (0, frame[k].iat[i]) for k in keys),
    )
    want = frame.iloc[order].reset_index(drop=True)
    pd.testing.assert_frame_equal(found, want)
    # rows equal in every key stay in their order: -0.0 beside 0.0 as they came
    np.testing.assert_array_equal(np.signbit(found["x"]), np.signbit(want["x"]))


def test_a_categorical_key_is_sorted_by_its_values_as_spark_sorts_them():
    frame = pd.DataFrame(
        {"c": pd.Categorical(["z", "y", "x", "z"], categories=["z", "y", "x"]), "n": range(4)}
    )
    assert sorted_frame(frame, ["c", "n"])["c"].tolist() == ["x", "y", "z", "z"]
    # pandas: the categories' order
    assert frame.sort_values(["c", "n"])["c"].tolist() == ["z", "z", "y", "x"]


@pytest.mark.parametrize(
    ("values", "cuts", "ranges"),
    [
        (["b", None, "a", "c", "bb", "a\x00"], ["a\x00", "b"], [2, 2, 0, 2, 2, 1]),
        ([0.5, np.nan, -0.0, 2.0, 1.0], [0.0, 1.0], [1, 2, 1, 2, 2]),
        (["x", None], [], [0, 0]),
    ],
)
def test_a_value_s_range_is_the_count_of_cuts_at_or_below_it_and_a_null_s_the_last(values, cuts, ranges):
    series = pd.Series(values, dtype=object if isinstance(values[0], str) else float)
    assert _range_of(series, np.array(cuts, dtype=object)).tolist() == ranges


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.one_of(st.none(), st.sampled_from("abc")), FLOAT), max_size=30),
    st.lists(st.tuples(st.sampled_from("abc"), FLOAT), max_size=6),
)
def test_a_rows_range_is_the_count_of_cut_pairs_at_or_below_its_first_two_keys(rows, cuts):
    """Against the definition, pair by pair: a null first key in the last range, a null (or NaN) second after every
    value of its first key."""

    def at_or_below(cut, row):
        (cut_a, cut_b), (a, b) = cut, row
        return cut_a < a or (cut_a == a and (b is None or (cut_b is not None and cut_b <= b)))

    pairs = {(a, None if _null(b) else b) for a, b in cuts}
    pairs = sorted(pairs, key=lambda pair: (pair[0], pair[1] is None, 0.0 if pair[1] is None else pair[1]))
    firsts = np.array([a for a, _ in pairs], dtype=object)
    seconds = np.array([b for _, b in pairs], dtype=object)
    frame = pd.DataFrame(rows, columns=["a", "b"]).astype({"a": object, "b": float})
    found = _range_of(frame["a"], firsts, frame["b"], seconds).tolist()
    want = [
        len(pairs) if a is None else sum(at_or_below(cut, (a, None if _null(b) else b)) for cut in pairs)
        for a, b in rows
    ]
    assert found == want


def test_the_cuts_are_distinct_ascending_pairs_of_the_sample_with_nan_and_null_seconds_as_none():
    import dask.dataframe as dd

    frame = pd.DataFrame(
        {
            "a": ["b", "a", None, "b", "b", "a", "b", "b"],
            "b": pd.array([2.0, 1.0, 5.0, None, 1.0, 1.0, 0.0, None], dtype="Float64")
            / pd.array([1, 1, 1, 1, 1, 1, 0, 1], dtype="Float64"),  # 0/0: a NaN pandas keeps apart
        }
    )
    firsts, seconds = _range_cuts(dd.from_pandas(frame, npartitions=2), 4)
    # the 7 sampled pairs in order: (a, 1) (a, 1) (b, 1) (b, 2) and three (b, null), the NaN one of them; a cut at
    # every 7/4th
    assert list(zip(firsts, seconds, strict=True)) == [("a", 1.0), ("b", 2.0), ("b", None)]
    # the null first key is not sampled; an empty table has no cuts
    empty_firsts, empty_seconds = _range_cuts(dd.from_pandas(frame.iloc[:0], npartitions=1), 4)
    assert len(empty_firsts) == len(empty_seconds) == 0


def test_a_nullable_float_s_nan_sorts_with_the_nulls_as_spark_sorts_it():
    """pandas keeps a Float64's NaN (0/0) apart from its null; the contract, and Spark, take one for the other."""
    x = pd.array([2.0, None, 0.0, 1.0, None], dtype="Float64") / pd.array(
        [1.0, 1.0, 0.0, 1.0, 1.0], dtype="Float64"
    )
    frame = pd.DataFrame({"x": x, "n": [4, 3, 2, 1, 0]})
    assert frame["x"].isna().sum() == 2  # the NaN is not one of them
    assert sorted_frame(frame, ["x", "n"])["n"].tolist() == [1, 4, 0, 2, 3]
    assert _range_of(frame["x"], np.array([1.5], dtype=object)).tolist() == [1, 1, 1, 0, 1]


def test_the_sorted_table_comes_in_order_with_each_partition_indexed_from_0_and_no_divisions_claimed():
    import dask
    import dask.dataframe as dd

    from pipelines.engines.dask_engine import DaskEngine

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "k": rng.choice(["b", "a", "c", None], 2000),
            "x": rng.choice([0.5, np.nan, 1.5], 2000),
            "n": range(2000),
        }
    )
    with dask.config.set(scheduler="threads"):
        table = dd.from_pandas(frame.set_index(frame["n"].astype(str).rename("id")), npartitions=6)
        ordered = DaskEngine(None, 2).sort(table, ["k", "x", "n"])
        parts = [p.compute() for p in ordered.to_delayed()]
    assert not ordered.known_divisions
    assert all(p.index.equals(pd.RangeIndex(len(p))) for p in parts) and ordered._meta.index.name is None
    found = pd.concat(parts, ignore_index=True)
    want = frame.sort_values(["k", "x", "n"], na_position="last").reset_index(drop=True)
    assert found["n"].tolist() == want["n"].tolist() and len(parts) > 1


@pytest.mark.parametrize("categorical", [False, True])
def test_a_first_key_most_rows_share_is_spread_over_partitions_by_the_second(categorical):
    """An entity with most of the events: cut on the first key alone, its rows made one partition of 90% of them.
    Its event times (UTC, some unknown: those tie in both keys, so they make one range) spread it."""
    import dask
    import dask.dataframe as dd

    from pipelines.engines.dask_engine import DaskEngine

    rng = np.random.default_rng(1)
    rows = 6000
    entity = np.where(rng.random(rows) < 0.9, "big", rng.choice(["a", "z"], rows))
    frame = pd.DataFrame(
        {
            # a categorical's categories in another order than its values': sorted by value
            "entity": pd.Categorical(entity, categories=["z", "big", "a"]) if categorical else entity,
            "time": pd.Timestamp("2026-12-07", tz="UTC") + pd.to_timedelta(rng.permutation(rows), unit="s"),
            "n": range(rows),
        }
    )
    frame.loc[rng.choice(rows, rows // 10, replace=False), "time"] = pd.NaT
    with dask.config.set(scheduler="threads"):
        table = dd.from_pandas(frame, npartitions=8)
        parts = [p.compute() for p in DaskEngine(None, 2).sort(table, ["entity", "time", "n"]).to_delayed()]
    assert max(len(p) for p in parts) < 0.3 * rows, [len(p) for p in parts]
    found = pd.concat(parts, ignore_index=True)
    by_value = frame.assign(entity=frame["entity"].astype(str))
    want = by_value.sort_values(["entity", "time", "n"], na_position="last").reset_index(drop=True)
    assert found["n"].tolist() == want["n"].tolist()
