"""Feature engineering as pure functions of the contract: pandas in, pandas out.

The one definition of the feature rules. Both engines run :func:`build_features` on every partition of
the training window (Spark through pandas UDFs), so they compute every feature with the same code, and the
served model runs :class:`FeatureEncoder` on raw request columns, so training and serving share it too.
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipelines.data.contract import Contract

if TYPE_CHECKING:
    import pyarrow as pa

SPLIT_COLUMN = "split"
#: The version of the feature rules: part of every dataset version, so bump it whenever
#: :func:`build_features` or :class:`FeatureEncoder` computes anything differently.
FEATURES_VERSION = 1


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


def raw_columns(contract: Contract) -> list[str]:
    """The prepared dataset's columns taken as read from the raw rows: keys, raw features, label."""
    return [contract.entity_id, contract.event_time, *contract.feature_columns, contract.label]


def output_columns(contract: Contract) -> list[str]:
    """Columns of a prepared dataset: keys, raw features, label, engineered features."""
    return [*raw_columns(contract), *feature_names(contract)]


def prepared_schema(contract: Contract) -> pa.Schema:
    """The Arrow schema of :func:`build_features`' output: typed keys and raw features, floats, the split."""
    import pyarrow as pa

    raw = contract.arrow_schema(raw_columns(contract))
    engineered = [pa.field(name, pa.float64()) for name in feature_names(contract)]
    return pa.schema([*raw, *engineered, pa.field(SPLIT_COLUMN, pa.string())])


def feature_matrix(frame: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """Engineered features (float64) from raw feature columns; nulls become 0 plus an indicator."""
    return pd.DataFrame(_engineered(frame, contract), index=frame.index)[feature_names(contract)]


class FeatureEncoder:
    """The same rules as :func:`feature_matrix` on plain column arrays, straight into one float matrix.

    Serving calls it on request columns (no DataFrame per request); training, evaluation and the Dask
    partitions go through :func:`_engineered`, which is built on it, so there is one definition.
    """

    def __init__(self, contract: Contract):
        self.contract = contract
        self.names = feature_names(contract)
        self.numeric = [
            (c, contract.columns[c].log, contract.columns[c].nullable) for c in contract.numeric_features
        ]
        self.categorical = [
            (c, {value: index for index, value in enumerate(contract.columns[c].allowed or [])})
            for c in contract.categorical_features
        ]

    def arrays(self, columns: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Engineered feature columns (float64 arrays) by name, from raw feature columns."""
        out: dict[str, np.ndarray] = {}
        for column, log_scale, nullable in self.numeric:
            raw = _float_array(columns[column])
            values = np.log1p(np.clip(raw, 0.0, None)) if log_scale else raw
            if nullable:
                missing = np.isnan(raw)
                out[f"f_{column}"] = np.where(missing, 0.0, values)
                out[f"f_{column}__missing"] = missing.astype("float64")
            else:
                out[f"f_{column}"] = values
        for column, lookup in self.categorical:
            codes = _category_codes(columns[column], lookup)
            for value, index in lookup.items():
                out[f"f_{column}__{value}"] = (codes == index).astype("float64")
        return out

    def matrix(self, columns: Mapping[str, Any], dtype: str = "float32") -> np.ndarray:
        """Rows x features, in model input order."""
        arrays = self.arrays(columns)
        return np.column_stack([arrays[name] for name in self.names]).astype(dtype, copy=False)


def _float_array(values: Any) -> np.ndarray:
    if isinstance(values, pd.Series):
        return values.astype("float64").to_numpy()
    return np.asarray(values, dtype="float64")


def _category_codes(values: Any, lookup: dict[Any, int]) -> np.ndarray:
    """Index of each value in the allowed list; -1 for anything else, nulls included."""
    if len(values) > 64:  # pandas' hash table wins on partitions; a dict wins on a request's few rows
        return pd.Categorical(np.asarray(values, dtype=object), categories=list(lookup)).codes
    return np.fromiter((lookup.get(v, -1) for v in values), dtype=np.int16, count=len(values))


def _engineered(frame: pd.DataFrame, contract: Contract) -> dict[str, pd.Series]:
    arrays = FeatureEncoder(contract).arrays(frame)
    return {name: pd.Series(values, index=frame.index) for name, values in arrays.items()}


def split_bucket(entity_ids: pd.Series) -> pd.Series:
    """Stable bucket 0..99 per entity: CRC32 of the UTF-8 id, the same function as Spark's ``crc32``."""
    crc = np.fromiter(
        (zlib.crc32(str(value).encode("utf-8")) for value in entity_ids),
        dtype=np.uint32,
        count=len(entity_ids),
    )
    return pd.Series((crc % 100).astype("int64"), index=entity_ids.index)


SPLITS = np.array(["train", "validation", "holdout"], dtype=object)


def assign_split(buckets: pd.Series, contract: Contract, latest: np.ndarray | None = None) -> pd.Series:
    """train / validation / holdout by the entity's bucket and the contract's shares.

    ``latest``: rows of the newest days, held out whole (:func:`holdout_start`); the other rows are split
    between train and validation in the contract's proportion, so no model trains on the held-out days.
    """
    train_cut = contract.splits["train"]
    validation_cut = train_cut + contract.splits["validation"]
    values = buckets.to_numpy()
    if latest is None:
        index = (values >= train_cut).astype("int8") + (values >= validation_cut)
    else:
        index = np.where(latest, 2, (values * validation_cut >= train_cut * 100).astype("int8"))
    return pd.Series(SPLITS[index], index=buckets.index)


class HoldoutWindowError(ValueError):
    """The policy's holdout.latest_days leaves no day of the window to train on (the CLI exits 2)."""


def holdout_start(end: dt.date, latest_days: int | None, window_days: int) -> dt.date | None:
    """The first held-out day when the newest ``latest_days`` days of the window are the holdout."""
    if latest_days is None:
        return None
    if latest_days >= window_days:
        raise HoldoutWindowError(
            f"holdout latest_days {latest_days} leaves nothing to train on in a {window_days}-day window: "
            "hold out fewer days or widen the window (CT_WINDOW_DAYS)"
        )
    return end - dt.timedelta(days=latest_days - 1)


def holdout_label(end: dt.date, latest_days: int | None, window_days: int) -> str:
    """How a prepared dataset's manifest names its holdout (``holdout``): what evaluate checks against the
    policy it judges with."""
    start = holdout_start(end, latest_days, window_days)
    return f"newest {latest_days} day(s), from {start}" if start else "hash split"


def build_features(
    frame: pd.DataFrame, contract: Contract, holdout_from: dt.date | None = None
) -> pd.DataFrame:
    """One partition of raw rows to prepared rows (keys, raw features, label, features, split)."""
    columns = {name: frame[name] for name in raw_columns(contract)}
    columns.update(_engineered(frame, contract))
    latest = None
    if holdout_from is not None:
        times = pd.to_datetime(frame[contract.event_time], utc=True)
        latest = (times >= pd.Timestamp(holdout_from, tz="UTC")).to_numpy()
    columns[SPLIT_COLUMN] = assign_split(split_bucket(frame[contract.entity_id]), contract, latest)
    return pd.DataFrame(columns, index=frame.index)[[*output_columns(contract), SPLIT_COLUMN]]
