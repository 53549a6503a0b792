"""Gate: the promotion policy (:mod:`pipelines.evaluation.policy`) applied to real numbers, with its reasons.

:func:`decide` is pure: evaluation and drift results in, a decision record out, one line per rule. The
gate fails closed: a missing metric is a failed rule, never a pass. :func:`gate` is the stage: it loads
the policy, decides, and logs the record to the challenger's MLflow run.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import textwrap
from typing import Any

from pipelines.data import runlog
from pipelines.data.contract import dataset_contract
from pipelines.evaluation import latency
from pipelines.evaluation import policy as rules
from pipelines.evaluation.metrics import sign
from pipelines.evaluation.policy import (
    LatencyRule,
    Policy,
    SliceRule,
    check_against_contract,
    load_policy,
    policy_sha256,
)
from pipelines.settings import Settings

log = logging.getLogger(__name__)

Rule = dict[str, Any]
# A measured figure is judged as the record shows it, to 6 decimals: an AUC gain of exactly 0.005 on counted
# rows computes as 0.004999999999999893 on one CPU and may come out a bit above on another; judged raw, it
# failed a min_improvement of 0.005 that its record said it met. Rounded, it passes wherever it runs.
RECORDED_DIGITS = 6


def _recorded(value: float) -> float:
    return round(value, RECORDED_DIGITS) + 0.0  # + 0.0: a -0.0 is recorded as 0.0


def _rule(name: str, passed: bool, value: Any, threshold: Any, detail: str) -> Rule:
    return {"rule": name, "passed": bool(passed), "value": value, "threshold": threshold, "detail": detail}


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _interval_rule(policy: Policy, comparison: dict[str, Any]) -> Rule:
    low = comparison.get("ci_low")
    floor = -policy.bootstrap.tolerance + 0.0  # a tolerance of 0: recorded as 0.0, not -0.0
    if comparison.get("error") or low is None or math.isnan(low):
        why = comparison.get("error", "not computed")
        return _rule(
            rules.CONFIDENCE_INTERVAL, False, None, floor, f"no confidence interval: {why}; fail closed"
        )
    high = comparison["ci_high"]
    return _rule(
        rules.CONFIDENCE_INTERVAL,
        _recorded(low) > floor,
        [_recorded(low), _recorded(high)],
        floor,
        f"{comparison['confidence']:.0%} paired bootstrap interval of the improvement [{low:+.4f}, {high:+.4f}] "
        f"({comparison['resamples']} resamples of {comparison['rows_resampled']} rows); "
        f"its lower bound must be above {floor:+.4f}",
    )


def _slice_rule(metric: str, rule: SliceRule, found: dict[str, Any] | None) -> Rule:
    name = rules.slice_rule(rule.column)
    if found is None or found.get("error"):
        why = found.get("error") if found else "not measured"
        return _rule(name, False, None, rule.max_regression, f"slices of {rule.column}: {why}; fail closed")
    judged = [v for v in found["values"] if "regression" in v]
    skipped = len(found["values"]) - len(judged)
    if not judged:
        return _rule(
            name,
            False,
            None,
            rule.max_regression,
            f"no value of {rule.column} has {rule.min_rows} holdout rows with both classes; "
            "the slice rule cannot be checked: fail closed",
        )
    worst = max(judged, key=lambda v: v["regression"])
    detail = (
        f"worst of {len(judged)} slices: {rule.column}={worst['value']} ({worst['rows']} rows) "
        f"{metric} {worst['challenger']:.4f} vs champion {worst['champion']:.4f}"
    )
    if skipped:
        detail += f"; {skipped} slice(s) below {rule.min_rows} rows not judged"
    regression = _recorded(worst["regression"])
    return _rule(name, regression <= rule.max_regression, regression, rule.max_regression, detail)


def _comparison_rules(policy: Policy, evaluation: dict[str, Any]) -> list[Rule]:
    """Rules that compare challenger and champion on the same holdout: each fails closed on a missing number."""
    metric = policy.primary_metric
    challenger, champion = evaluation["challenger"], evaluation["champion"]
    if champion.get("error"):
        detail = f"champion v{champion.get('version')} could not be scored, so nothing can be compared: "
        return [_rule(rules.CHAMPION_EVALUATED, False, None, "scored", detail + champion["error"])]
    chal_value = (challenger.get("metrics") or {}).get(metric)
    champ_value = (champion.get("metrics") or {}).get(metric)
    if champ_value is None:
        detail = f"champion has no {metric}: fail closed"
        return [_rule(rules.CHAMPION_METRIC_PRESENT, False, None, metric, detail)]
    gain = _recorded(sign(metric) * (chal_value - champ_value))
    detail = (
        f"challenger v{challenger.get('version')} {metric} {chal_value:.4f} vs champion "
        f"v{champion.get('version')} {champ_value:.4f} on the same {evaluation.get('holdout_rows')} rows"
    )
    found = [
        _rule(
            rules.MIN_IMPROVEMENT,
            gain >= policy.min_improvement,
            gain,
            policy.min_improvement,
            detail,
        ),
        _interval_rule(policy, evaluation.get("comparison") or {}),
        _rule(
            rules.CHALLENGER_IS_NEW,
            champion.get("version") != challenger.get("version"),
            challenger.get("version"),
            champion.get("version"),
            "the challenger must differ from the champion",
        ),
    ]
    if policy.time_order:
        found.append(_time_order_rule(challenger, champion))
    measured = {s["column"]: s for s in evaluation.get("slices") or []}
    return found + [_slice_rule(metric, rule, measured.get(rule.column)) for rule in policy.slices]


def _time_order_rule(challenger: dict[str, Any], champion: dict[str, Any]) -> Rule:
    """Time moves forward: a model trained on older data than the champion's does not replace it."""
    mine, theirs = challenger.get("data_end"), champion.get("data_end")
    if not mine or not theirs:
        detail = f"data end unknown (challenger {mine}, champion {theirs}): fail closed"
        return _rule(rules.DATA_NOT_OLDER, False, mine, theirs, detail)
    older = dt.date.fromisoformat(mine) < dt.date.fromisoformat(theirs)
    detail = (
        f"older than the champion: the challenger's data ends {mine}, the champion's {theirs}"
        if older
        else f"the challenger's data ends {mine}, the champion's {theirs}"
    )
    return _rule(rules.DATA_NOT_OLDER, not older, mine, theirs, detail)


