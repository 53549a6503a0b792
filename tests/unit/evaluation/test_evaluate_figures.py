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


def test_a_holdout_with_no_rows_or_one_class_is_the_datas_fault_named_before_any_model_is_scored():
    """An empty holdout went on to blame both models ("could not score ... 0 sample(s)")."""
    import pandas as pd
    import pytest

    from pipelines.data.contract import dataset_contract
    from pipelines.evaluation.evaluate import HoldoutError, check_holdout
    from pipelines.settings import get_settings

    contract = dataset_contract(get_settings())
    empty = pd.DataFrame({contract.label: pd.Series([], dtype="int64")})
    with pytest.raises(HoldoutError, match="the holdout of d has no rows"):
        check_holdout(empty, contract, "d")
    with pytest.raises(HoldoutError, match="has 3 rows of one class only"):
        check_holdout(pd.DataFrame({contract.label: [1, 1, 1]}), contract, "d")
    check_holdout(pd.DataFrame({contract.label: [0, 1]}), contract, "d")


def test_probabilities_outside_0_1_are_the_models_error_as_serving_refuses_them(monkeypatch, tmp_path):
    """A pyfunc answering 2p - 0.5 kept its ranking (AUC unchanged) and passed evaluate; serving answers every
    such row with a 500."""
    import numpy as np
    import pandas as pd
    import pytest

    from pipelines.data.contract import dataset_contract
    from pipelines.evaluation import evaluate
    from pipelines.settings import get_settings

    contract = dataset_contract(get_settings(state_dir=tmp_path))
    holdout = pd.DataFrame({name: [0, 0, 0] for name in contract.feature_columns})

    class Stretched:
        def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
            return pd.DataFrame({"probability": np.array([-0.2, 0.5, 1.3])[: len(frame)]})

    monkeypatch.setattr(evaluate.integrity, "load_verified", lambda *args: (Stretched(), {}))
    with pytest.raises(
        evaluate.EvaluationError, match=r"outside \[0, 1\] on 2 of 3 holdout rows \(-0.2 to 1.3\)"
    ):
        evaluate.score_version(None, "m", 2, holdout, contract)


def test_a_policy_without_a_latency_budget_times_the_call_and_judges_nothing(tmp_path):
    """With finite policy numbers required, the stand-in rule of no budget (infinity) failed to validate, and
    evaluate failed on every policy without a latency section."""
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from pipelines.evaluation import evaluate
    from pipelines.settings import get_settings
    from tests.unit.evaluation.sample_policy import POLICY

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    fitted = LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))

    class Pyfunc:  # a model without a signature: timed through its pyfunc predict
        metadata = type("Metadata", (), {"signature": None})()

        def predict(self, frame: pd.DataFrame) -> np.ndarray:
            return fitted.predict_proba(frame.to_numpy())

    unbudgeted = POLICY.model_copy(update={"latency": None})
    found = evaluate._latency(
        get_settings(state_dir=tmp_path), unbudgeted, Pyfunc(), None, pd.DataFrame(x[:1])
    )
    assert "error" not in found and found["verdict"] == "pass" and found["p99"] > 0


def test_a_holdout_prepared_otherwise_than_the_policy_now_asks_is_refused_naming_both(tmp_path):
    """A policy's holdout changed between prepare and evaluate: the decision was recorded under a policy of the
    newest days with figures from a hash share of the entities."""
    import datetime as dt

    import pytest

    from pipelines.data.datasets import MANIFEST, Manifest
    from pipelines.evaluation.evaluate import HoldoutError, check_prepared_holdout
    from pipelines.evaluation.policy import HoldoutRule, load_policy
    from pipelines.settings import get_settings

    settings = get_settings(state_dir=tmp_path, window_days=7)
    day = dt.date(2026, 3, 10)
    policy = load_policy(settings.resolved_policy_path)
    newest = policy.model_copy(update={"holdout": HoldoutRule(latest_days=2)})
    dataset = tmp_path / "features"
    dataset.mkdir()

    def prepared_as(holdout: str) -> None:
        manifest = Manifest(str(dataset), 1, {}, "hash", "2026-03-10T00:00:00Z", {"holdout": holdout})
        (dataset / MANIFEST).write_text(manifest.to_json())

    prepared_as("hash split")
    check_prepared_holdout(settings, policy.model_copy(update={"holdout": HoldoutRule()}), day, str(dataset))
    with pytest.raises(
        HoldoutError, match=r"prepared as hash split, but the policy .* asks for newest 2 day"
    ):
        check_prepared_holdout(settings, newest, day, str(dataset))
    prepared_as("newest 2 day(s), from 2026-03-09")
    check_prepared_holdout(settings, newest, day, str(dataset))
    with pytest.raises(HoldoutError, match="from 2026-03-10"):  # the same days counted from another date
        check_prepared_holdout(settings, newest, day + dt.timedelta(days=1), str(dataset))
