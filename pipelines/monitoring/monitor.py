"""The monitor: one interval of served traffic judged against the champion, and a retrain asked for on evidence.

For an interval [start, end) of the prediction log it computes on the engine (:mod:`pipelines.monitoring.served`)
the features' profile, the champion's served probabilities and the values outside the contract, and judges
against the champion's reference profile with the gate's own drift tests:

- feature drift and critical columns (each feature's test from the contract);
- prediction drift: the served probabilities against the champion's on its own holdout (scored once per
  version from its verified files and kept under ``<monitoring>/reference/``);
- live quality: the champion's primary metric (the promotion policy's) on the latest day whose labels are
  due, joined on the engine (:mod:`pipelines.monitoring.live`), against its holdout figure;
- data quality: nulls against the reference, values outside the contract, volume against the same hours of
  earlier days.

The monitoring policy turns breaches into a verdict (:mod:`pipelines.monitoring.verdict`): a retrain asked
for, suppressed (cooldown, daily budget, asked for already) or not needed; a triggered or suppressed verdict
is kept as a trigger record. Everything is written under ``<data_root>/monitoring/<dataset>/``, atomically:
the report (Evidently's HTML with a banner of every signal, the JSON, Prometheus text), the interval's
figures (what ``pipelines monitor history`` reads), and logged to the MLflow experiment
``<experiment>-monitoring``, tagged with the champion's version. The same interval judged again gives the
same verdict, and asks for nothing twice.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import html
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.data import datasets, storage
from pipelines.data.contract import Contract, dataset_contract
from pipelines.data.profile import Scheme, frame_profile
from pipelines.engines.base import UnreadableParquetError
from pipelines.evaluation import drift_stats
from pipelines.evaluation.policy import load_policy
from pipelines.monitoring import logfiles, retention, verdict
from pipelines.monitoring.live import labels_day, live_quality
from pipelines.monitoring.policy import (
    MonitoringPolicy,
    check_against_contract,
    load_monitoring_policy,
)
from pipelines.monitoring.served import LOG_READ, PROBABILITY, served_figures, served_partials
from pipelines.settings import Settings

log = logging.getLogger(__name__)


def _utc(moment: dt.datetime, what: str) -> dt.datetime:
    """A plain ``datetime`` in UTC (days and names are UTC's). Airflow hands a task pendulum's ``DateTime``,
    whose arithmetic drops a stdlib time zone: ``earlier()`` on one gave a naive time. A naive ``moment`` is
    refused, naming ``what`` it is: ``astimezone`` read it as this host's local time, so one call judged
    another hour on each host, and west of UTC an hour not yet over."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(
            f"{what} must be timezone-aware (UTC); got {moment.isoformat()} with no time zone, which would be "
            "read as this host's local time"
        )
    moment = moment.astimezone(dt.UTC)
    return dt.datetime.combine(moment.date(), moment.time(), tzinfo=dt.UTC)


@dataclass(frozen=True)
class Interval:
    """A span of served traffic, [start, end), in UTC."""

    start: dt.datetime
    end: dt.datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", _utc(self.start, "an interval's start"))
        object.__setattr__(self, "end", _utc(self.end, "an interval's end"))
        # Compared in UTC: one zone's wall clocks would compare wrongly across a DST change.
        if self.end <= self.start:
            raise ValueError(f"interval ends ({self.end}) before it starts ({self.start})")

    @property
    def hours(self) -> float:
        return (self.end - self.start).total_seconds() / 3600

    @property
    def name(self) -> str:
        """``2026-11-30T1300-1h``: its start (UTC, to the minute) and its length: unique, safe in a path."""
        return f"{self.start:%Y-%m-%dT%H%M}-{self.hours:g}h"

    @property
    def day(self) -> dt.date:
        """The day it starts on (where its report and figures are filed)."""
        return self.start.date()

    @property
    def last_day(self) -> dt.date:
        """The day its last moment falls on (an interval ending at midnight: the day before)."""
        return verdict.day_of(self.end)

    def days(self) -> list[dt.date]:
        """The UTC days it touches (the prediction log's ``ds=`` folders)."""
        return [self.day + dt.timedelta(days=n) for n in range((self.last_day - self.day).days + 1)]

    def earlier(self, days: int) -> Interval:
        """The same hours ``days`` days before."""
        return Interval(self.start - dt.timedelta(days=days), self.end - dt.timedelta(days=days))

    @classmethod
    def whole_hours(cls, start: dt.datetime, end: dt.datetime) -> Interval:
        """A scheduled run's data interval (it starts at 5 past, once serving has written the hour's last rows),
        to the whole hours."""
        # UTC's hours, whatever zone the times came in
        start, end = _utc(start, "a data interval's start"), _utc(end, "a data interval's end")
        return cls(
            start.replace(minute=0, second=0, microsecond=0), end.replace(minute=0, second=0, microsecond=0)
        )

    @classmethod
    def hour_up_to(cls, moment: dt.datetime) -> Interval:
        """The hour up to ``moment``, to the end of its minute: intervals are named to the minute, so two asks
        in one minute judge the same interval (and the second never asks twice)."""
        end = _utc(moment, "the moment an hour is judged up to").replace(second=0, microsecond=0)
        end += dt.timedelta(minutes=1)
        return cls(end - dt.timedelta(hours=1), end)

    @classmethod
    def of(cls, day: dt.date, hour: int | None = None) -> Interval:
        """One hour of a day, or the whole day."""
        if hour is not None and not 0 <= hour <= 23:
            raise ValueError(f"hour {hour} is not 0-23")
        start = dt.datetime.combine(day, dt.time(hour or 0), tzinfo=dt.UTC)
        return cls(start, start + dt.timedelta(hours=1 if hour is not None else 24))