def _absolute_rules(policy: Policy, challenger_value: float) -> list[Rule]:
    """With no champion yet, the policy's absolute threshold decides."""
    action = policy.no_champion.action
    if action != "promote_if_above":
        detail = f"no champion yet: policy says {action}"
        return [_rule(rules.NO_CHAMPION_ACTION, action == "promote", action, "promote", detail)]
    floor, metric = policy.no_champion.min_primary_metric, policy.primary_metric
    value = _recorded(challenger_value)  # judged as recorded: 0.6499996 is recorded, and judged, as 0.65
    ok = sign(metric) * (value - floor) >= 0
    detail = (
        f"no champion yet: challenger {metric} {value} vs "  # as judged: 0.649999 is not shown as 0.6500
        f"{'floor' if sign(metric) > 0 else 'ceiling'} {floor}"
    )
    return [_rule(rules.NO_CHAMPION_THRESHOLD, ok, value, floor, detail)]


def _latency_rule(rule: LatencyRule, measured: dict[str, Any]) -> Rule:
    budget = rule.max_p99_ms
    p99 = measured.get("p99")
    if p99 is None or not measured.get("attempts"):
        detail = f"latency not measured ({measured.get('error', 'missing')}): fail closed"
        return _rule(rules.LATENCY_P99, False, None, budget, detail)
    # Re-judged from the recorded attempts under this policy, so a decision can be re-derived from the figures.
    found, why = latency.final_verdict(measured["attempts"], budget, rule.max_ratio_to_champion)
    champion = (
        f"; {measured.get('reference', 'the champion')} p99 {_fmt(measured['champion_p99'])} ms in the same rounds"
        if measured.get("champion_p99") is not None
        else ""
    )
    detail = (
        f"p99 {_fmt(p99)} ms, p50 {_fmt(measured.get('p50'))} ms{champion}: {why}. Measured as "
        f"{measured.get('method', 'method not recorded')}; {measured.get('path', 'path not recorded')}"
    )
    return _rule(rules.LATENCY_P99, found == "pass", p99, budget, detail)


