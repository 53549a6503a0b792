"""The served statistics (one pass, added up over partitions) and the live metric from join counts."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.metrics import accuracy_score, brier_score_loss, log_loss, roc_auc_score

from pipelines.data.contract import load_contract
from pipelines.data.profile import HOW, KEYS
from pipelines.monitoring.live import LABEL, _counts, labels_day, metric_from_counts
from pipelines.monitoring.served import outside_masks, served_figures, served_partials

ROOT = Path(__file__).resolve().parents[3]
START = dt.datetime(2026, 11, 30, 13, tzinfo=dt.UTC)
END = START + dt.timedelta(hours=1)


def _log(contract, clean_frame) -> pd.DataFrame:
    frame = clean_frame[contract.feature_columns].head(400).copy()
    frame["served_at"] = pd.date_range(START - dt.timedelta(minutes=20), periods=400, freq="15s", tz="UTC")
    frame["model_version"] = np.where(np.arange(400) % 4 == 0, 2, 3)
    frame["probability"] = np.linspace(0, 1, 400)
    frame.loc[frame.index[150], "age"] = 150  # above the contract's max 100
    frame.loc[frame.index[151], "channel"] = "fax"  # not an allowed value
    frame.loc[frame.index[152], ["age", "channel"]] = [5, "fax"]  # two in one row
    return frame


def test_partials_of_partitions_add_up_to_the_whole(contract, clean_frame):
    frame = _log(contract, clean_frame)
    whole = served_partials(frame, contract, 3, START, END).groupby(KEYS).agg(dict(HOW)).reset_index()
    pieces = [*np.array_split(frame, 3), frame.head(0)]  # an engine may hand over a part with no rows
    parts = pd.concat([served_partials(part, contract, 3, START, END) for part in pieces])
    combined = parts.groupby(KEYS).agg(dict(HOW)).reset_index()
    one, other = served_figures(whole, contract, 3), served_figures(combined, contract, 3)
    inside = frame[(frame["served_at"] >= START) & (frame["served_at"] < END)]
    for figures in (one, other):
        assert figures["rows"] == len(inside) == 240  # the 80 rows each side are other intervals'
        assert figures["rows_by_version"] == {2: 60, 3: 180}
        assert figures["champion_rows"] == 180 and figures["predictions"]["count"] == 180
        assert figures["outside"]["age"] == 2 and figures["outside"]["channel"] == 2
        assert figures["outside_rows"] == 3
    assert one["profile"]["columns"]["age"]["mean"] == pytest.approx(
        other["profile"]["columns"]["age"]["mean"]
    )


def test_rows_with_no_model_version_are_counted_apart_not_taken_for_a_version(contract, clean_frame):
    """A log from another writer with a row of no version: the versions were read as floats, keyed "3.0", and
    the interval's pass failed on int("3.0"), naming nothing, on every retry."""
    frame = _log(contract, clean_frame)
    frame["model_version"] = frame["model_version"].astype("float64")
    frame.loc[frame.index[200], "model_version"] = np.nan  # a version-2 row within the interval
    figures = served_figures(served_partials(frame, contract, 3, START, END), contract, 3)
    assert figures["rows"] == 240 and figures["rows_without_version"] == 1
    assert figures["rows_by_version"] == {2: 59, 3: 180} and figures["champion_rows"] == 180


def test_with_the_references_schemes_the_served_profile_does_not_depend_on_the_partitions(
    contract, clean_frame
):
    """Each partition bucketing by its own scheme, the served buckets (and a score binned from them) followed
    how the engine cut the log; with the reference profile's schemes, and the probabilities' fixed one, they
    are the same for any cut."""
    frame = _log(contract, clean_frame)
    frame["amount"] = frame["amount"] + np.linspace(0.0, 400.0, len(frame))  # a level that moves
    schemes = {"amount": (5, 3), "avg_basket": (4, 2)}  # as a reference profile holds them

    def profile(cuts: int) -> dict:
        pieces = np.array_split(frame, cuts)
        parts = pd.concat([served_partials(p, contract, 3, START, END, schemes) for p in pieces])
        return served_figures(parts.groupby(KEYS).agg(dict(HOW)).reset_index(), contract, 3)

    whole, cut = profile(1), profile(7)
    for name in ("amount", "avg_basket"):
        one, other = whole["profile"]["columns"][name], cut["profile"]["columns"][name]
        assert one["buckets"]["count"] == other["buckets"]["count"] and one["scheme"] == list(schemes[name])
        np.testing.assert_allclose(one["buckets"]["mean"], other["buckets"]["mean"], rtol=1e-12)
    assert whole["predictions"]["buckets"]["count"] == cut["predictions"]["buckets"]["count"]
    assert whole["predictions"]["scheme"] == [-3, 4]


