"""Live quality: the champion's predictions of a day joined to the labels that arrived for them since.

A served row can be joined when its request sent the contract's entity id and event time (the prediction
log's ``entity_id`` and ``event_time``); the day's validated raw partition holds the source's rows with
their labels. The join runs on the engine; what comes back to the driver is, per distinct probability and
label, a count, from which the policy's primary metric is computed by the project's own definition
(:mod:`pipelines.evaluation.metrics`): the same figure as on the joined rows themselves.

A day is judged once its labels are due: ``label_delay_hours`` (the contract's) after the day ends.
Before that, and while the day has no validated partition yet, the result says so (a state, not a silence).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines.data import datasets, storage
from pipelines.data.contract import Contract
from pipelines.engines.base import Aggregation, parquet_footer
from pipelines.evaluation.metrics import metric
from pipelines.monitoring import logfiles
from pipelines.serving.predlog import LOG_COLUMNS

if TYPE_CHECKING:
    from pipelines.engines import Engine
    from pipelines.settings import Settings

JOIN_KEYS = ["entity_id", "event_time"]
LABEL = "actual"  # the source's label, once joined
# Per (probability, label, whether the key's labels agree): the served keys joined to labels.
COUNTS = pa.schema(
    [("probability", pa.float64()), (LABEL, pa.int64()), ("agreed", pa.bool_()), ("rows", pa.int64())]
)
KEYS = pa.schema([("key", pa.string()), ("keys", pa.int64())])
SERVED = pa.schema(
    [
        ("entity_id", pa.string()),
        ("event_time", LOG_COLUMNS["event_time"]),
        ("probability", pa.float64()),
    ]
)
TOTALS = pa.schema(
    [
        ("key", pa.string()),
        ("served", pa.int64()),
        ("champion", pa.int64()),
        ("scored", pa.int64()),
        ("joinable", pa.int64()),
        ("first_event", pa.int64()),  # the joinable rows' earliest and latest event times, microseconds
        ("last_event", pa.int64()),
    ]
)
TOTALS_HOW: dict[str, Aggregation] = {
    "served": "sum",
    "champion": "sum",
    "scored": "sum",
    "joinable": "sum",
    "first_event": "min",
    "last_event": "max",
}
_NO_EVENT = (np.iinfo("int64").max, np.iinfo("int64").min)
LABELS = pa.schema(
    [("entity_id", pa.string()), ("event_time", LOG_COLUMNS["event_time"]), (LABEL, pa.int64())]
)


def labels_day(end: dt.datetime, delay_hours: float) -> dt.date:
    """The latest day whose labels are all due by ``end``: it ended ``delay_hours`` before ``end`` or earlier."""
    return (end - dt.timedelta(hours=delay_hours)).date() - dt.timedelta(days=1)


def _utc(column: pd.Series) -> pd.Series:
    return pd.to_datetime(column, utc=True).astype("datetime64[us, UTC]")


def _joinable(frame: pd.DataFrame, champion: int) -> tuple[pd.Series, pd.Series, pd.Series]:
    """The rows the champion answered, those of them that hold a probability (serving logs none without one;
    another writer's log may), and those of these that carry both join keys."""
    answered = frame["model_version"] == champion
    scored = answered & frame["probability"].notna()
    return answered, scored, scored & frame["entity_id"].notna() & frame["event_time"].notna()


def _served_keys(frame: pd.DataFrame, champion: int) -> pd.DataFrame:
    """The champion's rows that carry both join keys."""
    frame = frame[_joinable(frame, champion)[2]]
    return pd.DataFrame(
        {
            "entity_id": frame["entity_id"].astype(str),
            "event_time": _utc(frame["event_time"]),
            "probability": frame["probability"].astype("float64"),
        }
    )


def _served_counts(frame: pd.DataFrame, champion: int) -> pd.DataFrame:
    """Rows of the day, those the champion answered, those of them with a probability, those of these that
    carry both keys, and the span of those rows' event times (one row)."""
    answered, scored, keyed = _joinable(frame, champion)
    counts = {
        "served": len(frame),
        "champion": int(answered.sum()),
        "scored": int(scored.sum()),
        "joinable": int(keyed.sum()),
    }
    first, last = _NO_EVENT
    if counts["joinable"]:
        times = _utc(frame.loc[keyed, "event_time"]).dt.tz_localize(None)
        micros = times.to_numpy("datetime64[us]").astype("int64")
        first, last = int(micros.min()), int(micros.max())
    counts |= {"first_event": first, "last_event": last}
    return pd.DataFrame({"key": [""], **{name: [value] for name, value in counts.items()}})


def label_days(day: dt.date, first_event: int, last_event: int, lookback_days: int) -> list[dt.date]:
    """The days whose labels the events served on ``day`` can have: those their event times (microseconds, the
    joinable rows' span) fall in, back to ``lookback_days`` before ``day`` and not after it (a source keeps
    an event's label in its event day's partition; a client scoring an event of days ago sends its time),
    and the served day itself."""
    if first_event > last_event:  # no joinable rows
        return [day]
    epoch = dt.date(1970, 1, 1)
    first = epoch + dt.timedelta(days=first_event // 86_400_000_000)
    last = epoch + dt.timedelta(days=last_event // 86_400_000_000)
    first, last = max(first, day - dt.timedelta(days=lookback_days)), min(last, day)
    days = [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]
    return days if day in days else [*days, day]  # the served day's own (validated, so never nothing to read)


def _labels(frame: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    entity = frame[contract.entity_id]
    if pd.api.types.is_integer_dtype(entity.dtype):
        entity = entity.astype("int64")
    return pd.DataFrame(
        {
            "entity_id": entity.astype(str),
            "event_time": _utc(frame[contract.event_time]),
            LABEL: frame[contract.label].astype("int64"),
        }
    )


def _counts(frame: pd.DataFrame) -> pd.DataFrame:
    """Joined keys by (probability, label, agreed): a key whose label rows disagree is ``agreed`` False."""
    keyed = pd.DataFrame(
        {
            "probability": frame["probability"].astype("float64"),
            LABEL: frame["low"].astype("int64"),
            "agreed": (frame["low"] == frame["high"]).astype(bool),
        }
    )
    grouped = keyed.groupby(["probability", LABEL, "agreed"], sort=False).size()
    return (
        grouped.rename("rows")
        .reset_index()
        .astype({"probability": "float64", LABEL: "int64", "agreed": bool, "rows": "int64"})
    )


def _key_count(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"key": [""], "keys": [len(frame)]})


def metric_from_counts(name: str, counts: pd.DataFrame) -> float:
    """A metric of the rows the counts stand for (each (probability, label) repeated ``rows`` times)."""
    repeats = counts["rows"].to_numpy()
    labels = np.repeat(counts[LABEL].to_numpy(dtype="float64"), repeats)
    probability = np.repeat(counts["probability"].to_numpy(dtype="float64"), repeats)
    return metric(name, labels, probability)


def _log_files(log_day: str) -> tuple[list[str], int]:
    """The day's log files that carry the join columns, and the rows of those that do not (older logs)."""
    with_keys, without = [], 0
    for uri in logfiles.log_files(log_day):
        metadata = parquet_footer(uri)  # one that does not parse: UnreadableParquetError, set aside
        names = set(metadata.schema.names)
        if set(JOIN_KEYS) <= names:
            with_keys.append(uri)
        else:
            without += metadata.num_rows
    return with_keys, without


LabelFiles = tuple[list[str], list[dt.date], list[dt.date]]


def _joined(
    engine: Engine,
    contract: Contract,
    files: list[str],
    champion: int,
    counted: dict[str, int],
    label_files: Callable[[int, int], LabelFiles],
) -> tuple[dict[str, int], pd.DataFrame, LabelFiles]:
    """On the engine: the served rows' counts, and the (probability, label) counts of those joined to a label.

    ``label_files(first, last)``: for the joinable rows' span of event times (microseconds), the raw files that
    hold their labels, the days read and the days not validated (:func:`_label_files`); returned as the third.
    """
    log = engine.select(engine.read(files), ["model_version", *JOIN_KEYS, "probability"])
    totals = engine.aggregate(log, lambda f: _served_counts(f, champion), TOTALS, ["key"], TOTALS_HOW)
    counted = counted | {
        name: counted[name] + int(totals[name].sum()) for name in ("served", "champion", "scored", "joinable")
    }
    labelled = label_files(int(totals["first_event"].min()), int(totals["last_event"].max()))
    raw_files, _, _ = labelled
    served = engine.map_partitions(log, lambda f: _served_keys(f, champion), SERVED)
    # An entity's event is one row however often it was served (a client's retry): its lowest probability,
    # which is exact on every engine. Its label rows are one label when they agree, and none when they do not.
    served = engine.reduce(served, JOIN_KEYS, {"probability": ("probability", "min")})
    raw = engine.select(engine.read(raw_files), [contract.entity_id, contract.event_time, contract.label])
    labels = engine.map_partitions(raw, lambda f: _labels(f, contract), LABELS)
    labels = engine.reduce(labels, JOIN_KEYS, {"low": (LABEL, "min"), "high": (LABEL, "max")})
    keys = engine.aggregate(served, _key_count, KEYS, ["key"], {"keys": "sum"})
    counted = counted | {"keys": counted["keys"] + int(keys["keys"].sum())}
    joined = engine.join(served, labels, JOIN_KEYS)
    how: dict[str, Aggregation] = {"rows": "sum"}
    found = engine.aggregate(joined, _counts, COUNTS, ["probability", LABEL, "agreed"], how)
    return counted, found, labelled


def _label_files(settings: Settings, day: dt.date, first: int, last: int) -> LabelFiles:
    """The validated raw files of the days the events served on ``day`` fall in (:func:`label_days`), the days
    read, and the days with no validated partition (their events count as unlabelled)."""
    read, missing, found = [], [], []
    for labelled in label_days(day, first, last, settings.monitor_label_lookback_days):
        uri = storage.raw_uri(settings.resolved_data_root, settings.dataset, labelled)
        if storage.exists(storage.join(uri, datasets.MANIFEST)):
            read.append(labelled)
            found += datasets.parquet_files(uri)
        else:
            missing.append(labelled)
    return found, read, missing


def live_quality(
    settings: Settings,
    engine_name: str,
    contract: Contract,
    day: dt.date,
    champion: int,
    primary_metric: str,
) -> dict[str, Any]:
    """The champion's live metric on ``day``: served rows joined to their labels; the counts of each step."""
    from pipelines.engines import open_engine

    result: dict[str, Any] = {"day": day.isoformat(), "metric": primary_metric, "value": None}
    files, older_rows = _log_files(storage.join(settings.prediction_log_uri, f"ds={day.isoformat()}"))
    if not files and not older_rows:
        return result | {"state": "no_traffic", "detail": f"nothing was served on {day}", "served_rows": 0}
    raw_day_uri = storage.raw_uri(settings.resolved_data_root, settings.dataset, day)
    if not storage.exists(storage.join(raw_day_uri, datasets.MANIFEST)):
        return result | {
            "state": "labels_not_validated",
            "detail": f"the labels of {day} are not validated yet (no raw partition at {raw_day_uri}; the "
            "retrain run of that day validates it)",
        }
    counted = {"served": older_rows, "champion": 0, "scored": 0, "joinable": 0, "keys": 0}
    joined_counts = pd.DataFrame(columns=COUNTS.names)
    read: list[dt.date] = []  # no join without log files that carry the keys
    missing: list[dt.date] = []
    if files:
        # The labels' size is unknown until the event days are: the served day's stands for them.
        size = storage.total_bytes([*files, *datasets.parquet_files(raw_day_uri)])
        with open_engine(engine_name, settings, size) as engine:
            try:
                counted, joined_counts, (_, read, missing) = _joined(
                    engine,
                    contract,
                    files,
                    champion,
                    counted,
                    lambda first, last: _label_files(settings, day, first, last),
                )
            except engine.read_failed_errors:  # a log file's data, or else: each log file is examined
                damaged = logfiles.undecodable(engine, files)
                if damaged is None:
                    raise
                raise damaged from None
    agreed = joined_counts[joined_counts["agreed"].astype(bool)] if len(joined_counts) else joined_counts
    rows = int(agreed["rows"].sum()) if len(agreed) else 0
    conflicting = int(joined_counts["rows"].sum()) - rows if len(joined_counts) else 0
    result |= {
        "served_rows": counted["served"],
        "champion_rows": counted["champion"],
        # Rows with no probability (another writer's) are counted apart: joined, they would pass for unlabelled.
        "unscored_rows": counted["champion"] - counted["scored"],
        "unjoinable_rows": counted["scored"] - counted["joinable"],
        "joinable_rows": counted["joinable"],
        "repeated_rows": counted["joinable"] - counted["keys"],  # an entity's event served again (a retry)
        "joined_rows": rows,  # distinct events joined to one label
        "conflicting_label_rows": conflicting,  # events whose label rows disagree: not counted
        "unlabelled_rows": counted["keys"] - rows - conflicting,
        # The days whose labels were joined (the served events' days), and those not validated (not joined).
        "label_days": [d.isoformat() for d in read],
        "label_days_not_validated": [d.isoformat() for d in missing],
    }
    joined_counts = agreed
    classes = joined_counts.loc[joined_counts["rows"] > 0, LABEL].nunique() if rows else 0
    if classes < 2:
        return result | {
            "state": "too_few_labels",
            "detail": f"{rows} served rows of {day} joined to a label, of {classes} class(es): no metric",
        }
    value = metric_from_counts(primary_metric, joined_counts)
    return result | {
        "state": "measured",
        "value": value,
        "detail": f"{primary_metric} {value:.4f} on {rows} rows",
    }