def _size_rule(budget_mib: float, size_bytes: int | None) -> Rule:
    mib = None if size_bytes is None else round(size_bytes / 2**20, 3)
    detail = f"model files {mib} MiB" if mib is not None else "model size unknown: fail closed"
    # Judged on the bytes: the MiB to 3 decimals shown would pass up to 0.0005 MiB over the budget.
    passed = size_bytes is not None and size_bytes <= budget_mib * 2**20
    if passed is False and mib is not None and mib <= budget_mib:
        detail += f" ({size_bytes} bytes, over {budget_mib * 2**20:.0f})"
    return _rule(rules.MODEL_SIZE, passed, mib, budget_mib, detail)


def _budget_rules(policy: Policy, challenger: dict[str, Any]) -> list[Rule]:
    found = []
    if policy.latency is not None:
        found.append(_latency_rule(policy.latency, challenger.get("latency_ms") or {}))
    if policy.onnx is not None:
        found.append(_onnx_rule(policy, challenger))
    if policy.max_model_size_mb is not None:
        found.append(_size_rule(policy.max_model_size_mb, challenger.get("size_bytes")))
    return found


def _onnx_rule(policy: Policy, challenger: dict[str, Any]) -> Rule:
    assert policy.onnx is not None
    wanted, metric, budget = policy.onnx.runtime, policy.primary_metric, policy.onnx.max_metric_loss
    scored = (challenger.get("runtimes") or {}).get(wanted) or {}
    native = (challenger.get("metrics") or {}).get(metric)
    value = (scored.get("metrics") or {}).get(metric)
    if native is None or value is None:
        why = scored.get("error") or f"the challenger has no {wanted} runtime"
        return _rule(rules.ONNX_RUNTIME, False, None, budget, f"{why}: fail closed")
    loss = _recorded(sign(metric) * (native - value))
    detail = (
        f"{wanted} {metric} {_fmt(value)} vs native {_fmt(native)} on the holdout "
        f"(largest probability difference {scored.get('max_abs_diff')})"
    )
    return _rule(rules.ONNX_RUNTIME, loss <= budget, loss, budget, detail)


def _drift_rules(policy: Policy, drift: dict[str, Any], against: int | None) -> list[Rule]:
    """``against``: the version the drift must have been measured against, the champion evaluate scored (the
    challenger's own profile when there is none): the two tasks read the champion apart, and a rollback between
    them would have judged the drift against another model's reference."""
    share = drift.get("drift_share")
    measured = drift.get("reference_version")
    if share is not None and against is not None and measured is not None and measured != against:
        detail = (
            f"the drift was measured against v{measured}'s reference profile, but evaluate compared with "
            f"v{against} (the champion changed between them): fail closed; run the day again"
        )
        return [
            _rule(rules.MAX_DRIFTED_SHARE, False, share, policy.drift.max_drifted_share, detail),
            _rule(rules.CRITICAL_COLUMNS_STABLE, False, None, policy.drift.critical_columns, detail),
        ]
    drifted = {name for name, col in (drift.get("columns") or {}).items() if col.get("drifted")}
    if (drift.get("label") or {}).get("drifted") and drift.get("label_column"):
        drifted.add(drift["label_column"])  # reported apart from the features, but the policy may name it
    critical = sorted(drifted & set(policy.drift.critical_columns))
    limit = policy.drift.max_drifted_share
    share_detail = (
        f"{drift.get('drifted_columns')} of {len(drift.get('columns') or {})} features drifted against the "
        f"{drift.get('reference', '?')}'s reference profile"
        if share is not None
        else "no drift result: fail closed"
    )
    return [
        _rule(rules.MAX_DRIFTED_SHARE, share is not None and share <= limit, share, limit, share_detail),
        _rule(
            rules.CRITICAL_COLUMNS_STABLE,
            share is not None and not critical,
            critical,
            policy.drift.critical_columns,
            "critical columns that drifted: " + (", ".join(critical) or "none"),
        ),
    ]


