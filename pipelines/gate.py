"""Gate: the promotion policy (include/promotion_policy.yaml) applied to real numbers, with its reasons.

:func:`decide` is pure: evaluation and drift results in, a decision record out, one line per rule. The
gate fails closed: a missing metric is a failed rule, never a pass.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipelines import runlog, tracking
from pipelines.config_files import load_yaml_model
from pipelines.contract import Contract, load_contract
from pipelines.metrics import HIGHER_IS_BETTER
from pipelines.settings import Settings

log = logging.getLogger(__name__)


class PolicyError(ValueError):
    """The policy file is missing, unreadable or has a bad key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NoChampionRule(_Strict):
    action: Literal["promote_if_above", "promote", "reject"] = Field(
        default="promote_if_above",
        description="With no champion yet: promote when the primary metric reaches min_primary_metric, "
        "always promote, or never promote.",
    )
    min_primary_metric: float = Field(
        default=0.0,
        description="Absolute floor (a ceiling for lower-is-better metrics) of the primary metric.",
    )


class BootstrapRule(_Strict):
    resamples: int = Field(
        default=1000, ge=100, le=100_000, description="Bootstrap resamples of the holdout."
    )
    confidence: float = Field(default=0.95, gt=0.5, lt=1, description="Confidence level of the interval.")
    tolerance: float = Field(
        default=0.0,
        ge=0,
        description="The interval's lower bound of (challenger - champion) must be above -tolerance.",
    )
    max_rows: int = Field(
        default=50_000,
        ge=100,
        description="Larger holdouts are bootstrapped on a seeded sample of this size.",
    )
    seed: int = Field(default=0, description="Seed of the resampling, so a decision can be reproduced.")


class SliceRule(_Strict):
    column: str = Field(description="A categorical feature of the contract; each of its values is a slice.")
    max_regression: float = Field(
        ge=0, description="How much worse than the champion the challenger may be on any one slice."
    )
    min_rows: int = Field(
        default=100, ge=1, description="Slices with fewer holdout rows are reported, not judged."
    )


class LatencyRule(_Strict):
    max_p99_ms: float = Field(
        gt=0, description="Budget for the p99 of a one-row prediction, in milliseconds."
    )
    samples: int = Field(default=200, ge=20, le=100_000, description="Timed one-row predictions.")


class OnnxRule(_Strict):
    runtime: Literal["onnx", "onnx-int8"] = Field(
        default="onnx-int8",
        description="The ONNX Runtime variant that must hold up (float32 or int8 dynamic).",
    )
    max_metric_loss: float = Field(
        default=0.002,
        ge=0,
        description="How much worse (primary metric, sign-adjusted) that variant may score than the native "
        "model on the same holdout.",
    )


class DriftRule(_Strict):
    max_drifted_share: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="Above this share of drifted columns the input looks broken: block.",
    )
    critical_columns: list[str] = Field(default=[], description="Any of these drifting blocks promotion.")


class Policy(_Strict):
    """Schema version 1 of the promotion policy; docs/promotion-policy.md documents every key."""

    version: Literal[1] = Field(description="Schema version of this file.")
    primary_metric: Literal["roc_auc", "accuracy", "log_loss", "brier"]
    higher_is_better: bool = Field(description="Must agree with primary_metric (log_loss and brier: false).")
    min_improvement: float = Field(
        default=0.0, description="challenger - champion on the same holdout (sign-adjusted) must reach this."
    )
    min_holdout_rows: int = Field(default=1, ge=1, description="Fewer scored rows than this: no promotion.")
    bootstrap: BootstrapRule = BootstrapRule()
    slices: list[SliceRule] = Field(default=[], description="Per-slice regression limits.")
    latency: LatencyRule | None = Field(default=None, description="Latency budget; absent = not judged.")
    max_model_size_mb: float | None = Field(
        default=None, gt=0, description="Budget for the model's files (MiB); absent = not judged."
    )
    onnx: OnnxRule | None = Field(
        default=None,
        description="Require the challenger's ONNX export and bound its accuracy loss; absent = not judged.",
    )
    no_champion: NoChampionRule = NoChampionRule()
    drift: DriftRule = DriftRule()
    approval: Literal["none", "required"] = Field(
        default="none", description="required: a person approves or rejects each promotion in the Airflow UI."
    )
    dry_run: bool = Field(default=False, description="Record 'would promote' and move nothing.")


