"""The monitoring policy: its schema (include/monitoring_policy.yaml, docs/monitoring-policy.md) and its checks.

The one home of the policy's keys and of the names of the signals a monitor verdict is made of: each
interval's report lists one line per signal under these names, and a retrain is asked for only by the
signals the policy's ``retrain_on`` names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipelines.config_files import load_yaml_model
from pipelines.data.contract import DriftMethod
from pipelines.settings import MAX_DAYS

# Hours and days a rule waits or keeps: at most a century, and never infinite or NaN. ``.inf`` ("never ask
# twice") loaded, then failed every monitor run at its verdict with a bare OverflowError naming no key.
MAX_HOURS: Final = MAX_DAYS * 24

# The signals of a verdict, in the order the report lists them.
FEATURE_DRIFT: Final = "feature_drift"
CRITICAL_COLUMNS: Final = "critical_columns"
PREDICTION_DRIFT: Final = "prediction_drift"
LIVE_QUALITY: Final = "live_quality"
NULLS = "nulls"
OUT_OF_DOMAIN = "out_of_domain"
VOLUME = "volume"
SIGNALS = (FEATURE_DRIFT, CRITICAL_COLUMNS, PREDICTION_DRIFT, LIVE_QUALITY, NULLS, OUT_OF_DOMAIN, VOLUME)
Signal = Literal[
    "feature_drift",
    "critical_columns",
    "prediction_drift",
    "live_quality",
    "nulls",
    "out_of_domain",
    "volume",
]


RETRAIN_ON: list[Signal] = [FEATURE_DRIFT, CRITICAL_COLUMNS, PREDICTION_DRIFT, LIVE_QUALITY]


class MonitoringPolicyError(ValueError):
    """The monitoring policy file is missing, unreadable or has a bad key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FeatureDriftRule(_Strict):
    max_drifted_share: float = Field(
        default=0.3,
        gt=0,
        le=1,
        description="The share of features whose drift test (the contract's, as the gate's drift) fires, at or "
        "above which the interval's features have drifted.",
    )
    critical_columns: list[str] = Field(
        default_factory=list, description="Features whose drift alone is a breach (signal critical_columns)."
    )


class PredictionDriftRule(_Strict):
    method: DriftMethod = Field(
        default="wasserstein",
        description="The test of the served probabilities against the champion's on its holdout: wasserstein "
        "(normed) or jensenshannon.",
    )
    threshold: float = Field(default=0.1, gt=0, description="The served probabilities drift at this score.")


class LiveQualityRule(_Strict):
    max_drop: float = Field(
        default=0.05,
        ge=0,
        description="How much worse than its holdout figure the champion's live primary metric (the promotion "
        "policy's) may be on the labelled rows of a day.",
    )
    min_labelled_rows: int = Field(
        default=200,
        ge=1,
        description="Fewer joined rows of both classes than this and no live metric is judged.",
    )


class VolumeRule(_Strict):
    baseline_days: int = Field(
        default=7,
        ge=1,
        le=90,
        description="The usual volume: the median of the same hours over this many days.",
    )
    min_ratio: float = Field(default=0.2, ge=0, description="Fewer served rows than this share of the usual.")
    max_ratio: float = Field(
        default=5.0, gt=0, description="More served rows than this many times the usual."
    )


class DataQualityRule(_Strict):
    max_null_share_increase: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="A feature's share of nulls may exceed its share in the champion's reference by this much.",
    )
    max_out_of_domain_share: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="The share of served rows with a value outside the contract (CT_SERVE_OUT_OF_DOMAIN=flag "
        "serves them; reject refuses them and serving's metrics count them).",
    )
    volume: VolumeRule = Field(default_factory=VolumeRule)


