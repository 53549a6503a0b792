import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.data.generate import SCENARIOS, generate, generate_day
from tests.days import DAY


def test_same_seed_and_date_give_the_same_rows():
    pd.testing.assert_frame_equal(generate_day(DAY, 7, 500), generate_day(DAY, 7, 500))


def test_another_date_or_seed_gives_other_rows():
    base = generate_day(DAY, 7, 500)
    assert not base.equals(generate_day(DAY + dt.timedelta(days=1), 7, 500))
    assert not base.equals(generate_day(DAY, 8, 500))


def test_customers_keep_their_attributes_across_days():
    a, b = generate_day(DAY, 7, 5000), generate_day(DAY + dt.timedelta(days=1), 7, 5000)
    both = a.merge(b, on="customer_id", suffixes=("_a", "_b"))
    assert len(both) > 0
    assert (both["region_a"] == both["region_b"]).all()
    assert (both["plan_a"] == both["plan_b"]).all()


def test_both_labels_occur_and_timestamps_fall_on_the_day():
    frame = generate_day(DAY, 7, 2000)
    assert 0.1 < frame["churned"].mean() < 0.9
    assert (frame["event_ts"].dt.date == DAY).all()


def test_covariate_shift_moves_inputs():
    base, shifted = generate_day(DAY, 7, 3000), generate_day(DAY, 7, 3000, "covariate_shift")
    assert shifted["amount"].median() > 1.5 * base["amount"].median()
    assert (shifted["channel"] == "app").mean() > (base["channel"] == "app").mean() + 0.2


def test_concept_drift_inverts_the_label_relation():
    base, drifted = generate_day(DAY, 7, 5000), generate_day(DAY, 7, 5000, "concept_drift")
    base_corr = np.corrcoef(np.log1p(base["amount"]), base["churned"])[0, 1]
    drift_corr = np.corrcoef(np.log1p(drifted["amount"]), drifted["churned"])[0, 1]
    assert base_corr < 0 < drift_corr


def test_broken_scenarios_break_what_they_say():
    missing = generate_day(DAY, 7, 2000, "missing_values")
    assert missing["amount"].isna().any() and missing["avg_basket"].isna().mean() > 0.2
    broken = generate_day(DAY, 7, 2000, "schema_break")
    assert "plan" not in broken and "plan_tier" in broken and broken["amount"].dtype == object


def test_unknown_scenario_is_refused():
    with pytest.raises(ValueError, match="unknown scenario 'meteor'.*none"):
        generate_day(DAY, 7, 10, "meteor")
    assert "none" in SCENARIOS


def test_generate_writes_the_source_idempotently(settings):
    from pipelines.data import sources
    from pipelines.data.contract import load_contract

    first = generate(settings, DAY, "none")
    uri = first["partitions"][0]["uri"]
    before = (Path(uri) / "part-0.parquet").read_bytes()
    assert generate(settings, DAY, "none")["partitions"] == first["partitions"]
    assert (Path(uri) / "part-0.parquet").read_bytes() == before
    contract = load_contract(settings.resolved_contract_path)
    assert sources.partition(settings, contract, DAY).files == [f"file://{uri}/part-0.parquet"]
    assert len(pd.read_parquet(uri)) == settings.rows_per_day


def test_earlier_days_of_the_window_are_kept_as_written(settings):
    earlier = DAY - dt.timedelta(days=1)
    generate(settings, earlier, "covariate_shift")
    path = Path(generate(settings, earlier, "covariate_shift")["partitions"][0]["uri"]) / "part-0.parquet"
    stamp = path.stat().st_mtime_ns
    result = generate(settings, DAY, "none", days=2)
    assert result["partitions"][0]["status"] == "kept" and path.stat().st_mtime_ns == stamp
    assert len(result["partitions"]) == 2


def test_generate_never_writes_over_a_users_source(settings, tmp_path):
    with pytest.raises(ValueError, match="never overwrites"):
        generate(settings.model_copy(update={"source_uri": str(tmp_path / "{ds}")}), DAY)