def load_policy(path: Path) -> Policy:
    """Read the policy; an error names the file and the offending key."""
    policy = load_yaml_model(path, Policy, "promotion policy", PolicyError)
    if policy.higher_is_better != HIGHER_IS_BETTER[policy.primary_metric]:
        raise PolicyError(
            f"promotion policy {path}: higher_is_better contradicts primary_metric {policy.primary_metric}"
        )
    columns = [s.column for s in policy.slices]
    if len(set(columns)) != len(columns):
        raise PolicyError(f"promotion policy {path}: slices: a column is listed twice ({columns})")
    return policy


def check_against_contract(policy: Policy, contract: Contract, path: Path) -> None:
    """Slice and critical columns must exist in the dataset's contract; the error names the key."""
    for i, rule in enumerate(policy.slices):
        if rule.column not in contract.categorical_features:
            raise PolicyError(
                f"promotion policy {path}: slices.{i}.column: '{rule.column}' is not a categorical feature of "
                f"the {contract.dataset} contract (choose from {', '.join(contract.categorical_features) or 'none'})"
            )
    known = set(contract.feature_columns) | {contract.label}
    for i, column in enumerate(policy.drift.critical_columns):
        if column not in known:
            raise PolicyError(
                f"promotion policy {path}: drift.critical_columns.{i}: '{column}' is not a column of the "
                f"{contract.dataset} contract"
            )


def policy_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _rule(name: str, passed: bool, value: Any, threshold: Any, detail: str) -> dict[str, Any]:
    return {"rule": name, "passed": bool(passed), "value": value, "threshold": threshold, "detail": detail}


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _comparison_rules(policy: Policy, evaluation: dict[str, Any]) -> list[dict[str, Any]]:
    """Rules that compare challenger and champion on the same holdout: each fails closed on a missing number."""
    metric = policy.primary_metric
    challenger, champion = evaluation["challenger"], evaluation["champion"]
    rules = []
    if champion.get("error"):
        return [_rule("champion_evaluated", False, None, "scored", f"champion v{champion.get('version')} could "
                      f"not be scored, so nothing can be compared: {champion['error']}")]  # fmt: skip
    chal_value = (challenger.get("metrics") or {}).get(metric)
    champ_value = (champion.get("metrics") or {}).get(metric)
    if champ_value is None:
        return [
            _rule("champion_metric_present", False, None, metric, f"champion has no {metric}: fail closed")
        ]
    gain = (1.0 if policy.higher_is_better else -1.0) * (chal_value - champ_value)
    rules.append(
        _rule("min_improvement", gain >= policy.min_improvement, round(gain, 6), policy.min_improvement,
              f"challenger v{challenger.get('version')} {metric} {chal_value:.4f} vs champion "
              f"v{champion.get('version')} {champ_value:.4f} on the same {evaluation.get('holdout_rows')} rows")
    )  # fmt: skip
    comparison = evaluation.get("comparison") or {}
    low = comparison.get("ci_low")
    floor = -policy.bootstrap.tolerance
    if comparison.get("error") or low is None or math.isnan(low):
        rules.append(_rule("confidence_interval", False, None, floor,
                           f"no confidence interval: {comparison.get('error', 'not computed')}; fail closed"))  # fmt: skip
    else:
        rules.append(
            _rule("confidence_interval", low > floor, [round(low, 6), round(comparison["ci_high"], 6)], floor,
                  f"{comparison['confidence']:.0%} paired bootstrap interval of the improvement "
                  f"[{low:+.4f}, {comparison['ci_high']:+.4f}] ({comparison['resamples']} resamples of "
                  f"{comparison['rows_resampled']} rows); its lower bound must be above {floor:+.4f}")
        )  # fmt: skip
    rules.append(
        _rule("challenger_is_new", champion.get("version") != challenger.get("version"),
              challenger.get("version"), champion.get("version"), "the challenger must differ from the champion")
    )  # fmt: skip
    measured = {s["column"]: s for s in evaluation.get("slices") or []}
    for rule in policy.slices:
        found = measured.get(rule.column)
        if found is None or found.get("error"):
            why = found.get("error") if found else "not measured"
            rules.append(_rule(f"slice:{rule.column}", False, None, rule.max_regression,
                               f"slices of {rule.column}: {why}; fail closed"))  # fmt: skip
            continue
        judged = [v for v in found["values"] if "regression" in v]
        skipped = len(found["values"]) - len(judged)
        if not judged:
            rules.append(_rule(f"slice:{rule.column}", False, None, rule.max_regression,
                               f"no value of {rule.column} has {rule.min_rows} holdout rows with both classes; "
                               "the slice rule cannot be checked: fail closed"))  # fmt: skip
            continue
        worst = max(judged, key=lambda v: v["regression"])
        rules.append(
            _rule(f"slice:{rule.column}", worst["regression"] <= rule.max_regression, round(worst["regression"], 6),
                  rule.max_regression,
                  f"worst of {len(judged)} slices: {rule.column}={worst['value']} ({worst['rows']} rows) "
                  f"{metric} {worst['challenger']:.4f} vs champion {worst['champion']:.4f}"
                  + (f"; {skipped} slice(s) below {rule.min_rows} rows not judged" if skipped else ""))
        )  # fmt: skip
    return rules


