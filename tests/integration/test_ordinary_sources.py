"""Both engines read ordinary files: what pandas, pyarrow, DuckDB and a CSV export write, as users have them.

Nanosecond and microsecond timestamps, with and without a time zone; dictionary-encoded strings; an integer
entity id; categories of integer, text and boolean values. Dask and Spark must give the same validation
reports, the same typed raw rows, the same features and the same dataset version.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.data import datasets, storage
from pipelines.data.prepare import prepare
from pipelines.data.validate import validate
from pipelines.settings import get_settings

pytestmark = pytest.mark.slow

DAYS = [dt.date(2011, 2, 13), dt.date(2011, 2, 14), dt.date(2011, 2, 15)]
ROWS = 240

CONTRACT = """
dataset: {dataset}
entity_id: ride_id
event_time: started_at
label: busy
min_rows: 10
unique: [ride_id]
source: {{uri: "{{data_root}}/source/{{dataset}}/{{ds}}{suffix}", format: {fmt}{gaps}}}
splits: {{train: 70, validation: 15, holdout: 15}}
columns:
  ride_id: {{type: int, min: 0}}
  started_at: {{type: timestamp}}
  station: {{type: string}}
  season: {{type: category, allowed: [1, 2, 3, 4], role: feature}}
  weather: {{type: category, allowed: [clear, mist, rain], role: feature}}
  holiday: {{type: category, allowed: [true, false], role: feature}}
  temp: {{type: float, min: -40, max: 50, role: feature, log: false}}
  riders: {{type: float, min: 0, role: feature, log: true}}
  busy: {{type: int, allowed: [0, 1]}}
