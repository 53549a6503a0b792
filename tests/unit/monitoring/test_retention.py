"""Retention: old reports and prediction log days removed, counted back from the judged interval's day; what the
trend is made of kept; an interval whose log is gone refused, not judged again on no rows."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from pipelines.data import storage
from pipelines.monitoring import retention
from pipelines.monitoring.monitor import Interval, figures_uri, monitor, report_uri, trigger_uri
from pipelines.monitoring.policy import MonitoringPolicy

DAY = dt.date(2026, 11, 30)


def _policy(reports_days: int | None, log_days: int | None) -> MonitoringPolicy:
    return MonitoringPolicy.model_validate(
        {"retention": {"reports_days": reports_days, "prediction_log_days": log_days}}
    )


def _fill(settings, days: list[dt.date]) -> None:
    """What a monitor and serving leave for each day: a report, figures, a trigger, log files."""
    for day in days:
        interval = Interval.of(day, 13)
        storage.write_text_atomic(storage.join(report_uri(settings, interval), "monitor.html"), "<html/>")
        storage.write_json_atomic(figures_uri(settings, interval), {"rows": 1})
        storage.write_json_atomic(trigger_uri(settings, interval), {"status": "suppressed"})
        log_day = storage.join(settings.prediction_log_uri, f"ds={day}")
        storage.write_bytes_atomic(storage.join(log_day, "part-1-ab.parquet"), b"rows")
        storage.write_bytes_atomic(
            storage.join(settings.prediction_log_uri, "_unreadable", f"ds={day}", "part-2-cd.parquet"), b"x"
        )


def _days(uri: str) -> list[str]:
    path = Path(uri)
    return sorted(p.name for p in path.iterdir() if p.name.startswith("ds=")) if path.exists() else []


def test_old_reports_and_log_days_go_and_the_trend_stays(settings):
    days = [DAY - dt.timedelta(days=n) for n in (40, 31, 30, 29, 5, 4, 3, 0)]
    _fill(settings, days)
    foreign = Path(settings.prediction_log_uri) / "ds=not-a-day"
    foreign.mkdir()
    result = retention.prune(settings, _policy(30, 4), DAY)
    assert (result["reports_before"], result["prediction_log_before"]) == ("2026-10-31", "2026-11-26")
    kept = [f"ds={d}" for d in days if d >= dt.date(2026, 10, 31)]
    assert _days(storage.join(settings.monitoring_uri, "reports")) == kept
    assert _days(settings.prediction_log_uri) == [
        "ds=2026-11-26",
        "ds=2026-11-27",
        "ds=2026-11-30",
        "ds=not-a-day",
    ]
    assert _days(storage.join(settings.prediction_log_uri, "_unreadable")) == [
        "ds=2026-11-26",
        "ds=2026-11-27",
        "ds=2026-11-30",
    ]
    every_day = [f"ds={d}" for d in sorted(days)]
    for kind in ("figures", "triggers"):  # the trend, the volume baseline and the cooldown are read from them
        assert _days(storage.join(settings.monitoring_uri, kind)) == every_day
    assert len(result["reports_removed"]) == 2 and len(result["prediction_log_removed"]) == 2 * 5
    assert (
        retention.prune(settings, _policy(30, 4), DAY)["prediction_log_removed"] == []
    )  # a re-run: nothing more


def test_a_dry_run_lists_and_removes_nothing_and_null_keeps_everything(settings):
    _fill(settings, [DAY - dt.timedelta(days=50), DAY])
    listed = retention.prune(settings, _policy(30, 10), DAY, dry_run=True)
    assert len(listed["reports_removed"]) == 1 and len(listed["prediction_log_removed"]) == 2
    assert len(_days(settings.prediction_log_uri)) == 2
    assert not Path(retention.horizon_uri(settings)).exists()
    kept = retention.prune(settings, _policy(None, None), DAY)
    assert kept["reports_removed"] == kept["prediction_log_removed"] == []
    assert len(_days(storage.join(settings.monitoring_uri, "reports"))) == 2


def test_an_interval_whose_log_is_gone_is_refused_and_a_late_run_does_not_bring_it_back(settings):
    _fill(settings, [DAY - dt.timedelta(days=n) for n in range(12)])
    retention.prune(settings, _policy(None, 5), DAY)
    with pytest.raises(retention.PrunedIntervalError, match="before 2026-11-25 was removed by retention"):
        monitor(settings, Interval.of(DAY - dt.timedelta(days=6), 13))  # refused before anything is read
    retention.prune(settings, _policy(None, 5), DAY - dt.timedelta(days=3))  # a late run of an older date
    horizon = json.loads(Path(retention.horizon_uri(settings)).read_text())
    assert horizon["prediction_log_before"] == "2026-11-25"  # not moved back to 11-22


def test_an_interval_whose_labelled_day_is_gone_is_refused_too(settings):
    """Its own traffic is there, but the day whose rows it joins to their labels (24 hours' delay: two days
    back, for its first hour) is not: judged again, its live quality would go unjudged and its verdict change."""
    _fill(settings, [DAY - dt.timedelta(days=n) for n in range(6)])
    retention.prune(settings, _policy(None, 2), DAY)  # keeps 11-28 on
    first_hour, last_hour = Interval.of(dt.date(2026, 11, 29), 0), Interval.of(dt.date(2026, 11, 29), 23)
    with pytest.raises(
        retention.PrunedIntervalError, match="the traffic of 2026-11-27, whose labels it joins"
    ):
        monitor(settings, first_hour)
    retention.check_judgeable(settings, last_hour.name, last_hour.day, dt.date(2026, 11, 28))  # both there


def test_a_day_after_today_or_a_log_kept_shorter_than_its_labels_take_is_refused(settings):
    from pipelines.monitoring.policy import MonitoringPolicyError

    _fill(settings, [DAY])
    tomorrow = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)
    with pytest.raises(ValueError, match=f"{tomorrow}, which is after today"):
        retention.prune(settings, _policy(None, 90), tomorrow)
    with pytest.raises(MonitoringPolicyError, match="label_delay_hours 24 needs at least 2 days"):
        retention.prune(settings, _policy(None, 1), DAY)
    assert not Path(retention.horizon_uri(settings)).exists()
    assert _days(settings.prediction_log_uri) == [f"ds={DAY}"]