def test_outside_counts_and_naive_times_agree_with_a_row_by_row_pass(contract, clean_frame):
    frame = _log(contract, clean_frame)
    found = served_partials(frame, contract, 3, START, END)
    figures = served_figures(found, contract, 3)
    inside = frame[(frame["served_at"] >= START) & (frame["served_at"] < END)]
    # Every feature with a domain, the categories none of whose values is outside included (no mask pass).
    by_row = {name: int(mask.sum()) for name, mask in outside_masks(inside, contract).items()}
    assert figures["outside"] == by_row
    assert {n for n, count in by_row.items() if count} == {"age", "channel"}
    assert set(by_row) >= set(contract.categorical_features)
    # Spark hands over naive times (UTC): the same rows, the same partials.
    naive = frame.assign(served_at=frame["served_at"].dt.tz_localize(None))
    pd.testing.assert_frame_equal(served_partials(naive, contract, 3, START, END), found)


def test_arrow_backed_text_gives_the_partials_of_python_strings(contract, clean_frame):
    frame = _log(contract, clean_frame)
    frame.loc[frame.index[160:170], "region"] = None  # nulls counted alike
    arrow = frame.astype({name: "string[pyarrow]" for name in contract.categorical_features})
    assert arrow["channel"].dtype == "string" and frame["channel"].dtype == object
    pd.testing.assert_frame_equal(
        served_partials(arrow, contract, 3, START, END), served_partials(frame, contract, 3, START, END)
    )


def test_text_as_categories_gives_the_partials_of_python_strings(contract, clean_frame):
    """The engines read Parquet's text as categories (its dictionaries unified across files): a category no
    row of the frame holds is not counted, nulls are counted alike, and a value outside the domain is found."""
    frame = _log(contract, clean_frame)
    frame.loc[frame.index[160:170], "region"] = None
    categories = frame.copy()
    for name in contract.categorical_features:
        present = sorted(frame[name].dropna().unique())
        categories[name] = pd.Categorical(frame[name], categories=[*present, "never-served"])
    assert {"fax", "never-served"} <= set(categories["channel"].cat.categories)
    pd.testing.assert_frame_equal(
        served_partials(categories, contract, 3, START, END), served_partials(frame, contract, 3, START, END)
    )
    assert outside_masks(categories, contract)["channel"].sum() == 2


def _bikeshare_log(rows: int) -> pa.Table:
    """A log of the bikeshare contract as serving writes it: whole-number categories (season 1-4, weekday
    0-6) as int64, every value allowed."""
    contract = load_contract(ROOT / "include" / "contracts" / "bikeshare.yaml")
    rng = np.random.default_rng(0)
    data: dict[str, object] = {}
    for name in contract.feature_columns:
        spec = contract.columns[name]
        if spec.allowed is not None:
            data[name] = [spec.allowed[i % len(spec.allowed)] for i in range(rows)]
        else:
            data[name] = rng.uniform(spec.min or 0, spec.max or 1, rows)
    data["served_at"] = pd.Timestamp(START + dt.timedelta(minutes=1))
    data["model_version"] = 3
    data["probability"] = 0.5
    return pa.table(pd.DataFrame(data))


