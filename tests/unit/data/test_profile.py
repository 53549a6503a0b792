"""Reference profiles: computed by the Dask engine on its local scheduler, rendered back into a faithful sample."""

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

from pipelines.data.profile import build_profile, reference_frame
from pipelines.engines.dask_engine import DaskEngine


@pytest.fixture(scope="module")
def profile(contract, clean_frame):
    return build_profile(DaskEngine(client=None), dd.from_pandas(clean_frame, npartitions=3), contract)


def test_profile_counts_are_exact(profile, contract, clean_frame):
    assert profile["rows"] == len(clean_frame)
    basket = profile["columns"]["avg_basket"]
    assert basket["nulls"] == int(clean_frame["avg_basket"].isna().sum())
    assert (
        basket["min"] == clean_frame["avg_basket"].min() and basket["max"] == clean_frame["avg_basket"].max()
    )
    assert basket["mean"] == pytest.approx(clean_frame["avg_basket"].mean(), rel=1e-12)
    assert basket["std"] == pytest.approx(clean_frame["avg_basket"].std(ddof=0), rel=1e-12)
    assert sum(basket["buckets"]["count"]) == basket["count"] == clean_frame["avg_basket"].notna().sum()
    # Each value moved to its bucket's mean moves by at most the recorded error, in total.
    assert basket["abs_error"] / basket["count"] < 0.002 * basket["std"]
    age = profile["columns"]["age"]  # an integer column: one bucket per value, exact
    assert all(age["buckets"]["exact"]) and age["abs_error"] == 0
    assert dict(zip(age["buckets"]["mean"], age["buckets"]["count"], strict=True)) == {
        float(k): v for k, v in clean_frame["age"].value_counts().items()
    }
    assert profile["columns"]["channel"]["counts"] == clean_frame["channel"].value_counts().to_dict()
    label = profile["columns"][contract.label]["counts"]
    assert label == {str(k): v for k, v in clean_frame[contract.label].value_counts().items()}


def test_reference_frame_follows_the_profile(profile, contract, clean_frame):
    sample = reference_frame(profile, contract, rows=5000, seed=3)
    assert list(sample.columns) == [*contract.feature_columns, contract.label]
    assert len(sample) == 5000
    # Numbers: drawn from the buckets in proportion, so their percentiles are the data's.
    for column in ("amount", "tenure_days"):
        for level in (0.1, 0.5, 0.9):
            expected = clean_frame[column].quantile(level)
            spread = clean_frame[column].quantile(0.95) - clean_frame[column].quantile(0.05)
            assert abs(sample[column].quantile(level) - expected) < 0.02 * spread, (column, level)
    # Nulls and categories in proportion.
    share = clean_frame["avg_basket"].isna().mean()
    assert sample["avg_basket"].isna().mean() == pytest.approx(share, abs=1 / 5000)
    for value, count in clean_frame["plan"].value_counts().items():
        assert (sample["plan"] == value).mean() == pytest.approx(count / len(clean_frame), abs=1 / 5000)
    assert set(sample[contract.label].unique()) == {0, 1}


def test_reference_frame_is_deterministic(profile, contract):
    a, b = reference_frame(profile, contract, seed=1), reference_frame(profile, contract, seed=1)
    assert a.equals(b)
    assert not np.array_equal(
        a["amount"].to_numpy(), reference_frame(profile, contract, seed=2)["amount"].to_numpy()
    )


