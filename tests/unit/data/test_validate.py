"""Data tests: every kind of broken input fails validation with a message naming the column and the rule.

The checks run on Dask (its local threaded scheduler, no cluster needed) over real files, so the reading
path is covered too: Parquet and CSV, empty and corrupt files.
"""

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.data import datasets, sources, storage
from pipelines.data.quarantine import quarantine_uri
from pipelines.data.validate import DataContractError, check_partition, validate
from pipelines.engines.dask_engine import DaskEngine
from tests.days import DAY
from tests.sources_lab import day_of_files


def _source(settings, contract, tmp_path: Path, frame: pd.DataFrame | None, fmt: str = "parquet", raw=None):
    folder = tmp_path / "src" / DAY.isoformat()
    folder.mkdir(parents=True)
    name = folder / f"part-0.{fmt}"
    if raw is not None:
        name.write_bytes(raw)
    elif fmt == "csv":
        frame.to_csv(name, index=False)
    else:
        frame.to_parquet(name, index=False)
    settings = settings.model_copy(update={"source_uri": str(tmp_path / "src" / "{ds}")})
    return sources.partition(settings, contract, DAY)


def _report(settings, contract, tmp_path, frame=None, fmt="parquet", raw=None):
    contract = contract.model_copy(update={"source": contract.source.model_copy(update={"format": fmt})})
    source = _source(settings, contract, tmp_path, frame, fmt, raw)
    return check_partition(DaskEngine(client=None), source, contract)  # on dask's local scheduler


def _broken(report):
    assert not report.ok, "expected a violation"
    error = DataContractError([report])
    return {(v.column, v.rule): v for v in report.violations}, str(error)


def _rule(found, column, prefix):
    hits = [v for (c, rule), v in found.items() if c == column and rule.startswith(prefix)]
    assert hits, f"no violation of {prefix}* on {column}: {sorted(found)}"
    return hits[0]


def test_clean_data_holds_its_contract(settings, contract, tmp_path, clean_frame):
    report = _report(settings, contract, tmp_path, clean_frame)
    assert report.ok, report.violations
    assert report.rows == len(clean_frame)
    assert report.null_counts["avg_basket"] == int(clean_frame["avg_basket"].isna().sum())


def test_clean_csv_holds_its_contract(settings, contract, tmp_path, clean_frame):
    report = _report(settings, contract, tmp_path, clean_frame, fmt="csv")
    assert report.ok, report.violations


def test_wrong_type_names_column_rule_and_values(settings, contract, tmp_path, clean_frame):
    """Text in a typed (Parquet) number column is a type error, whatever it says: read as numbers, "1_000",
    "NaN" or " nan " passed as a thousand and as nulls past the null share; and pandera named an object
    column's type error only while it held no null."""
    rule = "dtype('float64') (found object)"
    frame = clean_frame.assign(amount=clean_frame["amount"].map(lambda v: f"{v} EUR"))
    found, message = _broken(_report(settings, contract, tmp_path, frame))
    violation = _rule(found, "amount", rule)
    assert violation.failing == len(frame) and violation.examples[0].endswith("EUR")
    assert f"column 'amount' breaks rule '{rule}'" in message
    # Range and finiteness checks on a column of the wrong type would only repeat the type error.
    assert [rule for column, rule in found if column == "amount"] == [rule]
    readable = clean_frame.assign(  # every value reads as a number or a null: still text
        avg_basket=[("NaN", "1_000", " nan ", "2.5")[i % 4] for i in range(len(clean_frame))]
    )
    found, _ = _broken(_report(settings, contract, tmp_path / "readable", readable))
    assert _rule(found, "avg_basket", rule).examples == [" nan ", "1_000", "2.5", "NaN"]
    ints = clean_frame.astype({"age": str}).astype({"age": object})
    ints.loc[3, "age"] = None  # one null: pandera reported only that
    found, _ = _broken(_report(settings, contract, tmp_path / "ints", ints))
    assert _rule(found, "age", "dtype('int64') (found object)").failing == len(ints) - 1


def test_narrower_integers_hold_an_int_column_and_are_committed_as_int64(
    settings, contract, tmp_path, clean_frame
):
    narrow = clean_frame.astype({"age": "int32", "tenure_days": "uint32", "churned": "int8"})
    assert _report(settings, contract, tmp_path, narrow).ok
    from pipelines.data.validation import coerce_partition

    assert (coerce_partition(narrow, contract).dtypes[["age", "tenure_days", "churned"]] == "int64").all()
    unsigned = clean_frame.astype({"age": "uint64"})  # an int64 cannot hold every uint64
    found, _ = _broken(_report(settings, contract, tmp_path / "uint64", unsigned))
    assert _rule(found, "age", "dtype('int64')")


def test_int_column_holding_floats_is_a_type_error_not_a_truncation(
    settings, contract, tmp_path, clean_frame
):
    frame = clean_frame.assign(age=clean_frame["age"] + 0.5)
    found, message = _broken(_report(settings, contract, tmp_path, frame))
    assert _rule(found, "age", "dtype('int64')").failing == len(frame)
    assert "column 'age'" in message and "dtype('int64')" in message


def test_missing_column(settings, contract, tmp_path, clean_frame):
    found, message = _broken(_report(settings, contract, tmp_path, clean_frame.drop(columns=["region"])))
    assert ("region", "missing column") in found
    assert "column 'region' breaks rule 'missing column'" in message


