"""A monitor verdict: each signal of the monitoring policy judged on an interval's figures, and whether a
retrain is asked for, suppressed (cooldown, daily budget, already asked for) or not needed.

Pure: figures and earlier trigger records in, a verdict out. Time is the interval's end, never the clock,
so the same interval judged again gives the same verdict.
"""

from __future__ import annotations

import datetime as dt
import statistics
from typing import Any

from pipelines.evaluation.metrics import sign
from pipelines.monitoring.policy import (
    CRITICAL_COLUMNS,
    FEATURE_DRIFT,
    LIVE_QUALITY,
    NULLS,
    OUT_OF_DOMAIN,
    PREDICTION_DRIFT,
    VOLUME,
    MonitoringPolicy,
)

# A figure is judged as its message shows it, to 6 decimals, as the gate and the drift tests judge theirs: a
# difference that lands on a threshold must not pass or breach on its last bit.
RECORDED_DIGITS = 6

BREACH, OK, NOT_JUDGED = "breach", "ok", "not_judged"
TRIGGERED, SUPPRESSED, NOT_NEEDED = "triggered", "suppressed", "not_needed"
ALREADY = "already_asked"  # this interval asked before (a re-run): reported, not asked again
WOULD_TRIGGER = (
    "would_trigger"  # judged outside Airflow (the CLI): nothing can be emitted, nothing is recorded
)


def _signal(name: str, state: str, detail: str, **figures: Any) -> dict[str, Any]:
    return {"signal": name, "state": state, "detail": detail, **figures}


NO_VALUES_SERVED = "no values served (null in every served row): not judged for drift, the nulls signal's"


def served_drift(features: dict[str, Any]) -> dict[str, Any]:
    """The features' drift (:func:`~pipelines.evaluation.drift_stats.compare_features`) as the monitor judges
    it: a feature with no served values (null in every served row) is the nulls signal's, not drift (counted
    as drift it would ask for a retrain, and a new model does not mend a broken upstream), so it is marked
    ``not_judged`` and left out of the drifted count; the share stays one of all the features. The report's
    figures, table and Evidently's count are made from this, so they agree with the verdict."""
    columns = {
        name: column | {"drifted": False, "not_judged": True, "detail": NO_VALUES_SERVED}
        if column["current_rows"] == 0
        else column
        for name, column in features["columns"].items()
    }
    drifted = sum(1 for column in columns.values() if column["drifted"])
    share = drifted / len(columns) if columns else 0.0
    return {**features, "drifted_columns": drifted, "drift_share": share, "columns": columns}


def drift_signals(
    policy: MonitoringPolicy, drift: dict[str, Any] | None, prediction: dict[str, Any] | None, why_not: str
) -> list[dict[str, Any]]:
    """Feature drift, critical columns and prediction drift; ``why_not`` when there was nothing to judge."""
    if drift is None:
        return [
            _signal(name, NOT_JUDGED, why_not) for name in (FEATURE_DRIFT, CRITICAL_COLUMNS, PREDICTION_DRIFT)
        ]
    limit = policy.feature_drift.max_drifted_share
    drift = served_drift(drift)  # as the report shows it (marking again changes nothing)
    empty = [name for name, column in drift["columns"].items() if column.get("not_judged")]
    drifted = [name for name, column in drift["columns"].items() if column["drifted"]]
    share = len(drifted) / len(drift["columns"]) if drift["columns"] else 0.0
    signals = [
        _signal(
            FEATURE_DRIFT,
            BREACH if share >= limit else OK,
            f"{len(drifted)} of {len(drift['columns'])} features drifted (share {share:.2f}, breach at {limit})"
            + (f": {', '.join(drifted)}" if drifted else "")
            + (f"; not judged, no values served: {', '.join(empty)}" if empty else ""),
            value=share,
            threshold=limit,
            drifted=drifted,
        )
    ]
    critical = [name for name in policy.feature_drift.critical_columns if name in drifted]
    signals.append(
        _signal(
            CRITICAL_COLUMNS,
            BREACH if critical else OK,
            f"critical columns drifted: {', '.join(critical)}"
            if critical
            else f"no critical column drifted ({', '.join(policy.feature_drift.critical_columns) or 'none named'})",
            drifted=critical,
        )
    )
    if prediction is None:
        signals.append(_signal(PREDICTION_DRIFT, NOT_JUDGED, "the champion answered none of these rows"))
    elif prediction.get("score") is None:
        signals.append(_signal(PREDICTION_DRIFT, NOT_JUDGED, prediction.get("detail", "no score")))
    else:
        signals.append(
            _signal(
                PREDICTION_DRIFT,
                BREACH if prediction["drifted"] else OK,
                f"served probabilities against the champion's holdout: {prediction['method']} "
                f"{prediction['score']:.4f} (breach at {prediction['threshold']})",
                value=prediction["score"],
                threshold=prediction["threshold"],
            )
        )
    return signals


