"""The monitoring policy's schema and the verdict: breaches, cooldown, budget, and nothing asked for twice."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from pipelines.monitoring import verdict
from pipelines.monitoring.monitor import Interval, _record_trigger, _state, read_triggers
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
    assert (policy.retention.reports_days, policy.retention.prediction_log_days) == (30, 90)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("feature_drift: {max_drifted_share: 2}", "feature_drift.max_drifted_share"),
        ("triggers: {retrain_on: [feature_drfit]}", "triggers.retrain_on.0"),
        ("triggers: {cooldown: 6}", "triggers.cooldown"),
        ("data_quality: {volume: {min_ratio: 3, max_ratio: 2}}", "min_ratio 3.0 must be below max_ratio 2.0"),
        ("version: 2", "version"),
        ("retention: {prediction_log_days: 0}", "retention.prediction_log_days"),
        ("retention: {reports_days: 0}", "retention.reports_days"),
        # loaded, then every run failed at its verdict with an OverflowError (or a NaN's ValueError) naming no key
        ("triggers: {cooldown_hours: .inf}", "triggers.cooldown_hours"),
        ("triggers: {cooldown_hours: .nan}", "triggers.cooldown_hours"),
        ("triggers: {cooldown_hours: 1.0e+12}", "triggers.cooldown_hours"),
        ("triggers: {after_promotion_hours: .inf}", "triggers.after_promotion_hours"),
        ("retention: {reports_days: 1000000000000}", "retention.reports_days"),
        ("retention: {prediction_log_days: 1000000000000}", "retention.prediction_log_days"),
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
        check_against_contract(policy, ["age", "plan"], 24, Path("p.yaml"))


# The day whose labels an interval joins lies 1 day back for no delay, 2 for 24 hours, 3 for 25 or 48: an
# interval ending a minute after midnight joins the labels of the day before the one the delay reaches into.
@pytest.mark.parametrize(
    ("delay_hours", "days", "refused"),
    [
        (0, 1, False),
        (24, 1, True),
        (24, 2, False),
        (25, 2, True),
        (25, 3, False),
        (48, 2, True),
        (48, 3, False),
    ],
)
def test_the_log_is_kept_until_its_labels_are_joined(delay_hours, days, refused):
    policy = MonitoringPolicy.model_validate({"retention": {"prediction_log_days": days}})
    if not refused:
        check_against_contract(policy, ["age"], delay_hours, Path("p.yaml"))
        return
    with pytest.raises(MonitoringPolicyError, match=r"retention.prediction_log_days .* label_delay_hours"):
        check_against_contract(policy, ["age"], delay_hours, Path("p.yaml"))


def _breach(name: str) -> dict:
    return {"signal": name, "state": verdict.BREACH, "detail": f"{name} breached"}


def _record(
    hours_before: float,
    status: str = verdict.TRIGGERED,
    interval: str = "earlier",
    reasons: tuple[str, ...] = ("feature_drift",),
    evidence: str | None = None,
) -> dict:
    at = END - dt.timedelta(hours=hours_before)
    return {
        "interval": interval,
        "status": status,
        "start": (at - dt.timedelta(hours=1)).isoformat(),
        "at": at.isoformat(),
        "reasons": list(reasons),
        "live_evidence": evidence,
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
        ([], 2, "cooldown: the champion changed at 2026-11-30T12:00:00+00:00, within 6 h"),
        ([_record(13), _record(7)], None, "budget: 2 retrains already asked for on 2026-11-30 (at most 2)"),
    ],
)
def test_a_second_ask_is_suppressed_with_its_reason(records, promoted_hours_before, detail):
    promoted = None if promoted_hours_before is None else END - dt.timedelta(hours=promoted_hours_before)
    decided = verdict.decide(POLICY, [_breach("prediction_drift")], "now", END, records, promoted)
    assert decided["status"] == verdict.SUPPRESSED and decided["detail"].startswith(detail), decided


def test_an_interval_judged_again_reports_that_it_asked_and_does_not_ask_twice():
    decided = verdict.decide(
        POLICY, [_breach("feature_drift")], "now", END, [_record(0, interval="now")], None
    )
    assert decided["status"] == verdict.ALREADY and "not asked twice" in decided["detail"]
    # Late rows diluted its drift: it asked all the same, and its figures and run must keep saying so.
    calm = verdict.decide(POLICY, [], "now", END, [_record(0, interval="now")], None)
    assert calm["status"] == verdict.ALREADY and calm["reasons"] == []


def test_the_budget_of_the_last_hour_of_a_day_is_that_days():
    midnight = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)  # 23:00-24:00 on the 30th ends here
    asked = [_record(13), _record(7)]  # at 01:00 and 07:00 on the 30th (END is 14:00 on the 30th)
    asked = [
        r | {"at": (dt.datetime.fromisoformat(r["at"]) - dt.timedelta(hours=0)).isoformat()} for r in asked
    ]
    decided = verdict.decide(POLICY, [_breach("feature_drift")], "last hour", midnight, asked, None)
    assert decided["status"] == verdict.SUPPRESSED and "on 2026-11-30" in decided["detail"], decided
    ended_at_midnight = [_record(-10, interval="last hour of the 30th")]  # its "at" is 2026-12-01T00:00
    ended_at_midnight[0]["at"] = midnight.isoformat()
    later = dt.datetime(2026, 12, 1, 16, tzinfo=dt.UTC)
    one_more = [*ended_at_midnight, _record(-19)]  # and one at 09:00 on the 1st
    decided = verdict.decide(POLICY, [_breach("feature_drift")], "afternoon", later, one_more, None)
    assert decided["status"] == verdict.TRIGGERED, decided  # the midnight ask was the 30th's budget


def test_an_interval_judged_late_counts_the_days_later_asks_against_the_budget():
    # A failed 02:00-03:00 run cleared in the evening, after asks at 14:00 and 21:00 that day (more than the
    # cooldown after its end): a third ask would pass the budget of 2 a day.
    evening = [_record(0), _record(-7)]
    early = END - dt.timedelta(hours=11)
    decided = verdict.decide(POLICY, [_breach("feature_drift")], "early", early, evening, None)
    assert decided["status"] == verdict.SUPPRESSED and decided["detail"].startswith("budget: 2 retrains"), (
        decided
    )


def test_a_days_live_metric_asks_once_per_champion_not_every_hour_that_sees_it():
    live = [_record(8, reasons=("live_quality",), evidence="2026-11-29 v3")]
    decided = verdict.decide(POLICY, [_breach("live_quality")], "now", END, live, None, "2026-11-29 v3")
    assert decided["status"] == verdict.NOT_NEEDED and "same evidence" in decided["detail"]
    decided = verdict.decide(POLICY, [_breach("live_quality")], "now", END, live, None, "2026-11-30 v3")
    assert decided["status"] == verdict.TRIGGERED  # a new day's labels are new evidence
    both = [_breach("live_quality"), _breach("feature_drift")]
    decided = verdict.decide(POLICY, both, "now", END, live, None, "2026-11-29 v3")
    assert decided["status"] == verdict.TRIGGERED and decided["reasons"] == ["feature_drift"]


@pytest.mark.parametrize(
    ("records", "promoted_hours_before"),
    [
        ([_record(7)], None),  # the cooldown has passed
        ([_record(5, verdict.SUPPRESSED)], None),  # a suppressed ask is no ask
        ([_record(15), _record(16)], None),  # yesterday's asks do not count against today's budget
        ([], 7),
        ([_record(-7)], None),  # an ask more than the cooldown after this interval's end
    ],
)
def test_outside_the_guards_it_asks(records, promoted_hours_before):
    promoted = None if promoted_hours_before is None else END - dt.timedelta(hours=promoted_hours_before)
    decided = verdict.decide(POLICY, [_breach("live_quality")], "now", END, records, promoted)
    assert decided["status"] == verdict.TRIGGERED, decided


def test_an_ask_across_an_intervals_end_holds_it_back_though_it_ended_after_it():
    # Asked by hand at 14:01 on 13:01-14:01; the 14:05 run then judges 13:00-14:00, nearly the same traffic.
    by_hand = _record(-1 / 60, interval="2026-11-30T1301-1h")
    decided = verdict.decide(POLICY, [_breach("feature_drift")], "hour", END, [by_hand], None)
    assert decided["status"] == verdict.SUPPRESSED, decided
    assert decided["detail"] == (
        "cooldown: a retrain was asked for at 2026-11-30T14:01:00+00:00 on an interval across this one's end "
        "(2026-11-30T1301-1h), within 6 h"
    )
    old = {k: v for k, v in by_hand.items() if k != "start"}  # a record from before starts were written
    assert verdict.decide(POLICY, [_breach("feature_drift")], "hour", END, [old], None) == decided
    next_hour = _record(-1, interval="2026-11-30T1400-1h")
    decided = verdict.decide(POLICY, [_breach("feature_drift")], "hour", END, [next_hour], None)
    assert decided["status"] == verdict.SUPPRESSED, decided  # judged late: the later ask already covers it
    assert "on a later interval (2026-11-30T1400-1h)" in decided["detail"]
    no_cooldown = MonitoringPolicy.model_validate({"triggers": {"cooldown_hours": 0}})
    decided = verdict.decide(no_cooldown, [_breach("feature_drift")], "hour", END, [by_hand], None)
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
    signals = {s["signal"]: s for s in verdict.quality_signals(POLICY, served, {"columns": {}}, [0, 0])}
    assert signals["volume"]["state"] == verdict.BREACH and signals["volume"]["value"] is None  # no Infinity


def test_intervals_are_named_by_start_and_length_and_know_their_days():
    hour = Interval.of(dt.date(2026, 11, 30), 13)
    assert hour.name == "2026-11-30T1300-1h" and hour.days() == [dt.date(2026, 11, 30)]
    day = Interval.of(dt.date(2026, 11, 30))
    assert day.name == "2026-11-30T0000-24h" and day.days() == [dt.date(2026, 11, 30)]
    late = Interval(dt.datetime(2026, 11, 30, 23, tzinfo=dt.UTC), dt.datetime(2026, 12, 1, 1, tzinfo=dt.UTC))
    assert late.days() == [dt.date(2026, 11, 30), dt.date(2026, 12, 1)]
    with pytest.raises(ValueError, match="timezone-aware"):
        Interval(dt.datetime(2026, 11, 30), dt.datetime(2026, 12, 1))
    with pytest.raises(ValueError, match="hour 24 is not 0-23"):
        Interval.of(dt.date(2026, 11, 30), 24)
    paris = dt.timezone(dt.timedelta(hours=1))
    local = Interval(
        dt.datetime(2026, 12, 1, 0, 30, tzinfo=paris), dt.datetime(2026, 12, 1, 1, 30, tzinfo=paris)
    )
    assert local.name == "2026-11-30T2330-1h" and local.day == dt.date(2026, 11, 30)  # UTC's day
    assert local.last_day == dt.date(2026, 12, 1) and day.last_day == dt.date(2026, 11, 30)


def test_an_hour_and_its_whole_day_end_together_and_are_listed_in_the_order_they_were_decided(settings):
    # Found at 23:15 by the CI: the day's file name sorts before its last hour's, and both end at midnight.
    day = dt.date(2026, 11, 30)
    asked = {"status": verdict.TRIGGERED, "reasons": ["feature_drift"], "detail": "retrain asked for: drift"}
    _record_trigger(settings, Interval.of(day, 23), asked, 3, None)
    held = {"status": verdict.SUPPRESSED, "reasons": ["feature_drift"], "detail": "cooldown: asked at 00:00"}
    _record_trigger(settings, Interval.of(day), held, 3, None)
    records = read_triggers(settings)
    assert [r["interval"] for r in records] == ["2026-11-30T2300-1h", "2026-11-30T0000-24h"]
    assert records[0]["at"] == records[1]["at"] == "2026-12-01T00:00:00+00:00"


def test_intervals_from_airflows_pendulum_times_are_plain_utc_and_go_back_in_days():
    # A scheduled run hands pendulum's DateTime: its arithmetic dropped a stdlib zone, and every scheduled run
    # failed in the volume baseline (earlier()) with "must be timezone-aware".
    import pendulum  # Airflow's

    start = pendulum.datetime(2026, 12, 2, 0, 5, tz="UTC")
    scheduled = Interval.whole_hours(start, start.add(hours=1))
    assert scheduled.name == "2026-12-02T0000-1h" and type(scheduled.start) is dt.datetime
    assert scheduled.earlier(1) == Interval.of(dt.date(2026, 12, 1), 0)
    paris = Interval.whole_hours(pendulum.datetime(2026, 12, 2, 2, 5, tz="Europe/Paris"), start.add(hours=2))
    assert paris.name == "2026-12-02T0100-1h" and paris.earlier(3).day == dt.date(2026, 11, 29)


def test_a_run_triggered_by_hand_judges_the_hour_to_the_end_of_its_minute():
    asked = dt.datetime(2026, 12, 2, 1, 24, 34, 601145, tzinfo=dt.UTC)
    first = Interval.hour_up_to(asked)
    assert first.name == "2026-12-02T0025-1h" and first.end == dt.datetime(2026, 12, 2, 1, 25, tzinfo=dt.UTC)
    later = Interval.hour_up_to(asked + dt.timedelta(seconds=24))
    assert later == first  # the same minute: the same interval
    assert Interval.hour_up_to(asked.replace(second=0, microsecond=0)) == first  # its first instant too
    assert Interval.hour_up_to(asked + dt.timedelta(seconds=30)).name == "2026-12-02T0026-1h"
    kolkata = dt.timezone(dt.timedelta(hours=5, minutes=30))
    assert Interval.hour_up_to(asked.astimezone(kolkata)) == first


def test_intervals_in_other_zones_are_utcs_hours_and_compare_across_a_dst_change():
    import pendulum  # Airflow's

    kolkata = dt.timezone(dt.timedelta(hours=5, minutes=30))
    start = dt.datetime(2026, 12, 2, 12, 5, tzinfo=kolkata)  # 06:35 UTC
    assert Interval.whole_hours(start, start + dt.timedelta(hours=1)).name == "2026-12-02T0600-1h"
    # Paris leaves summer time at 01:00 UTC on 2026-10-25: 02:20 comes twice, an hour apart.
    before = pendulum.datetime(2026, 10, 25, 0, 20, tz="UTC").in_timezone("Europe/Paris")
    interval = Interval(before, before.add(hours=1))
    assert interval.hours == 1 and interval.name == "2026-10-25T0020-1h"


def test_a_feature_with_no_served_values_is_the_nulls_signal_not_drift():
    policy = MonitoringPolicy.model_validate(
        {"feature_drift": {"max_drifted_share": 0.5, "critical_columns": ["region"]}}
    )
    counts = {"reference_rows": 100, "current_rows": 100}
    columns = {
        "amount": {"score": 0.4, "drifted": True, **counts},
        "region": {  # null in every served row
            "score": None,
            "drifted": True,
            "detail": "no values on one side",
            **counts,
            "current_rows": 0,
        },
        "age": {"score": 0.0, "drifted": False, **counts},
        "plan": {"score": 0.01, "drifted": False, **counts},
    }
    drift = {"drifted_columns": 2, "drift_share": 0.5, "columns": columns}
    feature, critical, _ = verdict.drift_signals(policy, drift, None, "")
    assert feature["state"] == verdict.OK and feature["value"] == 0.25 and feature["drifted"] == ["amount"]
    assert "not judged, no values served: region" in feature["detail"]
    assert critical["state"] == verdict.OK


def test_the_headline_of_an_interval_without_traffic_says_when_live_quality_dropped():
    """The live metric is of an earlier, labelled day: an hour with no traffic of its own can breach it and
    ask for a retrain, and its headline said only "no traffic in this interval"."""
    detail = "roc_auc 0.6100 on 700 labelled rows of 2026-12-03 against 0.8000 on the holdout"
    drifts = [{"signal": n, "state": verdict.NOT_JUDGED} for n in ("feature_drift", "critical_columns")]
    breach = [*drifts, {"signal": "live_quality", "state": verdict.BREACH, "detail": detail}]
    quiet = [*drifts, {"signal": "live_quality", "state": verdict.OK, "detail": "fine"}]
    assert _state({"rows": 0}, quiet, POLICY) == "no traffic in this interval"
    assert (
        _state({"rows": 0}, breach, POLICY)
        == f"no traffic in this interval, but live quality dropped ({detail})"
    )
    few = POLICY.min_served_rows - 1
    assert _state({"rows": few}, breach, POLICY).endswith(
        f"({few} rows), but live quality dropped ({detail})"
    )


def test_the_volume_baseline_counts_only_intervals_judged_against_a_champion(tmp_path):
    """An interval with no champion reads no log and records 0 rows: counted, it made the first days' traffic
    after the first promotion a volume breach against a usual of 0."""
    from pipelines.data import storage
    from pipelines.monitoring.monitor import _baseline, figures_uri
    from pipelines.settings import get_settings

    settings = get_settings(state_dir=tmp_path)
    interval = Interval.of(dt.date(2026, 12, 4), 10)
    for days, champion, rows in [(1, 3, 1200), (2, None, 0), (3, 3, 1000)]:
        storage.write_json_atomic(
            figures_uri(settings, interval.earlier(days)), {"champion": champion, "rows": rows}
        )
    assert _baseline(settings, interval, 7) == [1200, 1000]


def test_two_asks_exactly_one_cooldown_apart_both_stand_in_either_order():
    """Hourly intervals and a whole-hour cooldown meet this edge every day: judged in order both asked, the
    earlier judged after the later (a retry, a catch-up) was suppressed."""
    later = ("2026-11-30T1300-1h", END)
    earlier = ("2026-11-30T0700-1h", END - dt.timedelta(hours=6))

    def judged(order):
        records, found = [], {}
        for name, end in order:
            decided = verdict.decide(POLICY, [_breach("feature_drift")], name, end, [*records], None)
            found[name] = decided["status"]
            if decided["status"] == verdict.TRIGGERED:
                at = end.isoformat()
                start = (end - dt.timedelta(hours=1)).isoformat()
                records.append(
                    {"interval": name, "status": verdict.TRIGGERED, "start": start, "at": at, "reasons": []}
                )
        return found

    assert (
        judged([earlier, later])
        == judged([later, earlier])
        == {
            earlier[0]: verdict.TRIGGERED,
            later[0]: verdict.TRIGGERED,
        }
    )


def test_a_figure_on_its_threshold_is_judged_as_its_message_shows_it():
    """0.8 - 0.75 is 0.050000000000000044: its message says +0.0500, not above 0.05; it breached."""
    policy = MonitoringPolicy.model_validate({"live_quality": {"max_drop": 0.05}})
    live = {"state": "measured", "day": "2026-11-29", "metric": "accuracy", "value": 0.75, "joined_rows": 400}
    assert verdict.live_signal(policy, live, 0.80)["state"] == verdict.OK
    assert verdict.live_signal(policy, live, 0.8000011)["state"] == verdict.BREACH


def test_a_trigger_record_from_before_start_was_written_is_checked_for_delivery():
    from pipelines.monitoring.monitor import _lost_asks

    old = {"interval": "2026-11-30T1300-1h", "status": verdict.TRIGGERED, "at": "2026-11-30T14:00:00+00:00"}
    seen = []
    assert _lost_asks([old], lambda name, start: seen.append((name, start)) or True) == []
    assert seen == [("2026-11-30T1300-1h", dt.datetime(2026, 11, 30, 13, tzinfo=dt.UTC))]


def test_an_interval_is_judged_only_once_it_is_over_and_its_rows_are_written(settings):
    """The CLI judged today's whole day at 10:00 and filed its figures: a volume of ten hours against whole
    days, a verdict that changed when the day was judged again. Serving writes a row up to its flush period
    after it is served, so an interval is judged once that has passed too."""
    from pipelines.monitoring.monitor import IntervalNotOverError, check_over, judgeable_from
    from pipelines.monitoring.monitor import monitor as run

    hour = Interval.of(dt.date(2026, 11, 30), 13)
    assert settings.prediction_log_flush_seconds == 10.0
    ready = judgeable_from(settings, hour)
    assert ready == hour.end + dt.timedelta(seconds=15)  # the flush period and 5 s for the write
    check_over(settings, hour, ready)
    with pytest.raises(
        IntervalNotOverError, match="2026-11-30T1300-1h ends at 2026-11-30 14:00 UTC and can be"
    ):
        check_over(settings, hour, ready - dt.timedelta(seconds=1))
    today = Interval.of(dt.datetime.now(dt.UTC).date())
    with pytest.raises(IntervalNotOverError, match="judged now, its volume, drift and verdict would be"):
        run(settings, today)  # the clock's now: refused before anything is read or written
    assert not Path(settings.monitoring_uri).exists()


def test_a_run_by_hand_waits_out_its_minute_and_the_last_flush_and_a_future_interval_is_refused(settings):
    from pipelines.monitoring.monitor import IntervalNotOverError, wait_until_judgeable

    asked = dt.datetime(2026, 12, 2, 1, 24, 34, tzinfo=dt.UTC)
    by_hand = Interval.hour_up_to(asked)  # ends at 01:25
    slept: list[float] = []
    assert wait_until_judgeable(settings, by_hand, lambda: asked, slept.append) == 26 + 15
    assert slept == [41.0]
    scheduled = Interval.of(dt.date(2026, 12, 2), 0)  # its run starts at 01:05: over long ago
    assert wait_until_judgeable(settings, scheduled, lambda: asked, slept.append) == 0.0
    future = Interval.of(dt.date(2026, 12, 2), 3)  # a logical date hours ahead: not waited for
    with pytest.raises(IntervalNotOverError, match="2026-12-02T0300-1h ends at 2026-12-02 04:00 UTC"):
        wait_until_judgeable(settings, future, lambda: asked, slept.append)
    assert slept == [41.0]


def test_a_time_without_a_zone_is_refused_wherever_an_interval_is_made_or_judged(settings):
    """Interval() refused a naive time, but whole_hours, hour_up_to, check_over and the wait read one as the
    host's local time: one call judged 13:00, 18:00 or 07:00 UTC by the host's TZ, and west of UTC check_over
    let an hour be judged half-way through."""
    from pipelines.monitoring.monitor import check_over, wait_until_judgeable

    naive = dt.datetime(2026, 12, 1, 13, 30)
    with pytest.raises(ValueError, match="a data interval's start must be timezone-aware"):
        Interval.whole_hours(naive, naive + dt.timedelta(hours=1))
    with pytest.raises(ValueError, match="the moment an hour is judged up to must be timezone-aware"):
        Interval.hour_up_to(naive)
    hour = Interval.of(dt.date(2026, 12, 1), 13)
    with pytest.raises(ValueError, match=r"judged at \(now\) must be timezone-aware .* 2026-12-01T13:30:00"):
        check_over(settings, hour, naive)
    with pytest.raises(ValueError, match="the clock's time must be timezone-aware"):
        wait_until_judgeable(settings, hour, lambda: naive, lambda seconds: None)
    with pytest.raises(ValueError, match="an interval's start must be timezone-aware"):
        Interval(naive, dt.datetime(2026, 12, 1, 15, tzinfo=dt.UTC))


def test_the_report_counts_the_drift_the_verdict_judged_when_a_feature_has_no_served_values(contract):
    """The feature_drift signal left a feature with no served values out (0 of 8 drifted), while the same run's
    monitor.json, report table and Evidently count had it drifted (1 of 8, share 0.125: a breach at 0.125)."""
    from pipelines.data.generate import generate_day
    from pipelines.data.profile import frame_profile
    from pipelines.evaluation import drift_stats
    from pipelines.evaluation.drift import columns_table

    def profile(frame):
        return frame_profile(
            frame, contract.numeric_features, contract.categorical_features, contract.dataset
        )

    reference = generate_day(dt.date(2026, 11, 20), seed=7, rows=3000)
    served = generate_day(dt.date(2026, 11, 21), seed=8, rows=3000)
    served["avg_basket"] = float("nan")  # an upstream stopped sending it
    compared = drift_stats.compare_features(profile(reference), profile(served), contract)
    assert compared["columns"]["avg_basket"]["drifted"]  # the gate's reading: values on one side only
    drift = verdict.served_drift(compared)
    policy = MonitoringPolicy.model_validate({"feature_drift": {"max_drifted_share": 0.125}})
    feature = verdict.drift_signals(policy, drift, None, "")[0]
    assert drift["drift_share"] == feature["value"] == 0.0 and drift["drifted_columns"] == 0
    assert feature["state"] == verdict.OK and "no values served: avg_basket" in feature["detail"]
    assert drift["columns"]["avg_basket"]["not_judged"] and verdict.served_drift(drift) == drift
    assert "<td>avg_basket</td>" in (table := columns_table(drift)) and "DRIFT" not in table
    assert "not judged" in table
