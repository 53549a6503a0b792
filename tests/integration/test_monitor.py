"""The monitor on real served traffic: the real app logs what it answered, the engines judge it.

One champion is trained and promoted for the module; each test serves its own traffic through the app into
its own data root, and runs the monitor on it.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient
from mlflow.exceptions import MlflowException
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.data.generate import generate, generate_day
from pipelines.data.validate import validate
from pipelines.monitoring import logfiles, verdict
from pipelines.monitoring.monitor import (
    Interval,
    judgeable_from,
    monitor,
    read_figures,
    read_triggers,
)
from pipelines.release import history, tracking
from pipelines.serving.app import create_app, wait_until_ready
from pipelines.settings import get_settings
from tests.days import DAY
from tests.monitoring_lab import request_rows, today, train_champion

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def champion(tmp_path_factory):
    """A scikit-learn champion (v1), evaluated on its holdout, and a contract whose labels are due at once."""
    root = tmp_path_factory.mktemp("monitor")
    contract = yaml.safe_load((ROOT / "include" / "contracts" / "transactions.yaml").read_text())
    contract["label_delay_hours"] = 0
    contract_path = root / "transactions.yaml"
    contract_path.write_text(yaml.safe_dump(contract))
    settings = get_settings(state_dir=root / "state", rows_per_day=3000, contract_path=contract_path)
    version = train_champion(settings, DAY)
    return settings, version


def _lab(champion, tmp_path: Path, policy: dict | None = None):
    """The champion's registry, with this test's own data root (prediction log, monitor's records)."""
    settings, version = champion
    changes = {}
    if policy is not None:
        path = tmp_path / "monitoring.yaml"
        path.write_text(yaml.safe_dump(policy))
        changes["monitoring_policy_path"] = path
    lab = get_settings(
        state_dir=settings.state_dir,
        data_root=str(tmp_path / "data"),
        contract_path=settings.contract_path,
        rows_per_day=settings.rows_per_day,
        prediction_log_flush_rows=100,
        monitor_in_task_below_mb=0,  # Spark's runs read the log on Spark, not in the task
        **changes,
    )
    return lab, version


def _serve(settings, frame: pd.DataFrame, keyed: int) -> list[str]:
    """Send ``frame``'s rows through the real app, 50 a request; the first ``keyed`` rows carry their entity
    id and event time. The request ids the app answered with."""
    rows = request_rows(frame, keyed)
    answered = []
    with TestClient(create_app(settings)) as http:  # the lifespan's end writes the log
        wait_until_ready(http)
        for start in range(0, len(rows), 50):
            response = http.post("/v1/predict", json={"rows": rows[start : start + 50]})
            assert response.status_code == 200, response.text
            assert response.headers["x-request-id"] == response.json()["request_id"]
            answered.append(response.json()["request_id"])
        asked = http.post("/v1/predict", json={"rows": rows[:1]}, headers={"X-Request-Id": "client-7"})
        assert asked.json()["request_id"] == "client-7"
    return answered


def _judge(settings, interval: Interval, engine: str = "dask", **kwargs) -> dict:
    """The monitor on traffic served just now, run as at the moment the interval can be judged (over, its rows
    written), or now if that is later: the tests serve today's traffic and judge today's hours at once."""
    now = max(judgeable_from(settings, interval), dt.datetime.now(dt.UTC))
    return monitor(settings, interval, engine, now=now, **kwargs)


def _labelled_today(champion, tmp_path: Path):
    """The lab, with today's source written and validated (its labels, as the retrain run of the day validates
    them); the settings, the day and its source rows."""
    settings, _ = _lab(champion, tmp_path)
    day = today()
    generate(settings, day, "none")
    validate(settings, day)
    return settings, day, generate_day(day, settings.seed, settings.rows_per_day)


def _take_log(settings, day: dt.date) -> tuple[Path, pd.DataFrame]:
    """The day's prediction log, read whole and removed (for a test to write it back as another writer would)."""
    folder = Path(settings.prediction_log_uri) / f"ds={day}"
    parts = sorted(folder.glob("*.parquet"))
    frame = pd.concat([pd.read_parquet(part) for part in parts], ignore_index=True)
    for part in parts:
        part.unlink()
    return folder, frame


def _signal(result: dict, name: str) -> dict:
    return next(s for s in result["signals"] if s["signal"] == name)


def test_live_quality_is_scikit_learns_metric_on_the_joined_rows_on_both_engines(champion, tmp_path):
    settings, version = _lab(champion, tmp_path)
    day = today()
    generate(settings, day, "none")
    validate(settings, day)  # the day's labels, as the retrain run of that day validates them
    source = generate_day(day, settings.seed, settings.rows_per_day)
    sent = source.head(900)
    _serve(settings, sent, keyed=700)
    log = pd.read_parquet(settings.prediction_log_uri)
    assert len(log) == 901 and log["entity_id"].notna().sum() == 701  # and the one sent as client-7
    assert (log["request_id"] == "client-7").sum() == 1
    # client-7 sent the first keyed row again (a client's retry): one event, counted once.
    joined = (
        log.dropna(subset=["entity_id"])
        .drop_duplicates(["entity_id", "event_time"])
        .merge(
            source[["customer_id", "event_ts", "churned"]],
            left_on=["entity_id", "event_time"],
            right_on=["customer_id", "event_ts"],
        )
    )
    expected = roc_auc_score(joined["churned"], joined["probability"])

    results = {"dask": _judge(settings, Interval.of(day), "dask")}
    # The app's files compacted into a file per hour, as once these hours have closed: Spark's run reads the
    # compacted files, both for the pass and for the join, and must count every row once.
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    done = logfiles.compact(settings.prediction_log_uri, day, later)
    assert done["rows"] == 901 and done["parts"] > done["files"] >= 1, done
    results["spark"] = _judge(settings, Interval.of(day), "spark")
    # By default an interval this small (kilobytes) is read in the task's threads, on Spark too; the live join
    # still runs on Spark.
    default = settings.model_copy(update={"monitor_in_task_below_mb": 64})
    results["spark, the pass in the task"] = _judge(default, Interval.of(day), "spark")
    assert [results[e]["pass_on"] for e in results] == ["dask", "spark", "task"]
    for engine, result in results.items():
        live = _signal(result, "live_quality")
        assert live["day"] == day.isoformat() and live["metric"] == "roc_auc", (engine, live)
        assert live["joined_rows"] == 700 and live["unjoinable_rows"] == 200, (engine, live)
        assert live["repeated_rows"] == 1 and live["unlabelled_rows"] == live["conflicting_label_rows"] == 0
        assert live["value"] == pytest.approx(expected, rel=1e-12), engine
        assert live["state"] in (verdict.OK, verdict.BREACH)
        assert result["rows"] == 901 and result["champion_rows"] == 901
    dask, spark, task = (r["signals"] for r in results.values())
    for one, other in [*zip(dask, spark, strict=True), *zip(dask, task, strict=True)]:  # the same verdicts
        assert one["state"] == other["state"], (one, other)
        if isinstance(one.get("value"), float):  # a score from buckets each engine's partitions chose: within
            assert one["value"] == pytest.approx(other["value"], rel=1e-3), (one, other)  # its error bound


@pytest.mark.parametrize("engine", ["dask", "spark"])
def test_events_of_earlier_days_join_their_own_days_labels_back_to_the_lookback(champion, tmp_path, engine):
    """A client scoring yesterday's event today sends its event time: its label is in yesterday's partition,
    which the live join read no more than the served day's (the rows counted as unlabelled)."""
    settings, _ = _lab(champion, tmp_path)
    day = today()
    yesterday, old = day - dt.timedelta(days=1), day - dt.timedelta(days=10)
    sources = {}
    for d in (day, yesterday, old):
        generate(settings, d, "none")
        validate(settings, d)
        sources[d] = generate_day(d, settings.seed, settings.rows_per_day)
    sent = pd.concat([sources[day].head(200), sources[yesterday].head(200), sources[old].head(100)])
    _serve(settings, sent, keyed=500)
    log = pd.read_parquet(settings.prediction_log_uri).drop_duplicates(["entity_id", "event_time"])
    labels = pd.concat([sources[day], sources[yesterday]])[["customer_id", "event_ts", "churned"]]
    joined = log.merge(labels, left_on=["entity_id", "event_time"], right_on=["customer_id", "event_ts"])
    assert len(joined) == 400

    live = _signal(_judge(settings, Interval.of(day), engine), "live_quality")
    assert live["joined_rows"] == 400 and live["unlabelled_rows"] == 100, live  # day - 10: past the lookback
    assert live["value"] == pytest.approx(roc_auc_score(joined["churned"], joined["probability"]), rel=1e-12)
    assert live["label_days"] == [yesterday.isoformat(), day.isoformat()]
    assert live["label_days_not_validated"] == [
        (day - dt.timedelta(days=n)).isoformat() for n in range(7, 1, -1)
    ]


def test_drifted_traffic_asks_for_a_retrain_once_and_a_second_ask_in_the_cooldown_is_suppressed(
    champion, tmp_path
):
    policy = yaml.safe_load((ROOT / "include" / "monitoring_policy.yaml").read_text())
    policy["triggers"]["cooldown_hours"] = 48  # whatever the hour the test runs at
    policy["triggers"]["after_promotion_hours"] = 0  # the champion was promoted minutes ago
    settings, version = _lab(champion, tmp_path, policy)
    _serve(settings, generate_day(today(), settings.seed, 1000, "covariate_shift"), keyed=0)
    # Sent across an hour's end, the hour with most of the 1,000 rows (and that hour's own day).
    busiest = pd.read_parquet(settings.prediction_log_uri)["served_at"].dt.floor("h").mode()[0]
    day, hour = busiest.date(), busiest.hour
    first = _judge(settings, Interval.of(day, hour), "dask")
    assert first["verdict"]["status"] == verdict.TRIGGERED, first["verdict"]
    assert "feature_drift" in first["verdict"]["reasons"]
    # This lab has no source for today: the retrain is asked for on the day before, the last whole day.
    assert first["event"]["day"] == (day - dt.timedelta(days=1)).isoformat()
    assert first["event"]["figures"]["feature_drift"] >= 0.3
    assert first["state"].startswith("drift, no labels yet"), first["state"]
    assert _signal(first, "live_quality")["state"] == verdict.NOT_JUDGED
    again = _judge(settings, Interval.of(day, hour), "dask")  # the same interval judged again
    assert again["verdict"]["status"] == verdict.ALREADY and "not asked twice" in again["verdict"]["detail"]
    assert "event" not in again
    # Judged again, it writes nothing twice: its figures and run still say it asked, each figure logged once.
    assert [f["status"] for f in read_figures(settings)] == [verdict.TRIGGERED]
    mlflow = tracking.configure(settings)
    assert mlflow.get_run(again["mlflow_run_id"]).data.tags["verdict"] == verdict.TRIGGERED
    assert len(mlflow.get_metric_history(again["mlflow_run_id"], "served_rows")) == 1
    # The task that asked recorded it, then failed before Airflow registered its event: its retry finds no
    # event of the interval, and asks again; where Airflow holds one, it does not.
    lost = _judge(settings, Interval.of(day, hour), "dask", delivered=lambda name, start: False)
    assert lost["verdict"]["status"] == verdict.TRIGGERED, lost["verdict"]
    assert "never reached the scheduler" in lost["verdict"]["detail"]
    assert lost["event"] | {"figures": None} == first["event"] | {"figures": None}
    held = _judge(
        settings, Interval.of(day, hour), "dask", delivered=lambda name, start: name == first["interval"]
    )
    assert held["verdict"]["status"] == verdict.ALREADY and "event" not in held
    whole_day = _judge(settings, Interval.of(day), "dask")  # ends with or after the first: in its cooldown
    assert whole_day["verdict"]["status"] == verdict.SUPPRESSED, whole_day["verdict"]
    assert whole_day["verdict"]["detail"].startswith("cooldown: a retrain was asked for at")
    records = read_triggers(settings)
    assert [r["status"] for r in records] == [verdict.TRIGGERED, verdict.SUPPRESSED]
    assert records[1]["detail"].startswith("cooldown")
    report = Path(whole_day["report"])
    page = (report / "monitor.html").read_text()
    assert "Served traffic of transactions" in page
    # Evidently's report says what the monitor decided: its count of drifted columns and each column's score
    summary = json.loads((report / "monitor.json").read_text())
    metrics = {m["config"]["type"].rsplit(":", 1)[1]: m for m in summary["evidently"]["metrics"]}
    assert metrics["DriftedColumnsCount"]["value"]["count"] == summary["drift"]["drifted_columns"] >= 1
    scores = {
        m["config"]["column"]: m["value"]
        for m in summary["evidently"]["metrics"]
        if m["config"]["type"] == "ct:metric:ProfileValueDrift"
    }
    ours = {n: math.nan if c["score"] is None else c["score"] for n, c in summary["drift"]["columns"].items()}
    assert scores == pytest.approx(ours, nan_ok=True)
    assert all(f"Drift in column '{name}'" in page for name in scores)  # each column's widget
    assert "<h3>Feature drift against the reference profile</h3>" in page  # and the banner's table of them
    assert 'ct_monitor_retrain_requested{dataset="transactions"' in (report / "metrics.prom").read_text()
    run = tracking.configure(settings).get_run(whole_day["mlflow_run_id"])
    assert (
        run.data.tags["champion_version"] == str(version) and run.data.tags["verdict"] == verdict.SUPPRESSED
    )
    assert {f["interval"] for f in read_figures(settings)} == {f"{day}T{hour:02d}00-1h", f"{day}T0000-24h"}
    env = {
        "CT_STATE_DIR": str(settings.state_dir),
        "CT_DATA_ROOT": settings.data_root,
        "CT_CONTRACT_PATH": str(settings.contract_path),
        "CT_MONITORING_POLICY_PATH": str(settings.monitoring_policy_path),
    }
    shown = CliRunner().invoke(app, ["monitor", "history"], env=env)
    assert shown.exit_code == 0, shown.output
    assert "triggered: retrain asked for" in shown.output and "suppressed: cooldown" in shown.output

    # Had every attempt of the hour's run failed after its record, no retrain would run: its ask does not hold
    # the others back (cooldown, budget), and the day asks.
    asked = []
    unheld = _judge(
        settings, Interval.of(day), "dask", delivered=lambda name, start: asked.append((name, start)) or False
    )
    assert unheld["verdict"]["status"] == verdict.TRIGGERED, unheld["verdict"]
    assert f"not counted: the ask of {first['interval']}'s (decided at" in unheld["verdict"]["detail"]
    assert asked == [(first["interval"], dt.datetime.fromisoformat(first["start"]))]


def test_a_run_whose_mlflow_logging_fails_leaves_no_figures_saying_it_asked(champion, tmp_path):
    """The figures were written with the report, before the MLflow run and the trigger record: a run whose
    logging failed on every retry left figures (and `pipelines monitor history`) saying "triggered", with no
    ask recorded and no event emitted. Written last, they say what the interval's last run that ended said."""
    policy = yaml.safe_load((ROOT / "include" / "monitoring_policy.yaml").read_text())
    policy["triggers"]["cooldown_hours"] = 48
    policy["triggers"]["after_promotion_hours"] = 0  # the champion was promoted minutes ago
    settings, _ = _lab(champion, tmp_path, policy)
    # An experiment of this test's own: its monitoring experiment is deleted below, no other test's.
    settings = settings.model_copy(update={"experiment": "ct-monitor-unlogged"})
    _serve(settings, generate_day(today(), settings.seed, 1000, "covariate_shift"), keyed=0)
    busiest = pd.read_parquet(settings.prediction_log_uri)["served_at"].dt.floor("h").mode()[0]
    interval = Interval.of(busiest.date(), busiest.hour)
    client = tracking.configure(settings)
    experiment = tracking.ensure_experiment(client, settings, settings.monitoring_experiment)
    client.delete_experiment(experiment)  # deleted in MLflow's UI: no run can be made in it

    with pytest.raises(MlflowException, match="must be in the 'active' state"):
        _judge(settings, interval)
    assert read_triggers(settings) == [] and read_figures(settings) == []

    client.restore_experiment(experiment)
    retried = _judge(settings, interval)  # the retry asks: the run that failed asked for nothing
    assert retried["verdict"]["status"] == verdict.TRIGGERED and "event" in retried, retried["verdict"]
    assert [f["status"] for f in read_figures(settings)] == [verdict.TRIGGERED]
    assert [r["status"] for r in read_triggers(settings)] == [verdict.TRIGGERED]

    client.delete_experiment(experiment)  # a run after the ask fails: what was kept still says it asked
    with pytest.raises(MlflowException, match="must be in the 'active' state"):
        _judge(settings, interval)
    assert [f["status"] for f in read_figures(settings)] == [verdict.TRIGGERED]
    assert [r["status"] for r in read_triggers(settings)] == [verdict.TRIGGERED]


def test_an_interval_judged_again_logs_its_figures_once_and_changed_figures_as_the_newest(tmp_path):
    """Logged at one point, a changed figure (late rows) became a second value there, and the run's latest was
    the larger one, not the newer; logged at each judgement's time, the same figures were a new point each time."""
    from pipelines.monitoring.monitor import _log_to_mlflow

    settings = get_settings(state_dir=tmp_path / "state", data_root=str(tmp_path / "data"))
    client = tracking.configure(settings)
    interval = Interval.of(DAY, 10)
    report = tmp_path / "report"
    report.mkdir()
    for name in ("monitor.html", "monitor.json", "metrics.prom"):
        (report / name).write_text("{}")

    def judged(drift: float, rows: int) -> dict:
        result = {
            "champion": 1,
            "verdict": {"status": verdict.NOT_NEEDED},
            "state": "no drift",
            "engine": "dask",
            "pass_on": "task",
            "rows": rows,
            "signals": [
                {"signal": "feature_drift", "value": drift},
                {"signal": "live_quality", "value": None},
            ],
            "report": str(report),
        }
        _log_to_mlflow(settings, client, interval, result)
        return result

    run_id = judged(0.3, 800)["mlflow_run_id"]
    assert judged(0.3, 800)["mlflow_run_id"] == run_id
    assert [m.value for m in client.get_metric_history(run_id, "feature_drift")] == [0.3]
    judged(0.1, 900)  # late rows diluted the drift
    assert client.get_run(run_id).data.metrics == {"served_rows": 900.0, "feature_drift": 0.1}
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "feature_drift")] == [
        (0, 0.3),
        (1, 0.1),
    ]


