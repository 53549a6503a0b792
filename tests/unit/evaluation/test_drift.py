"""Reading Evidently's report into the drift summary the gate judges."""

import pytest

from pipelines.evaluation.drift import summarise


def test_drift_summary_reads_p_values_and_distances():
    snapshot = {
        "metrics": [
            {
                "config": {"type": "evidently:metric_v2:DriftedColumnsCount"},
                "value": {"count": 1.0, "share": 0.5},
            },
            {
                "config": {
                    "type": "evidently:metric_v2:ValueDrift",
                    "column": "a",
                    "method": "K-S p_value",
                    "threshold": 0.05,
                },
                "value": 0.01,
            },
            {
                "config": {
                    "type": "evidently:metric_v2:ValueDrift",
                    "column": "b",
                    "method": "Wasserstein distance (normed)",
                    "threshold": 0.1,
                },
                "value": 0.02,
            },
        ]
    }
    summary = summarise(snapshot)
    assert (
        summary["drifted_columns"] == 1
        and summary["columns"]["a"]["drifted"]
        and not summary["columns"]["b"]["drifted"]
    )
    with pytest.raises(ValueError, match="DriftedColumnsCount"):
        summarise({"metrics": []})
