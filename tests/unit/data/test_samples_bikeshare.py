"""The bikeshare sample: ISLP's 2011 hours as daily Parquet files that hold their contract."""

from __future__ import annotations

import datetime as dt
import os

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipelines.data.samples import BIKESHARE_BUSY_RIDERS, bikeshare, write_sample


@pytest.fixture(scope="module")
def rides() -> pd.DataFrame:
    return bikeshare()


@pytest.fixture
def settings(tmp_path):
    from pipelines.settings import get_settings

    return get_settings(state_dir=tmp_path / "state", dataset="bikeshare")


def test_every_hour_of_2011_once_with_its_time_and_label(rides):
    assert len(rides) == 8645  # of 8,760: some hours had no record
    assert rides["hour_id"].is_unique and rides["hour_id"].between(0, 8759).all()
    assert str(rides["event_ts"].dtype) == "datetime64[ns, UTC]"  # pandas' default, as a team writes it
    first_day = pd.Timestamp("2011-01-01", tz="UTC")
    assert (rides["event_ts"].dt.hour == rides["hr"]).all()
    assert ((rides["event_ts"] - first_day).dt.days + 1 == rides["day"]).all()
    assert (rides["busy"] == (rides["bikers"] >= BIKESHARE_BUSY_RIDERS)).all()
    assert rides["holiday"].dtype == bool and rides["workingday"].dtype == bool
    # Real drift: the share of busy hours moves with the seasons.
    by_month = rides.groupby(rides["event_ts"].dt.month)["busy"].mean()
    assert by_month[1] < 0.2 and by_month[6] > 0.6


def test_writes_each_day_of_2011_in_the_range_as_parquet_that_holds_the_contract(settings, rides):
    from pipelines.data.contract import dataset_contract
    from pipelines.data.validation import merge_findings, partition_findings, table_violations

    contract = dataset_contract(settings)
    written = write_sample(settings, "bikeshare", dt.date(2011, 1, 2), days=4)  # 2010-12-30 .. 2011-01-02
    assert [uri.rsplit("/", 1)[-1] for uri in written] == ["2011-01-01.parquet", "2011-01-02.parquet"]
    for uri in written:
        day = dt.date.fromisoformat(uri.rsplit("/", 1)[-1].removesuffix(".parquet"))
        frame = pd.read_parquet(uri)
        expected = rides[rides["event_ts"].dt.date == day].reset_index(drop=True)
        pd.testing.assert_frame_equal(frame, expected)
        schema = pq.read_schema(uri)
        assert str(schema.field("event_ts").type) == "timestamp[ns, tz=UTC]"
        assert str(schema.field("holiday").type) == "bool" and str(schema.field("mnth").type) == "string"
        rows, nulls, violations = merge_findings(partition_findings(frame, contract, day, text=False))
        violations += table_violations(contract, rows, nulls, {})
        assert rows == len(expected) and violations == []


def test_writing_a_day_again_leaves_an_identical_file_alone_and_repairs_a_changed_one(settings):
    day = dt.date(2011, 6, 15)
    (uri,) = write_sample(settings, "bikeshare", day, days=1)
    original = open(uri, "rb").read()
    os.utime(uri, (1, 1))
    assert write_sample(settings, "bikeshare", day, days=1) == [uri]
    assert os.stat(uri).st_mtime == 1  # untouched: the source's fingerprint, and its validation, stand
    with open(uri, "wb") as fh:
        fh.write(b"not parquet")
    write_sample(settings, "bikeshare", day, days=1)
    assert open(uri, "rb").read() == original
    assert os.listdir(os.path.dirname(uri)) == ["2011-06-15.parquet"]  # no temporary file left behind


def test_a_range_outside_2011_and_another_dataset_are_refused(settings, tmp_path):
    from pipelines.settings import get_settings

    with pytest.raises(ValueError, match="2011 only"):
        write_sample(settings, "bikeshare", dt.date(2012, 3, 1), days=7)
    with pytest.raises(ValueError, match="CT_DATASET=bikeshare"):
        write_sample(get_settings(state_dir=tmp_path / "other"), "bikeshare", dt.date(2011, 3, 1), days=1)
    with pytest.raises(ValueError, match="unknown sample"):
        write_sample(settings, "iris", dt.date(2011, 3, 1), days=1)


def test_the_command_writes_the_days_and_says_why_it_cannot(tmp_path):
    from typer.testing import CliRunner

    from pipelines.cli import app

    env = {"CT_STATE_DIR": str(tmp_path)}
    runner = CliRunner()
    result = runner.invoke(app, ["sample-data", "bikeshare", "--end", "2011-03-31", "--days", "2"], env=env)
    assert result.exit_code == 0, result.output
    assert [line.rsplit("/", 1)[-1] for line in result.stdout.split()] == [
        "2011-03-30.parquet",
        "2011-03-31.parquet",
    ]
    refused = runner.invoke(app, ["sample-data", "bikeshare", "--end", "2010-12-31", "--days", "2"], env=env)
    assert refused.exit_code == 2 and "2011 only" in refused.output
