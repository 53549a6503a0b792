"""A promotion policy with every kind of rule, for the gate's and the policy's tests."""

from pipelines.evaluation.policy import Policy

POLICY = Policy(
    version=1,
    primary_metric="roc_auc",
    higher_is_better=True,
    min_improvement=0.01,
    min_holdout_rows=100,
    bootstrap={"tolerance": 0.0},
    slices=[{"column": "channel", "max_regression": 0.02, "min_rows": 50}],
    latency={"max_p99_ms": 20},
    max_model_size_mb=10,
    no_champion={"action": "promote_if_above", "min_primary_metric": 0.7},
    drift={"max_drifted_share": 0.5, "critical_columns": ["age"]},
)