# What the live signal reports of the join: the rows the champion served with no probability (another writer's),
# without keys, with them, served again (one event), joined to one label, whose labels disagree, and with no
# label yet; the days whose labels were read (the events' own days) and those not validated.
LIVE_COUNTS = (
    "day",
    "metric",
    "label_days",
    "label_days_not_validated",
    "unscored_rows",
    "unjoinable_rows",
    "joinable_rows",
    "repeated_rows",
    "joined_rows",
    "conflicting_label_rows",
    "unlabelled_rows",
)


def live_signal(
    policy: MonitoringPolicy, live: dict[str, Any], holdout_value: float | None
) -> dict[str, Any]:
    """The champion's live metric of its labelled day against its holdout figure."""
    rule = policy.live_quality
    counts = {k: live[k] for k in LIVE_COUNTS if k in live}
    if live["state"] != "measured":
        return _signal(LIVE_QUALITY, NOT_JUDGED, f"{live['state']}: {live['detail']}", **counts)
    if live["joined_rows"] < rule.min_labelled_rows:
        return _signal(
            LIVE_QUALITY,
            NOT_JUDGED,
            f"{live['joined_rows']} labelled rows on {live['day']}, fewer than {rule.min_labelled_rows}",
            value=live["value"],
            **counts,
        )
    if holdout_value is None:
        return _signal(
            LIVE_QUALITY,
            NOT_JUDGED,
            "the champion has no holdout figure to compare with",
            value=live["value"],
            **counts,
        )
    drop = sign(live["metric"]) * (holdout_value - live["value"])
    return _signal(
        LIVE_QUALITY,
        # Judged as its message shows it: 0.8 - 0.75 computes as 0.050000000000000044, not above 0.05.
        BREACH if round(drop, RECORDED_DIGITS) > rule.max_drop else OK,
        f"{live['metric']} {live['value']:.4f} on {live['joined_rows']} labelled rows of {live['day']} against "
        f"{holdout_value:.4f} on the holdout: {drop:+.4f} worse (breach above {rule.max_drop})",
        value=live["value"],
        holdout=holdout_value,
        drop=drop,
        **counts,
    )


def quality_signals(
    policy: MonitoringPolicy,
    served: dict[str, Any],
    reference: dict[str, Any],
    baseline: list[int],
) -> list[dict[str, Any]]:
    """Nulls against the reference, values outside the contract, and volume against the usual."""
    rule = policy.data_quality
    rows = served["rows"]
    signals = []
    if rows:
        worse = {}
        for name, column in served["profile"]["columns"].items():
            increase = column["null_share"] - reference["columns"][name]["null_share"]
            # Judged as shown: 0.07 - 0.02 is not above 0.05.
            if round(increase, RECORDED_DIGITS) > rule.max_null_share_increase:
                worse[name] = round(increase, 6)
        signals.append(
            _signal(
                NULLS,
                BREACH if worse else OK,
                (
                    "null share above the reference's by more than "
                    f"{rule.max_null_share_increase}: " + ", ".join(f"{k} +{v:.3f}" for k, v in worse.items())
                )
                if worse
                else "null shares within the reference's",
                columns=worse,
            )
        )
        share = served["outside_rows"] / rows
        signals.append(
            _signal(
                OUT_OF_DOMAIN,
                BREACH if share > rule.max_out_of_domain_share else OK,
                f"{served['outside_rows']} of {rows} rows hold a value outside the contract (share {share:.4f}, "
                f"breach above {rule.max_out_of_domain_share})",
                value=share,
                columns={k: v for k, v in served["outside"].items() if v},
            )
        )
    else:
        signals += [_signal(name, NOT_JUDGED, "nothing was served") for name in (NULLS, OUT_OF_DOMAIN)]
    if not baseline:
        signals.append(
            _signal(VOLUME, NOT_JUDGED, f"{rows} rows served; no earlier interval to compare with")
        )
    else:
        signals.append(_volume(rule.volume.min_ratio, rule.volume.max_ratio, rows, baseline))
    return signals


def _volume(low: float, high: float, rows: int, baseline: list[int]) -> dict[str, Any]:
    """Served rows against the median of the same earlier intervals."""
    usual = statistics.median(baseline)
    where = f"the usual {usual:g} (median of {len(baseline)} earlier intervals; breach outside {low}-{high})"
    if not usual:  # nothing is usually served at this hour: any traffic is outside the band, no ratio
        state = BREACH if rows else OK
        return _signal(VOLUME, state, f"{rows} rows served against {where}", value=None if rows else 1.0)
    ratio = rows / usual
    return _signal(
        VOLUME,
        BREACH if not low <= ratio <= high else OK,
        f"{rows} rows served, {ratio:.2f} times {where}",
        value=ratio,
        usual=usual,
    )


def day_of(end: dt.datetime) -> dt.date:
    """The UTC day an interval ending at ``end`` belongs to (one ending at midnight: the day before)."""
    return (end - dt.timedelta(microseconds=1)).date()


