"""Real data sets that ship inside installed packages, cut into daily partitions of a source.

They let a user try the bring-your-own-data path (and the tests prove it) on data nobody tuned the
pipeline to:

- ``breast_cancer`` is scikit-learn's Wisconsin diagnostic data set: 569 tumours, 30 numeric measurements,
  label ``malignant``; rows are dealt over the days in a fixed shuffled order and written as one CSV file a
  day, as an upstream export would be.
- ``bikeshare`` is ISLP's Capital Bikeshare data (Washington DC, 2011, one row per hour, 8,645 hours):
  each row stays on its real day and hour, and each day of 2011 is one Parquet file written by pandas with
  its defaults. Riding grows over the year and swings with the seasons, so windows months apart drift
  for real; the label ``busy`` is an hour with at least :data:`BIKESHARE_BUSY_RIDERS` riders.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import uuid

import numpy as np
import pandas as pd
from fsspec.core import url_to_fs

from pipelines.data import sources
from pipelines.data.contract import Contract, dataset_contract
from pipelines.settings import Settings

log = logging.getLogger(__name__)

SAMPLES = ("breast_cancer", "bikeshare")

BIKESHARE_FIRST_DAY = dt.date(2011, 1, 1)
BIKESHARE_LAST_DAY = dt.date(2011, 12, 31)
#: An hour is busy when at least this many riders start a trip: about the median hour of 2011 (109), so
#: half the year's hours are busy, but 15% of January's and 70% of June's: the base rate moves with the
#: seasons. A fixed count, not a quantile of the window, so the label means the same thing in every window.
BIKESHARE_BUSY_RIDERS = 100


def breast_cancer() -> pd.DataFrame:
    """The data set with snake_case columns, an id and a ``malignant`` label (1 = malignant)."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.data.copy()
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    frame.insert(0, "sample_id", [f"BC{i:04d}" for i in range(len(frame))])
    frame["malignant"] = (bunch.target == 0).astype("int64")
    return frame


def bikeshare() -> pd.DataFrame:
    """The 2011 hours of ISLP's Bikeshare.csv with ``hour_id``, ``event_ts`` (UTC) and the ``busy`` label.

    ``hour_id`` counts hours from 2011-01-01 00:00; the flags ``holiday`` and ``workingday`` become booleans;
    every other column is kept as the file has it. Read from the package's data file, so ISLP's own imports
    (torch, lightning and more) are not needed.
    """
    from importlib.resources import files

    with files("ISLP").joinpath("data", "Bikeshare.csv").open("rb") as fh:
        frame = pd.read_csv(fh)
    hours = (frame["day"].astype("int64") - 1) * 24 + frame["hr"].astype("int64")
    frame["hr"] = frame["hr"].astype("int64")
    frame["holiday"] = frame["holiday"].astype(bool)
    frame["workingday"] = frame["workingday"].astype(bool)
    frame.insert(0, "hour_id", hours)
    frame.insert(
        1, "event_ts", pd.Timestamp(BIKESHARE_FIRST_DAY, tz="UTC") + pd.to_timedelta(hours, unit="h")
    )
    frame["busy"] = (frame["bikers"] >= BIKESHARE_BUSY_RIDERS).astype("int64")
    return frame


def write_sample(settings: Settings, name: str, end: dt.date, days: int, seed: int = 0) -> list[str]:
    """Write the sample's daily partitions for the ``days`` days ending on ``end`` at the source URI; return them.

    ``breast_cancer`` is dealt over those days: sample ``i`` of a seeded order falls on the days whose ordinal is
    ``i`` modulo ``days``, so any ``days`` days in a row hold each sample once, and a day holds the same rows
    whichever window of as many days wrote it (its rows were dealt by their place in the window: a window one day later rewrote
    every day); ``bikeshare`` writes the days of the range
    that fall in 2011, each with its own hours, and refuses a range with none.
    """
    if name not in SAMPLES:
        raise ValueError(f"unknown sample data set '{name}'; choose one of {', '.join(SAMPLES)}")
    if days < 1:
        raise ValueError(f"days must be at least 1, not {days}")
    if days > end.toordinal():  # the range would start before 0001-01-01 (an OverflowError's traceback)
        raise ValueError(f"{days} days ending on {end} start before the year 1: at most {end.toordinal()}")
    contract = dataset_contract(settings)
    if contract.dataset != name:
        raise ValueError(
            f"settings point at dataset '{contract.dataset}', not '{name}' (set CT_DATASET={name})"
        )
    if name == "bikeshare":
        return _write_bikeshare(settings, contract, end, days)
    return _write_breast_cancer(settings, contract, end, days, seed)


