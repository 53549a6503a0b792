"""Evidently's drift tests on profiles: the same scores as plain Evidently on the raw rows, within the bound."""

from __future__ import annotations

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from evidently.legacy.calculations.stattests import jensenshannon_stat_test, wasserstein_stat_test
from evidently.legacy.core import ColumnType

from bench.drift_sweep import contract_of
from pipelines.data.contract import Contract
from pipelines.data.profile import build_profile
from pipelines.engines.dask_engine import DaskEngine
from pipelines.evaluation.drift_stats import compare, compare_column

ROWS = 20_000


def sweep_contract(columns: dict[str, dict]) -> Contract:
    return contract_of(columns)


def _profile(frame: pd.DataFrame, contract: Contract) -> dict:
    return build_profile(DaskEngine(client=None), dd.from_pandas(frame, npartitions=3), contract)


def _evidently(method: str, reference: pd.Series, current: pd.Series, kind: ColumnType) -> float:
    test = wasserstein_stat_test if method == "wasserstein" else jensenshannon_stat_test
    return float(test(reference.dropna(), current.dropna(), kind, 0.1).drift_score)


@pytest.fixture(scope="module")
def windows():
    rng = np.random.default_rng(5)
    reference = pd.DataFrame(
        {
            "amount": rng.lognormal(4, 1, ROWS),
            "kelvin": rng.normal(290, 2, ROWS),  # a large mean over a small spread
            "age": rng.integers(18, 90, ROWS).astype(float),
            "flag": (rng.random(ROWS) < 0.1).astype(float),
            "channel": rng.choice(["web", "app", "store"], ROWS, p=[0.5, 0.3, 0.2]),
            "y": rng.integers(0, 2, ROWS),
        }
    )
    current = pd.DataFrame(
        {
            "amount": rng.lognormal(4.08, 1, ROWS),
            "kelvin": rng.normal(290.3, 2, ROWS),
            "age": rng.integers(18, 90, ROWS) + 2.0,
            "flag": (rng.random(ROWS) < 0.14).astype(float),
            "channel": rng.choice(["web", "app", "store", "kiosk"], ROWS, p=[0.45, 0.3, 0.2, 0.05]),
            "y": (rng.random(ROWS) < 0.8).astype(int),
        }
    )
    reference.loc[::97, "amount"] = np.nan
    contract = sweep_contract(
        {
            "amount": {"type": "float", "nullable": True},
            "kelvin": {"type": "float"},
            "age": {"type": "float"},
            "flag": {"type": "float", "drift": "jensenshannon"},
            "channel": {"type": "category", "allowed": ["web", "app", "store", "kiosk"]},
        }
    )
    return reference, current, contract, _profile(reference, contract), _profile(current, contract)


@pytest.mark.parametrize(
    ("column", "kind"),
    [
        ("amount", ColumnType.Numerical),
        ("kelvin", ColumnType.Numerical),
        ("age", ColumnType.Numerical),
        ("flag", ColumnType.Numerical),
        ("channel", ColumnType.Categorical),
    ],
)
def test_scores_agree_with_plain_evidently_on_the_raw_rows(windows, column, kind):
    reference, current, contract, ref_profile, cur_profile = windows
    method, threshold = contract.drift_test(column)
    ours = compare_column(ref_profile["columns"][column], cur_profile["columns"][column], method, threshold)
    theirs = _evidently(method, reference[column], current[column], kind)
    assert abs(ours["score"] - theirs) <= max(ours["error_bound"] or 0, 1e-9), (ours, theirs)
    assert ours["error_bound"] is not None and ours["error_bound"] < 0.005
    assert ours["reference_rows"] == reference[column].notna().sum()


def test_the_label_is_reported_apart_and_the_share_counts_features_only(windows):
    _, _, contract, ref_profile, cur_profile = windows
    summary = compare(ref_profile, cur_profile, contract)
    assert summary["label"]["drifted"] and "y" not in summary["columns"]
    assert summary["drift_share"] == summary["drifted_columns"] / 5
    assert {c["method"] for c in summary["columns"].values()} == {"wasserstein", "jensenshannon"}


def test_the_report_draws_each_columns_distributions_and_not_its_renderings_row_order(windows):
    import json

    from evidently.metrics.column_statistics import ValueDrift, ValueDriftCalculation

    from pipelines.evaluation.drift import render_report

    _, _, contract, ref_profile, cur_profile = windows
    summary = compare(ref_profile, cur_profile, contract)
    snapshot = render_report(ref_profile, cur_profile, contract, summary, 0.3)
    page = snapshot.get_html_str(as_iframe=False)
    columns = [*summary["columns"], "y"]
    assert all(f"Drift in column '{name}'" in page for name in columns)
    assert page.count("DATA DISTRIBUTION") == len(columns)
    # the tab of the current rows' mean over their index: on a rendering, its random order
    assert "DATA DRIFT" not in page and "Index binned" not in page
    scores = {
        m["config"]["column"]: m["value"]
        for m in json.loads(snapshot.json())["metrics"]
        if m["config"]["type"] == "ct:metric:ProfileValueDrift"
    }
    ours = {name: c["score"] for name, c in summary["columns"].items()} | {"y": summary["label"]["score"]}
    assert scores == pytest.approx(ours)
    assert ValueDrift.__calculation_type__ is ValueDriftCalculation  # Evidently's own left as it was


def test_one_outlier_row_changes_no_verdict(windows):
    reference, current, contract, ref_profile, cur_profile = windows
    for side in ("reference", "current"):
        frames = {"reference": reference.copy(), "current": current.copy()}
        frames[side].loc[7, "amount"] = 50_000.0
        profiles = {k: _profile(v, contract) for k, v in frames.items()}
        with_outlier = compare(profiles["reference"], profiles["current"], contract)["columns"]["amount"]
        without = compare(ref_profile, cur_profile, contract)["columns"]["amount"]
        assert with_outlier["drifted"] == without["drifted"], (side, with_outlier, without)