# A flush's own write (an object store's upload), and the clocks of serving's hosts and the monitor's a little
# apart: rows served before an interval's end are in the log this long after serving's longest buffering.
LOG_WRITE_MARGIN = dt.timedelta(seconds=5)


class IntervalNotOverError(ValueError):
    """An interval judged before every row served in it can be in the prediction log: its volume, drift and
    verdict would be those of the part served so far, and would change when it is judged again."""


def judgeable_from(settings: Settings, interval: Interval) -> dt.datetime:
    """When every row served in ``interval`` is in the prediction log: its end, plus the longest a served row
    waits in serving's buffer (``prediction_log_flush_seconds``) and :data:`LOG_WRITE_MARGIN`."""
    return interval.end + dt.timedelta(seconds=settings.prediction_log_flush_seconds) + LOG_WRITE_MARGIN


def check_over(settings: Settings, interval: Interval, now: dt.datetime) -> None:
    """Refuse an interval that is not over (or whose last rows may not be written yet) at ``now``."""
    ready = judgeable_from(settings, interval)
    now = _utc(now, "the time an interval is judged at (now)")
    if now < ready:
        raise IntervalNotOverError(
            f"interval {interval.name} ends at {interval.end:%Y-%m-%d %H:%M} UTC and can be judged from "
            f"{ready:%Y-%m-%d %H:%M:%S} UTC (its end, plus prediction_log_flush_seconds="
            f"{settings.prediction_log_flush_seconds:g} and {LOG_WRITE_MARGIN.total_seconds():g} s for the "
            f"write), not at {now:%Y-%m-%d %H:%M:%S} UTC: judged now, its volume, drift and verdict would "
            "be those of the part served so far. Judge an hour that has ended (--hour), or wait"
        )


def wait_until_judgeable(
    settings: Settings,
    interval: Interval,
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    sleep: Callable[[float], object] = time.sleep,
) -> float:
    """Wait until ``interval`` can be judged, and return the seconds waited. A run triggered by hand judges the
    hour up to the end of its minute, so it waits out that minute and serving's last flush (about a minute at
    most). An interval further off (a logical date in the future) is refused, not waited for for hours."""
    longest = dt.timedelta(minutes=1, seconds=settings.prediction_log_flush_seconds) + LOG_WRITE_MARGIN
    now = _utc(clock(), "the clock's time")
    wait = judgeable_from(settings, interval) - now
    if wait > longest:
        check_over(settings, interval, now)  # raises: not over for a while yet
    if wait <= dt.timedelta(0):
        return 0.0
    log.info("interval %s can be judged in %.0f s: waiting", interval.name, wait.total_seconds())
    sleep(wait.total_seconds())
    return wait.total_seconds()


@contextlib.contextmanager
def _timed(seconds: dict[str, float], phase: str) -> Iterator[None]:
    """Add the wall time of the block to ``seconds[phase]`` (the report says where an interval's time went)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        seconds[phase] = seconds.get(phase, 0.0) + time.perf_counter() - started


def figures_uri(settings: Settings, interval: Interval) -> str:
    return storage.join(settings.monitoring_uri, "figures", f"ds={interval.day}", f"{interval.name}.json")


def report_uri(settings: Settings, interval: Interval) -> str:
    return storage.join(settings.monitoring_uri, "reports", f"ds={interval.day}", interval.name)


def trigger_uri(settings: Settings, interval: Interval) -> str:
    return storage.join(settings.monitoring_uri, "triggers", f"ds={interval.day}", f"{interval.name}.json")


def read_figures(settings: Settings, since: dt.date | None = None) -> list[dict[str, Any]]:
    """Every interval's figures (filed on or after ``since``), oldest first."""
    found = [storage.read_json(uri) for uri in _day_files(settings, "figures", since)]
    return sorted(found, key=lambda f: (f["start"], f["hours"]))


def read_triggers(settings: Settings, since: dt.date | None = None) -> list[dict[str, Any]]:
    """Every trigger record (asked for or suppressed; filed on or after ``since``), oldest first: by the end of
    its interval, then by when it was decided (an hour and its whole day end together)."""
    found = [storage.read_json(uri) for uri in _day_files(settings, "triggers", since)]
    return sorted(found, key=lambda r: (r["at"], r.get("decided_at", "")))