def _model_rules(policy: Policy, evaluation: dict[str, Any]) -> list[Rule]:
    """The challenger's own score: against the champion's on the same rows, or the floor when there is none."""
    metric = policy.primary_metric
    challenger = evaluation.get("challenger") or {}
    if challenger.get("error"):
        detail = f"challenger v{challenger.get('version')} could not be scored: {challenger['error']}"
        return [_rule(rules.CHALLENGER_EVALUATED, False, None, "scored", detail)]
    challenger_value = (challenger.get("metrics") or {}).get(metric)
    if challenger_value is None:
        detail = f"challenger has no {metric}: fail closed"
        return [_rule(rules.CHALLENGER_METRIC_PRESENT, False, None, metric, detail)]
    if evaluation.get("champion") is None:
        return _absolute_rules(policy, challenger_value)
    return _comparison_rules(policy, evaluation)


def _same_policy_rule(evaluated_under: str | None, policy_sha: str) -> Rule:
    """The figures were computed under the policy that judges them (its bootstrap, slices and latency settings)."""
    if evaluated_under is None:
        detail = "the evaluation does not say which policy it ran under: run evaluate again; fail closed"
    elif evaluated_under != policy_sha:
        detail = (
            f"evaluate ran under policy sha256 {evaluated_under[:12]}, the gate's is {policy_sha[:12]}: the "
            "figures (interval, slices, latency) follow the policy, so run evaluate again; fail closed"
        )
    else:
        detail = f"evaluate and the gate read the same policy (sha256 {policy_sha[:12]})"
    return _rule(rules.SAME_POLICY, evaluated_under == policy_sha, evaluated_under, policy_sha, detail)


def decide(
    policy: Policy, evaluation: dict[str, Any], drift: dict[str, Any], policy_sha: str | None = None
) -> dict[str, Any]:
    """Apply every rule; promote only when all pass. Returns the decision record. Pure: numbers in, record out.

    It fails closed: a missing metric, interval, slice, latency or drift figure, or an evaluation error,
    is a failed rule, never a pass. ``policy_sha``: the sha256 of the policy file judging, which must be the
    one evaluate computed the figures under (the gate's run passes it).
    """
    challenger = evaluation.get("challenger") or {}
    champion = evaluation.get("champion")
    rows = evaluation.get("holdout_rows")
    needed = policy.min_holdout_rows
    found = [
        _rule(
            rules.MIN_HOLDOUT_ROWS,
            rows is not None and rows >= needed,
            rows,
            needed,
            f"{rows} holdout rows scored, policy needs {needed}",
        ),
        *_model_rules(policy, evaluation),
        *_budget_rules(policy, challenger),
        *_drift_rules(policy, drift, champion.get("version") if champion else challenger.get("version")),
    ]
    if policy_sha is not None:
        found.append(_same_policy_rule(evaluation.get("policy_sha256"), policy_sha))
    passed = all(r["passed"] for r in found)
    return {
        "decision": "promote" if passed else "reject",
        "challenger_version": challenger.get("version"),
        "champion_version": champion.get("version") if champion else None,
        "primary_metric": policy.primary_metric,
        "policy_version": policy.version,
        "approval": policy.approval,
        "dry_run": policy.dry_run,
        "rules": found,
        "reasons": [f"{'PASS' if r['passed'] else 'FAIL'} {r['rule']}: {r['detail']}" for r in found],
    }


def outcome(record: dict[str, Any]) -> str:
    """What the run will do with the decision, in words."""
    if record["decision"] != "promote":
        return "reject: the champion stays"
    if record.get("dry_run"):
        return "would promote (dry run: nothing moves)"
    if record.get("approval") == "required":
        return "promote after a person approves it in the Airflow UI"
    return "promote"