def test_clean_traffic_asks_for_nothing(champion, tmp_path):
    settings, _ = _lab(champion, tmp_path)
    day = today()
    _serve(settings, generate_day(day, settings.seed + 1, 1000), keyed=0)
    result = _judge(settings, Interval.of(day), "dask")
    assert result["verdict"]["status"] == verdict.NOT_NEEDED, result["signals"]
    assert _signal(result, "feature_drift")["state"] == verdict.OK
    assert _signal(result, "prediction_drift")["state"] == verdict.OK
    assert result["state"] == "no drift" and read_triggers(settings) == []


def test_a_log_from_another_writer_is_judged_on_the_rows_that_hold_a_version_and_a_probability(
    champion, tmp_path
):
    """Serving never logs a row without them; another writer's log may. A row with no version failed the
    pass (int("1.0")) on every retry; rows with no probability were dropped without a word, and prediction drift
    was judged on a handful of values (8 of 800)."""
    settings, _ = _lab(champion, tmp_path)
    day = today()
    _serve(settings, generate_day(day, settings.seed + 1, 1000), keyed=0)
    folder, rows = _take_log(settings, day)
    rows["model_version"] = rows["model_version"].astype("Int64")
    rows.loc[0, "model_version"] = None
    rows.loc[10:, "probability"] = float("nan")
    rows.to_parquet(folder / "other-writer.parquet", index=False)
    result = _judge(settings, Interval.of(day), "dask")
    assert result["rows"] == len(rows) and result["rows_without_version"] == 1
    prediction = _signal(result, "prediction_drift")
    assert prediction["state"] == verdict.NOT_JUDGED, prediction
    assert f"{len(rows) - 10} of them with no probability" in prediction["detail"], prediction
    assert _signal(result, "feature_drift")["state"] == verdict.OK


