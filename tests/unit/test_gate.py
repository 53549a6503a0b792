import pytest

from pipelines.drift import summarise
from pipelines.gate import Policy, PolicyError, decide, load_policy, to_markdown
from pipelines.settings import INCLUDE_DIR

POLICY = Policy(
    version=1, primary_metric="roc_auc", higher_is_better=True, min_improvement=0.01, min_holdout_rows=100,
    no_champion={"action": "promote_if_above", "min_primary_metric": 0.7},
    drift={"max_drifted_share": 0.5, "critical_columns": ["age"]},
)  # fmt: skip
QUIET = {
    "drift_share": 0.1,
    "drifted_columns": 1,
    "columns": {"amount": {"drifted": True}},
    "reference": "champion",
}


def _evaluation(challenger=0.80, champion=0.75, rows=500):
    return {
        "holdout_rows": rows,
        "challenger": {"version": 2, "metrics": {"roc_auc": challenger} if challenger is not None else {}},
        "champion": None
        if champion is False
        else {"version": 1, "metrics": {"roc_auc": champion} if champion else {}},
    }


def _failed(record):
    return {r["rule"] for r in record["rules"] if not r["passed"]}


def test_better_challenger_is_promoted():
    record = decide(POLICY, _evaluation(), QUIET)
    assert record["decision"] == "promote" and not _failed(record)
    assert any("0.8000 vs champion v1 0.7500" in reason for reason in record["reasons"])


def test_too_small_an_improvement_is_rejected():
    record = decide(POLICY, _evaluation(challenger=0.755), QUIET)
    assert record["decision"] == "reject" and _failed(record) == {"min_improvement"}


def test_too_few_holdout_rows_is_rejected():
    assert _failed(decide(POLICY, _evaluation(rows=50), QUIET)) == {"min_holdout_rows"}


def test_missing_metrics_fail_closed():
    assert _failed(decide(POLICY, _evaluation(challenger=None), QUIET)) == {"challenger_metric_present"}
    assert "champion_metric_present" in _failed(decide(POLICY, _evaluation(champion={}), QUIET))


def test_no_champion_uses_the_absolute_floor():
    assert decide(POLICY, _evaluation(champion=False), QUIET)["decision"] == "promote"
    low = decide(POLICY, _evaluation(challenger=0.6, champion=False), QUIET)
    assert _failed(low) == {"no_champion_threshold"}
    reject_policy = POLICY.model_copy(
        update={"no_champion": POLICY.no_champion.model_copy(update={"action": "reject"})}
    )
    assert decide(reject_policy, _evaluation(champion=False), QUIET)["decision"] == "reject"


def test_drift_rules_block():
    broad = {**QUIET, "drift_share": 0.9}
    assert _failed(decide(POLICY, _evaluation(), broad)) == {"max_drifted_share"}
    critical = {**QUIET, "columns": {"age": {"drifted": True}}}
    assert _failed(decide(POLICY, _evaluation(), critical)) == {"critical_columns_stable"}
    assert _failed(decide(POLICY, _evaluation(), {})) == {"max_drifted_share"}


def test_same_version_is_not_promoted_again():
    evaluation = _evaluation()
    evaluation["champion"]["version"] = 2
    assert "challenger_is_new" in _failed(decide(POLICY, evaluation, QUIET))


def test_lower_is_better_metrics():
    policy = POLICY.model_copy(update={"primary_metric": "log_loss", "higher_is_better": False})
    evaluation = _evaluation()
    evaluation["challenger"]["metrics"] = {"log_loss": 0.40}
    evaluation["champion"]["metrics"] = {"log_loss": 0.45}
    assert decide(policy, evaluation, QUIET)["decision"] == "promote"


def test_markdown_lists_every_rule():
    record = decide(POLICY, _evaluation(), QUIET)
    text = to_markdown(record)
    assert all(r["rule"] in text for r in record["rules"]) and "PROMOTE" in text


def test_shipped_policy_loads():
    assert load_policy(INCLUDE_DIR / "promotion_policy.yaml").primary_metric == "roc_auc"


def test_bad_policy_names_the_key(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("version: 1\nprimary_metric: roc_auc\nhigher_is_better: true\nmin_improvment: 0.1\n")
    with pytest.raises(PolicyError, match="min_improvment"):
        load_policy(path)
    path.write_text("version: 1\nprimary_metric: log_loss\nhigher_is_better: true\n")
    with pytest.raises(PolicyError, match="higher_is_better"):
        load_policy(path)


def test_drift_summary_reads_p_values_and_distances():
    snapshot = {
        "metrics": [
            {"config": {"type": "evidently:metric_v2:DriftedColumnsCount"}, "value": {"count": 1.0, "share": 0.5}},
            {"config": {"type": "evidently:metric_v2:ValueDrift", "column": "a", "method": "K-S p_value", "threshold": 0.05}, "value": 0.01},
            {"config": {"type": "evidently:metric_v2:ValueDrift", "column": "b", "method": "Wasserstein distance (normed)", "threshold": 0.1}, "value": 0.02},
        ]
    }  # fmt: skip
    summary = summarise(snapshot)
    assert (
        summary["drifted_columns"] == 1
        and summary["columns"]["a"]["drifted"]
        and not summary["columns"]["b"]["drifted"]
    )
    with pytest.raises(ValueError, match="DriftedColumnsCount"):
        summarise({"metrics": []})