@pytest.mark.parametrize("low, high", [(18, 90), (-40, 40), (0, 1)])
def test_whole_numbers_bucketed_per_value_match_the_rows(low, high):
    from pipelines.data.profile import _bucketed, bucket_edges, bucket_keys, scheme_of

    values = np.random.default_rng(7).integers(low, high + 1, 50_000).astype("float64")
    e, m = scheme_of(values)
    keys, counts, totals, dev, dev2 = _bucketed(values, m * 2.0**e, 2.0**e)
    # Row by row: each value's bucket, and its distance from the bucket's lower edge.
    every = bucket_keys(values, m * 2.0**e, 2.0**e)
    distance = values - bucket_edges(every, m * 2.0**e, 2.0**e)
    rows = pd.DataFrame({"key": every, "value": values, "dev": distance, "dev2": distance**2})
    expected = rows.groupby("key").agg(count=("value", "size"), total=("value", "sum"), dev=("dev", "sum"))
    expected["dev2"] = rows.groupby("key")["dev2"].sum()
    assert keys.tolist() == expected.index.tolist()
    assert counts.dtype == np.int64 and counts.tolist() == expected["count"].tolist()
    assert totals.tolist() == expected["total"].tolist()  # sums of whole numbers: exact
    np.testing.assert_allclose(dev, expected["dev"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(dev2, expected["dev2"], rtol=1e-9, atol=1e-9)


def test_profile_of_a_frame_in_partitions_is_the_profile_of_the_whole():
    """Partials of parts combined (two bucket schemes for one column, nulls, a column absent from every part)
    give the whole frame's counts, moments and buckets."""
    from pipelines.data.profile import HOW, KEYS, column_partials, frame_profile, profile_of

    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "x": np.r_[rng.normal(5, 2, 3_000), rng.normal(500, 300, 50), [np.nan] * 7],
            "k": rng.choice(["a", "b", None], 3_057),
        }
    )
    parts = [frame.iloc[:3_000], frame.iloc[3_000:]]  # the second part's scale differs: its own scheme
    partials = pd.concat([column_partials(p, ["x"], ["k"]) for p in parts], ignore_index=True)
    found = partials.groupby(KEYS, sort=False).agg(dict(HOW)).reset_index()
    assert found[found["kind"] == "moments"]["key"].nunique() == 2
    combined = profile_of(found, ["x", "absent"], ["k"], "d", "pandas")
    x = combined["columns"]["x"]
    values = frame["x"].dropna()
    assert (x["count"], x["nulls"], sum(x["buckets"]["count"])) == (3_050, 7, 3_050)
    assert x["min"] == values.min() and x["max"] == values.max()
    assert x["mean"] == pytest.approx(values.mean(), rel=1e-12)
    assert x["std"] == pytest.approx(values.std(ddof=0), rel=1e-12)
    assert combined["columns"]["k"]["counts"] == frame["k"].value_counts().to_dict()
    assert combined["columns"]["k"]["nulls"] == frame["k"].isna().sum()
    assert combined["columns"]["absent"]["count"] == 0
    whole = frame_profile(frame, ["x"], ["k"], "d")["columns"]["x"]
    assert whole["count"] == x["count"] and whole["mean"] == pytest.approx(x["mean"], rel=1e-12)


def test_a_malformed_bucket_key_is_refused_by_name():
    from pipelines.data.profile import HOW, KEYS, column_partials, profile_of

    partials = column_partials(pd.DataFrame({"x": [1.5, 2.5, 3.25]}), ["x"], [])
    bucket = partials.index[partials["kind"] == "bucket"][0]
    for key in ["0:1", "1:2:x", "1::2", "1:2:3:4", "1.5:2:3"]:
        partials.loc[bucket, "key"] = key
        found = partials.groupby(KEYS, sort=False).agg(dict(HOW)).reset_index()
        with pytest.raises(
            ValueError, match=f"x: profile keys must be 3 whole numbers joined by ':', got '{key}'"
        ):
            profile_of(found, ["x"], [], "d", "pandas")