def test_an_interval_with_no_traffic_says_so_and_does_not_fail(champion, tmp_path):
    settings, version = _lab(champion, tmp_path)
    result = _judge(settings, Interval.of(today()), "dask")
    assert result["rows"] == 0 and result["state"] == "no traffic in this interval"
    assert result["verdict"]["status"] == verdict.NOT_NEEDED
    assert _signal(result, "feature_drift")["state"] == verdict.NOT_JUDGED
    assert _signal(result, "live_quality")["state"] == verdict.NOT_JUDGED
    assert Path(result["report"], "monitor.html").exists()


def test_an_interval_judged_late_is_judged_against_the_champion_of_its_end(champion, tmp_path):
    """An hour that ended before the champion was promoted had no champion: a run today (a re-run, a catch-up)
    judges it as its run on time did, not against today's champion."""
    settings, version = _lab(champion, tmp_path)
    promoted = dt.datetime.fromisoformat(
        next(r["at"] for r in history.read(settings, settings.model_name) if r["outcome"] == history.PROMOTED)
    )
    before = Interval.whole_hours(promoted - dt.timedelta(hours=2), promoted - dt.timedelta(hours=1))
    result = _judge(settings, before, "dask")
    assert result["champion"] is None and result["state"] == "no champion yet", result
    after = _judge(settings, Interval.of(promoted.date()), "dask")
    assert after["champion"] == version