def _write_breast_cancer(
    settings: Settings, contract: Contract, end: dt.date, days: int, seed: int
) -> list[str]:
    frame = breast_cancer()
    slot = np.empty(len(frame), dtype="int64")
    slot[np.random.default_rng(seed).permutation(len(frame))] = np.arange(len(frame)) % days
    written = []
    for offset in range(days):
        day = end - dt.timedelta(days=days - 1 - offset)
        part = frame.iloc[np.flatnonzero(slot == day.toordinal() % days)].copy()
        seconds = np.linspace(0, 86_399, num=len(part)).astype("int64")
        part.insert(1, contract.event_time, pd.Timestamp(day, tz="UTC") + pd.to_timedelta(seconds, unit="s"))
        uri = sources.resolve(settings, contract, day)
        data = part.to_csv(index=False, date_format="%Y-%m-%dT%H:%M:%SZ").encode()
        if _write_bytes_if_changed(uri, data):
            log.info("wrote %d rows of breast_cancer to %s", len(part), uri)
        else:
            log.info("%s already holds these %d rows of breast_cancer; left as it is", uri, len(part))
        written.append(uri)
    return written


def _write_bikeshare(settings: Settings, contract: Contract, end: dt.date, days: int) -> list[str]:
    first = max(end - dt.timedelta(days=days - 1), BIKESHARE_FIRST_DAY)
    last = min(end, BIKESHARE_LAST_DAY)
    if first > last:
        raise ValueError(
            f"bikeshare holds 2011 only ({BIKESHARE_FIRST_DAY} to {BIKESHARE_LAST_DAY}); the {days} day(s) "
            f"ending on {end} have no data"
        )
    frame = bikeshare()
    day_of_row = frame[contract.event_time].dt.date
    written = []
    for offset in range((last - first).days + 1):
        day = first + dt.timedelta(days=offset)
        part = frame[day_of_row == day].reset_index(drop=True)
        if part.empty:  # no day of 2011 is empty; a gap would be the contract's source.missing_days to judge
            log.warning("bikeshare has no rows for %s; nothing written", day)
            continue
        uri = sources.resolve(settings, contract, day)
        buffer = io.BytesIO()
        part.to_parquet(buffer, index=False)  # pandas' defaults: pyarrow, snappy, nanosecond timestamps
        if _write_bytes_if_changed(uri, buffer.getvalue()):
            log.info("wrote %d rows of bikeshare to %s", len(part), uri)
        else:
            log.info("%s already holds these %d rows of bikeshare; left as it is", uri, len(part))
        written.append(uri)
    return written


def _write_bytes_if_changed(uri: str, data: bytes) -> bool:
    """Write ``data`` through a temporary name and a rename unless the file already holds exactly it.

    Leaving an identical file alone keeps its modification time, so the source's fingerprint, and with it
    the validated raw partition, stays as it was.
    """
    fs, path = url_to_fs(uri)
    if fs.isfile(path) and int(fs.info(path).get("size") or 0) == len(data) and fs.cat_file(path) == data:
        return False
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    tmp = f"{path}.__tmp-{uuid.uuid4().hex[:8]}"
    with fs.open(tmp, "wb") as fh:
        fh.write(data)
    fs.mv(tmp, path)
    return True