def _absolute_rules(policy: Policy, challenger_value: float) -> list[dict[str, Any]]:
    """With no champion yet, the policy's absolute threshold decides."""
    action = policy.no_champion.action
    floor = policy.no_champion.min_primary_metric
    metric = policy.primary_metric
    if action == "promote_if_above":
        ok = challenger_value >= floor if policy.higher_is_better else challenger_value <= floor
        return [_rule("no_champion_threshold", ok, challenger_value, floor,
                      f"no champion yet: challenger {metric} {challenger_value:.4f} vs "
                      f"{'floor' if policy.higher_is_better else 'ceiling'} {floor}")]  # fmt: skip
    return [
        _rule(
            "no_champion_action",
            action == "promote",
            action,
            "promote",
            f"no champion yet: policy says {action}",
        )
    ]


def _budget_rules(policy: Policy, challenger: dict[str, Any]) -> list[dict[str, Any]]:
    rules = []
    if policy.latency is not None:
        latency = challenger.get("latency_ms") or {}
        p99 = latency.get("p99")
        rules.append(
            _rule("latency_p99", p99 is not None and p99 <= policy.latency.max_p99_ms, p99, policy.latency.max_p99_ms,
                  f"p99 of {latency.get('samples')} one-row predictions {_fmt(p99)} ms (p50 {_fmt(latency.get('p50'))} ms; "
                  f"{latency.get('path', 'path not recorded')})"
                  if p99 is not None else f"latency not measured ({latency.get('error', 'missing')}): fail closed")
        )  # fmt: skip
    if policy.onnx is not None:
        rules.append(_onnx_rule(policy, challenger))
    if policy.max_model_size_mb is not None:
        size = challenger.get("size_bytes")
        mib = None if size is None else round(size / 2**20, 3)
        rules.append(
            _rule("model_size", mib is not None and mib <= policy.max_model_size_mb, mib, policy.max_model_size_mb,
                  f"model files {mib} MiB" if mib is not None else "model size unknown: fail closed")
        )  # fmt: skip
    return rules


def _onnx_rule(policy: Policy, challenger: dict[str, Any]) -> dict[str, Any]:
    assert policy.onnx is not None
    wanted, metric = policy.onnx.runtime, policy.primary_metric
    scored = (challenger.get("runtimes") or {}).get(wanted) or {}
    native = (challenger.get("metrics") or {}).get(metric)
    value = (scored.get("metrics") or {}).get(metric)
    if native is None or value is None:
        why = scored.get("error") or f"the challenger has no {wanted} runtime"
        return _rule("onnx_runtime", False, None, policy.onnx.max_metric_loss, f"{why}: fail closed")
    sign = 1.0 if policy.higher_is_better else -1.0
    loss = round(sign * (native - value), 6)
    return _rule(
        "onnx_runtime", loss <= policy.onnx.max_metric_loss, loss, policy.onnx.max_metric_loss,
        f"{wanted} {metric} {_fmt(value)} vs native {_fmt(native)} on the holdout "
        f"(largest probability difference {scored.get('max_abs_diff')})",
    )  # fmt: skip


def _drift_rules(policy: Policy, drift: dict[str, Any]) -> list[dict[str, Any]]:
    share = drift.get("drift_share")
    drifted = {name for name, col in (drift.get("columns") or {}).items() if col.get("drifted")}
    critical = sorted(drifted & set(policy.drift.critical_columns))
    return [
        _rule("max_drifted_share", share is not None and share <= policy.drift.max_drifted_share, share,
              policy.drift.max_drifted_share,
              f"{drift.get('drifted_columns')} column(s) drifted against the {drift.get('reference', '?')}'s "
              "reference profile" if share is not None else "no drift result: fail closed"),
        _rule("critical_columns_stable", share is not None and not critical, critical, policy.drift.critical_columns,
              "critical columns that drifted: " + (", ".join(critical) or "none")),
    ]  # fmt: skip


