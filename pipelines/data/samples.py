"""Real data sets that ship inside installed packages, cut into daily partitions of a source.

They let a user try the bring-your-own-data path (and the tests prove it) on data nobody tuned the
pipeline to. ``breast_cancer`` is scikit-learn's Wisconsin diagnostic data set: 569 tumours, 30 numeric
measurements, label ``malignant``; rows are dealt over the days in a fixed shuffled order and written as
one CSV file a day, as an upstream export would be.
"""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np
import pandas as pd

from pipelines.data import sources, storage
from pipelines.data.contract import dataset_contract
from pipelines.settings import Settings

log = logging.getLogger(__name__)

SAMPLES = ("breast_cancer",)


def breast_cancer() -> pd.DataFrame:
    """The data set with snake_case columns, an id and a ``malignant`` label (1 = malignant)."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.data.copy()
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    frame.insert(0, "sample_id", [f"BC{i:04d}" for i in range(len(frame))])
    frame["malignant"] = (bunch.target == 0).astype("int64")
    return frame


def write_sample(settings: Settings, name: str, end: dt.date, days: int, seed: int = 0) -> list[str]:
    """Write ``days`` daily CSV partitions, ending on ``end``, at the dataset's source URI; return them."""
    if name not in SAMPLES:
        raise ValueError(f"unknown sample data set '{name}'; choose one of {', '.join(SAMPLES)}")
    contract = dataset_contract(settings)
    if contract.dataset != name:
        raise ValueError(
            f"settings point at dataset '{contract.dataset}', not '{name}' (set CT_DATASET={name})"
        )
    frame = breast_cancer()
    order = np.random.default_rng(seed).permutation(len(frame))
    written = []
    for offset, rows in enumerate(np.array_split(order, days)):
        day = end - dt.timedelta(days=days - 1 - offset)
        part = frame.iloc[np.sort(rows)].copy()
        seconds = np.linspace(0, 86_399, num=len(part)).astype("int64")
        part.insert(1, contract.event_time, pd.Timestamp(day, tz="UTC") + pd.to_timedelta(seconds, unit="s"))
        uri = sources.resolve(settings, contract, day)
        storage.write_text_atomic(uri, part.to_csv(index=False, date_format="%Y-%m-%dT%H:%M:%SZ"))
        log.info("wrote %d rows of %s to %s", len(part), name, uri)
        written.append(uri)
    return written