def test_a_window_s_bucket_scheme_does_not_turn_on_the_last_bit_of_its_mean():
    """1,000 whole numbers with a mean of 40 exactly, as one partition and as three: the moments combined in
    another order gave 40.00000000000001, and 40 / 2**4 = 2.5 rounded to 2 where 2.5000000000000004 rounded
    to 3: the window's buckets, and a Jensen-Shannon score binned on them, depended on the partitioning."""
    from pipelines.data.profile import scheme_from
    from pipelines.engines.base import combined_moments, partition_moments

    rng = np.random.default_rng(0)
    for _ in range(3000):
        values = rng.integers(12, 69, 999).astype(float)
        values = np.append(values, 40 * 1000 - values.sum())  # the mean is exactly 40
        whole = combined_moments(partition_moments(pd.DataFrame({"x": values}), ["x"]))["x"]
        parts = pd.concat(
            [partition_moments(pd.DataFrame({"x": part}), ["x"]) for part in np.array_split(values, 3)]
        )
        split = combined_moments(parts)["x"]
        assert scheme_from(whole[1], whole[2]) == scheme_from(split[1], split[2])
    # The half itself, and its neighbours one bit away either side (which engine lands where is the CPU's
    # business): one scheme.
    above, below = np.nextafter(40.0, 41.0), np.nextafter(40.0, 39.0)
    assert scheme_from(40.0, 16.0) == scheme_from(above, 16.0) == scheme_from(below, 16.0) == (4, 2)
    assert scheme_from(41.0, 16.0) == (4, 3)  # a mean clear of a half rounds as before


def test_a_few_valued_number_s_jensenshannon_drift_does_not_turn_on_how_its_sums_were_added():
    """A one-value bucket's value is its mean (a float sum over its count): 0.1 summed in other orders (another
    partitioning, engine or day) was 0.09999999999999871 or 0.10000000000000059, two keys of the test, and the
    same rows scored 0.83, the largest Jensen-Shannon distance there is."""
    from pipelines.data.profile import HOW, KEYS, column_partials, frame_profile, profile_of
    from pipelines.evaluation.drift_stats import compare_column

    def day(seed):
        return pd.DataFrame({"rate": np.random.default_rng(seed).choice([0.1, 0.2, 0.3], 3_000)})

    frame = day(1)
    whole = frame_profile(frame, ["rate"], [], "d")["columns"]["rate"]
    parts = [frame.iloc[:1_000], frame.iloc[1_000:2_000], frame.iloc[2_000:]]
    partials = pd.concat([column_partials(p, ["rate"], []) for p in parts], ignore_index=True)
    found = partials.groupby(KEYS, sort=False).agg(dict(HOW)).reset_index()
    split = profile_of(found, ["rate"], [], "d", "pandas")["columns"]["rate"]
    assert whole["buckets"]["count"] == split["buckets"]["count"] and all(split["buckets"]["exact"])
    same = compare_column(whole, split, "jensenshannon", 0.1)
    assert same["score"] == pytest.approx(0.0, abs=1e-12) and not same["drifted"]
    other = compare_column(
        whole, frame_profile(day(2), ["rate"], [], "d")["columns"]["rate"], "jensenshannon", 0.1
    )
    assert other["score"] < 0.05 and not other["drifted"]  # another day of the same distribution


def test_a_constant_column_s_scheme_and_scaling_are_not_taken_from_its_rounding_noise():
    """The mean of equal values that are not dyadic is not exactly that value: a constant column's std came out
    1e-17 to 1e-10 by how its rows were split, and the bucket scheme (2^-55 or 2^-32 for "all equal") and the
    MLP's scaling (a served value a cent away reached its first layer as 1.5e8) were taken from that noise."""
    import torch

    from pipelines.data.moments import Moments
    from pipelines.data.profile import scheme_from
    from pipelines.model.mlp import ChurnMLP

    values = np.full((30, 1), 1_000_000.3)
    whole = Moments.of(values)
    split = Moments.of(values[:7]).merge(Moments.of(values[7:19])).merge(Moments.of(values[19:]))
    assert whole.std[0] > 0 or split.std[0] > 0  # the noise this is about (on this CPU)
    schemes = {scheme_from(float(m.mean[0]), float(m.std[0])) for m in (whole, split)}
    assert schemes == {scheme_from(1_000_000.3, 0.0)}
    fee = np.full(7, 12345.67)
    noisy = float(np.sqrt(np.mean((fee - fee.mean()) ** 2)))  # its population std, as training computes it
    model = ChurnMLP(2, (4,), 0.0)
    model.set_scaling(np.array([12345.67, 0.0]), np.array([max(noisy, 6.5e-11), 2.0]))
    assert model.std.tolist() == [1.0, 2.0]
    assert abs(float(((torch.tensor([12345.68, 0.0]) - model.mean) / model.std)[0])) < 0.1