def test_a_whole_number_category_holding_a_null_is_keyed_alike_however_the_log_is_cut():
    """Arrow hands an int64 column holding a null to pandas as float64, in the partitions that hold one only:
    keyed as read, season 1 was "1.0" there, outside the contract's [1, 2, 3, 4] and apart from the reference
    profile's "1" (999 of 1,000 rows out of the domain in one partition, 499 in two, and drift with them)."""
    contract = load_contract(ROOT / "include" / "contracts" / "bikeshare.yaml")
    log = _bikeshare_log(1000)
    clean = served_figures(served_partials(log.to_pandas(), contract, 3, START, END), contract, 3)
    season = log.column("season").to_pylist()
    season[0] = None  # a request that sent none
    log = log.set_column(log.schema.get_field_index("season"), "season", pa.array(season, pa.int64()))

    def figures(pieces: list[pa.Table]) -> dict:
        frames = [piece.to_pandas() for piece in pieces]  # each as an engine's partition reads it
        parts = pd.concat([served_partials(f, contract, 3, START, END) for f in frames])
        return served_figures(parts.groupby(KEYS).agg(dict(HOW)).reset_index(), contract, 3)

    assert [p.to_pandas()["season"].dtype for p in (log.slice(0, 500), log.slice(500))] == [
        "float64",
        "int64",
    ]
    whole, cut = figures([log]), figures([log.slice(0, 500), log.slice(500)])
    for found in (whole, cut):
        assert found["outside_rows"] == 0 and not any(found["outside"].values()), found["outside"]
        columns = found["profile"]["columns"]
        assert columns["season"]["counts"] == {"1": 249, "2": 250, "3": 250, "4": 250}
        assert columns["season"]["nulls"] == 1
        assert columns["weekday"] == clean["profile"]["columns"]["weekday"]
    assert whole["profile"]["columns"]["season"] == cut["profile"]["columns"]["season"]

    # Another writer's 2.5 beside them: that row is outside, keyed as the float it is; the whole numbers are not.
    season[1] = 2.5
    log = log.set_column(log.schema.get_field_index("season"), "season", pa.array(season, pa.float64()))
    for found in (figures([log]), figures([log.slice(0, 500), log.slice(500)])):
        assert found["outside"]["season"] == found["outside_rows"] == 1
        assert found["profile"]["columns"]["season"]["counts"] == {
            "1": 249,
            "2": 249,
            "2.5": 1,
            "3": 250,
            "4": 250,
        }


def test_labels_are_due_a_delay_after_their_day_ends():
    assert labels_day(dt.datetime(2026, 12, 2, 0, tzinfo=dt.UTC), 24) == dt.date(2026, 11, 30)
    assert labels_day(dt.datetime(2026, 12, 1, 23, tzinfo=dt.UTC), 24) == dt.date(2026, 11, 29)
    assert labels_day(dt.datetime(2026, 12, 1, 0, tzinfo=dt.UTC), 0) == dt.date(2026, 11, 30)


@pytest.mark.parametrize(
    ("name", "reference"),
    [
        ("roc_auc", roc_auc_score),
        ("log_loss", log_loss),
        ("brier", brier_score_loss),
        ("accuracy", lambda y, p: accuracy_score(y, p >= 0.5)),
    ],
)
def test_a_metric_from_join_counts_is_scikit_learns_on_the_rows(name, reference):
    rng = np.random.default_rng(3)
    probability = np.round(rng.uniform(0.01, 0.99, 2000), 2)  # ties, as a tree's leaves give (clipped alike)
    labels = (rng.random(2000) < probability).astype("int64")
    joined = pd.DataFrame({"probability": probability, "low": labels, "high": labels})
    counts = pd.concat([_counts(part) for part in np.array_split(joined, 4)])
    assert counts["agreed"].all()
    counts = counts.groupby(["probability", LABEL])["rows"].sum().reset_index()
    assert metric_from_counts(name, counts) == pytest.approx(reference(labels, probability), rel=1e-12)