def decide(policy: Policy, evaluation: dict[str, Any], drift: dict[str, Any]) -> dict[str, Any]:
    """Apply every rule; promote only when all pass. Returns the decision record. Pure: numbers in, record out.

    It fails closed: a missing metric, interval, slice, latency or drift figure, or an evaluation error,
    is a failed rule, never a pass.
    """
    metric = policy.primary_metric
    challenger = evaluation.get("challenger") or {}
    champion = evaluation.get("champion")
    rows = evaluation.get("holdout_rows")
    rules = [
        _rule("min_holdout_rows", rows is not None and rows >= policy.min_holdout_rows, rows, policy.min_holdout_rows,
              f"{rows} holdout rows scored, policy needs {policy.min_holdout_rows}")
    ]  # fmt: skip
    challenger_value = (challenger.get("metrics") or {}).get(metric)
    if challenger.get("error"):
        rules.append(_rule("challenger_evaluated", False, None, "scored",
                           f"challenger v{challenger.get('version')} could not be scored: {challenger['error']}"))  # fmt: skip
    elif challenger_value is None:
        rules.append(
            _rule(
                "challenger_metric_present", False, None, metric, f"challenger has no {metric}: fail closed"
            )
        )
    elif champion is None:
        rules += _absolute_rules(policy, challenger_value)
    else:
        rules += _comparison_rules(policy, evaluation)
    rules += _budget_rules(policy, challenger)
    rules += _drift_rules(policy, drift)
    passed = all(r["passed"] for r in rules)
    return {
        "decision": "promote" if passed else "reject",
        "challenger_version": challenger.get("version"),
        "champion_version": champion.get("version") if champion else None,
        "primary_metric": metric,
        "policy_version": policy.version,
        "approval": policy.approval,
        "dry_run": policy.dry_run,
        "rules": rules,
        "reasons": [f"{'PASS' if r['passed'] else 'FAIL'} {r['rule']}: {r['detail']}" for r in rules],
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
    champion = record["champion_version"]
    lines = [
        f"# Promotion decision: **{record['decision'].upper()}**",
        "",
        f"challenger v{record['challenger_version']} vs champion {'v' + str(champion) if champion else '(none)'}, "
        f"primary metric `{record['primary_metric']}`, policy v{record['policy_version']}"
        + (f" (`{record['policy_path']}`, sha256 {record['policy_sha256'][:12]})" if record.get("policy_sha256") else ""),
        "",
        f"Outcome: **{outcome(record)}**",
        "",
        "| rule | result | value | threshold | detail |",
        "|---|---|---|---|---|",
    ]  # fmt: skip
    for r in record["rules"]:
        detail = str(r["detail"]).replace("|", "\\|")
        lines.append(
            f"| {r['rule']} | {'pass' if r['passed'] else 'FAIL'} | {r['value']} | {r['threshold']} | {detail} |"
        )
    return "\n".join(lines) + "\n"


@runlog.stage("gate")
def gate(
    settings: Settings, logical_date: dt.date, evaluation: dict[str, Any], drift: dict[str, Any]
) -> dict[str, Any]:
    """Decide, and log the decision record (JSON and Markdown) to the challenger's MLflow run.

    The record also goes to the task log (one line per rule) and back through XCom, with its Markdown,
    which the approval step shows to the person deciding.
    """
    path = settings.resolved_policy_path
    policy = load_policy(path)
    check_against_contract(policy, load_contract(settings.resolved_contract_path), path)
    if settings.promotion_dry_run and not policy.dry_run:
        policy = policy.model_copy(update={"dry_run": True})
    record = decide(policy, evaluation, drift)
    record |= {
        "outcome": outcome(record),
        "policy_path": str(path),
        "policy_sha256": policy_sha256(path),
        "decided_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "logical_date": logical_date.isoformat(),
    }
    markdown = to_markdown(record)
    client = tracking.configure(settings)
    version = record["challenger_version"]
    if version is not None:
        mv = client.get_model_version(settings.model_name, str(version))
        client.log_text(mv.run_id, json.dumps(record, indent=2), "gate/decision.json")
        client.log_text(mv.run_id, markdown, "gate/decision.md")
        client.set_model_version_tag(settings.model_name, str(version), "gate.decision", record["decision"])
    for reason in record["reasons"]:
        log.info("gate: %s", reason)
    log.info("gate decision: %s (%s)", record["decision"].upper(), record["outcome"])
    return record | {"markdown": markdown}
