"""Gate: the promotion policy (include/promotion_policy.yaml) applied to real numbers, with its reasons.

:func:`decide` is pure: evaluation and drift results in, a decision record out, one line per rule. The
gate fails closed: a missing metric is a failed rule, never a pass.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipelines import runlog, tracking
from pipelines.config_files import load_yaml_model
from pipelines.metrics import HIGHER_IS_BETTER
from pipelines.settings import Settings

log = logging.getLogger(__name__)


class PolicyError(ValueError):
    """The policy file is missing, unreadable or has a bad key."""


class NoChampionRule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Literal["promote_if_above", "promote", "reject"] = "promote_if_above"
    min_primary_metric: float = 0.0


class DriftRule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_drifted_share: float = Field(default=1.0, ge=0, le=1)
    critical_columns: list[str] = []


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int
    primary_metric: Literal["roc_auc", "accuracy", "log_loss", "brier"]
    higher_is_better: bool
    min_improvement: float = 0.0
    min_holdout_rows: int = Field(default=1, ge=1)
    no_champion: NoChampionRule = NoChampionRule()
    drift: DriftRule = DriftRule()


def load_policy(path: Path) -> Policy:
    """Read the policy; an error names the file and the offending key."""
    policy = load_yaml_model(path, Policy, "promotion policy", PolicyError)
    if policy.higher_is_better != HIGHER_IS_BETTER[policy.primary_metric]:
        raise PolicyError(
            f"promotion policy {path}: higher_is_better contradicts primary_metric {policy.primary_metric}"
        )
    return policy


def _rule(name: str, passed: bool, value: Any, threshold: Any, detail: str) -> dict[str, Any]:
    return {"rule": name, "passed": bool(passed), "value": value, "threshold": threshold, "detail": detail}


def decide(policy: Policy, evaluation: dict[str, Any], drift: dict[str, Any]) -> dict[str, Any]:
    """Apply every rule; promote only when all pass. Returns the decision record."""
    metric = policy.primary_metric
    challenger = evaluation.get("challenger") or {}
    champion = evaluation.get("champion")
    challenger_value = (challenger.get("metrics") or {}).get(metric)
    rules = []
    rows = evaluation.get("holdout_rows")
    rules.append(
        _rule("min_holdout_rows", rows is not None and rows >= policy.min_holdout_rows, rows, policy.min_holdout_rows,
              f"{rows} holdout rows scored, policy needs {policy.min_holdout_rows}")
    )  # fmt: skip
    if challenger_value is None:
        rules.append(
            _rule(
                "challenger_metric_present", False, None, metric, f"challenger has no {metric}: fail closed"
            )
        )
    elif champion is None:
        action = policy.no_champion.action
        floor = policy.no_champion.min_primary_metric
        if action == "promote_if_above":
            ok = challenger_value >= floor if policy.higher_is_better else challenger_value <= floor
            rules.append(_rule("no_champion_threshold", ok, challenger_value, floor,
                               f"no champion yet: challenger {metric} {challenger_value:.4f} vs floor {floor}"))  # fmt: skip
        else:
            rules.append(_rule("no_champion_action", action == "promote", action, "promote",
                               f"no champion yet: policy says {action}"))  # fmt: skip
    else:
        champion_value = (champion.get("metrics") or {}).get(metric)
        if champion_value is None:
            rules.append(
                _rule(
                    "champion_metric_present", False, None, metric, f"champion has no {metric}: fail closed"
                )
            )
        else:
            sign = 1.0 if policy.higher_is_better else -1.0
            improvement = sign * (challenger_value - champion_value)
            rules.append(
                _rule("min_improvement", improvement >= policy.min_improvement, round(improvement, 6),
                      policy.min_improvement,
                      f"challenger v{challenger.get('version')} {metric} {challenger_value:.4f} vs champion "
                      f"v{champion.get('version')} {champion_value:.4f} on the same holdout")
            )  # fmt: skip
        rules.append(
            _rule("challenger_is_new", champion.get("version") != challenger.get("version"),
                  challenger.get("version"), champion.get("version"), "the challenger must differ from the champion")
        )  # fmt: skip
    share = drift.get("drift_share")
    rules.append(
        _rule("max_drifted_share", share is not None and share <= policy.drift.max_drifted_share, share,
              policy.drift.max_drifted_share,
              f"{drift.get('drifted_columns')} column(s) drifted against the {drift.get('reference', '?')}'s reference profile")
    )  # fmt: skip
    drifted = {name for name, col in (drift.get("columns") or {}).items() if col.get("drifted")}
    critical = sorted(drifted & set(policy.drift.critical_columns))
    rules.append(
        _rule("critical_columns_stable", not critical, critical, policy.drift.critical_columns,
              "critical columns that drifted: " + (", ".join(critical) or "none"))
    )  # fmt: skip
    decision = "promote" if all(r["passed"] for r in rules) else "reject"
    return {
        "decision": decision,
        "challenger_version": challenger.get("version"),
        "champion_version": champion.get("version") if champion else None,
        "primary_metric": metric,
        "policy_version": policy.version,
        "rules": rules,
        "reasons": [f"{'PASS' if r['passed'] else 'FAIL'} {r['rule']}: {r['detail']}" for r in rules],
    }


def to_markdown(record: dict[str, Any]) -> str:
    lines = [
        f"# Promotion decision: **{record['decision'].upper()}**",
        "",
        f"challenger v{record['challenger_version']} vs champion "
        f"{'v' + str(record['champion_version']) if record['champion_version'] else '(none)'}, "
        f"primary metric `{record['primary_metric']}`, policy v{record['policy_version']}",
        "",
        "| rule | result | value | threshold | detail |",
        "|---|---|---|---|---|",
    ]
    for r in record["rules"]:
        lines.append(
            f"| {r['rule']} | {'pass' if r['passed'] else 'FAIL'} | {r['value']} | {r['threshold']} | {r['detail']} |"
        )
    return "\n".join(lines) + "\n"


@runlog.stage("gate")
def gate(
    settings: Settings, logical_date: dt.date, evaluation: dict[str, Any], drift: dict[str, Any]
) -> dict[str, Any]:
    """Decide, and log the decision record (JSON and Markdown) to the challenger's MLflow run."""
    policy = load_policy(settings.resolved_policy_path)
    record = decide(policy, evaluation, drift)
    record["decided_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    record["logical_date"] = logical_date.isoformat()
    client = tracking.configure(settings)
    version = record["challenger_version"]
    if version is not None:
        mv = client.get_model_version(settings.model_name, str(version))
        client.log_text(mv.run_id, json.dumps(record, indent=2), "gate/decision.json")
        client.log_text(mv.run_id, to_markdown(record), "gate/decision.md")
        client.set_model_version_tag(settings.model_name, str(version), "gate.decision", record["decision"])
    for reason in record["reasons"]:
        log.info("gate: %s", reason)
    log.info("gate decision: %s", record["decision"].upper())
    return record