def test_unexpected_column(settings, contract, tmp_path, clean_frame):
    found, message = _broken(_report(settings, contract, tmp_path, clean_frame.assign(surprise=1)))
    assert ("surprise", "unexpected column") in found
    assert "column 'surprise'" in message


def test_all_null_column(settings, contract, tmp_path, clean_frame):
    frame = clean_frame.assign(avg_basket=np.nan)
    found, message = _broken(_report(settings, contract, tmp_path, frame))
    assert found[("avg_basket", "all_null")].failing == len(frame)
    assert "column 'avg_basket' breaks rule 'all_null'" in message


def test_all_null_non_nullable_column(settings, contract, tmp_path, clean_frame):
    frame = clean_frame.assign(channel=None)
    found, _ = _broken(_report(settings, contract, tmp_path, frame))
    assert found[("channel", "not_nullable")].failing == len(frame)
    assert ("channel", "all_null") in found


def test_null_share_over_the_contract_limit(settings, contract, tmp_path, clean_frame):
    frame = clean_frame.copy()
    frame.loc[: len(frame) // 2, "avg_basket"] = np.nan
    found, message = _broken(_report(settings, contract, tmp_path, frame))
    violation = found[("avg_basket", "max_null_share(0.1)")]
    assert violation.examples[0].endswith("% null")
    assert "max_null_share(0.1)" in message


def test_a_csv_number_written_nan_is_a_null(settings, contract, tmp_path, clean_frame):
    """'NaN' in a CSV number column is read as a null once typed: the null rules count it."""
    half = clean_frame.astype({"avg_basket": object})
    half.loc[: len(half) // 2, "avg_basket"] = "NaN"
    report = _report(settings, contract, tmp_path / "half", half, fmt="csv")
    found, _ = _broken(report)
    assert ("avg_basket", "max_null_share(0.1)") in found
    assert report.null_counts["avg_basket"] == int(
        (half["avg_basket"].isna() | (half["avg_basket"] == "NaN")).sum()
    )
    every = clean_frame.assign(avg_basket=" -nan")
    report = _report(settings, contract, tmp_path / "all", every, fmt="csv")
    found, _ = _broken(report)
    assert ("avg_basket", "all_null") in found and report.null_counts["avg_basket"] == len(every)


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_infinite_values(settings, contract, tmp_path, clean_frame, value):
    frame = clean_frame.copy()
    frame.loc[3, "avg_basket"] = value
    found, message = _broken(_report(settings, contract, tmp_path, frame))
    assert found[("avg_basket", "finite")].examples == [repr(float(value))]
    assert "column 'avg_basket' breaks rule 'finite'" in message


def test_out_of_range_value(settings, contract, tmp_path, clean_frame):
    frame = clean_frame.copy()
    frame.loc[0, "age"] = 7
    found, _ = _broken(_report(settings, contract, tmp_path, frame))
    violation = found[("age", "greater_than_or_equal_to(18.0)")]
    assert violation.failing == 1 and violation.examples == ["7"]


def test_out_of_range_label(settings, contract, tmp_path, clean_frame):
    frame = clean_frame.copy()
    frame.loc[[1, 2], "churned"] = 2
    found, message = _broken(_report(settings, contract, tmp_path, frame))
    violation = found[("churned", "isin([0, 1])")]
    assert violation.failing == 2 and violation.examples == ["2"]
    assert "column 'churned'" in message


def test_unknown_category(settings, contract, tmp_path, clean_frame):
    frame = clean_frame.copy()
    frame.loc[0, "channel"] = "fax"
    found, message = _broken(_report(settings, contract, tmp_path, frame))
    assert found[("channel", "isin(['web', 'app', 'store'])")].examples == ["fax"]
    assert "column 'channel'" in message


def test_duplicate_ids(settings, contract, tmp_path, clean_frame):
    frame = clean_frame.copy()
    frame.loc[[5, 6], "customer_id"] = frame.loc[4, "customer_id"]
    found, message = _broken(_report(settings, contract, tmp_path, frame))
    violation = found[("customer_id", "unique")]
    assert violation.failing == 2 and violation.examples == [frame.loc[4, "customer_id"]]
    assert "column 'customer_id' breaks rule 'unique'" in message


def test_duplicate_rows(settings, contract, tmp_path, clean_frame):
    frame = pd.concat([clean_frame, clean_frame.iloc[[10, 11, 11]]], ignore_index=True)
    found, _ = _broken(_report(settings, contract, tmp_path, frame))
    assert found[("<table>", "duplicate_rows")].failing == 3
    assert found[("<table>", "duplicate_rows")].examples == sorted(clean_frame["customer_id"].iloc[[10, 11]])
    assert found[("customer_id", "unique")].failing == 3


def test_rows_a_nanosecond_apart_are_duplicates_as_the_microseconds_they_are_committed_with(
    settings, contract, tmp_path, clean_frame
):
    """The raw partition holds microseconds: rows that differed only in nanoseconds passed the duplicate rule
    and were committed as two identical rows."""
    frame = clean_frame.astype({"event_ts": "datetime64[ns, UTC]"})
    again = frame.iloc[[10]].assign(event_ts=frame["event_ts"].iloc[10] + pd.Timedelta(1, "ns"))
    found, _ = _broken(_report(settings, contract, tmp_path, pd.concat([frame, again], ignore_index=True)))
    assert found[("<table>", "duplicate_rows")].failing == 1


def test_event_time_outside_the_partition_day(settings, contract, tmp_path, clean_frame):
    frame = clean_frame.copy()
    frame.loc[0, "event_ts"] = frame.loc[0, "event_ts"] - pd.Timedelta(days=2)
    found, _ = _broken(_report(settings, contract, tmp_path, frame))
    assert found[("event_ts", f"within_partition_day({DAY})")].failing == 1


def test_too_few_rows(settings, contract, tmp_path, clean_frame):
    found, message = _broken(_report(settings, contract, tmp_path, clean_frame.head(10)))
    assert found[("<table>", "min_rows(1000)")].examples == ["10 rows"]
    assert "column '<table>' breaks rule 'min_rows(1000)'" in message


def test_empty_file(settings, contract, tmp_path):
    found, message = _broken(_report(settings, contract, tmp_path, raw=b""))
    violation = found[("<table>", "unreadable file")]
    assert violation.examples == ["part-0.parquet: empty file (0 bytes)"]
    assert "breaks rule 'unreadable file'" in message


def test_corrupt_parquet_file(settings, contract, tmp_path, clean_frame):
    good = tmp_path / "good.parquet"
    clean_frame.to_parquet(good)
    found, message = _broken(_report(settings, contract, tmp_path, raw=good.read_bytes()[:-100]))
    assert (
        found[("<table>", "unreadable file")].examples[0].startswith("part-0.parquet: not a readable parquet")
    )
    assert "unreadable file" in message


@pytest.mark.parametrize("end", ["\n", ""])
def test_header_only_csv(settings, contract, tmp_path, clean_frame, end):
    """Without a line break after the header it was 'unreadable' (pyarrow: could not skip initial 1 rows)."""
    header = ",".join(clean_frame.columns) + end
    found, message = _broken(_report(settings, contract, tmp_path, fmt="csv", raw=header.encode()))
    assert set(found) == {("<table>", "min_rows(1000)")}
    assert found[("<table>", "min_rows(1000)")].failing == 0
    assert "min_rows(1000)" in message


def test_csv_value_that_does_not_parse(settings, contract, tmp_path, clean_frame):
    frame = clean_frame.astype({"age": object})
    frame.loc[0, "age"] = "forty"
    found, _ = _broken(_report(settings, contract, tmp_path, frame, fmt="csv"))
    assert found[("age", "coerce_dtype('int64')")].examples == ["forty"]


def test_a_writers_uncommitted_folders_are_not_part_of_the_day(settings, contract, tmp_path, clean_frame):
    day = tmp_path / "src" / DAY.isoformat()
    for folder in ("_temporary/0/_temporary/attempt_1", ".staging", "region=north"):
        (day / folder).mkdir(parents=True)
        clean_frame.to_parquet(day / folder / "part-1.parquet", index=False)
    clean_frame.to_parquet(day / "part-0.parquet", index=False)
    settings = settings.model_copy(update={"source_uri": str(tmp_path / "src" / "{ds}")})
    found = sources.partition(settings, contract, DAY).files
    assert sorted(f.split(f"{DAY.isoformat()}/", 1)[1] for f in found) == [
        "part-0.parquet",
        "region=north/part-1.parquet",
    ]


def test_missing_source_day_is_a_retryable_error(settings, contract, tmp_path):
    settings = settings.model_copy(update={"source_uri": str(tmp_path / "nowhere" / "{ds}")})
    with pytest.raises(sources.SourceMissingError, match=f"no parquet data for {DAY}"):
        sources.partition(settings, contract, DAY)


def test_stage_quarantines_a_bad_day_and_ingests_a_good_one(settings):
    from pipelines.data.generate import generate

    generate(settings, DAY, "schema_break")
    with pytest.raises(DataContractError, match="column 'plan' breaks rule 'missing column'") as caught:
        validate(settings, DAY)
    root = settings.resolved_data_root
    folder = quarantine_uri(root, settings.dataset, DAY)
    assert caught.value.quarantined == [folder]
    assert storage.exists(storage.join(folder, "files", "part-0.parquet"))
    saved = json.loads(Path(storage.join(folder, "validation.json")).read_text())
    assert not saved["ok"] and {v["column"] for v in saved["violations"]} >= {"plan", "plan_tier", "amount"}
    assert Path(storage.reports_uri(root, settings.dataset, DAY), "validation.md").exists()
    assert not storage.exists(storage.raw_uri(root, settings.dataset, DAY))  # nothing downstream can read it

    generate(settings, DAY, "none")
    result = validate(settings, DAY)
    assert result["partitions"][0]["status"] == "validated"
    assert result["rows"] == settings.rows_per_day
    raw = datasets.read_parquet(storage.raw_uri(root, settings.dataset, DAY))
    assert str(raw["event_ts"].dtype) == "datetime64[us, UTC]" and raw["amount"].dtype == "float64"
    # The same source again is not re-read: the manifest remembers its fingerprint.
    assert validate(settings, DAY)["partitions"][0]["status"] == "unchanged"


@pytest.mark.parametrize("glob", [False, True])
def test_quarantine_keeps_every_file_of_the_day_when_two_share_a_name(
    settings, contract, tmp_path, clean_frame, glob
):
    """A day's files in two folders, each named part-0.csv: both are kept, at their paths below the day."""
    from pipelines.data.quarantine import quarantine

    for region, rows in (("north", clean_frame.iloc[:1000]), ("south", clean_frame.iloc[1000:])):
        (tmp_path / "src" / DAY.isoformat() / f"region={region}").mkdir(parents=True)
        written = tmp_path / "src" / DAY.isoformat() / f"region={region}" / "part-0.csv"
        rows.assign(amount=-1.0).to_csv(written, index=False)
    csv = contract.model_copy(update={"source": contract.source.model_copy(update={"format": "csv"})})
    pattern = "{ds}/*/part-0.csv" if glob else "{ds}"
    source = sources.partition(
        settings.model_copy(update={"source_uri": str(tmp_path / "src" / pattern)}), csv, DAY
    )
    report = check_partition(DaskEngine(client=None), source, csv)
    assert not report.ok
    folder = Path(quarantine(settings, source, report)) / "files"
    kept = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*.csv")}
    written = tmp_path / "src" / DAY.isoformat()
    assert kept == {
        name: (written / name).read_bytes() for name in ("region=north/part-0.csv", "region=south/part-0.csv")
    }


def test_duplicate_keys_are_the_same_whatever_type_a_batch_gives_a_column(contract):
    from pipelines.data.validation import DUPLICATE_ROWS, UNIQUE, duplicate_keys

    ints = pd.DataFrame(
        {"customer_id": [7, 8], "age": [30, 41], "event_ts": pd.to_datetime(["2026-11-20"] * 2)}
    )
    floats = ints.astype(
        {"customer_id": "float64", "age": "float64"}
    )  # a Spark batch holding a null elsewhere
    floats["event_ts"] = floats["event_ts"].dt.tz_localize("UTC").astype("datetime64[us, UTC]")
    unique = contract.model_copy(update={"unique": ["customer_id"]})
    typed = unique.model_copy(update={"columns": {**unique.columns, "customer_id": unique.columns["age"]}})
    keys = duplicate_keys(typed, list(ints.columns))
    assert keys[UNIQUE](ints).tolist() == keys[UNIQUE](floats).tolist() == ["7", "8"]
    assert keys[DUPLICATE_ROWS](ints).tolist() == keys[DUPLICATE_ROWS](floats).tolist()
    assert keys[DUPLICATE_ROWS](ints).str.startswith(("7#", "8#")).all()


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
@pytest.mark.parametrize("odd_first", [False, True])
def test_a_file_with_other_columns_than_the_days_others_is_named(
    settings, contract, tmp_path, clean_frame, fmt, odd_first
):
    a, b = clean_frame.iloc[:1000], clean_frame.iloc[1000:]
    for odd, column, rule in (
        (b.assign(plan_tier="x"), "plan_tier", "unexpected column"),
        (b.drop(columns=["plan"]), "plan", "missing column"),
    ):
        files = {"part-0": odd, "part-1": a} if odd_first else {"part-0": a, "part-1": odd}
        source, typed = day_of_files(
            settings, contract, tmp_path / rule / "src", {f"{k}.{fmt}": v for k, v in files.items()}, fmt
        )
        odd_name = f"part-{0 if odd_first else 1}.{fmt}"
        found, message = _broken(check_partition(DaskEngine(client=None), source, typed))
        assert list(found) == [(column, rule)]  # no crash, no column silently dropped or filled
        assert found[(column, rule)].examples == [odd_name] and found[(column, rule)].failing == 1
        assert f"column '{column}' breaks rule '{rule}': 1 failing, e.g. ['{odd_name}']" in message


def test_csv_files_whose_columns_come_in_another_order_are_read_by_name(
    settings, contract, tmp_path, clean_frame
):
    columns = list(clean_frame.columns)
    reordered = [*reversed(columns)]
    source, csv = day_of_files(
        settings,
        contract,
        tmp_path / "src",
        {"part-0.csv": clean_frame.iloc[:1000], "part-1.csv": clean_frame.iloc[1000:][reordered]},
        "csv",
    )
    report = check_partition(DaskEngine(client=None), source, csv)
    assert report.ok, report.violations
    read = DaskEngine(client=None).read(source.files, "csv").compute()
    read = read.set_index("customer_id").loc[clean_frame["customer_id"]]
    assert (read["amount"].astype(float).to_numpy() == clean_frame["amount"].to_numpy()).all()
    assert (read["age"].astype(int).to_numpy() == clean_frame["age"].to_numpy()).all()


def _csv_lines(frame: pd.DataFrame) -> list[str]:
    return frame.to_csv(index=False).splitlines()


@pytest.mark.parametrize(("change", "fields"), [(",EXTRA", 12), ("<cut>", 10)])
def test_a_csv_row_with_another_number_of_fields_is_a_malformed_row(
    settings, contract, tmp_path, clean_frame, change, fields
):
    lines = _csv_lines(clean_frame)
    lines[5] = lines[5].rsplit(",", 1)[0] if change == "<cut>" else lines[5] + change
    source, csv = day_of_files(
        settings,
        contract,
        tmp_path / "src",
        {"part-0.csv": clean_frame.iloc[:10], "part-1.csv": ("\n".join(lines) + "\n").encode()},
        "csv",
    )
    found, message = _broken(check_partition(DaskEngine(client=None), source, csv))
    assert list(found) == [("<table>", "malformed rows (another number of fields than the header)")]
    violation = next(iter(found.values()))
    assert violation.failing == 1
    assert violation.examples[0].startswith(f"part-1.csv: a row of {fields} fields, the header has 11: ")
    assert "malformed rows" in message


def test_a_csv_file_with_a_byte_order_mark_holds_its_contract(settings, contract, tmp_path, clean_frame):
    """Excel's "CSV UTF-8" starts with a byte order mark; it is not part of the first column's name."""
    raw = clean_frame.to_csv(index=False, encoding="utf-8-sig").encode("utf-8-sig")
    assert raw.startswith(b"\xef\xbb\xbf")
    report = _report(settings, contract, tmp_path, fmt="csv", raw=raw)
    assert report.ok, report.violations


def test_a_csv_header_with_a_trailing_delimiter_names_an_empty_column(
    settings, contract, tmp_path, clean_frame
):
    lines = clean_frame.to_csv(index=False).splitlines()
    raw = "".join(f"{line},\n" for line in lines).encode()
    found, message = _broken(_report(settings, contract, tmp_path, fmt="csv", raw=raw))
    assert sorted(found) == [("", "unexpected column")]
    assert "column '' breaks rule 'unexpected column'" in message


def test_a_csv_header_naming_a_column_twice_is_unreadable(settings, contract, tmp_path, clean_frame):
    lines = _csv_lines(clean_frame.head(3))
    lines[0] = lines[0].replace("region", "channel")
    found, _ = _broken(
        _report(settings, contract, tmp_path, fmt="csv", raw=("\n".join(lines) + "\n").encode())
    )
    assert found[("<table>", "unreadable file")].examples == [
        "part-0.csv: the header names column(s) 'channel' more than once"
    ]


def test_unique_64_bit_ids_are_compared_exactly(settings, contract, tmp_path, clean_frame):
    """Distinct ids above 2**53 (snowflake ids) are no duplicates; a repeated one is, named exactly."""
    from pipelines.data.contract import ColumnSpec

    ids = {**contract.columns, "customer_id": ColumnSpec(type="int")}
    typed = contract.model_copy(update={"columns": ids})
    frame = clean_frame.assign(customer_id=np.int64(1_700_000_000_000_000_000) + np.arange(len(clean_frame)))
    assert _report(settings, typed, tmp_path / "distinct", frame).ok
    frame.loc[7, "customer_id"] = frame.loc[8, "customer_id"]
    found, _ = _broken(_report(settings, typed, tmp_path / "repeated", frame))
    assert found[("customer_id", "unique")].failing == 1
    assert found[("customer_id", "unique")].examples == ["1700000000000000008"]
    assert ("<table>", "duplicate_rows") not in found  # the rows differ elsewhere


def test_csv_keys_compare_values_not_how_they_are_written(settings, contract, tmp_path, clean_frame):
    """In a CSV, 7 written as '07' is the same id, and a row written again with '07' and '12.50' for '12.5'
    is the same row: the raw partition would hold both with one value."""
    from pipelines.data.contract import ColumnSpec

    ids = {**contract.columns, "customer_id": ColumnSpec(type="int")}
    typed = contract.model_copy(update={"columns": ids})
    frame = clean_frame.assign(customer_id=np.arange(len(clean_frame)) + 1)
    again = frame.iloc[[4]].astype({"customer_id": object, "amount": object})
    again.loc[:, "customer_id"] = "05"
    again.loc[:, "amount"] = f"{frame['amount'].iloc[4]:.2f}0"
    assert float(again["amount"].iloc[0]) == frame["amount"].iloc[4]
    found, _ = _broken(_report(settings, typed, tmp_path, pd.concat([frame, again]), fmt="csv"))
    assert found[("customer_id", "unique")].failing == 1 and found[("customer_id", "unique")].examples == [
        "5"
    ]
    assert found[("<table>", "duplicate_rows")].failing == 1


def test_duplicate_keys_of_64_bit_integers_are_exact_in_an_int_or_a_float_batch(contract):
    from pipelines.data.validation import DUPLICATE_ROWS, UNIQUE, duplicate_keys

    big = np.int64(2**53) + np.arange(4, dtype="int64")  # 2**53 + 1 is no float64
    ints = pd.DataFrame({"customer_id": big, "age": [30, 30, 30, 30]})
    from pipelines.data.contract import ColumnSpec

    ids = {**contract.columns, "customer_id": ColumnSpec(type="int")}
    typed = contract.model_copy(update={"unique": ["customer_id"], "columns": ids})
    keys = duplicate_keys(typed, list(ints.columns))
    assert keys[UNIQUE](ints).tolist() == [str(v) for v in big]
    assert keys[DUPLICATE_ROWS](ints).nunique() == 4
    # A batch that hands the column over as floats (a null elsewhere): whole floats keep their keys and hashes.
    even = ints.iloc[[0, 2]]
    assert (
        keys[DUPLICATE_ROWS](even).tolist()
        == keys[DUPLICATE_ROWS](even.astype({"customer_id": float})).tolist()
    )


def _timing_out(monkeypatch, when: str) -> None:
    """A network filesystem's blip: opening (``open``) or reading (``read``) a Parquet source file times out."""
    from fsspec.implementations.local import LocalFileOpener, LocalFileSystem

    if when == "open":
        opened = LocalFileSystem._open

        def failing_open(self, path, mode="rb", *args, **kwargs):
            if path.endswith(".parquet") and "/source/" in path:
                raise TimeoutError("read timed out")
            return opened(self, path, mode, *args, **kwargs)

        monkeypatch.setattr(LocalFileSystem, "_open", failing_open)
    else:

        def failing_read(self, *args, **kwargs):
            raise TimeoutError("read timed out")

        monkeypatch.setattr(LocalFileOpener, "read", failing_read)


@pytest.mark.parametrize("when", ["open", "read"])
def test_a_transient_read_failure_fails_the_task_and_quarantines_nothing(
    settings, contract, tmp_path, clean_frame, monkeypatch, when
):
    from pipelines.data.generate import generate

    generate(settings, DAY, "none")
    _timing_out(monkeypatch, when)
    with pytest.raises(sources.SourceReadError, match="part-0.parquet failed: TimeoutError: read timed out"):
        validate(settings, DAY)
    root = settings.resolved_data_root
    assert not storage.exists(quarantine_uri(root, settings.dataset, DAY))
    assert not storage.exists(storage.raw_uri(root, settings.dataset, DAY))
    monkeypatch.undo()  # the retry reads the day
    assert validate(settings, DAY)["partitions"][0]["status"] == "validated"


def test_a_parquet_footer_that_does_not_parse_is_bad_data_even_as_an_os_error(
    settings, contract, tmp_path, clean_frame
):
    import struct

    # A footer of 20 bytes of zeros: pyarrow raises OSError ("Couldn't deserialize thrift"), yet it is content.
    raw = b"PAR1" + b"\0" * 50 + struct.pack("<I", 20) + b"PAR1"
    found, _ = _broken(_report(settings, contract, tmp_path, raw=raw))
    assert (
        found[("<table>", "unreadable file")]
        .examples[0]
        .startswith("part-0.parquet: not a readable parquet file: Couldn't deserialize thrift")
    )


@pytest.mark.parametrize("suffix", ["csv", "csv.gz"])
def test_a_csv_file_whose_quoted_values_hold_line_breaks_is_read_whole(
    settings, contract, tmp_path, clean_frame, monkeypatch, suffix
):
    from pipelines.engines import dask_engine

    monkeypatch.setattr(dask_engine, "CSV_BLOCK_BYTES", 4096)  # many blocks: a split would land in a quote
    noted = clean_frame.assign(note=[f'row {i}: "a",\nb' for i in range(len(clean_frame))])
    text = noted.to_csv(index=False).encode()
    source, csv = day_of_files(
        settings,
        contract,
        tmp_path / "src",
        {f"part-0.{suffix}": gzip.compress(text) if suffix.endswith("gz") else text},
        "csv",
    )
    assert sources.csv_shape(source.files[0], ",", len(noted.columns)).quoted
    report = check_partition(DaskEngine(client=None), source, csv)
    assert report.rows == len(clean_frame)
    assert [(v.column, v.rule) for v in report.violations] == [("note", "unexpected column")]
    clean_frame.to_csv(tmp_path / "plain.csv", index=False)
    plain = sources.csv_shape(str(tmp_path / "plain.csv"), ",", len(clean_frame.columns))
    assert not plain.quoted and plain.malformed == 0


@pytest.mark.parametrize("suffix", ["csv", "csv.gz"])
def test_a_quote_escaped_with_a_backslash_makes_the_file_unreadable_naming_the_line(tmp_path, suffix):
    """pandas read ``"C000\\"5133"`` as ``C000\\5133"`` and Spark as ``"C000\\"5133"`` (and ``"abc" ,`` as
    ``abc `` and ``abc``): the engines committed different rows from one file. Quotes inside an unquoted value,
    doubled ones and quoted line breaks are read alike by both, and stay readable."""
    files = {
        "backslash": b'id,name\n1,"C000\\"5133"\n2,x\n',
        "space_after": b'id,name\n1,ok\n2,"abc" \n',
        "alike": b'id,name\n1,5 "inch" screen\n2,"a ""b"" c"\n3,"multi\nline"\n',
        "unclosed": b'id,name\n1,"abc\n2,x\n',
    }
    found = {}
    for name, data in files.items():
        path = tmp_path / f"{name}.{suffix}"
        path.write_bytes(gzip.compress(data) if suffix.endswith("gz") else data)
        found[name] = sources.csv_shape(str(path), ",", 2).error
    assert found["alike"] is None
    assert found["backslash"].startswith(
        "not a readable csv file: a quoted value ends at line 2 with a quote "
    )
    assert "line 3" in found["space_after"] and 'write a quote doubled ("")' in found["space_after"]
    assert "a quoted value is never closed" in found["unclosed"], found["unclosed"]


@pytest.mark.parametrize("suffix", ["csv", "csv.gz"])
def test_a_csv_file_that_is_not_utf8_is_unreadable_naming_the_line_wherever_its_reads_end(
    settings, contract, tmp_path, clean_frame, suffix
):
    """Spark reads bytes that are not UTF-8 as U+FFFD and passes the day; pandas fails the read. A character cut
    between two reads of the file is UTF-8 all the same; a file cut inside a character is not. A NUL byte is
    UTF-8, but pandas ended the value at it and Spark kept it: refused alike."""
    import io

    text = clean_frame.to_csv(index=False).encode()
    lines = text.split(b"\n")
    accented, bad = lines[:], lines[:]
    accented[3] = lines[3].replace(b",", "é,".encode(), 1)  # two bytes: some read cuts it in two
    bad[8] = lines[8].replace(b",", b"\xe9,", 1)  # Latin-1
    nul = lines[:]
    nul[4] = lines[4].replace(b",", b"\x00x,", 1)  # pandas cut the value at the NUL, Spark kept it
    files = {
        "accented": b"\n".join(accented),
        "bad": b"\n".join(bad),
        "cut": text + "é".encode()[:1],
        # Lines ended by CRLF or by a lone CR are lines to every reader: counted as such (a CRLF cut between
        # two reads is one line break, not two).
        "bad_crlf": b"\r\n".join(bad),
        "bad_cr": b"\r".join(bad),
        "accented_cr": b"\r".join(accented),
        "accented_crlf": b"\r\n".join(accented),
        "nul": b"\n".join(nul),
        "nul_crlf": b"\r\n".join(nul),
    }
    expected = {
        "accented": None,
        "bad": "not UTF-8 at line 9, byte 0xe9",
        "cut": f"not UTF-8 at line {len(lines)}, byte 0xc3",
        "bad_crlf": "not UTF-8 at line 9, byte 0xe9",
        "bad_cr": "not UTF-8 at line 9, byte 0xe9",
        "accented_cr": None,
        "accented_crlf": None,
        "nul": "a NUL byte at line 5 (pandas ends the value there, Spark keeps it: the engines would commit "
        "different rows)",
    }
    expected["nul_crlf"] = expected["nul"]
    for name, data in files.items():
        for size in (1, 2, 7, 4096):  # every boundary between two reads is crossed somewhere
            scanned = sources._Scanned(io.BufferedReader(io.BytesIO(data)))
            try:
                while scanned.read(size):
                    pass
                error = None
            except (sources.NotUtf8Error, sources.NulByteError) as exc:
                error = str(exc)
            assert error == expected[name], (name, size)
            if error is None:  # read to its end: whether a line ends in a lone CR (such a file is read whole)
                assert scanned.lone_cr == name.endswith("_cr"), (name, size)
        path = tmp_path / f"{name}.{suffix}"
        path.write_bytes(gzip.compress(data) if suffix.endswith("gz") else data)
        found = sources.csv_shape(str(path), ",", len(clean_frame.columns)).error
        assert found == (expected[name] and f"not a readable csv file: {expected[name]}"), name
    source, csv = day_of_files(
        settings,
        contract,
        tmp_path / "src",
        {f"part-0.{suffix}": (tmp_path / f"bad.{suffix}").read_bytes()},
        "csv",
    )
    report = check_partition(DaskEngine(client=None), source, csv)
    assert [(v.column, v.rule, v.examples) for v in report.violations] == [
        ("<table>", "unreadable file", [f"part-0.{suffix}: not a readable csv file: {expected['bad']}"])
    ]


def test_a_parquet_file_whose_page_does_not_decode_is_an_unreadable_file_named_in_the_report(
    settings, contract, tmp_path, clean_frame
):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "whole.parquet"
    pq.write_table(pa.Table.from_pandas(clean_frame, preserve_index=False), path, compression="snappy")
    assert sources.parquet_damage(str(path)) is None
    data = bytearray(path.read_bytes())
    chunk = pq.read_metadata(path).row_group(0).column(list(clean_frame.columns).index("amount"))
    data[chunk.data_page_offset + 30 : chunk.data_page_offset + 330] = bytes(300)
    source, parquet = day_of_files(
        settings,
        contract,
        tmp_path / "src",
        {"part-0.parquet": clean_frame, "part-1.parquet": bytes(data)},
        "parquet",
    )
    assert sources.parquet_damage(source.files[1]).startswith("its data does not decode: ")
    found, _ = _broken(check_partition(DaskEngine(client=None), source, parquet))
    assert list(found) == [("<table>", "unreadable file")]
    assert (
        found[("<table>", "unreadable file")]
        .examples[0]
        .startswith("part-1.parquet: its data does not decode")
    )


def test_the_ingest_reads_a_csv_file_as_its_validation_read_it(settings, contract, tmp_path, monkeypatch):
    """Validation read files with quoted line breaks or lone-CR lines whole, and the ingest that commits the
    day read them again in blocks (a file over 64 MiB): a lone-CR file was committed once per block, a quoted
    line break cut its row in two, and a quoted CRLF kept its CR on one engine."""
    from pipelines.data.generate import generate_day
    from pipelines.data.validate import ingest_day
    from pipelines.engines import dask_engine

    monkeypatch.setattr(dask_engine, "CSV_BLOCK_BYTES", 4096)  # many blocks, as in a file of 64 MiB and more
    frame = generate_day(DAY, seed=7, rows=2000)
    ids = [f'{c}\r\n"x", y' if i % 7 == 0 else c for i, c in enumerate(frame["customer_id"])]
    files = {
        "lone_cr": (frame.to_csv(index=False, lineterminator="\r").encode(), list(frame["customer_id"])),
        "quoted_crlf": (
            frame.assign(customer_id=ids).to_csv(index=False).encode(),
            [c.replace("\r\n", "\n") for c in ids],
        ),
    }
    for name, (data, expected) in files.items():
        day_settings = settings.model_copy(
            update={
                "state_dir": tmp_path / name / "state",
                "source_uri": str(tmp_path / name / "src" / "{ds}"),
            }
        )
        source, csv = day_of_files(
            day_settings, contract, tmp_path / name / "src", {"part-0.csv": data}, "csv"
        )
        report, summary = ingest_day(DaskEngine(client=None), day_settings, csv, source)
        assert report is not None and report.ok and report.read_whole == source.files, (
            name,
            report.violations,
        )
        raw = datasets.read_parquet(summary["uri"])
        assert len(raw) == summary["rows"] == len(frame), name
        assert sorted(raw["customer_id"]) == sorted(expected), name


def test_a_source_rewritten_while_its_day_is_validated_commits_nothing(
    settings, contract, tmp_path, clean_frame, monkeypatch
):
    """Upstream rewrites the day between the check and the commit (a late correction): the commit reads the new
    rows, which nobody checked. The day fails as a read failure (retried, not quarantined), and no raw
    partition is committed."""
    from pipelines.data import validate as validate_module
    from pipelines.data.validate import ingest_day

    source, csv = day_of_files(settings, contract, tmp_path / "src", {"part-0.csv": clean_frame}, "csv")
    settings = settings.model_copy(update={"source_uri": str(tmp_path / "src" / "{ds}")})
    checked = validate_module.check_partition

    def check_then_upstream_rewrites(engine, day, rules):
        report = checked(engine, day, rules)
        clean_frame.assign(amount=-1.0).to_csv(source.files[0].removeprefix("file://"), index=False)
        return report

    monkeypatch.setattr(validate_module, "check_partition", check_then_upstream_rewrites)
    with pytest.raises(sources.SourceReadError, match="changed while it was validated"):
        ingest_day(DaskEngine(client=None), settings, csv, source)
    assert not storage.exists(storage.raw_uri(settings.resolved_data_root, settings.dataset, DAY))


def test_keys_of_several_columns_never_make_two_distinct_rows_one(contract):
    """The columns' values were joined with "|": ("a|b", "c") and ("a", "b|c") made one key, and so did a null
    and the text "null"; two distinct rows failed the day as duplicates, and it was quarantined."""
    from pipelines.data.validation import UNIQUE, duplicate_keys

    typed = contract.model_copy(update={"unique": ["customer_id", "plan"]})
    frame = pd.DataFrame(
        {"customer_id": ["a|b", "a", "zz1", "zz1", "a|b"], "plan": ["c", "b|c", None, "null", "c"]}
    )
    keys = duplicate_keys(typed, list(frame.columns))[UNIQUE](frame)
    assert keys.nunique() == 4  # the last row repeats the first: the one duplicate
    assert keys.iloc[0] == keys.iloc[4] == '["a|b", "c"]' and keys.iloc[2] == '["zz1", null]'
    one = contract.model_copy(update={"unique": ["customer_id"]})  # one column's key is its value, as before
    assert duplicate_keys(one, ["customer_id"])[UNIQUE](frame).tolist() == ["a|b", "a", "zz1", "zz1", "a|b"]


def test_csv_numbers_that_python_reads_but_no_one_writes_fail_by_name(
    settings, contract, tmp_path, clean_frame
):
    """Python's int and float read "1_9" as 19 and "٢٠" (Arabic-Indic digits) as 20: a mangled CSV field passed
    validation and was committed as another number."""
    from pipelines.data.validation import PLAIN_NUMBER_RULE

    frame = clean_frame.astype({"age": object, "amount": object})
    frame.loc[3, "age"] = "1_9"
    frame.loc[4, "age"] = "٢٠"
    frame.loc[5, "amount"] = "1_000.5"
    frame.loc[6, "amount"] = " 12.50 "  # a plain number, spaces around: read as written
    found, message = _broken(_report(settings, contract, tmp_path, frame, fmt="csv"))
    assert (found[("age", PLAIN_NUMBER_RULE)].failing, found[("amount", PLAIN_NUMBER_RULE)].failing) == (2, 1)
    assert sorted(found[("age", PLAIN_NUMBER_RULE)].examples) == sorted(["1_9", "٢٠"])
    assert found[("amount", PLAIN_NUMBER_RULE)].examples == ["1_000.5"]
    assert {rule for column, rule in found if column in ("age", "amount")} == {PLAIN_NUMBER_RULE}
    assert "column 'age' breaks rule" in message


def test_a_float_beyond_float32_s_range_breaks_its_rule(settings, contract, tmp_path, clean_frame):
    """A float column with no max passed 1e200 (finite), and prepare then failed with a bare OverflowError (the
    profile's variance); models compute in float32, where it is infinite, and serving refuses it."""
    from pipelines.data.contract import Contract

    columns = contract.model_dump()["columns"]
    columns["avg_basket"] = {**columns["avg_basket"], "max": None}
    unbounded = Contract.model_validate({**contract.model_dump(), "columns": columns})
    frame = clean_frame.copy()
    frame.loc[3, "avg_basket"] = 1e200
    frame.loc[4, "avg_basket"] = 3e38  # within float32's range: kept
    found, message = _broken(_report(settings, unbounded, tmp_path, frame))
    assert found[("avg_basket", "float32_range")].examples == [repr(1e200)]
    assert "column 'avg_basket' breaks rule 'float32_range'" in message
