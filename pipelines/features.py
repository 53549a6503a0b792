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
    return pd.DataFrame(_engineered(frame, contract), index=frame.index)[feature_names(contract)]


def _engineered(frame: pd.DataFrame, contract: Contract) -> dict[str, pd.Series]:
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
        allowed = contract.columns[column].allowed or []
        # Codes once (-1 for anything else, nulls included), then one cheap comparison per category.
        codes = pd.Categorical(frame[column], categories=allowed).codes
        for index, value in enumerate(allowed):
            out[f"f_{column}__{value}"] = pd.Series((codes == index).astype("float64"), index=frame.index)
    return out


def split_bucket(entity_ids: pd.Series) -> pd.Series:
    """Stable bucket 0..99 per entity: CRC32 of the UTF-8 id, the same function as Spark's ``crc32``."""
    crc = np.fromiter(
        (zlib.crc32(str(value).encode("utf-8")) for value in entity_ids),
        dtype=np.uint32,
        count=len(entity_ids),
    )
    return pd.Series((crc % 100).astype("int64"), index=entity_ids.index)


SPLITS = np.array(["train", "validation", "holdout"], dtype=object)


def assign_split(buckets: pd.Series, contract: Contract) -> pd.Series:
    train_cut = contract.splits["train"]
    validation_cut = train_cut + contract.splits["validation"]
    index = (buckets.to_numpy() >= train_cut).astype("int8") + (buckets.to_numpy() >= validation_cut)
    return pd.Series(SPLITS[index], index=buckets.index)


def build_features(frame: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """One partition of raw rows to prepared rows (keys, raw features, label, features, split)."""
    columns = {name: frame[name] for name in (contract.entity_id, contract.event_time,
                                              *contract.feature_columns, contract.label)}  # fmt: skip
    columns.update(_engineered(frame, contract))
    columns[SPLIT_COLUMN] = assign_split(split_bucket(frame[contract.entity_id]), contract)
    return pd.DataFrame(columns, index=frame.index)[[*output_columns(contract), SPLIT_COLUMN]]
