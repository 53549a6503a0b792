"""Several Parquet files read as one: their common schema, whatever type each file gave a column."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.engines.base import (
    FOOTER_READ,
    UnreadableParquetError,
    aggregate_parquet_files,
    parquet_footer,
    parquet_footers,
)


def _serially(fn, items):
    return [fn(item) for item in items]


def _sums(frame: pd.DataFrame) -> pd.DataFrame:
    counts = frame["channel"].astype(object).value_counts(dropna=False)
    keys = ["none" if pd.isna(key) else str(key) for key in counts.index]
    return pd.DataFrame(
        {
            "key": [*keys, "<amount>"],
            "count": [*counts.to_numpy(dtype="int64"), len(frame)],
            "total": [0.0] * len(keys) + [float(frame["amount"].sum())],
        }
    )


def test_files_that_typed_a_column_differently_read_as_one_wider_type(tmp_path):
    files = [str(tmp_path / f"{name}.parquet") for name in "abcd"]
    pq.write_table(
        pa.table({"channel": ["web", "app"] * 3, "amount": pa.array(range(6), pa.int64())}), files[0]
    )
    # Written by another tool: large text, floats.
    pq.write_table(
        pa.table({"channel": pa.array(["web"] * 4, pa.large_string()), "amount": [0.5, 1.5, 2.5, 3.5]}),
        files[1],
    )
    # Written from pandas categories: the file stores a dictionary and says so in its schema.
    categories = pd.DataFrame({"channel": pd.Categorical(["fax", None, "fax"]), "amount": [1, 2, 3]})
    pq.write_table(pa.Table.from_pandas(categories, preserve_index=False), files[2])
    pq.write_table(pa.table({"channel": pa.nulls(2), "amount": pa.array([10, 20], pa.int32())}), files[3])

    common, _ = parquet_footers(files)
    assert common.field("channel").type == pa.large_string() and common.field("amount").type == pa.float64()
    found = aggregate_parquet_files(
        _serially, 2, files, ["channel", "amount"], _sums, ["key"], {"count": "sum", "total": "sum"}, None
    )
    assert found.to_dict("records") == [
        {"key": "<amount>", "count": 15, "total": 15.0 + 8.0 + 6.0 + 30.0},
        {"key": "app", "count": 3, "total": 0.0},
        {"key": "fax", "count": 2, "total": 0.0},
        {"key": "none", "count": 3, "total": 0.0},
        {"key": "web", "count": 7, "total": 0.0},
    ]


def test_files_whose_column_holds_text_in_one_and_numbers_in_another_are_refused_naming_it(tmp_path):
    pq.write_table(pa.table({"channel": ["web"]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"channel": [1]}), tmp_path / "b.parquet")
    with pytest.raises(pa.ArrowTypeError, match="Field channel has incompatible types"):
        parquet_footers([str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")])


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda whole: b"", "0 bytes with no Parquet footer"),
        (lambda whole: whole[: len(whole) // 2], "no Parquet footer at their end"),
        (lambda whole: whole[:-12] + bytes(8) + whole[-4:], "its footer does not parse"),
        (
            lambda whole: whole[:-8] + (10**9).to_bytes(4, "little") + b"PAR1",
            "its footer says 1000000000 bytes",
        ),
    ],
)
def test_a_footer_that_does_not_parse_is_named_apart_from_a_failure_of_the_storage(tmp_path, damage, reason):
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"x": list(range(1000))}), path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(UnreadableParquetError, match=reason) as raised:
        parquet_footers([str(path)])
    assert raised.value.uri == str(path) and isinstance(raised.value, pa.ArrowInvalid)


def test_a_footer_longer_than_the_first_read_of_the_files_end_is_read_whole(tmp_path):
    path = tmp_path / "wide.parquet"
    pq.write_table(pa.table({f"c{i}": [i] for i in range(2000)}), path)
    assert int.from_bytes(path.read_bytes()[-8:-4], "little") > FOOTER_READ
    assert parquet_footer(str(path)).num_columns == 2000


def test_moments_of_partitions_join_to_the_whole_columns_even_for_a_large_mean_over_a_tiny_spread():
    from pipelines.engines.base import combined_moments, partition_moments

    rng = np.random.default_rng(4)
    frame = pd.DataFrame(
        {
            "kelvin": 1e6 + rng.normal(0.0, 0.01, 9_000),  # a mean 1e8 times its spread
            "x": np.r_[rng.normal(5, 2, 8_990), [np.nan, np.inf, -np.inf] * 3, [np.nan]],
            "none": np.nan,
        }
    )
    parts = pd.concat([partition_moments(part, ["kelvin", "x", "none"]) for part in np.array_split(frame, 7)])
    found = combined_moments(parts)
    assert set(found) == {"kelvin", "x"}  # a column with no finite value is left out
    for name in ("kelvin", "x"):
        values = frame[name][np.isfinite(frame[name])]
        count, mean, std = found[name]
        assert count == len(values) and mean == pytest.approx(values.mean(), rel=1e-15)
        assert std == pytest.approx(values.std(ddof=0), rel=1e-7)


def test_partials_with_a_null_key_are_combined_not_dropped():
    """Dask's combine (and aggregate_parquet's, on both engines) dropped the rows of a null key, which Spark's
    groupBy keeps: a partition function's count of 3 rows came back as 2."""
    import pandas as pd

    from pipelines.engines.base import combine_partials

    partials = pd.DataFrame({"p": [0.5, None, 0.5, None], "rows": [1, 1, 2, 3]})
    combined = combine_partials(partials, ["p"], {"rows": "sum"})
    assert combined["rows"].sum() == 7 and len(combined) == 2
    assert combined[combined["p"].isna()]["rows"].tolist() == [4]