"""


def _day_frame(day: dt.date) -> pd.DataFrame:
    """Rows from integer arithmetic only: the same values on any machine."""
    index = np.arange(ROWS)
    offset = (day - DAYS[0]).days
    return pd.DataFrame(
        {
            "ride_id": (offset * 10_000 + index).astype("int64"),
            "started_at": pd.Timestamp(day, tz="UTC") + pd.to_timedelta(index * 359_999_999_123, unit="ns"),
            "station": pd.Series([f"st-{i % 7}" for i in index], dtype=object),
            "season": (index % 4 + 1).astype("int64"),
            "weather": pd.Series([("clear", "mist", "rain")[i % 3] for i in index], dtype=object),
            "holiday": index % 5 == 0,
            "temp": (index % 60 - 10) / 4.0,
            "riders": (index * 37 % 400) / 8.0,
            "busy": ((index * 7) % 3 == 0).astype("int64"),
        }
    )


def _with_pandas_tz(frame: pd.DataFrame, path: Path) -> None:  # pandas' defaults: ns, UTC
    frame.to_parquet(path)


def _with_pyarrow_naive(frame: pd.DataFrame, path: Path) -> None:  # naive micros, dictionary strings
    naive = frame.assign(started_at=frame["started_at"].dt.tz_localize(None).astype("datetime64[us]"))
    table = pa.Table.from_pandas(naive, preserve_index=False)
    for name in ("station", "weather"):
        index = table.schema.get_field_index(name)
        table = table.set_column(index, name, table.column(name).dictionary_encode())
    pq.write_table(table, path, use_dictionary=True)


def _with_duckdb(frame: pd.DataFrame, path: Path) -> None:  # TIMESTAMP WITH TIME ZONE, DuckDB's own writer
    import duckdb

    with duckdb.connect() as con:
        con.register("rows", frame)
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"COPY (SELECT * FROM rows) TO '{path}' (FORMAT parquet)")


WRITERS = [_with_pandas_tz, _with_pyarrow_naive, _with_duckdb]


def _settings(tmp_path: Path, name: str, fmt: str, gaps: str = ""):
    suffix = ".csv" if fmt == "csv" else ".parquet"
    contract = tmp_path / f"{name}.yaml"
    contract.write_text(CONTRACT.format(dataset=name, suffix=suffix, fmt=fmt, gaps=gaps))
    return get_settings(
        state_dir=tmp_path / "state", dataset=name, contract_path=contract, window_days=len(DAYS)
    )


def _write_sources(settings, fmt: str) -> None:
    folder = Path(settings.resolved_data_root) / "source" / settings.dataset
    folder.mkdir(parents=True, exist_ok=True)
    for day, writer in zip(DAYS, WRITERS, strict=True):
        frame = _day_frame(day)
        if fmt == "csv":
            frame.to_csv(folder / f"{day}.csv", index=False)  # times as 2011-02-13 00:05:59.999999123+00:00
        else:
            writer(frame, folder / f"{day}.parquet")


def _forget(settings, *kinds: str) -> None:
    root = Path(settings.resolved_data_root)
    for kind in kinds:
        storage.url_to_fs(str(root))[0].rm(str(root / kind / settings.dataset), recursive=True)


def _features(uri: str) -> pd.DataFrame:
    frames = [datasets.read_split(uri, s).assign(split=s) for s in ("train", "validation", "holdout")]
    frame = pd.concat(frames).sort_values("ride_id").reset_index(drop=True)
    return frame.astype({c: object for c in ("weather", "split")})


def _run(settings, engine: str) -> tuple[dict, dict, pd.DataFrame]:
    validated = validate(settings, DAYS[-1], engine)
    prepared = prepare(settings, DAYS[-1], engine)
    return validated, prepared, _features(prepared["uri"])


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_dask_and_spark_read_ordinary_files_alike(tmp_path, fmt):
    settings = _settings(tmp_path, f"rides_{fmt}", fmt)
    _write_sources(settings, fmt)

    on_dask, prepared_dask, features_dask = _run(settings, "dask")
    _forget(settings, "raw", "features")
    on_spark, prepared_spark, features_spark = _run(settings, "spark")

    for dask_day, spark_day in zip(on_dask["partitions"], on_spark["partitions"], strict=True):
        assert dask_day["status"] == spark_day["status"] == "validated", (dask_day, spark_day)
        assert dask_day["rows"] == spark_day["rows"] == ROWS
        assert dask_day["content_hash"] == spark_day["content_hash"], dask_day["day"]
    raw = datasets.read_parquet(storage.raw_uri(settings.resolved_data_root, settings.dataset, DAYS[0]))
    assert raw["season"].dtype == "int64" and raw["holiday"].dtype == bool and raw["ride_id"].dtype == "int64"
    assert str(raw["started_at"].dtype) == "datetime64[us, UTC]"
    expected = _day_frame(DAYS[0])["started_at"].dt.floor("us")  # nanoseconds are cut to microseconds
    assert (raw.sort_values("ride_id")["started_at"].to_numpy() == expected.to_numpy()).all()

    assert prepared_dask["split_rows"] == prepared_spark["split_rows"]
    assert prepared_dask["dataset_version"] == prepared_spark["dataset_version"]
    pd.testing.assert_frame_equal(features_dask, features_spark, check_exact=False, rtol=1e-12)
    assert {"f_season__1", "f_season__4", "f_holiday__True", "f_weather__mist"} <= set(features_dask)
    assert features_dask["f_season__2"].sum() == (features_dask["season"] == 2).sum() > 0


def test_out_of_domain_integer_and_boolean_categories_are_named(tmp_path):
    settings = _settings(tmp_path, "rides_bad", "csv")
    _write_sources(settings, "csv")
    path = Path(settings.resolved_data_root) / "source" / settings.dataset / f"{DAYS[0]}.csv"
    frame = pd.read_csv(path, dtype=str)
    frame.loc[3, "season"] = "5"
    frame.loc[4, "holiday"] = "maybe"
    frame.to_csv(path, index=False)
    from pipelines.data.validation import DataContractError

    for engine in ("dask", "spark"):
        with pytest.raises(DataContractError) as caught:
            validate(settings, DAYS[-1], engine)
        text = str(caught.value)
        assert "column 'season' breaks rule 'isin([1, 2, 3, 4])': 1 failing, e.g. ['5']" in text, engine
        assert "column 'holiday' breaks rule 'boolean (true or false)': 1 failing, e.g. ['maybe']" in text
        _forget(settings, "raw")


# The version of the fixed rides above. It depends only on the typed raw rows, the contract and the feature
# code's version: a library, engine or CPU that changed it would make every dataset version move. (Moved once on
# 2026-12-06, when the contract's fingerprint stopped holding its source's uri and its drift settings.)
PINNED_VERSION = "508d2e9b4bd7e6abe6cb2a067f08c1e425aaea1fa670bb2bc3efec08e36a467f"


def test_the_dataset_version_of_fixed_rows_is_pinned(tmp_path):
    settings = _settings(tmp_path, "rides_parquet", "parquet")
    _write_sources(settings, "parquet")
    validate(settings, DAYS[-1], "dask")
    assert prepare(settings, DAYS[-1], "dask")["dataset_version"] == PINNED_VERSION


def test_a_known_gap_trains_on_the_days_that_exist_and_is_recorded(tmp_path):
    from pipelines.data.prepare import UnvalidatedDayError
    from pipelines.data.sources import SourceMissingError

    strict = _settings(tmp_path, "rides_strict", "parquet")
    _write_sources(strict, "parquet")
    (Path(strict.resolved_data_root) / "source" / "rides_strict" / f"{DAYS[1]}.parquet").unlink()
    with pytest.raises(
        SourceMissingError,
        match=r"no data for 2011-02-14 \(dataset rides_strict, source .*/source/rides_strict/\{ds\}\.parquet\).*set source.missing_days: skip",
    ):
        validate(strict, DAYS[-1], "dask")

    gaps = ", missing_days: skip, max_missing_days: 1"
    lenient = _settings(tmp_path, "rides_gaps", "parquet", gaps).replace(state_dir=strict.state_dir)
    _write_sources(lenient, "parquet")
    validate(lenient, DAYS[-1], "dask")
    assert prepare(lenient, DAYS[-1], "dask")["rows"] == 3 * ROWS
    # Upstream withdraws a day already ingested: the next run leaves it out, its old raw partition too.
    (Path(lenient.resolved_data_root) / "source" / "rides_gaps" / f"{DAYS[1]}.parquet").unlink()
    validated = validate(lenient, DAYS[-1], "dask")
    assert validated["missing_days"] == ["2011-02-14"] and validated["rows"] == 2 * ROWS
    assert [p["status"] for p in validated["partitions"]] == ["unchanged", "missing", "unchanged"]
    prepared = prepare(lenient, DAYS[-1], "dask")
    assert prepared["missing_days"] == ["2011-02-14"] and prepared["rows"] == 2 * ROWS
    assert datasets.read_manifest(prepared["uri"]).extra["missing_days"] == ["2011-02-14"]

    # A contract changed since the days were validated: prepare names them, and trains on nothing unchecked.
    tightened = lenient.resolved_contract_path.read_text().replace("max: 50,", "max: 40,")
    lenient.resolved_contract_path.write_text(tightened)
    with pytest.raises(
        UnvalidatedDayError, match=r"2011-02-13, 2011-02-15 \(rides_gaps\) was validated under"
    ):
        prepare(lenient, DAYS[-1], "dask")
    assert validate(lenient, DAYS[-1], "dask")["rows"] == 2 * ROWS
    assert prepare(lenient, DAYS[-1], "dask")["rows"] == 2 * ROWS

    (Path(lenient.resolved_data_root) / "source" / "rides_gaps" / f"{DAYS[0]}.parquet").unlink()
    with pytest.raises(SourceMissingError, match="2 days of the window have no data .*max_missing_days 1"):
        validate(lenient, DAYS[-1], "dask")