def to_markdown(record: dict[str, Any]) -> str:
    """The decision record as the Markdown a person reads (MLflow artifact, approval page)."""
    champion = record["champion_version"]
    policy_line = (
        f"challenger v{record['challenger_version']} vs champion {'v' + str(champion) if champion else '(none)'}, "
        f"primary metric `{record['primary_metric']}`, policy v{record['policy_version']}"
    )
    if record.get("policy_sha256"):
        policy_line += f" (`{record['policy_path']}`, sha256 {record['policy_sha256'][:12]})"
    lines = [
        f"# Promotion decision: **{record['decision'].upper()}**",
        "",
        policy_line,
        "",
        f"Outcome: **{outcome(record)}**",
        "",
        "| rule | result | value | threshold | detail |",
        "|---|---|---|---|---|",
    ]
    for r in record["rules"]:
        detail = str(r["detail"]).replace("|", "\\|")
        lines.append(
            f"| {r['rule']} | {'pass' if r['passed'] else 'FAIL'} | {r['value']} | {r['threshold']} | {detail} |"
        )
    return "\n".join(lines) + "\n"


def log_lines(record: dict[str, Any], width: int = 100) -> list[str]:
    """The decision as the task log shows it: the verdict first, then each rule, wrapped to ``width``.

    A log viewer does not wrap: a rule's detail (a latency verdict, an interval) runs to hundreds of
    characters, so each is cut into lines that fit, indented under its rule.
    """
    champion = record["champion_version"]
    lines = [
        f"gate decision: {record['decision'].upper()} ({record['outcome']})",
        f"  challenger v{record['challenger_version']} vs champion {'v' + str(champion) if champion else '(none)'}"
        f", primary metric {record['primary_metric']}, policy v{record['policy_version']}",
    ]
    for reason in record["reasons"]:
        lines += textwrap.wrap(reason, width, initial_indent="  ", subsequent_indent="      ")
    return lines


@runlog.stage("gate")
def gate(
    settings: Settings, logical_date: dt.date, evaluation: dict[str, Any], drift: dict[str, Any]
) -> dict[str, Any]:
    """Decide, and log the decision record (JSON and Markdown) to the challenger's MLflow run.

    The record also goes to the task log (one line per rule) and back through XCom, with its Markdown,
    which the approval step shows to the person deciding.
    """
    from pipelines.release import history, tracking

    path = settings.resolved_policy_path
    # Hashed before it is read, as evaluate does: a file changed in between fails the same_policy rule.
    sha = policy_sha256(path)
    policy = load_policy(path)
    check_against_contract(policy, dataset_contract(settings), path)
    if settings.promotion_dry_run and not policy.dry_run:
        policy = policy.model_copy(update={"dry_run": True})
    record = decide(policy, evaluation, drift, sha)
    record |= {
        "outcome": outcome(record),
        "policy_path": str(path),
        "policy_sha256": sha,
        "decided_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "logical_date": logical_date.isoformat(),
    }
    markdown = to_markdown(record)
    client = tracking.configure(settings)
    version = record["challenger_version"]
    if version is not None and history.was_champion(settings, settings.model_name, int(version)):
        # A re-run of its day after it was promoted (it is champion, or was): the decision that promoted it
        # stays on the version; this one is in the task's log and goes to promote, which moves nothing (it is
        # champion already) or refuses (a person rolled back from it since, or a later promotion replaced it).
        log.info(
            "%s v%s was promoted before: its gate record stays; this run's decision (%s) is not written on it",
            settings.model_name,
            version,
            record["decision"],
        )
    elif version is not None:
        mv = client.get_model_version(settings.model_name, str(version))
        run_id = tracking.run_of(mv)
        client.log_text(run_id, json.dumps(record, indent=2), "gate/decision.json")
        client.log_text(run_id, markdown, "gate/decision.md")
        client.set_model_version_tag(settings.model_name, str(version), "gate.decision", record["decision"])
    for line in log_lines(record):
        log.info("%s", line)
    return record | {"markdown": markdown}