def test_a_retried_event_counts_once_and_an_event_whose_labels_disagree_not_at_all(contract, tmp_path):
    """The join on the engine: an entity's event served twice (a client's retry) is one row; an event whose
    label rows disagree is counted apart, not as either label; an event with no label row is unlabelled; a row
    with no probability (another writer's) is not joined, though its label is there."""
    from pipelines.engines.dask_engine import DaskEngine
    from pipelines.monitoring.live import _joined

    at = pd.Timestamp("2026-11-20 10:00", tz="UTC")
    log = pd.DataFrame(
        {
            "model_version": [3, 3, 3, 3, 3, 2, 3],
            "entity_id": ["a", "a", "b", "c", "d", "e", "f"],
            "event_time": [at] * 7,
            "probability": [0.9, 0.9, 0.2, 0.6, 0.4, 0.5, float("nan")],
        }
    )
    raw = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "c", "e", "f"],
            "event_ts": [at] * 6,
            "churned": [1, 0, 1, 0, 1, 1],
        }
    )
    for number, part in enumerate((log.iloc[:3], log.iloc[3:])):  # the retry's two rows in one file
        part.to_parquet(tmp_path / f"log-{number}.parquet", index=False)
    raw.to_parquet(tmp_path / "raw.parquet", index=False)
    files = [str(tmp_path / "log-0.parquet"), str(tmp_path / "log-1.parquet")]
    start = {"served": 0, "champion": 0, "scored": 0, "joinable": 0, "keys": 0}
    spans = []

    def label_files(first: int, last: int):
        spans.append((first, last))
        return [str(tmp_path / "raw.parquet")], [at.date()], []

    counted, counts, _ = _joined(DaskEngine(client=None), contract, files, 3, start, label_files)
    assert counted == {"served": 7, "champion": 6, "scored": 5, "joinable": 5, "keys": 4}
    assert spans == [(at.value // 1000, at.value // 1000)]  # the joinable rows' event times, microseconds
    rows = counts.set_index(["probability", LABEL, "agreed"])["rows"].to_dict()
    # a (retried) and b joined to their labels; c's labels disagree; d has none; e was another version's; f
    # has no probability
    assert rows == {(0.9, 1, True): 1, (0.2, 0, True): 1, (0.6, 0, False): 1}


def test_a_small_intervals_pass_runs_in_the_task_and_a_large_one_on_the_engine(tmp_path):
    """Below CT_MONITOR_IN_TASK_BELOW_MB a Spark job (or a Dask scheduler's) costs more than the pass itself: the
    pass runs in the task's threads. The embedded Dask engine is the task's threads already."""
    from pipelines.monitoring.monitor import IN_TASK, pass_engine
    from pipelines.settings import get_settings

    settings = get_settings(state_dir=tmp_path, monitor_in_task_below_mb=64)
    mib = 2**20
    assert pass_engine(settings, "spark", 64 * mib - 1) == IN_TASK
    assert pass_engine(settings, "spark", 64 * mib) == "spark"
    assert pass_engine(settings, "dask", 1) == "dask"
    cluster = settings.model_copy(update={"dask_scheduler": "tcp://127.0.0.1:8786"})
    assert pass_engine(cluster, "dask", 64 * mib - 1) == IN_TASK
    assert pass_engine(cluster, "dask", 64 * mib) == "dask"
    always = settings.model_copy(update={"monitor_in_task_below_mb": 0})
    assert pass_engine(always, "spark", 0) == "spark"


def test_the_label_days_are_the_served_events_days_back_to_the_lookback():
    from pipelines.monitoring.live import _served_counts, label_days

    day = dt.date(2026, 11, 30)
    frame = pd.DataFrame(
        {
            "model_version": [3, 3, 3, 2],
            "entity_id": ["a", "b", None, "c"],
            "event_time": pd.to_datetime(
                [
                    "2026-11-28T23:59:59.999999",
                    "2026-11-30T08:00:00.000000",
                    "2026-11-01T00:00:00.000000",
                    "2026-11-02T00:00:00.000000",
                ],
                utc=True,
            ),
            "probability": [0.1, 0.2, 0.3, 0.4],
        }
    )
    counts = _served_counts(frame, 3)  # the joinable rows are the champion's with both keys: a and b
    span = int(counts["first_event"].iloc[0]), int(counts["last_event"].iloc[0])
    assert counts[["served", "champion", "joinable"]].iloc[0].tolist() == [4, 3, 2]
    assert label_days(day, *span, 7) == [dt.date(2026, 11, 28), dt.date(2026, 11, 29), day]
    assert label_days(day, *span, 1) == [dt.date(2026, 11, 29), day]
    assert label_days(day, *span, 0) == [day]
    nothing = _served_counts(frame.head(0), 3)
    assert label_days(day, int(nothing["first_event"].iloc[0]), int(nothing["last_event"].iloc[0]), 7) == [
        day
    ]
    later = pd.Timestamp("2026-12-03", tz="UTC").value // 1000  # an event time after the day: not read
    assert label_days(day, later, later, 7) == [day]
    only_old = pd.Timestamp("2026-11-27T12:00", tz="UTC").value // 1000
    assert label_days(day, only_old, only_old, 7) == [dt.date(2026, 11, 27), day]
