"""The figures evaluate logs: a one-row call that failed is the gate's to judge, not a crash here."""

from __future__ import annotations

from pipelines.evaluation.evaluate import _log_figures


class Client:
    def __init__(self) -> None:
        self.logged: dict[str, float] = {}

    def log_metric(self, run_id: str, key: str, value: float) -> None:
        self.logged[key] = value


def test_a_failed_latency_measurement_logs_the_other_figures():
    result = {
        "challenger": {
            "metrics": {"roc_auc": 0.8},
            "latency_ms": {"error": "one-row prediction failed: boom"},
        },
        "champion": None,
        "comparison": None,
    }
    client = Client()
    _log_figures(client, "run", result)
    assert client.logged == {"holdout_roc_auc": 0.8}
    measured = result | {"challenger": result["challenger"] | {"latency_ms": {"p50": 1.0, "p99": 2.0}}}
    _log_figures(client, "run", measured)
    assert client.logged["latency_p99_ms"] == 2.0
