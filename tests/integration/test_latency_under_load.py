"""The latency rule on a busy machine: two busy loops on the cores never reject a good challenger,
and a challenger that is really slower is still rejected."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from pipelines.evaluation.evaluate import measure_latency
from pipelines.evaluation.policy import LatencyRule

pytestmark = pytest.mark.slow
BUDGET = LatencyRule(max_p99_ms=50)  # the shipped policy's budget


@pytest.fixture(scope="module")
def busy_cores():
    """Two processes spinning on the cores for the length of the module."""
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    time.sleep(0.5)
    yield
    for loop in loops:
        loop.kill()
        loop.wait()


@pytest.fixture(scope="module")
def model():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2_000, 8))
    return LogisticRegression().fit(x, (x[:, 0] + rng.normal(size=2_000) > 0).astype(int)), x[:1]


def _verdict(rule, challenger, champion):
    measured = measure_latency(rule, challenger, champion)
    return measured["verdict"], measured["why"]


def test_a_good_challenger_is_never_rejected_by_a_busy_neighbour(busy_cores, model):
    fitted, row = model

    def score():
        return fitted.predict_proba(row)

    found = [_verdict(BUDGET, score, score) for _ in range(20)]
    assert [v for v, _ in found] == ["pass"] * 20, [why for v, why in found if v != "pass"]
    alone = [_verdict(BUDGET, score, None) for _ in range(5)]  # the first model, with no champion
    assert [v for v, _ in alone] == ["pass"] * 5, alone


def test_a_really_slower_challenger_is_rejected_on_a_busy_machine(busy_cores, model):
    fitted, row = model

    def score():
        return fitted.predict_proba(row)

    def slow():
        time.sleep(0.06)
        return fitted.predict_proba(row)

    rule = BUDGET.model_copy(update={"samples": 20, "rounds": 3})
    verdict, why = _verdict(rule, slow, score)
    assert verdict == "fail" and "in every one of 3 rounds" in why
    assert _verdict(rule, slow, None)[0] == "fail"


class _Pyfunc:
    """A model as evaluate gets it, without a signature: it is timed through pyfunc predict."""

    def __init__(self, fitted):
        self.fitted = fitted
        self.metadata = type("Metadata", (), {"signature": None})()

    def predict(self, frame):
        return self.fitted.predict_proba(frame.to_numpy())


def test_a_first_boosted_model_is_timed_with_servings_threads_on_a_busy_machine(busy_cores, settings):
    """HistGradientBoosting scores on OpenMP threads; at one per core they stall behind the busy loops
    (a one-row p99 of 200 ms to 1 s here), so evaluate gives the call serving's threads, as serving does."""
    import pandas as pd
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_info

    from pipelines.evaluation.evaluate import _serving_call

    rng = np.random.default_rng(0)
    x = rng.normal(size=(5_000, 12))
    fitted = HistGradientBoostingClassifier(max_iter=100).fit(x, (x[:, 0] > 0).astype(int))
    call, path = _serving_call(_Pyfunc(fitted), pd.DataFrame(x[:1]), settings)
    assert "pyfunc predict" in path
    assert {pool["num_threads"] for pool in threadpool_info()} == {settings.serve_threads}
    found = [_verdict(BUDGET, call, None) for _ in range(3)]
    assert [v for v, _ in found] == ["pass"] * 3, found
