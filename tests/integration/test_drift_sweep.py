"""Drift against plain Evidently: 200 generated changes at 100,000 rows, profiled on Dask and on Spark.

Each change is a column of a reference and a current window written as Parquet; ``pipelines drift compare``'s
function profiles both on the engine and applies the contract's tests; plain Evidently runs the same stat
test on the raw rows. Verdicts may differ only where Evidently's score lies within 0.005 of its threshold,
scores by at most 0.005 elsewhere, and one outlier row changes no verdict.
"""

from __future__ import annotations

import pytest

from bench import drift_sweep
from pipelines.evaluation.drift import compare_datasets
from pipelines.settings import get_settings

pytestmark = pytest.mark.slow
ROWS = 100_000


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep")
    reference, current, changes = drift_sweep.build(ROWS, seed=11)
    contract = drift_sweep.contract(changes)
    for name, frame in (("reference", reference), ("current", current)):
        (folder / name).mkdir()
        for part in range(4):  # a few files, as a real window has
            frame.iloc[part::4].to_parquet(folder / name / f"part-{part}.parquet", index=False)
    theirs = drift_sweep.evidently_scores(reference, current, contract)
    settings = get_settings(state_dir=folder / "state")
    return folder, changes, contract, theirs, settings


@pytest.fixture(scope="module")
def results(sweep):
    folder, _, contract, _, settings = sweep
    return {
        engine: compare_datasets(
            settings, str(folder / "reference"), str(folder / "current"), contract, engine
        )
        for engine in ("dask", "spark")
    }


@pytest.mark.parametrize("engine", ["dask", "spark"])
def test_verdicts_and_scores_agree_with_plain_evidently(sweep, results, engine):
    _, changes, _, theirs, _ = sweep
    found = drift_sweep.agreement(results[engine], theirs, changes)
    assert found["changes"] >= 200
    assert not found["verdict_differs"], found["verdict_differs"][:5]
    assert not found["score_differs"], found["score_differs"][:5]
    assert found["max_score_difference"] <= 0.005
    assert not found["outlier_flips"], found["outlier_flips"]
    assert results[engine]["reference_rows"] == ROWS


def test_the_engines_compute_the_same_verdicts_and_scores_within_their_bounds(results):
    dask, spark = results["dask"]["columns"], results["spark"]["columns"]
    for name, column in dask.items():
        assert column["drifted"] == spark[name]["drifted"], name
        bounds = (column["error_bound"] or 0) + (spark[name]["error_bound"] or 0)
        assert abs(column["score"] - spark[name]["score"]) <= bounds + 1e-9, name
