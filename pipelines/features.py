"""Feature engineering as pure functions of the contract: pandas in, pandas out.

Dask runs :func:`build_features` on each partition; the Spark engine expresses the same rules in Spark
SQL (see ``prepare.spark_features``) and a test proves the two equal. The served model calls
:func:`feature_matrix` on raw request rows, so training and serving share one definition.
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from pipelines.contract import Contract

SPLIT_COLUMN = "split"


def feature_names(contract: Contract) -> list[str]:
    """Engineered feature columns, in model input order."""
    names: list[str] = []
    for column in contract.numeric_features:
        names.append(f"f_{column}")
        if contract.columns[column].nullable:
            names.append(f"f_{column}__missing")
    for column in contract.categorical_features:
        names.extend(f"f_{column}__{value}" for value in contract.columns[column].allowed or [])
    return names


def output_columns(contract: Contract) -> list[str]:
    """Columns of a prepared dataset: keys, raw features, label, engineered features."""
    keys = [contract.entity_id, contract.event_time]
    return [*keys, *contract.feature_columns, contract.label, *feature_names(contract)]


def feature_matrix(frame: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """Engineered features (float64) from raw feature columns; nulls become 0 plus an indicator."""
    out: dict[str, pd.Series] = {}
    for column in contract.numeric_features:
        spec = contract.columns[column]
        values = frame[column].astype("float64")
        if spec.log:
            values = np.log1p(values.clip(lower=0.0))
        if spec.nullable:
            out[f"f_{column}"] = values.fillna(0.0)
            out[f"f_{column}__missing"] = frame[column].isna().astype("float64")
        else:
            out[f"f_{column}"] = values
    for column in contract.categorical_features:
        raw = frame[column]
        for value in contract.columns[column].allowed or []:
            out[f"f_{column}__{value}"] = (raw == value).astype("float64")
    return pd.DataFrame(out, index=frame.index)[feature_names(contract)]


def split_bucket(entity_ids: pd.Series) -> pd.Series:
    """Stable bucket 0..99 per entity: CRC32 of the UTF-8 id, the same function as Spark's ``crc32``."""
    crc = np.fromiter(
        (zlib.crc32(str(value).encode("utf-8")) for value in entity_ids),
        dtype=np.uint32,
        count=len(entity_ids),
    )
    return pd.Series((crc % 100).astype("int64"), index=entity_ids.index)


def assign_split(buckets: pd.Series, contract: Contract) -> pd.Series:
    train_cut = contract.splits["train"]
    validation_cut = train_cut + contract.splits["validation"]
    return pd.Series(
        np.select([buckets < train_cut, buckets < validation_cut], ["train", "validation"], "holdout"),
        index=buckets.index,
    )


def build_features(frame: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """One partition of raw rows to prepared rows (keys, raw features, label, features, split)."""
    prepared = frame[
        [contract.entity_id, contract.event_time, *contract.feature_columns, contract.label]
    ].copy()
    prepared = pd.concat([prepared, feature_matrix(frame, contract)], axis=1)
    prepared[SPLIT_COLUMN] = assign_split(split_bucket(frame[contract.entity_id]), contract)
    return prepared[[*output_columns(contract), SPLIT_COLUMN]]
