"""The monitoring policy's schema and the verdict: breaches, cooldown, budget, and nothing asked for twice."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from pipelines.monitoring import verdict
from pipelines.monitoring.monitor import Interval
from pipelines.monitoring.policy import (
    MonitoringPolicy,
    MonitoringPolicyError,
    check_against_contract,
    load_monitoring_policy,
)

ROOT = Path(__file__).resolve().parents[3]
END = dt.datetime(2026, 11, 30, 14, tzinfo=dt.UTC)


def test_the_shipped_policy_loads():
    policy = load_monitoring_policy(ROOT / "include" / "monitoring_policy.yaml")
    assert policy.triggers.retrain_on == [
        "feature_drift",
        "critical_columns",
        "prediction_drift",
        "live_quality",
    ]


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("feature_drift: {max_drifted_share: 2}", "feature_drift.max_drifted_share"),
        ("triggers: {retrain_on: [feature_drfit]}", "triggers.retrain_on.0"),
        ("triggers: {cooldown: 6}", "triggers.cooldown"),
        ("data_quality: {volume: {min_ratio: 3, max_ratio: 2}}", "min_ratio 3.0 must be below max_ratio 2.0"),
        ("version: 2", "version"),
    ],
)
def test_a_bad_key_is_named(tmp_path, text, named):
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(MonitoringPolicyError) as caught:
        load_monitoring_policy(path)
    assert named in str(caught.value) and str(path) in str(caught.value)


def test_a_critical_column_must_be_a_feature():
    policy = MonitoringPolicy.model_validate({"feature_drift": {"critical_columns": ["agee"]}})
    with pytest.raises(MonitoringPolicyError, match="'agee', which is not a feature"):
        check_against_contract(policy, ["age", "plan"], Path("p.yaml"))


def _breach(name: str) -> dict:
    return {"signal": name, "state": verdict.BREACH, "detail": f"{name} breached"}


def _record(hours_before: float, status: str = verdict.TRIGGERED, interval: str = "earlier") -> dict:
    return {
        "interval": interval,
        "status": status,
        "at": (END - dt.timedelta(hours=hours_before)).isoformat(),
    }


POLICY = MonitoringPolicy.model_validate({"triggers": {"cooldown_hours": 6, "max_per_day": 2}})


def test_a_breach_the_policy_retrains_on_asks_for_a_retrain():
    decided = verdict.decide(POLICY, [_breach("feature_drift")], "now", END, [], None)
    assert decided["status"] == verdict.TRIGGERED and decided["reasons"] == ["feature_drift"]


def test_data_quality_alone_is_reported_not_retrained_on():
    decided = verdict.decide(POLICY, [_breach("nulls"), _breach("volume")], "now", END, [], None)
    assert decided["status"] == verdict.NOT_NEEDED


@pytest.mark.parametrize(
    ("records", "promoted_hours_before", "detail"),
    [
        ([_record(5)], None, "cooldown: a retrain was asked for at 2026-11-30T09:00:00+00:00, within 6 h"),
        ([_record(1, interval="now")], None, "already asked for by this interval"),
        ([], 2, "cooldown: the champion changed at 2026-11-30T12:00:00+00:00, within 6 h"),
        ([_record(13), _record(7)], None, "budget: 2 retrains already asked for on 2026-11-30 (at most 2)"),
    ],
)
def test_a_second_ask_is_suppressed_with_its_reason(records, promoted_hours_before, detail):
    promoted = None if promoted_hours_before is None else END - dt.timedelta(hours=promoted_hours_before)
    decided = verdict.decide(POLICY, [_breach("prediction_drift")], "now", END, records, promoted)
    assert decided["status"] == verdict.SUPPRESSED and decided["detail"].startswith(detail), decided


@pytest.mark.parametrize(
    ("records", "promoted_hours_before"),
    [
        ([_record(7)], None),  # the cooldown has passed
        ([_record(5, verdict.SUPPRESSED)], None),  # a suppressed ask is no ask
        ([_record(15), _record(16)], None),  # yesterday's asks do not count against today's budget
        ([], 7),
        ([_record(-2)], None),  # an ask after this interval (a re-run of an older one) is no cooldown for it
    ],
)
def test_outside_the_guards_it_asks(records, promoted_hours_before):
    promoted = None if promoted_hours_before is None else END - dt.timedelta(hours=promoted_hours_before)
    decided = verdict.decide(POLICY, [_breach("live_quality")], "now", END, records, promoted)
    assert decided["status"] == verdict.TRIGGERED, decided


def test_live_quality_compares_the_drop_in_the_metrics_direction():
    live = {"state": "measured", "day": "2026-11-29", "metric": "roc_auc", "value": 0.70, "joined_rows": 500}
    assert verdict.live_signal(POLICY, live, 0.80)["state"] == verdict.BREACH  # 0.10 worse
    assert verdict.live_signal(POLICY, live, 0.74)["state"] == verdict.OK
    loss = live | {"metric": "log_loss", "value": 0.40}
    assert verdict.live_signal(POLICY, loss, 0.30)["state"] == verdict.BREACH  # higher loss is worse
    assert verdict.live_signal(POLICY, loss, 0.50)["state"] == verdict.OK
    few = verdict.live_signal(POLICY, live | {"joined_rows": 20}, 0.80)
    assert few["state"] == verdict.NOT_JUDGED and "fewer than 200" in few["detail"]
    waiting = {"state": "labels_not_validated", "day": "2026-11-29", "metric": "roc_auc", "detail": "not yet"}
    assert verdict.live_signal(POLICY, waiting, 0.8)["state"] == verdict.NOT_JUDGED


def test_volume_is_judged_against_the_median_of_earlier_intervals():
    served = {"rows": 100, "profile": {"columns": {}}, "outside": {}, "outside_rows": 0}
    signals = {
        s["signal"]: s for s in verdict.quality_signals(POLICY, served, {"columns": {}}, [1000, 900, 5000])
    }
    assert signals["volume"]["state"] == verdict.BREACH and signals["volume"]["usual"] == 1000
    signals = {s["signal"]: s for s in verdict.quality_signals(POLICY, served, {"columns": {}}, [])}
    assert signals["volume"]["state"] == verdict.NOT_JUDGED


def test_intervals_are_named_by_start_and_length_and_know_their_days():
    hour = Interval.of(dt.date(2026, 11, 30), 13)
    assert hour.name == "2026-11-30T1300-1h" and hour.days() == [dt.date(2026, 11, 30)]
    day = Interval.of(dt.date(2026, 11, 30))
    assert day.name == "2026-11-30T0000-24h" and day.days() == [dt.date(2026, 11, 30)]
    late = Interval(dt.datetime(2026, 11, 30, 23, tzinfo=dt.UTC), dt.datetime(2026, 12, 1, 1, tzinfo=dt.UTC))
    assert late.days() == [dt.date(2026, 11, 30), dt.date(2026, 12, 1)]
    with pytest.raises(ValueError, match="timezone-aware"):
        Interval(dt.datetime(2026, 11, 30), dt.datetime(2026, 12, 1))
