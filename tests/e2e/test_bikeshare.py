"""A real dataset with real temporal drift through the whole `retrain` DAG: Capital Bikeshare, 2011.

Windows of 28 days a quarter apart (late March, late June, late September) on Dask, then the week after
September's on Spark, in one test: each run trains on its window and is judged on the window's newest week
against the champion trained before it (the bikeshare policy's `holdout.latest_days`), and the gate's
decision is recorded. Nothing here is tuned to the data: the rides, weather and calendar are what the city
recorded. The Spark run's window overlaps September's, so it validates only its new week (Spark checks a
day in several jobs, seconds each) and prepares all 28 days.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

# Airflow's task runner cancels a SIGALRM timer when a task ends, pytest-timeout's among them: the thread method
# is the one that still ends a test hung in a DAG run (tests/unit/test_suite_timeouts.py)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900, method="thread")]

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
WINDOW_DAYS = 28
# (logical date, engine): the last day of each window.
SEASONS = [
    (dt.date(2011, 3, 27), "dask"),
    (dt.date(2011, 6, 26), "dask"),
    (dt.date(2011, 9, 25), "dask"),
    (dt.date(2011, 10, 2), "spark"),
]
QUARTERS = 3  # the first three are a quarter apart


@pytest.fixture
def retrain_dag(tmp_path, monkeypatch):
    """The `retrain` DAG, freshly parsed, on this test's own state folder and Airflow database."""
    from airflow.dag_processing.dagbag import BundleDagBag

    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
    monkeypatch.setenv("CT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("CT_WINDOW_DAYS", str(WINDOW_DAYS))
    return BundleDagBag(dag_folder=str(DAGS_DIR), bundle_path=DAGS_DIR).dags["retrain"]


def _run(dag, day: dt.date, engine: str):
    conf = {
        "dataset": "bikeshare",
        "engine": engine,
        "model_family": "sklearn",
        "scenario": "none",
        "dry_run": False,
    }
    return dag.test(logical_date=dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC), run_conf=conf)


def _story_line(settings, day: dt.date, engine: str) -> dict:
    """What the README's table shows for one run, from the stages' records."""
    from pipelines.data import runlog

    records = runlog.read_records(settings, day)
    decision = records["gate"]["result"]
    evaluation = records["evaluate"]["result"]
    drift = records["drift"]["result"]
    return {
        "window": f"{day - dt.timedelta(days=WINDOW_DAYS - 1)}..{day}",
        "engine": engine,
        "rows": records["validate"]["result"]["rows"],
        "holdout_rows": evaluation["holdout_rows"],
        "challenger": decision["challenger_version"],
        "champion": decision["champion_version"],
        "challenger_auc": evaluation["challenger"]["metrics"]["roc_auc"],
        "champion_auc": ((evaluation["champion"] or {}).get("metrics") or {}).get("roc_auc"),
        "interval": [(evaluation["comparison"] or {}).get(k) for k in ("ci_low", "ci_high")],
        "drifted": sorted(name for name, column in drift["columns"].items() if column["drifted"]),
        "drift_share": drift["drift_share"],
        "label_drift": drift["label"]["score"],
        "decision": decision["decision"],
        "decision_record": decision,
        "seconds": {stage: record["seconds"] for stage, record in records.items()},
    }


def _report(line: dict) -> str:
    """One run as the README's figures come from it (shown with pytest -s)."""
    champion = f"v{line['champion']} {line['champion_auc']:.4f}" if line["champion"] else "none"
    low, high = line["interval"]
    interval = f" [{low:+.4f}, {high:+.4f}]" if low is not None else ""
    stages = ", ".join(f"{stage} {seconds:.1f}" for stage, seconds in line["seconds"].items())
    return "\n".join(
        [
            f"BIKESHARE {line['window']} on {line['engine']}: {line['rows']} rows, holdout {line['holdout_rows']};"
            f" challenger v{line['challenger']} {line['challenger_auc']:.4f}, champion {champion}{interval};"
            f" drift {line['drift_share']:.2f} {line['drifted']}, label {line['label_drift']:.3f};"
            f" {line['decision'].upper()}",
            *(f"  {reason}" for reason in line["decision_record"]["reasons"]),
            f"  stage seconds: {stages}",
        ]
    )


def test_bikeshare_through_the_seasons_on_both_engines(retrain_dag):
    from pipelines.data.samples import write_sample
    from pipelines.release import history, tracking
    from pipelines.settings import get_settings

    settings = get_settings(dataset="bikeshare")
    for day, _ in SEASONS:
        write_sample(settings, "bikeshare", day, days=WINDOW_DAYS)  # an unchanged day is left alone
    client = tracking.configure(settings)

    story = []
    for day, engine in SEASONS:
        run = _run(retrain_dag, day, engine)
        states = {ti.task_id: ti.state for ti in run.get_task_instances()}
        assert run.state == "success", states
        assert states["gate"] == "success"
        line = _story_line(settings, day, engine)
        story.append(line)
        print("\n" + _report(line))

    versions = {int(v.version): v for v in client.search_model_versions(f"name = '{settings.model_name}'")}
    assert sorted(v.tags["logical_date"] for v in versions.values()) == [d.isoformat() for d, _ in SEASONS]
    for line, (day, engine) in zip(story, SEASONS, strict=True):
        version = versions[line["challenger"]]
        assert version.tags["logical_date"] == day.isoformat()
        assert version.tags["dataset.engine"] == engine
        assert version.tags["gate.decision"] == line["decision"]
        assert line["rows"] > 24 * WINDOW_DAYS * 0.9  # about 24 hours a day, every day of the window
        rules = {r["rule"]: r for r in line["decision_record"]["rules"]}
        assert all(r["detail"] for r in rules.values()), "every rule gives its numbers"
        assert rules["min_holdout_rows"]["passed"], rules["min_holdout_rows"]["detail"]
        assert rules["critical_columns_stable"]["passed"]  # the hours and weekdays come as often as ever

    # March bootstraps the registry: no champion, so the policy's floor decides.
    first = story[0]
    assert first["champion"] is None and first["decision"] == "promote"
    # Every later run is judged against a champion on the same newest week. Drift is real: a quarter
    # moves the weather and the season, never the shape of the calendar; a week moves less.
    for line in story[1:]:
        assert line["champion"] is not None and line["champion_auc"] is not None
        assert None not in line["interval"]
        assert not {"hr", "weekday"} & set(line["drifted"])
    for line in story[1:QUARTERS]:
        assert {"season", "temp", "atemp"} <= set(line["drifted"]), line["drifted"]
    assert story[-1]["drift_share"] < story[QUARTERS - 1]["drift_share"]
    rows = history.read(settings, settings.model_name)
    promoted = [r["to_version"] for r in rows if r["outcome"] == "promoted"]
    assert promoted == [line["challenger"] for line in story if line["decision"] == "promote"]
    champion = tracking.version_by_alias(client, settings.model_name, "champion")
    assert int(champion.version) == promoted[-1]