def _day_files(settings: Settings, kind: str, since: dt.date | None) -> list[str]:
    """The JSON files under ``<monitoring>/<kind>/ds=<day>/`` of the days on or after ``since``."""
    from fsspec.core import url_to_fs

    fs, root = url_to_fs(storage.join(settings.monitoring_uri, kind))
    if not fs.exists(root):
        return []
    days = sorted(p for p in fs.ls(root, detail=False) if p.rsplit("/", 1)[-1].startswith("ds="))
    if since is not None:
        days = [p for p in days if p.rsplit("ds=", 1)[-1] >= since.isoformat()]
    names = [n for day in days for n in sorted(fs.ls(day, detail=False)) if n.endswith(".json")]
    return [fs.unstrip_protocol(n) for n in names if "/." not in n]


def _baseline(settings: Settings, interval: Interval, days: int) -> list[int]:
    """Served rows of the same hours on each of the ``days`` days before that were judged against a champion
    (an interval with none read no log: its 0 rows were not counted, and made the first days' traffic after
    the first promotion a volume breach against a usual of 0)."""
    found = []
    for n in range(1, days + 1):
        uri = figures_uri(settings, interval.earlier(n))
        if storage.exists(uri) and (figures := storage.read_json(uri))["champion"] is not None:
            found.append(int(figures["rows"]))
    return found


def _champion_then(
    settings: Settings, client: Any, end: dt.datetime
) -> tuple[int | None, dt.datetime | None]:
    """The champion when the interval ended, and when the champion last changed up to then.

    An interval judged late (a retry, a re-run, a catch-up) is judged as it was on time: against the model
    that was champion while it was served, with the settling time of the promotions before its end, whatever
    was promoted or rolled back since.
    """
    from pipelines.release import audit, history

    audit.champion(settings, client)  # refuses a registry whose alias was moved outside the gate
    rows = history.as_of(history.read(settings, settings.model_name), end)
    moves = [r for r in rows if r["outcome"] in history.MOVED]
    return history.champion(rows), dt.datetime.fromisoformat(moves[-1]["at"]) if moves else None


def _prediction_reference(
    settings: Settings, client: Any, version: Any, contract: Contract
) -> dict[str, Any] | str:
    """The profile of the champion's probabilities on its own holdout; or why there is none."""
    uri = storage.join(settings.monitoring_uri, "reference", f"v{version.version}-predictions.json")
    if storage.exists(uri):
        return dict(storage.read_json(uri))
    # Only the first run of a champion scores: later runs do not import the evaluation stack (16-54 ms).
    from pipelines.evaluation.evaluate import EvaluationError, score_version

    dataset_uri = version.tags.get("dataset.uri")
    if not dataset_uri or not storage.exists(storage.join(dataset_uri, datasets.MANIFEST)):
        return f"the holdout of v{version.version} ({dataset_uri}) is gone: no reference for its predictions"
    holdout = datasets.read_split(dataset_uri, "holdout", contract.feature_columns)
    try:
        _, probability, _ = score_version(
            client, settings.model_name, int(version.version), holdout, contract
        )
    except EvaluationError as exc:
        return f"the champion could not score its holdout: {exc}"
    import pandas as pd

    profile = frame_profile(pd.DataFrame({PROBABILITY: probability}), [PROBABILITY], [], contract.dataset)
    reference = profile["columns"][PROBABILITY] | {"rows": len(probability), "version": int(version.version)}
    storage.write_json_atomic(uri, reference)
    return reference


def _holdout_figure(client: Any, version: Any, metric_name: str) -> float | None:
    from pipelines.release import tracking

    metrics = client.get_run(tracking.run_of(version)).data.metrics
    value = metrics.get(f"holdout_{metric_name}")
    return None if value is None else float(value)


def _written_before(uri: str, start: dt.datetime) -> bool:
    """A log file written (its name's time) before ``start`` holds no row served at or after it."""
    written = logfiles.written_ns(uri)
    return written is not None and written < logfiles.ns_of(start)


def _compact_log(settings: Settings, interval: Interval, live_day: dt.date) -> dict[str, Any]:
    """The log's closed hours of the interval's days compacted before they are read (:mod:`logfiles`); of
    the day before, whose folder holds the flushes of the next day's first seconds; and of the day whose
    labels are joined (a day the monitor did not run on is otherwise read a file at a time). A storage
    failure (``OSError``), or a file that is not Parquet (:class:`UnreadableParquetError`: the pass sets it
    aside), is reported and the run goes on: the log reads the same uncompacted. Any other error is a fault of
    this code, not of the log, and fails the run: reported as a storage failure, it went unseen."""
    found: dict[str, Any] = {
        "files": 0,
        "parts": 0,
        "rows": 0,
        "removed": 0,
        "skipped": 0,
        "set_aside": [],
        "failed": [],
    }
    for day in sorted({interval.days()[0] - dt.timedelta(days=1), *interval.days(), live_day}):
        try:
            done = logfiles.compact(settings.prediction_log_uri, day)
        except (OSError, UnreadableParquetError) as exc:  # the log not writable, a lost bucket
            log.warning("the prediction log of %s was not compacted: %s: %s", day, type(exc).__name__, exc)
            found["failed"].append(f"{day}: {type(exc).__name__}: {exc}")
            continue
        for key, value in done.items():
            found[key] += value
    return found


