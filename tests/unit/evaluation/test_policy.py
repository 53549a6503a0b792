"""The promotion policy: the shipped files, errors that name the key, and the rules a policy checks."""

import pytest

from pipelines.data.contract import load_contract
from pipelines.evaluation.policy import PolicyError, check_against_contract, load_policy, rules_checked
from pipelines.settings import INCLUDE_DIR
from tests.unit.evaluation.sample_policy import POLICY


def test_shipped_policies_load_and_fit_their_contracts():
    checked = {}
    for path in [INCLUDE_DIR / "promotion_policy.yaml", *sorted((INCLUDE_DIR / "policies").glob("*.yaml"))]:
        policy = load_policy(path)
        dataset = path.stem if path.parent.name == "policies" else "transactions"
        contract = load_contract(INCLUDE_DIR / "contracts" / f"{dataset}.yaml")
        check_against_contract(policy, contract, path)
        assert {s.column for s in policy.slices} <= set(contract.categorical_features), path
        assert set(policy.drift.critical_columns) <= {*contract.feature_columns, contract.label}, path
        checked[path.stem] = rules_checked(policy)
    assert set(checked) == {"promotion_policy", "breast_cancer", "bikeshare"}
    assert {"slice:channel", "slice:plan", "latency_p99", "model_size"} <= set(checked["promotion_policy"])


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("min_improvment: 0.1", "min_improvment"),
        ("version: 2", "version"),
        ("bootstrap: {confidence: 1.5}", "bootstrap.confidence"),
        ("bootstrap: {resamples: 10}", "bootstrap.resamples"),
        ("bootstrap: {seed: -1}", "bootstrap.seed"),
        ("slices: [{column: channel}]", "slices.0.max_regression"),
        ("latency: {max_p99_ms: -1}", "latency.max_p99_ms"),
        ("approval: maybe", "approval"),
        ("max_model_size_mb: big", "max_model_size_mb"),
        # NaN and infinity compare false with everything: a NaN min_improvement rejected every challenger.
        ("min_improvement: .nan", "min_improvement"),
        ("no_champion: {min_primary_metric: .inf}", "no_champion.min_primary_metric"),
        # Outside the values a ROC AUC takes: never met, or met by anything.
        ("min_improvement: 1.5", "min_improvement: 1.5 can never be met"),
        ("no_champion: {min_primary_metric: 65}", "no_champion.min_primary_metric: 65.0 is outside"),
    ],
)
def test_bad_policy_names_the_key(tmp_path, text, key):
    path = tmp_path / "p.yaml"
    base = {"version": "version: 1"}
    lines = [
        base["version"] if not text.startswith("version") else text,
        "primary_metric: roc_auc",
        "higher_is_better: true",
    ] + ([text] if not text.startswith("version") else [])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(PolicyError, match=key.replace(".", r"\.")) as caught:
        load_policy(path)
    assert str(path) in str(caught.value)


def test_policy_contradictions_and_unknown_columns_are_named(tmp_path, contract):
    path = tmp_path / "p.yaml"
    path.write_text("version: 1\nprimary_metric: log_loss\nhigher_is_better: true\n")
    with pytest.raises(PolicyError, match="higher_is_better"):
        load_policy(path)
    policy = POLICY.model_copy(update={"slices": [POLICY.slices[0].model_copy(update={"column": "amount"})]})
    with pytest.raises(PolicyError, match=r"slices\.0\.column: 'amount' is not a categorical feature"):
        check_against_contract(policy, contract, path)
    policy = POLICY.model_copy(
        update={"drift": POLICY.drift.model_copy(update={"critical_columns": ["agee"]})}
    )
    with pytest.raises(PolicyError, match=r"drift\.critical_columns\.0: 'agee'"):
        check_against_contract(policy, contract, path)


def test_policy_file_missing_or_a_folder_is_named_when_hashed(tmp_path):
    """evaluate and gate hash the file before they read it: that read failed with a raw FileNotFoundError."""
    from pipelines.evaluation.policy import policy_sha256

    with pytest.raises(PolicyError, match="promotion policy not found: .*nope.yaml"):
        policy_sha256(tmp_path / "nope.yaml")
    with pytest.raises(PolicyError, match="is a folder, not a file"):
        policy_sha256(tmp_path)
