"""The gate's statistics: vectorised metrics agree with scikit-learn; the paired bootstrap behaves."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, brier_score_loss, log_loss, roc_auc_score

from pipelines.evaluation import stats


def _predictions(rows=2000, seed=0, signal=0.3):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, rows)
    good = np.clip(labels * signal + rng.random(rows) * (1 - signal), 0, 1)
    noise = rng.random(rows)
    return labels, good, noise


def test_vectorised_metrics_match_scikit_learn():
    labels, good, _ = _predictions()
    p = np.clip(good, 1e-7, 1 - 1e-7)
    assert stats.metric("roc_auc", labels, good) == pytest.approx(roc_auc_score(labels, good), abs=1e-12)
    assert stats.metric("accuracy", labels, good) == pytest.approx(accuracy_score(labels, good >= 0.5))
    assert stats.metric("log_loss", labels, good) == pytest.approx(log_loss(labels, p), abs=1e-12)
    assert stats.metric("brier", labels, good) == pytest.approx(brier_score_loss(labels, p), abs=1e-12)
    ties = np.round(good, 1)  # average ranks for ties, like scikit-learn
    assert stats.metric("roc_auc", labels, ties) == pytest.approx(roc_auc_score(labels, ties), abs=1e-12)


def test_metrics_take_a_batch_of_resamples_along_the_last_axis():
    labels, good, _ = _predictions(rows=300)
    batch = np.stack([labels, labels[::-1]])
    probs = np.stack([good, good[::-1]])
    np.testing.assert_allclose(
        stats.METRICS["roc_auc"](batch.astype(float), probs), [roc_auc_score(labels, good)] * 2
    )


def test_a_clearly_better_model_has_an_interval_above_zero():
    labels, good, noise = _predictions()
    result = stats.paired_bootstrap("roc_auc", labels, good, noise, resamples=500, confidence=0.95, seed=1)
    assert result["ci_low"] > 0.1 and result["ci_low"] < result["improvement"] < result["ci_high"]
    assert result["p_not_better"] == 0.0 and result["undefined_resamples"] == 0
    assert result["improvement"] == pytest.approx(roc_auc_score(labels, good) - roc_auc_score(labels, noise))


def test_equal_models_have_an_interval_around_zero_and_it_is_reproducible():
    labels, good, _ = _predictions()
    rng = np.random.default_rng(5)
    twin = np.clip(good + rng.normal(0, 0.02, len(good)), 0, 1)  # same model, a little noise
    first = stats.paired_bootstrap("roc_auc", labels, good, twin, resamples=500, confidence=0.95, seed=3)
    assert first["ci_low"] < 0 < first["ci_high"]
    again = stats.paired_bootstrap("roc_auc", labels, good, twin, resamples=500, confidence=0.95, seed=3)
    assert again == first


def test_pairing_makes_the_interval_narrower_than_two_independent_intervals():
    labels, good, _ = _predictions(rows=1000, signal=0.2)
    rng = np.random.default_rng(9)
    better = np.clip(good + labels * 0.03 + rng.normal(0, 0.01, len(good)), 0, 1)
    paired = stats.paired_bootstrap("roc_auc", labels, better, good, resamples=500, confidence=0.95, seed=0)
    width = paired["ci_high"] - paired["ci_low"]
    # the width an unpaired comparison would have: both AUCs' own 95% intervals combined
    single = stats.paired_bootstrap(
        "roc_auc", labels, better, np.full(len(good), 0.5), resamples=500, confidence=0.95, seed=0
    )
    assert width < (single["ci_high"] - single["ci_low"]) / 2


def test_lower_is_better_metrics_are_sign_adjusted():
    labels, good, noise = _predictions()
    result = stats.paired_bootstrap("log_loss", labels, good, noise, resamples=200, confidence=0.9, seed=0)
    assert result["improvement"] > 0 and result["ci_low"] > 0


def test_a_large_holdout_is_bootstrapped_on_a_sample_but_judged_on_every_row():
    labels, good, noise = _predictions(rows=5000)
    result = stats.paired_bootstrap(
        "roc_auc", labels, good, noise, resamples=200, confidence=0.95, seed=0, max_rows=1000
    )
    assert result["rows_resampled"] == 1000
    assert result["improvement"] == pytest.approx(stats.improvement("roc_auc", labels, good, noise))


def test_bad_bootstrap_input_is_refused():
    with pytest.raises(ValueError, match="one value per holdout row"):
        stats.paired_bootstrap("roc_auc", [0, 1], [0.1], [0.2, 0.3], resamples=100, confidence=0.9, seed=0)


def test_slices_report_each_value_and_skip_small_or_single_class_ones():
    labels = np.array([0, 1] * 50 + [1] * 10 + [0, 1] * 2)
    challenger = np.where(labels == 1, 0.9, 0.1).astype(float)
    champion = np.full(len(labels), 0.5)
    groups = np.array(["web"] * 100 + ["app"] * 10 + ["store"] * 4)
    out = {s["value"]: s for s in stats.slice_metrics("roc_auc", labels, challenger, champion, groups, 5)}
    assert out["web"]["challenger"] == 1.0 and out["web"]["regression"] == pytest.approx(-0.5)
    assert out["app"]["skipped"] == "only one class in this slice"
    assert out["store"]["skipped"].startswith("4 rows")


def test_metrics_refuse_probabilities_that_are_not_finite():
    from pipelines.evaluation.metrics import classification_metrics

    with pytest.raises(ValueError, match="1 predicted probabilities are not finite"):
        classification_metrics(np.array([0, 1, 0]), np.array([0.1, np.nan, 0.2]))


def _rare_positives(rows, positives, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.zeros(rows)
    labels[rng.choice(rows, positives, replace=False)] = 1
    good = np.clip(labels * 0.5 + rng.random(rows) * 0.5, 0, 1)
    return labels, good, rng.random(rows)


def test_a_few_resamples_of_one_class_are_left_out_of_the_interval():
    """A resample with no positive row has no AUC; scipy's interval over such a distribution is NaN, and the
    gate rejected with "not computed" although the other resamples gave an interval."""
    labels, good, noise = _rare_positives(100, 4)
    result = stats.paired_bootstrap("roc_auc", labels, good, noise, resamples=1000, confidence=0.95, seed=1)
    assert 0 < result["undefined_resamples"] <= stats.MAX_UNDEFINED_SHARE * 1000
    assert np.isfinite(result["ci_low"]) and result["ci_low"] <= result["improvement"] <= result["ci_high"]


def test_too_many_resamples_of_one_class_say_so():
    labels, good, noise = _rare_positives(60, 2)
    with pytest.raises(ValueError, match=r"\d+ of 1000 bootstrap resamples of 60 rows hold one class only"):
        stats.paired_bootstrap("roc_auc", labels, good, noise, resamples=1000, confidence=0.95, seed=1)