def _cut_short(whole: bytes) -> bytes:
    return whole[:-100]


def _page_damaged(whole: bytes) -> bytes:
    """A data page of the probabilities overwritten: the footer parses, the page does not decode."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    footer = pq.read_metadata(pa.BufferReader(whole))
    chunk = footer.row_group(0).column(footer.schema.names.index("probability"))
    data = bytearray(whole)
    data[chunk.data_page_offset + 20 : chunk.data_page_offset + 200] = bytes(180)
    return bytes(data)


@pytest.mark.parametrize("damage", [_cut_short, _page_damaged])
def test_a_log_file_that_does_not_read_is_set_aside_named_in_the_report_and_the_rest_judged(
    champion, tmp_path, damage
):
    """A part of the hour being judged (not yet compacted) that is not readable Parquet stopped every pass over
    its day; it is moved aside, kept whole, named in the report, and the other rows are judged."""
    settings, _ = _lab(champion, tmp_path)
    day = today()
    _serve(settings, generate_day(day, settings.seed + 1, 600), keyed=0)
    folder = Path(settings.prediction_log_uri) / f"ds={day}"
    parts = sorted(folder.glob("part-*"))
    bad = parts[0]
    rows = sum(pd.read_parquet(p).shape[0] for p in parts if p != bad)
    broken = damage(bad.read_bytes())
    bad.write_bytes(broken)
    result = _judge(settings, Interval.of(day), "dask")
    aside = Path(settings.prediction_log_uri) / "_unreadable" / f"ds={day}" / bad.name
    assert result["rows"] == rows and result["log_set_aside"] == [f"file://{aside}"]
    assert aside.read_bytes() == broken and not bad.exists()
    assert (
        "1 file(s) of the prediction log could not be read"
        in Path(result["report"], "monitor.html").read_text()
    )
    assert 'ct_monitor_log_files_set_aside{dataset="transactions",interval="' in (
        Path(result["report"], "metrics.prom").read_text()
    )
    again = _judge(settings, Interval.of(day), "dask")
    assert again["rows"] == rows and again["log_set_aside"] == []


@pytest.mark.parametrize("engine", ["dask", "spark"])
def test_rows_with_no_probability_are_counted_apart_not_as_unlabelled(champion, tmp_path, engine):
    """Serving never logs a row without a probability; another writer's log may. Such rows that carried their
    keys were joined, and their label counted as none (`unlabelled_rows`): on a day where labels had all
    arrived, the report said a sixth of them had not."""
    settings, day, source = _labelled_today(champion, tmp_path)
    _serve(settings, source.head(600), keyed=600)
    folder, log = _take_log(settings, day)
    unscored = log["entity_id"].isin(source["customer_id"].iloc[100:200].astype(str))
    assert unscored.sum() == 100
    log.loc[unscored, "probability"] = float("nan")
    log.to_parquet(folder / "other-writer.parquet", index=False)
    scored = log[log["probability"].notna()].drop_duplicates(["entity_id", "event_time"])
    joined = scored.merge(
        source[["customer_id", "event_ts", "churned"]].astype({"customer_id": str}),
        left_on=["entity_id", "event_time"],
        right_on=["customer_id", "event_ts"],
    )
    # The first hour of tomorrow joins today's labels (the contract's delay is 0).
    result = _judge(settings, Interval.of(day + dt.timedelta(days=1), 0), engine)
    live = _signal(result, "live_quality")
    assert live["unscored_rows"] == 100 and live["unlabelled_rows"] == 0, live
    # 601 rows (client-7 sent the first one again), 100 of them with no probability; the retry is one event.
    assert live["joinable_rows"] == 501 and live["repeated_rows"] == 1 and live["unjoinable_rows"] == 0, live
    assert live["joined_rows"] == len(joined) == 500, live
    assert live["value"] == pytest.approx(roc_auc_score(joined["churned"], joined["probability"]), rel=1e-12)


@pytest.mark.parametrize("engine", ["dask", "spark"])
def test_a_labels_day_file_that_does_not_decode_is_set_aside_and_the_rest_joined(champion, tmp_path, engine):
    """The live join reads the labels' day whole. A compacted file of that day whose data does not decode (its
    footer parses, so compactions, which read compacted files' footers only, keep it) failed every interval
    joining that day, retries included; it is set aside as the pass's files are, and the rest is joined."""
    import pyarrow.parquet as pq

    settings, day, source = _labelled_today(champion, tmp_path)
    _serve(settings, source.head(300), keyed=300)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    assert logfiles.compact(settings.prediction_log_uri, day, later)["files"] >= 1
    folder = Path(settings.prediction_log_uri) / f"ds={day}"
    bad = sorted(folder.glob("compacted-*"))[0]
    broken = _page_damaged(bad.read_bytes())
    bad.write_bytes(broken)
    lost = pq.read_metadata(bad).num_rows  # its footer parses
    _serve(settings, source.iloc[300:600], keyed=300)  # parts of the hour still open
    # The first hour of tomorrow joins today's labels (the contract's delay is 0): no traffic of its own.
    result = _judge(settings, Interval.of(day + dt.timedelta(days=1), 0), engine)
    aside = Path(settings.prediction_log_uri) / "_unreadable" / f"ds={day}" / bad.name
    assert result["log_set_aside"] == [f"file://{aside}"] and aside.read_bytes() == broken
    live = _signal(result, "live_quality")
    # Every row sent carried its keys (client-7's too, twice 301), but for those of the file set aside; a row
    # client-7 sent again is one event.
    assert live["day"] == day.isoformat() and live["joinable_rows"] == 602 - lost, live
    events = pd.read_parquet(folder).drop_duplicates(["entity_id", "event_time"])
    assert live["joined_rows"] == len(events) == 602 - lost - live["repeated_rows"], live
    assert live["state"] in (verdict.OK, verdict.BREACH) and result["rows"] == 0
    again = _judge(settings, Interval.of(day + dt.timedelta(days=1), 0), engine)
    assert (
        again["log_set_aside"] == [] and _signal(again, "live_quality")["joined_rows"] == live["joined_rows"]
    )


def test_the_reference_profile_is_kept_by_version_and_source_and_read_from_the_artifact_store_once(
    champion, tmp_path, monkeypatch
):
    from pipelines.data.contract import dataset_contract
    from pipelines.monitoring import monitor as monitoring

    settings, version = _lab(champion, tmp_path)
    client = tracking.configure(settings)
    champ = client.get_model_version(settings.model_name, str(version))
    contract = dataset_contract(settings)
    loaded: list[str] = []
    load = tracking.load_json_artifact

    def counted(uri: str):
        loaded.append(uri)
        return load(uri)

    monkeypatch.setattr(tracking, "load_json_artifact", counted)
    first = monitoring._reference_profile(settings, contract, champ)
    again = monitoring._reference_profile(settings, contract, champ)
    assert first == again and loaded == [champ.tags["reference_profile"]]
    kept = Path(settings.monitoring_uri) / "reference" / f"v{version}-profile.json"
    stale = json.loads(kept.read_text()) | {"source": "runs:/another/reference_profile.json"}
    kept.write_text(json.dumps(stale))  # kept from another artifact (the tag was moved): read again
    assert monitoring._reference_profile(settings, contract, champ) == first and len(loaded) == 2
