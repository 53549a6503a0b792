"""Dask and Spark prepare the same features from the same raw data."""

import pandas as pd
import pytest

from pipelines import storage
from pipelines.generate import generate
from pipelines.prepare import prepare
from tests.conftest import DAY

pytestmark = pytest.mark.slow


def _read_all(uri: str) -> pd.DataFrame:
    frames = [storage.read_split(uri, s).assign(split=s) for s in ("train", "validation", "holdout")]
    return pd.concat(frames).sort_values(["customer_id", "event_ts"]).reset_index(drop=True)


def test_dask_and_spark_give_the_same_features(settings, tmp_path):
    generate(settings, DAY, "none")
    dask_result = prepare(settings, DAY, "dask")
    dask_frame = _read_all(dask_result["uri"])
    spark_settings = settings.model_copy(update={"data_root": None})
    spark_result = prepare(spark_settings, DAY, "spark")  # overwrites the same dataset folder atomically
    spark_frame = _read_all(spark_result["uri"])

    assert dask_result["rows"] == spark_result["rows"] == settings.rows_per_day
    assert dask_result["split_rows"] == spark_result["split_rows"]
    for frame in (dask_frame, spark_frame):
        for column in ("customer_id", "channel", "region", "plan", "split"):
            frame[column] = frame[column].astype(object)
    pd.testing.assert_frame_equal(dask_frame, spark_frame, check_exact=False, rtol=1e-12)
    assert dask_result["content_hash"] == spark_result["content_hash"]
    manifest = storage.read_manifest(spark_result["uri"])
    assert manifest.extra["engine"] == "spark" and manifest.rows == settings.rows_per_day


def test_prepare_refuses_uncommitted_raw_data(settings):
    with pytest.raises(storage.DatasetNotFoundError):
        prepare(settings, DAY, "dask")
    with pytest.raises(ValueError, match="unknown engine 'pandas'"):
        prepare(settings, DAY, "pandas")