def _schemes(reference: dict[str, Any]) -> dict[str, Scheme]:
    """The reference profile's bucket scheme of each number (none in a profile written before they were kept:
    each partition then picks its own)."""
    return {
        name: (int(column["scheme"][0]), int(column["scheme"][1]))
        for name, column in reference["columns"].items()
        if column.get("scheme") is not None
    }


def _skipping_unreadable(read: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``read()`` of the log; a file it finds unreadable (:class:`UnreadableParquetError`: a footer that does
    not parse, or data that does not decode once a pass failed on it) is set aside (:func:`logfiles.set_aside`)
    and it runs again without it. ``set_aside`` in the result lists where each went."""
    set_aside: dict[str, str] = {}
    while True:
        try:
            return read() | {"set_aside": list(set_aside.values())}
        except UnreadableParquetError as exc:
            if exc.uri in set_aside:
                raise  # set aside already and listed still: not looped on
            set_aside[exc.uri] = logfiles.set_aside(exc.uri, exc.reason)


def _served(
    settings: Settings,
    contract: Contract,
    interval: Interval,
    champion: int,
    engine: str,
    schemes: dict[str, Scheme],
) -> dict[str, Any]:
    """One pass over the interval's log files; a pass that fails in a worker has each file read whole, and
    raises :class:`UnreadableParquetError` for a file whose data does not decode (its own error if none)."""
    from pipelines.engines import open_engine

    files = [
        f
        for day in interval.days()
        for f in logfiles.log_files(storage.join(settings.prediction_log_uri, f"ds={day}"))
        if not _written_before(f, interval.start)
    ]
    if not files:
        return {
            "rows": 0,
            "rows_by_version": {},
            "rows_without_version": 0,
            "champion_rows": 0,
            "profile": None,
            "predictions": None,
            "outside": {},
            "outside_rows": 0,
            "files": 0,
            "pass_on": None,
        }
    import pandas as pd

    from pipelines.data.profile import HOW, KEYS, PARTIALS

    size = storage.total_bytes(files)
    pass_on = pass_engine(settings, engine, size)
    name, run_settings, processes_from_mb = engine, settings, settings.monitor_dask_processes_from_mb
    if pass_on == IN_TASK:  # Dask's threaded scheduler in this process (the size is below the threshold)
        name, processes_from_mb = "dask", settings.monitor_in_task_below_mb
        run_settings = settings.model_copy(update={"dask_scheduler": None})
    # Copy-on-write (pandas 3's default; the pass only reads its frames): Dask's Parquet reader selects a
    # file's columns twice, and each selection copied them, 15% of the pass over 1M rows.
    with (
        pd.option_context("mode.copy_on_write", True),
        open_engine(name, run_settings, size, processes_from_mb) as session,
    ):
        try:
            found = session.aggregate_parquet(
                files,
                [*contract.feature_columns, *LOG_READ],
                lambda f: served_partials(f, contract, champion, interval.start, interval.end, schemes),
                PARTIALS,
                KEYS,
                HOW,
                between=("served_at", interval.start, interval.end),
            )
        except session.read_failed_errors:  # a file's data, or the storage: each file is examined
            damaged = logfiles.undecodable(session, files)
            if damaged is None:
                raise
            raise damaged from None
    return served_figures(found, contract, champion) | {"files": len(files), "pass_on": pass_on}


IN_TASK = "task"


def pass_engine(settings: Settings, engine: str, size: int) -> str:
    """Where the pass over ``size`` bytes of the interval's log runs: :data:`IN_TASK` (Dask's threaded scheduler
    in this process) below ``CT_MONITOR_IN_TASK_BELOW_MB`` when the engine would otherwise start a job
    elsewhere (Spark, or a Dask scheduler), else the engine. The statistics are the same functions either
    way (:func:`served_partials`), so the verdict does not depend on it."""
    remote = engine == "spark" or bool(settings.dask_scheduler)
    if remote and size < settings.monitor_in_task_below_mb * 2**20:
        return IN_TASK
    return engine


def monitor(
    settings: Settings,
    interval: Interval,
    engine: str | None = None,
    ask: bool = True,
    delivered: Callable[[str, dt.datetime], bool] | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Judge one interval of served traffic; write its report and figures; say whether a retrain is asked for.

    An interval is judged once it is over and its last rows are written (:func:`judgeable_from`, against
    ``now``, the clock's by default): one judged earlier is refused (:class:`IntervalNotOverError`).

    Returns a small JSON-safe summary: the interval, rows, each signal's state, the verdict and, when a
    retrain is asked for, the ``event`` to emit (its reason and figures). ``ask=False`` (outside Airflow,
    where no event can be emitted) reports ``would_trigger`` instead, and records no request.

    ``delivered(name, start)`` answers whether the orchestrator holds the event the interval ``name`` (which
    began at ``start``) asked with. The request is recorded before the event is emitted (the event is only
    registered once the task has succeeded), so a run that failed after its record asked for nothing: such an
    ask is not counted, neither by its own interval, which asks again where without ``delivered`` it would
    report ``already_asked`` and the request be lost, nor by the cooldown and daily budget of the others,
    which it would otherwise hold back for hours while no retrain runs.
    """
    from pipelines.engines import check_engine
    from pipelines.release import tracking

    check_over(settings, interval, now or dt.datetime.now(dt.UTC))
    engine_name = check_engine(engine or settings.engine)
    contract = dataset_contract(settings)
    policy = load_monitoring_policy(settings.resolved_monitoring_policy_path)
    check_against_contract(
        policy, contract.feature_columns, contract.label_delay_hours, settings.resolved_monitoring_policy_path
    )
    # Its own days and the day whose labels it joins: judged again without either, its verdict would change.
    retention.check_judgeable(
        settings, interval.name, interval.day, labels_day(interval.end, contract.label_delay_hours)
    )
    metric_name = load_policy(settings.resolved_policy_path).primary_metric
    client = tracking.configure(settings)
    champion_version, last_move = _champion_then(settings, client, interval.end)
    base = {
        "dataset": settings.dataset,
        "interval": interval.name,
        "start": interval.start.isoformat(),
        "end": interval.end.isoformat(),
        "hours": interval.hours,
        "engine": engine_name,
    }
    if champion_version is None:
        result = base | {
            "champion": None,
            "rows": 0,
            "signals": [],
            "state": "no champion yet",
            "verdict": {
                "status": verdict.NOT_NEEDED,
                "reasons": [],
                "detail": "no champion when this interval ended (the promotion history): nothing served to judge",
            },
        }
        storage.write_json_atomic(figures_uri(settings, interval), _figures(result))
        return result
    champion = client.get_model_version(settings.model_name, str(champion_version))
    seconds: dict[str, float] = {}
    with _timed(seconds, "compact"):
        log_compacted = _compact_log(settings, interval, labels_day(interval.end, contract.label_delay_hours))
    with _timed(seconds, "reference"):
        reference = _reference_profile(settings, contract, champion)
    with _timed(seconds, "served"):
        schemes = _schemes(reference)
        served = _skipping_unreadable(
            lambda: _served(settings, contract, interval, champion_version, engine_name, schemes)
        )
    signals, drift, live_set_aside = _signals(
        settings,
        policy,
        contract,
        client,
        champion,
        reference,
        served,
        interval,
        metric_name,
        engine_name,
        seconds,
    )
    live = next(s for s in signals if s["signal"] == "live_quality")
    evidence = f"{live['day']} v{champion_version}" if live.get("value") is not None else None
    earlier = read_triggers(
        settings, interval.day - dt.timedelta(days=policy.triggers.cooldown_hours // 24 + 2)
    )
    lost = _lost_asks(earlier, delivered)
    counted = [r for r in earlier if r not in lost]
    decision = verdict.decide(policy, signals, interval.name, interval.end, counted, last_move, evidence)
    if lost and decision["status"] in (verdict.TRIGGERED, verdict.SUPPRESSED):
        decision = decision | {"detail": f"{decision['detail']}; {_lost_note(lost, interval)}"}
    if decision["status"] == verdict.TRIGGERED and not ask:
        decision = decision | {"status": verdict.WOULD_TRIGGER, "detail": "would " + decision["detail"]}
    result = base | {
        "champion": champion_version,
        "rows": served["rows"],
        "pass_on": served["pass_on"],  # where the pass over the log ran: the engine, or "task" (pass_engine)
        "rows_by_version": served["rows_by_version"],
        "rows_without_version": served["rows_without_version"],
        "champion_rows": served["champion_rows"],
        "signals": signals,
        "verdict": decision,
        "state": _state(served, signals, policy),
        "log_compacted": log_compacted,
        # Files of the log found unreadable (here or by the compaction) and moved aside: rows not counted.
        "log_set_aside": [*log_compacted["set_aside"], *served["set_aside"], *live_set_aside],
    }
    if decision["status"] == verdict.TRIGGERED:
        result["event"] = {
            "dataset": settings.dataset,
            "interval": interval.name,
            "day": _request_day(settings, contract, interval).isoformat(),
            "reasons": decision["reasons"],
            "reason": decision["summary"],
            "champion": champion_version,
            "figures": {s["signal"]: s.get("value") for s in signals if s.get("value") is not None},
        }
    with _timed(seconds, "report"):
        _write_report(settings, contract, policy, interval, reference, served, drift, result)
    with _timed(seconds, "mlflow"):
        _log_to_mlflow(settings, client, interval, result)
    result["seconds"] = {name: round(value, 3) for name, value in seconds.items()}
    if decision["status"] in (verdict.TRIGGERED, verdict.SUPPRESSED):
        # After the report and its run: a run that fails before here asked for nothing, and its retry asks again.
        _record_trigger(settings, interval, decision, champion_version, evidence)
    # The interval's figures last, once what they say is kept: written with the report, a run whose MLflow
    # logging failed on every retry left figures (and `pipelines monitor history`) saying "triggered" with no
    # ask recorded and none emitted. A failed run leaves the figures of the interval's last run that ended.
    storage.write_json_atomic(figures_uri(settings, interval), _figures(result))
    log.info(
        "monitor %s: %d rows, %s (%s)", interval.name, served["rows"], decision["status"], decision["detail"]
    )
    return result


def _reference_profile(settings: Settings, contract: Contract, champion: Any) -> dict[str, Any]:
    """The champion's reference profile, as drift uses it. Kept beside its predictions' profile, by version and
    the artifact it came from: later runs read a local file, not the artifact store (11-24 ms here, a request
    to an object store), and a profile of an older version is computed again once, not every hour."""
    from pipelines.data.profile import VERSION
    from pipelines.evaluation.drift import usable_profile
    from pipelines.release import tracking

    profile_uri = champion.tags.get("reference_profile")
    if not profile_uri:
        raise ValueError(
            f"the champion, {settings.model_name} v{champion.version}, has no reference_profile tag: it was "
            "trained before profiles were logged; promote a newer version to monitor it"
        )
    kept = storage.join(settings.monitoring_uri, "reference", f"v{champion.version}-profile.json")
    if storage.exists(kept):
        found = storage.read_json(kept)
        if found.get("source") == profile_uri and found["profile"].get("version") == VERSION:
            return dict(found["profile"])
    profile = usable_profile(
        settings,
        contract,
        tracking.load_json_artifact(profile_uri),
        champion.tags.get("dataset.uri"),
        f"the reference profile of {settings.model_name} v{champion.version}",
    )
    storage.write_text_atomic(kept, json.dumps({"source": profile_uri, "profile": profile}))
    return profile


def _signals(
    settings: Settings,
    policy: MonitoringPolicy,
    contract: Contract,
    client: Any,
    champion: Any,
    reference: dict[str, Any],
    served: dict[str, Any],
    interval: Interval,
    metric_name: str,
    engine: str,
    seconds: dict[str, float],
) -> tuple[list[dict[str, Any]], dict[str, Any] | None, list[str]]:
    """The interval's signals, the feature drift, and the log files of the labels' day set aside."""
    drift = prediction = None
    why_not = (
        f"{served['rows']} rows served, fewer than the policy's min_served_rows {policy.min_served_rows}"
    )
    if served["rows"] >= policy.min_served_rows:
        with _timed(seconds, "drift"):
            drift = verdict.served_drift(drift_stats.compare_features(reference, served["profile"], contract))
        # The champion's rows with a probability: after a swap its share is small, and a log from another writer
        # may hold rows it gave none (serving never logs them): judged on fewer values than the policy asks,
        # the figure moved with a handful of rows.
        scored = int(served["predictions"]["count"]) if served["predictions"] else 0
        if scored < policy.min_served_rows:
            unscored = served["champion_rows"] - scored
            prediction = {
                "score": None,
                "detail": f"the champion answered {served['champion_rows']} of these rows"
                + (f", {unscored} of them with no probability" if unscored else "")
                + f": fewer than min_served_rows {policy.min_served_rows} to judge",
            }
        else:
            with _timed(seconds, "prediction_reference"):
                predicted = _prediction_reference(settings, client, champion, contract)
            rule = policy.prediction_drift
            prediction = (
                {"score": None, "detail": predicted}
                if isinstance(predicted, str)
                else drift_stats.compare_column(predicted, served["predictions"], rule.method, rule.threshold)
            )
    signals = verdict.drift_signals(policy, drift, prediction, why_not)
    day = labels_day(interval.end, contract.label_delay_hours)
    with _timed(seconds, "live"):
        # The labels' day is read whole: a file of it that does not decode is set aside as the pass's are.
        live = _skipping_unreadable(
            lambda: live_quality(settings, engine, contract, day, int(champion.version), metric_name)
        )
    set_aside = live.pop("set_aside")
    signals.append(verdict.live_signal(policy, live, _holdout_figure(client, champion, metric_name)))
    baseline = _baseline(settings, interval, policy.data_quality.volume.baseline_days)
    signals += verdict.quality_signals(policy, served, reference, baseline)
    return signals, drift, set_aside


def _state(served: dict[str, Any], signals: list[dict[str, Any]], policy: MonitoringPolicy) -> str:
    """One line a person reads first: no traffic, too little, drift with or without labels, or all quiet."""
    by_name = {s["signal"]: s for s in signals}
    live = by_name["live_quality"]
    # The live metric is of an earlier, labelled day: it can drop in an interval with no traffic of its own.
    dropped = f", but live quality dropped ({live['detail']})" if live["state"] == verdict.BREACH else ""
    if not served["rows"]:
        return "no traffic in this interval" + dropped
    if served["rows"] < policy.min_served_rows:
        return f"too little traffic to judge drift ({served['rows']} rows)" + dropped
    drifted = any(
        by_name[n]["state"] == verdict.BREACH
        for n in ("feature_drift", "critical_columns", "prediction_drift")
    )
    if drifted and live["state"] == verdict.NOT_JUDGED:
        return f"drift, no labels yet ({live['detail']})"
    if drifted:
        return "drift, " + (
            "live quality dropped" if live["state"] == verdict.BREACH else "live quality holds"
        )
    if live["state"] == verdict.BREACH:
        return "no drift, but live quality dropped"
    return "no drift"


def _lost_asks(
    earlier: list[dict[str, Any]], delivered: Callable[[str, dt.datetime], bool] | None
) -> list[dict[str, Any]]:
    """The recorded asks whose event the orchestrator does not hold (none known without ``delivered``)."""
    if delivered is None:
        return []
    return [
        r
        for r in earlier
        if r["status"] == verdict.TRIGGERED
        and not delivered(r["interval"], verdict.record_start(r))  # a record from before "start" was kept too
    ]


def _lost_note(lost: list[dict[str, Any]], interval: Interval) -> str:
    asks = ", ".join(
        ("this interval's" if r["interval"] == interval.name else f"{r['interval']}'s")
        + f" (decided at {r.get('decided_at', r['at'])})"
        for r in lost
    )
    return (
        f"not counted: the ask of {asks} never reached the scheduler (the run that asked failed before it "
        "ended)"
    )


def _record_trigger(
    settings: Settings, interval: Interval, decision: dict[str, Any], champion: int, evidence: str | None
) -> None:
    """A retrain asked for or suppressed, one file per interval (an interval judged again replaces its own
    suppression; one that asked keeps its record, and is reported ``already_asked``)."""
    storage.write_json_atomic(
        trigger_uri(settings, interval),
        {
            "interval": interval.name,
            "start": interval.start.isoformat(),
            "at": interval.end.isoformat(),
            "decided_at": dt.datetime.now(dt.UTC).isoformat(),
            "status": decision["status"],
            "reasons": decision["reasons"],
            "detail": decision["detail"],
            "champion": champion,
            "live_evidence": evidence,
        },
    )


def _request_day(settings: Settings, contract: Contract, interval: Interval) -> dt.date:
    """The day a retrain asked for trains on: the interval's last day when its source has that day already
    (the demo's, a source written as it happens), else the day before (a source that lands a day once it ends)."""
    from pipelines.data import sources

    if storage.exists(sources.resolve(settings, contract, interval.last_day)):
        return interval.last_day
    return interval.last_day - dt.timedelta(days=1)


def prometheus_text(result: dict[str, Any]) -> str:
    """The interval's figures in Prometheus' text format, for a scraper or a textfile collector."""
    from prometheus_client import CollectorRegistry, Gauge, generate_latest

    registry = CollectorRegistry()
    labels = ["dataset", "interval"]
    values = [result["dataset"], result["interval"]]
    Gauge("ct_monitor_served_rows", "Rows served in the interval.", labels, registry=registry).labels(
        *values
    ).set(result["rows"])
    state = Gauge(
        "ct_monitor_signal_breach",
        "1 when the signal breached the policy, 0 when it held, -1 not judged.",
        [*labels, "signal"],
        registry=registry,
    )
    value = Gauge(
        "ct_monitor_signal_value",
        "The signal's figure (drift share, score, live metric, ratio).",
        [*labels, "signal"],
        registry=registry,
    )
    for signal in result["signals"]:
        code = {verdict.BREACH: 1, verdict.OK: 0}.get(signal["state"], -1)
        state.labels(*values, signal["signal"]).set(code)
        if isinstance(signal.get("value"), int | float):
            value.labels(*values, signal["signal"]).set(signal["value"])
    Gauge(
        "ct_monitor_retrain_requested", "1 when the interval asked for a retrain.", labels, registry=registry
    ).labels(*values).set(1 if result["verdict"]["status"] in (verdict.TRIGGERED, verdict.ALREADY) else 0)
    Gauge(
        "ct_monitor_log_files_set_aside",
        "Files of the prediction log this run found unreadable and moved aside (their rows are not counted).",
        labels,
        registry=registry,
    ).labels(*values).set(len(result.get("log_set_aside", [])))
    return generate_latest(registry).decode()


def _banner(result: dict[str, Any], policy_path: str, drift: dict[str, Any] | None) -> str:
    from pipelines.evaluation.drift import columns_table

    rows = "".join(
        f"<tr><td>{html.escape(s['signal'])}</td><td>{html.escape(s['state'])}</td>"
        f"<td>{html.escape(s['detail'])}</td></tr>"
        for s in result["signals"]
    )
    decision = result["verdict"]
    set_aside = result.get("log_set_aside", [])
    warning = (
        f"<p style='color:#a00'><b>{len(set_aside)} file(s) of the prediction log could not be read</b> and were "
        f"moved aside (their rows are not counted here): {html.escape(', '.join(set_aside))}.</p>"
        if set_aside
        else ""
    )
    return (
        "<div style='font-family:sans-serif;padding:12px;border-bottom:1px solid #ccc'>"
        f"<h2>Served traffic of {html.escape(result['dataset'])}, {html.escape(result['interval'])}: "
        f"{result['rows']:,} rows, champion v{result['champion']}</h2>"
        f"<p><b>{html.escape(result['state'])}</b>. Verdict: <b>{html.escape(decision['status'])}</b>: "
        f"{html.escape(decision['detail'])} (policy {html.escape(policy_path)}).</p>{warning}"
        "<table border='1' cellpadding='3' style='border-collapse:collapse'><tr><th>signal</th><th>state</th>"
        f"<th>detail</th></tr>{rows}</table>"
        + (
            ""
            if drift is None
            else f"<h3>Feature drift against the reference profile</h3>{columns_table(drift)}"
        )
        + "</div>"
    )


def _write_report(
    settings: Settings,
    contract: Contract,
    policy: MonitoringPolicy,
    interval: Interval,
    reference: dict[str, Any],
    served: dict[str, Any],
    drift: dict[str, Any] | None,
    result: dict[str, Any],
) -> None:
    from pipelines.evaluation.drift import render_report

    banner = _banner(result, str(settings.resolved_monitoring_policy_path), drift)
    if drift is not None:
        snapshot = render_report(
            reference,
            served["profile"],
            contract,
            drift,
            policy.feature_drift.max_drifted_share,
            settings.seed,
        )
        page = snapshot.get_html_str(as_iframe=False).replace("<body>", "<body>" + banner, 1)
        details = json.loads(snapshot.json())
    else:
        page = f"<html><body>{banner}<p>No drift report: {html.escape(result['state'])}.</p></body></html>"
        details = None
    folder = report_uri(settings, interval)
    summary = {**result, "drift": drift, "evidently": details}
    storage.write_text_atomic(storage.join(folder, "monitor.html"), page)
    storage.write_text_atomic(
        storage.join(folder, "monitor.json"), json.dumps(summary, indent=2, default=str)
    )
    storage.write_text_atomic(storage.join(folder, "metrics.prom"), prometheus_text(result))
    result["report"] = folder


def recorded_status(result: dict[str, Any]) -> str:
    """The interval's decision as its figures and MLflow run keep it: an interval judged again after it asked
    reports ``already_asked`` to its task, and its figures still say it asked (``triggered``); a retry or a cleared
    task would otherwise rewrite the trend's record of it."""
    status = str(result["verdict"]["status"])
    return verdict.TRIGGERED if status == verdict.ALREADY else status


def _figures(result: dict[str, Any]) -> dict[str, Any]:
    """The interval's small figures table: what the trend over days is made of."""
    signals = {s["signal"]: s for s in result["signals"]}
    return {
        **{
            k: result[k]
            for k in ("dataset", "interval", "start", "end", "hours", "champion", "rows", "state")
        },
        "status": recorded_status(result),
        "reasons": result["verdict"]["reasons"],
        "signals": {name: {"state": s["state"], "value": s.get("value")} for name, s in signals.items()},
        "log_files_set_aside": len(result.get("log_set_aside", [])),
    }


def _same(logged: float | None, value: float) -> bool:
    return logged is not None and (logged == value or (math.isnan(logged) and math.isnan(value)))


def _log_to_mlflow(settings: Settings, client: Any, interval: Interval, result: dict[str, Any]) -> None:
    from mlflow.entities import Metric

    from pipelines.release import tracking

    experiment = tracking.ensure_experiment(client, settings, settings.monitoring_experiment)
    tags = {
        "ct.kind": "monitor",
        "dataset": settings.dataset,
        "interval": interval.name,
        "champion_version": str(result["champion"]),
        "verdict": recorded_status(result),
        "state": result["state"],
        "engine": result["engine"],
        "pass_on": str(result["pass_on"]),  # "task": the pass ran in the task's threads (pass_engine)
    }
    # The interval's run of this dataset: every dataset's monitor shares the experiment (the settings'
    # experiment is the same for all of them unless set), so the interval alone named another dataset's run.
    found = client.search_runs(
        [experiment],
        filter_string=f"tags.interval = '{interval.name}' and tags.dataset = '{settings.dataset}'",
        max_results=1,
    )
    run_id = (
        found[0].info.run_id
        if found
        else client.create_run(
            experiment, run_name=f"monitor {settings.dataset} {interval.name}", tags=tags
        ).info.run_id
    )
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    figures = [("served_rows", float(result["rows"]))] + [
        (signal["signal"], float(signal["value"]))
        for signal in result["signals"]
        if isinstance(signal.get("value"), int | float)
    ]
    # The interval judged again logs nothing when its figures are the run's already; figures that changed (late
    # rows in the log) are the next step, so the run's latest figures are the newest judgement's.
    latest = found[0].data.metrics if found else {}
    if not (found and all(_same(latest.get(key), value) for key, value in figures)):
        history = client.get_metric_history(run_id, "served_rows") if found else []
        step = 1 + max(m.step for m in history) if history else 0
        at = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(key, value, at, step) for key, value in figures])
    with tempfile.TemporaryDirectory(prefix="ct-monitor-") as tmp:
        folder = result["report"]
        for name in ("monitor.html", "monitor.json", "metrics.prom"):
            (Path(tmp) / name).write_bytes(storage.read_bytes(storage.join(folder, name)))
        client.log_artifacts(run_id, tmp, artifact_path="monitor")
    client.set_terminated(run_id)
    result["mlflow_run_id"] = run_id
