"""The promotion policy: its schema (include/promotion_policy.yaml, docs/promotion-policy.md), and its rules.

The one home of the policy's keys and of the names of the rules a decision is made of: the gate writes
one line per rule under these names, and ``pipelines policy`` lists them from here.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pipelines.config_files import load_yaml_model
from pipelines.data.contract import Contract
from pipelines.evaluation.metrics import HIGHER_IS_BETTER, RANGE, MetricName

# The rules of a decision, in the order the decision record lists them.
SAME_POLICY = "same_policy"  # evaluate computed the figures under the policy file the gate judges with
MIN_HOLDOUT_ROWS = "min_holdout_rows"
CHALLENGER_EVALUATED = "challenger_evaluated"  # fails when the challenger could not be scored
CHALLENGER_METRIC_PRESENT = "challenger_metric_present"
NO_CHAMPION_THRESHOLD = "no_champion_threshold"  # with no champion, action promote_if_above
NO_CHAMPION_ACTION = "no_champion_action"  # with no champion, action promote or reject
CHAMPION_EVALUATED = "champion_evaluated"  # fails when the champion could not be scored
CHAMPION_METRIC_PRESENT = "champion_metric_present"
MIN_IMPROVEMENT = "min_improvement"
CONFIDENCE_INTERVAL = "confidence_interval"
CHALLENGER_IS_NEW = "challenger_is_new"
DATA_NOT_OLDER = "data_not_older"  # the challenger's training data must not end before the champion's
SLICE_PREFIX = "slice:"  # one rule per slice column: slice:<column>
LATENCY_P99 = "latency_p99"
ONNX_RUNTIME = "onnx_runtime"
MODEL_SIZE = "model_size"
MAX_DRIFTED_SHARE = "max_drifted_share"
CRITICAL_COLUMNS_STABLE = "critical_columns_stable"


class PolicyError(ValueError):
    """The policy file is missing, unreadable or has a bad key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # .nan and .inf: no threshold compares


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
    seed: int = Field(default=0, ge=0, description="Seed of the resampling, so a decision can be reproduced.")


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
        gt=0,
        description="Budget for the p99 of a one-row prediction, in milliseconds, judged on the median over "
        "rounds of each round's p99.",
    )
    samples: int = Field(default=100, ge=20, le=100_000, description="Timed one-row predictions per round.")
    rounds: int = Field(
        default=5, ge=3, le=100, description="Rounds, each interleaving challenger and champion calls."
    )
    attempts: int = Field(
        default=3, ge=1, le=10, description="Measurements while the verdict is inconclusive (a busy machine)."
    )
    max_ratio_to_champion: float = Field(
        default=1.5,
        ge=1,
        description="Where the kernel does not count a call's waits for the CPU (not Linux): after the last "
        "attempt, an inconclusive budget passes when the challenger's p99 is at most this many times the "
        "champion's, timed in the same rounds.",
    )


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


class HoldoutRule(_Strict):
    latest_days: int | None = Field(
        default=None,
        ge=1,
        description="Hold out the newest N days of the window (never trained on) instead of a hash share of "
        "the entities; absent: the contract's hash split.",
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
    primary_metric: MetricName
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
    time_order: bool = Field(
        default=True,
        description="A challenger whose training data ends before the champion's cannot replace it (a "
        "backfill of an old date records 'older than the champion').",
    )
    holdout: HoldoutRule = HoldoutRule()
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
    _check_metric_range(policy, path)
    columns = [s.column for s in policy.slices]
    if len(set(columns)) != len(columns):
        raise PolicyError(f"promotion policy {path}: slices: a column is listed twice ({columns})")
    return policy


def _check_metric_range(policy: Policy, path: Path) -> None:
    """Thresholds on the primary metric within the values it can take: 65 for a ROC AUC floor (a percentage)
    would reject every first model, and a min_improvement of 1.5 every challenger, without saying why. A
    min_improvement of -1 (or less) lets any challenger through, as a policy that leaves it to a person may."""
    metric = policy.primary_metric
    low, high = RANGE[metric]
    floor = policy.no_champion.min_primary_metric
    if not low <= floor <= high:
        raise PolicyError(
            f"promotion policy {path}: no_champion.min_primary_metric: {floor} is outside the values {metric} "
            f"takes ([{low}, {high}])"
        )
    gain = policy.min_improvement
    if gain >= high - low:  # a negative one as large lets any challenger through: a person's approval decides
        raise PolicyError(
            f"promotion policy {path}: min_improvement: {gain} can never be met: {metric} takes values in "
            f"[{low}, {high}]"
        )


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
    """The file's SHA-256; a file that is not there or not readable is a :class:`PolicyError` naming it."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except FileNotFoundError:
        raise PolicyError(f"promotion policy not found: {path}") from None
    except IsADirectoryError:
        raise PolicyError(f"promotion policy {path} is a folder, not a file") from None
    except PermissionError as exc:
        raise PolicyError(f"promotion policy {path} is not readable: {exc.strerror}") from None


def slice_rule(column: str) -> str:
    return f"{SLICE_PREFIX}{column}"


def rules_checked(policy: Policy, champion: bool = True) -> list[str]:
    """The rules a decision under ``policy`` checks, in record order, when every figure is there.

    ``champion``: whether a champion exists (the comparison rules) or not (the absolute threshold). A
    missing figure replaces the rules that need it with one failing rule that says what is missing.
    """
    rules = [MIN_HOLDOUT_ROWS]
    if not champion:
        promote_if_above = policy.no_champion.action == "promote_if_above"
        rules.append(NO_CHAMPION_THRESHOLD if promote_if_above else NO_CHAMPION_ACTION)
    else:
        rules += [MIN_IMPROVEMENT, CONFIDENCE_INTERVAL, CHALLENGER_IS_NEW]
        rules += [DATA_NOT_OLDER] if policy.time_order else []
        rules += [slice_rule(s.column) for s in policy.slices]
    rules += [LATENCY_P99] if policy.latency is not None else []
    rules += [ONNX_RUNTIME] if policy.onnx is not None else []
    rules += [MODEL_SIZE] if policy.max_model_size_mb is not None else []
    return [*rules, MAX_DRIFTED_SHARE, CRITICAL_COLUMNS_STABLE, SAME_POLICY]