def record_start(record: dict[str, Any]) -> dt.datetime:
    """A trigger record's interval start (records before it was written: from the name, to the minute)."""
    if "start" in record:
        return dt.datetime.fromisoformat(record["start"])
    return dt.datetime.strptime(record["interval"][:15], "%Y-%m-%dT%H%M").replace(tzinfo=dt.UTC)


def decide(
    policy: MonitoringPolicy,
    signals: list[dict[str, Any]],
    interval: str,
    end: dt.datetime,
    records: list[dict[str, Any]],
    last_promotion: dt.datetime | None,
    live_evidence: str | None = None,
) -> dict[str, Any]:
    """Whether this interval asks for a retrain: its breaches among ``retrain_on``, then the guards.

    ``records``: earlier trigger records (``interval``, ``status``, ``start`` and ``at``: the interval's start
    and end (a record without ``start``, from before it was written: from the name), ``reasons``,
    ``live_evidence``). One of this interval itself means it was judged before: nothing is asked twice.
    ``live_evidence`` names what the live metric was measured on (its labels day and the champion): every
    hour of a day judges the same labelled day, and a retrain is asked for on one piece of evidence once.
    The cooldown: a retrain asked for in the ``cooldown_hours`` before this interval's end holds it back, and
    so does one asked within ``cooldown_hours`` after it: on an interval across its end (a run by hand at 11:01
    judged 10:02-11:02; the 11:05 run then judges 10:00-11:00, nearly the same traffic), or on a later one (an
    older interval judged late, or again after its run failed, asks nothing the later ask did not). The daily
    budget counts every ask of the interval's UTC day, later intervals' included.
    """
    rule = policy.triggers
    reasons = [s for s in signals if s["state"] == BREACH and s["signal"] in rule.retrain_on]
    for record in records:  # judged again after it asked: it asked, whatever its figures say now (late rows)
        if record["interval"] == interval and record["status"] == TRIGGERED:
            detail = f"this interval asked for a retrain at {record['at']} already; not asked twice"
            summary = "; ".join(s["detail"] for s in reasons)
            return {
                "status": ALREADY,
                "reasons": [s["signal"] for s in reasons],
                "detail": detail,
                "summary": summary,
            }
    asked_on_live = any(
        r["status"] == TRIGGERED and LIVE_QUALITY in r["reasons"] and r.get("live_evidence") == live_evidence
        for r in records
        if r["interval"] != interval
    )
    if asked_on_live:
        reasons = [s for s in reasons if s["signal"] != LIVE_QUALITY]
    if not reasons:
        detail = "no breach the policy retrains on"
        if asked_on_live:
            detail += (
                f" (live quality: a retrain was asked for on the same evidence, {live_evidence}, already)"
            )
        return {"status": NOT_NEEDED, "reasons": [], "detail": detail}
    named = [s["signal"] for s in reasons]
    summary = "; ".join(s["detail"] for s in reasons)
    others = [r for r in records if r["status"] == TRIGGERED and r["interval"] != interval]
    asked = sorted((dt.datetime.fromisoformat(r["at"]) for r in others), reverse=True)
    cooldown = dt.timedelta(hours=rule.cooldown_hours)
    recent = [t for t in asked if end - cooldown < t <= end]
    if recent:
        detail = (
            f"cooldown: a retrain was asked for at {recent[0].isoformat()}, within {rule.cooldown_hours:g} h"
        )
        return {"status": SUPPRESSED, "reasons": named, "detail": detail, "summary": summary}
    later = [
        (dt.datetime.fromisoformat(r["at"]), r["interval"], record_start(r) < end)
        for r in others
        # Open at both ends, as the look back is: an ask exactly one cooldown away holds back neither interval,
        # whichever is judged first (hourly intervals and a whole-hour cooldown meet this edge every day).
        if end < dt.datetime.fromisoformat(r["at"]) < end + cooldown
    ]
    if later:
        at, name, across = min(later)  # the nearest after this interval's end
        where = "an interval across this one's end" if across else "a later interval"
        detail = (
            f"cooldown: a retrain was asked for at {at.isoformat()} on {where} ({name}), "
            f"within {rule.cooldown_hours:g} h"
        )
        return {"status": SUPPRESSED, "reasons": named, "detail": detail, "summary": summary}
    settle = dt.timedelta(hours=rule.after_promotion_hours)
    if last_promotion is not None and end - settle < last_promotion <= end:
        detail = (
            f"cooldown: the champion changed at {last_promotion.isoformat()}, within "
            f"{rule.after_promotion_hours:g} h"
        )
        return {"status": SUPPRESSED, "reasons": named, "detail": detail, "summary": summary}
    day = day_of(end)
    today = [t for t in asked if day_of(t) == day]  # a later interval's ask too: judged late, it counts
    if len(today) >= rule.max_per_day:
        detail = f"budget: {len(today)} retrains already asked for on {day} (at most {rule.max_per_day})"
        return {"status": SUPPRESSED, "reasons": named, "detail": detail, "summary": summary}
    return {
        "status": TRIGGERED,
        "reasons": named,
        "detail": f"retrain asked for: {summary}",
        "summary": summary,
    }