def test_the_test_is_the_contracts_not_the_days():
    contract = sweep_contract({"code": {"type": "int", "drift": "jensenshannon"}, "x": {"type": "float"}})
    assert contract.drift_test("code") == ("jensenshannon", 0.1)
    assert contract.drift_test("x") == ("wasserstein", 0.1)
    assert contract.drift_test("y") == ("jensenshannon", 0.1)
    with pytest.raises(ValueError, match="drift wasserstein needs a number"):
        sweep_contract({"c": {"type": "category", "allowed": ["a"], "drift": "wasserstein"}})


def test_a_huge_mean_over_a_tiny_spread_keeps_its_precision():
    rng = np.random.default_rng(2)
    contract = sweep_contract({"t": {"type": "float"}})
    reference = pd.DataFrame({"t": rng.normal(1.7e12, 1, 5000), "y": 0})  # epoch millis, say
    current = pd.DataFrame({"t": rng.normal(1.7e12 + 1, 1, 5000), "y": 0})  # shifted by one std
    ours = compare_column(
        _profile(reference, contract)["columns"]["t"],
        _profile(current, contract)["columns"]["t"],
        "wasserstein",
        0.1,
    )
    theirs = _evidently("wasserstein", reference["t"], current["t"], ColumnType.Numerical)
    assert ours["drifted"] and abs(ours["score"] - theirs) <= ours["error_bound"] < 0.005


def test_a_score_at_the_threshold_is_judged_to_6_decimals_not_its_last_bit(monkeypatch):
    """The same score summed in another order (another engine, another split of the rows) differs in its last
    bits: at the threshold, the verdict must not follow them."""
    from pipelines.evaluation import drift_stats

    column = {"kind": "numeric", "count": 10}
    for score in (0.1 - 1e-16, 0.1, 0.1 + 1e-16):
        monkeypatch.setitem(drift_stats.TESTS, "wasserstein", lambda reference, current, s=score: (s, 0.0))
        assert compare_column(column, column, "wasserstein", 0.1)["drifted"], score


def test_a_binned_score_does_not_depend_on_how_the_engine_partitioned_the_rows():
    """Traffic whose level moves through the window: cut into other partitions, each partition once picked
    its own bucket scheme, and Jensen-Shannon on a many-valued number (binned from the buckets) moved by up
    to 1e-4 between partitionings. With the window's scheme, the buckets and the scores are the same."""
    rng = np.random.default_rng(17)
    level = np.linspace(0.0, 40.0, ROWS)
    contract = sweep_contract({"x": {"type": "float", "drift": "jensenshannon"}})
    frames = {
        side: pd.DataFrame({"x": rng.normal(100.0 + shift, 4.0, ROWS) + level, "y": rng.integers(0, 2, ROWS)})
        for side, shift in (("reference", 0.0), ("current", 1.5))
    }
    scores, bucketed = [], []
    for parts in (1, 3, 8, 32):
        profiles = {
            side: build_profile(DaskEngine(client=None), dd.from_pandas(frame, npartitions=parts), contract)
            for side, frame in frames.items()
        }
        x = {side: profile["columns"]["x"] for side, profile in profiles.items()}
        scores.append(compare_column(x["reference"], x["current"], "jensenshannon", 0.1)["score"])
        bucketed.append((x["reference"]["buckets"]["count"], x["reference"]["scheme"]))
    assert all(found == bucketed[0] for found in bucketed[1:])
    assert max(scores) - min(scores) < 1e-12, scores


def test_a_value_repeated_at_the_extreme_is_binned_alike_however_the_rows_were_partitioned():
    """A rate capped at 0.3 (a third of the rows): its bucket's mean, 0.3 summed 3,000 times in another order,
    came out a hair above the exact max in some partitionings, and the binned test dropped the whole bucket:
    the same rows scored 0.31, drifted, against themselves profiled in one partition."""
    rng = np.random.default_rng(0)
    values = np.round(np.arange(1, 31) * 0.01, 2)
    rate = np.concatenate([rng.choice(values[:-1], 6000), np.full(3000, 0.3)])
    rng.shuffle(rate)
    frame = pd.DataFrame({"x": rate, "y": rng.integers(0, 2, len(rate))})
    contract = sweep_contract({"x": {"type": "float", "drift": "jensenshannon"}})
    profiles = {
        parts: build_profile(DaskEngine(client=None), dd.from_pandas(frame, npartitions=parts), contract)[
            "columns"
        ]["x"]
        for parts in (1, 2, 3, 4, 7)
    }
    tops = {parts: column["buckets"]["mean"][-1] for parts, column in profiles.items()}
    assert len(set(tops.values())) > 1, tops  # the sums do differ in their last bits: the case is exercised
    for column in profiles.values():
        assert compare_column(column, profiles[1], "jensenshannon", 0.1)["score"] < 1e-12


def test_a_column_null_on_both_sides_has_not_drifted_but_null_on_one_side_has():
    """A nullable feature with no values in either window counted as drifted on every run (and, named
    critical, blocked every promotion)."""
    empty, some = {"kind": "numeric", "count": 0}, {"kind": "numeric", "count": 10}
    both = compare_column(empty, empty, "wasserstein", 0.1)
    assert both["drifted"] is False and both["score"] is None and "either side" in both["detail"]
    assert compare_column(empty, some, "wasserstein", 0.1)["drifted"] is True
    assert compare_column(some, empty, "wasserstein", 0.1)["drifted"] is True