class TriggerRule(_Strict):
    retrain_on: list[Signal] = Field(
        default_factory=lambda: list(RETRAIN_ON),
        description="The signals whose breach asks for a retrain. Data quality and volume are reported and "
        "alerted on by default, not retrained on: a broken upstream is not fixed by a new model.",
    )
    cooldown_hours: float = Field(
        default=6,
        ge=0,
        le=MAX_HOURS,
        allow_inf_nan=False,
        description="No retrain is asked for within this many hours of the last one asked for.",
    )
    after_promotion_hours: float = Field(
        default=6,
        ge=0,
        le=MAX_HOURS,
        allow_inf_nan=False,
        description="Nor within this many hours of the last promotion or rollback: a new champion gets time "
        "to be judged on its own traffic.",
    )
    max_per_day: int = Field(default=2, ge=0, description="At most this many retrains asked for per UTC day.")


class RetentionRule(_Strict):
    reports_days: int | None = Field(
        default=None,
        ge=1,
        le=MAX_DAYS,
        description="Each interval's report (HTML, JSON, Prometheus text) on the data root, and its run in the "
        "monitoring experiment, are removed once their day is more than this many days before the judged "
        "interval's; null keeps them. The figures and trigger records are always kept.",
    )
    prediction_log_days: int | None = Field(
        default=None,
        ge=1,
        le=MAX_DAYS,
        description="The prediction log's days more than this many days before the judged interval's are "
        "removed (the served rows themselves); null keeps them. At least the days back to the day whose labels "
        "the monitor joins (2 for a label delay of 24 hours): pipelines monitor policy says how many.",
    )


class MonitoringPolicy(_Strict):
    version: Literal[1] = Field(default=1, description="Schema version of the file.")
    min_served_rows: int = Field(
        default=500,
        ge=1,
        description="An interval with fewer served rows is reported, but judges no drift (too few to tell).",
    )
    feature_drift: FeatureDriftRule = Field(default_factory=FeatureDriftRule)
    prediction_drift: PredictionDriftRule = Field(default_factory=PredictionDriftRule)
    live_quality: LiveQualityRule = Field(default_factory=LiveQualityRule)
    data_quality: DataQualityRule = Field(default_factory=DataQualityRule)
    triggers: TriggerRule = Field(default_factory=TriggerRule)
    retention: RetentionRule = Field(default_factory=RetentionRule)

    @model_validator(mode="after")
    def _check(self) -> MonitoringPolicy:
        volume = self.data_quality.volume
        if volume.min_ratio >= volume.max_ratio:
            raise ValueError(
                f"data_quality.volume: min_ratio {volume.min_ratio} must be below max_ratio {volume.max_ratio}"
            )
        return self


def load_monitoring_policy(path: Path) -> MonitoringPolicy:
    """Read and check a monitoring policy file; errors name the file and the key."""
    return load_yaml_model(path, MonitoringPolicy, "monitoring policy", MonitoringPolicyError)


def minimum_log_days(label_delay_hours: float) -> int:
    """The fewest days of prediction log a monitor needs: the interval's own days, and the day whose labels it
    joins (:func:`pipelines.monitoring.live.labels_day`), furthest back for an interval ending a minute into
    its day (intervals end on a whole minute)."""
    import datetime as dt

    from pipelines.monitoring.live import labels_day

    midnight = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    joined = labels_day(midnight + dt.timedelta(minutes=1), label_delay_hours)
    return max(1, (midnight.date() - joined).days)


def check_against_contract(
    policy: MonitoringPolicy, features: list[str], label_delay_hours: float, path: Path
) -> None:
    """Every critical column must be a feature of the dataset's contract, and the log must be kept for as long
    as its labels take to arrive."""
    days, needed = policy.retention.prediction_log_days, minimum_log_days(label_delay_hours)
    if days is not None and days < needed:
        raise MonitoringPolicyError(
            f"monitoring policy {path}: retention.prediction_log_days {days} would remove a day's served rows "
            f"before the monitor joins them to their labels: the contract's label_delay_hours "
            f"{label_delay_hours:g} needs at least {needed} days"
        )
    for name in policy.feature_drift.critical_columns:
        if name not in features:
            raise MonitoringPolicyError(
                f"monitoring policy {path}: feature_drift.critical_columns names '{name}', which is not a "
                f"feature of the contract (features: {', '.join(features)})"
            )
