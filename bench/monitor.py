"""Benchmark: the monitor over a day of logged predictions against plain Evidently on the same rows, side by side.

    python bench/monitor.py                                   # 1M and 10M logged rows, Dask, Spark, Spark Connect
    python bench/monitor.py --sizes 1000000 --engines dask
    python bench/monitor.py --layout app --work /tmp/bench-app   # the log as the app writes it, compacted

Data: a scikit-learn champion trained, evaluated and promoted on one demo day of 200,000 rows (its reference
profile logged with it), then a day of served traffic with every column the prediction log writes, in zstd
Parquet files of 200,000 rows (a generated day each; the app writes a file per flush, see the README): the
demo's covariate-shift rows, scored by the champion. With ``--layout app`` the same rows are cut into a file
per 10 s flush, named as the app names them (8,640 files a day whatever the rows; 8,641 when the generated
days spill past midnight), and compacted by hour as a monitor run compacts them, timed apart, once per size
before anything reads them; everything after reads the compacted files.

Measured, each in a fresh process with its peak resident memory (the whole process tree) sampled every 50 ms,
after its libraries are imported and frozen (``gc.freeze``, as in a task forked from a warm Airflow worker):

- **the monitor** on each engine: ``pipelines.monitoring.monitor.monitor`` on the whole day, everything a run
  does (read the log on the engine, profile, drift against the reference profile, the champion's holdout
  predictions scored for prediction drift, live quality, volume, Evidently's report rendered, the files
  written, MLflow logged), with its time per phase. Its first interval of a champion scores the champion's
  holdout (kept, by version), every later one reads it back: both are measured. "Like for like" counts what
  plain Evidently's run does too: reading the rows and the reference (its profile), the verdicts, the report.
  "To the verdicts" counts the reading and judging only (the phases before the report), against plain
  Evidently's time until its two reports have run (Evidently renders its widgets as a report runs, so its
  figure holds its rendering). On ``spark`` the task starts its own Spark driver (a JVM) as a task does by
  default; on ``spark-connect`` it is a client of a standing Spark Connect server (``CT_SPARK_REMOTE``), started
  and given its first job before any clock, as a team's server has long been up; each run is a new session.
  Both read the log on Spark (``CT_MONITOR_IN_TASK_BELOW_MB=0``); ``spark-default`` and
  ``spark-connect-default`` keep the default (64 MiB), under which the pass runs in the task's threads and
  only the live join (when the interval has labels to join) uses Spark;
- **plain Evidently**, what a user would otherwise run: the day's features and probabilities and the
  reference window read into pandas, the champion's holdout scored, ``Report([DataDriftPreset(...)])`` with
  the contract's test per column and ``ValueDrift`` of the probabilities, HTML saved. Skipped above
  ``--evidently-up-to`` rows (it grows linearly).

Verdicts: every feature's drift verdict and the prediction drift verdict of each monitor run are compared with
plain Evidently's on the same rows, and the largest gap between the two scores is printed.

Repeats (``--repeats N``, default 3): plain Evidently and every "later interval" run are run N times each, in
fresh processes, and the run of the median time is reported with the range of all N (the first interval of a
champion changes what it leaves behind, so it runs once). On two busy cores one run of the monitor's pass
ranged 0.26-0.39 s.

Goal (issue 15): the monitor at least 20x faster than plain Evidently at 1M rows, with the same verdicts.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FILE_ROWS = 500_000
CONNECT_URL = "BENCH_SPARK_REMOTE"  # the Spark Connect server's URL, for the monitor's children
TRAIN_DAY = dt.date(2026, 11, 20)
DAY_ROWS = 200_000  # the demo generator's most rows a day (its customer pool)


def _settings(work: Path) -> Any:
    from pipelines.settings import get_settings

    return get_settings(state_dir=work / "state", rows_per_day=DAY_ROWS, model_family="sklearn")


def log_day(settings: Any) -> dt.date:
    """The logged day: the day the champion was promoted (the monitor judges a day against the champion of
    its end, so a day before its promotion has none)."""
    from pipelines.release import history

    moves = [r for r in history.read(settings, settings.model_name) if r["outcome"] in history.MOVED]
    return dt.datetime.fromisoformat(moves[0]["at"]).astimezone(dt.UTC).date()


def _champion(work: Path) -> int:
    """Train, evaluate and promote the champion once (kept between runs of the bench)."""
    from pipelines.data.generate import generate
    from pipelines.data.prepare import prepare
    from pipelines.data.validate import validate
    from pipelines.evaluation.evaluate import evaluate
    from pipelines.release import audit, tracking
    from pipelines.release.promote import promote
    from pipelines.release.register import register
    from pipelines.training.train import train

    settings = _settings(work)
    client = tracking.configure(settings)
    if (version := audit.champion(settings, client)) is not None:
        return version
    generate(settings, TRAIN_DAY, "none")
    validate(settings, TRAIN_DAY)
    prepared = prepare(settings, TRAIN_DAY, "dask")
    trained = train(settings, TRAIN_DAY, prepared["uri"], tracking.RunContext("bench/monitor"), "sklearn")
    version = int(register(settings, TRAIN_DAY, trained["run_id"])["version"])
    evaluate(settings, TRAIN_DAY, prepared["uri"], version)
    promote(settings, TRAIN_DAY, version, None)
    return version


def write_log(work: Path, rows: int, version: int, layout: str = "days") -> tuple[Path, int]:
    """A day of logged predictions of ``rows`` rows; (its folder, bytes written). ``layout``: ``days``, a file
    per generated day (200,000 rows); ``app``, a file per 10 s flush named as the app names it (rewritten by
    every run, as the monitor compacts it)."""
    import mlflow
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.data.contract import dataset_contract
    from pipelines.data.generate import generate_day

    settings = _settings(work)
    day = log_day(settings)
    folder = Path(settings.prediction_log_uri) / f"ds={day}"
    if (
        layout == "days"
        and folder.exists()
        and all(f.name.startswith("part-0") for f in folder.glob("*.parquet"))
        and sum(pq.ParquetFile(f).metadata.num_rows for f in folder.glob("*.parquet")) == rows
    ):
        return folder, sum(f.stat().st_size for f in folder.glob("*.parquet"))
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    features = dataset_contract(settings).feature_columns
    model = mlflow.pyfunc.load_model(f"models:/{settings.model_name}/{version}")
    start = pd.Timestamp(day, tz="UTC")
    written, part = 0, 0
    while written < rows:
        other = day - dt.timedelta(days=part + 1)  # other days' customers and times: only the rows matter
        frame = generate_day(other, settings.seed, min(DAY_ROWS, rows - written), "covariate_shift")
        for offset in range(0, len(frame), FILE_ROWS):
            chunk = frame.iloc[offset : offset + FILE_ROWS]
            n = len(chunk)
            scored = model.predict(chunk[features])["probability"].to_numpy("float64")
            served = start + pd.to_timedelta(
                np.linspace(0, 86_399_999_999, n).astype("int64") + written, "us"
            )
            table = pa.table(
                {
                    "served_at": pa.array(served.to_numpy(), type=pa.timestamp("us", tz="UTC")),
                    "model_name": pa.array([settings.model_name] * n),
                    "model_version": pa.array(np.full(n, version, dtype="int64")),
                    **{name: pa.array(chunk[name].to_numpy(), from_pandas=True) for name in features},
                    "request_id": pa.array([f"r{i // 50}" for i in range(written, written + n)]),
                    "entity_id": pa.array(chunk["customer_id"].to_numpy()),
                    "event_time": pa.array(chunk["event_ts"].to_numpy(), type=pa.timestamp("us", tz="UTC")),
                    "probability": pa.array(scored),
                    "label": pa.array((scored >= 0.5).astype("int64")),
                }
            )
            pq.write_table(table, folder / f"part-{part:04d}-{offset:07d}.parquet", compression="zstd")
            written += n
        part += 1
    if layout == "app":
        _as_the_app_writes(folder)
    return folder, sum(f.stat().st_size for f in folder.glob("*.parquet"))


def _as_the_app_writes(folder: Path) -> None:
    """The folder's rows rewritten as the app's prediction log writes them: a file per 10 s flush (its
    default ``CT_PREDICTION_LOG_FLUSH_SECONDS``; 5,000 rows would flush sooner, above 43M rows a day), named
    ``part-<ns>-<hex>.parquet`` by when the flush began, after the rows it holds were served."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(folder.glob("*.parquet"))
    table = pa.concat_tables([pq.read_table(f) for f in files]).sort_by("served_at")
    for f in files:
        f.unlink()
    served = table["served_at"].cast(pa.int64()).to_numpy()  # microseconds
    window = served // 10_000_000
    starts = np.r_[0, np.flatnonzero(np.diff(window)) + 1]
    for first, end in zip(starts, [*starts[1:], len(served)], strict=True):
        flushed = (int(window[first]) + 1) * 10_000_000_000
        name = f"part-{flushed}-{first & 0xFFFFFFFF:08x}.parquet"
        pq.write_table(table.slice(first, end - first), folder / name, compression="zstd")


# --- children -------------------------------------------------------------------------------------------


def child_monitor(work: str, engine: str, fresh: str) -> dict[str, Any]:
    # A task forked from a warm Airflow worker (plugins/ct_executor.py): the worker's libraries imported,
    # and frozen, as Airflow's LocalExecutor freezes them before it forks its workers (a collection then
    # walks only the task's own objects). Plain Evidently's child imports its libraries before its clock too.
    from pipelines.preload import MODULES, preload

    unused = ("torch", "pyspark") if engine == "dask" else ("torch",)  # they would only add to the peak
    preload(tuple(name for name in MODULES if not name.startswith(unused)))
    gc.freeze()
    from pipelines.monitoring.monitor import Interval, judgeable_from, monitor

    settings = _settings(Path(work))
    if engine.endswith("-default"):
        engine = engine.removesuffix("-default")
    elif engine != "dask":  # the pass on Spark, whatever the interval's size
        settings = settings.model_copy(update={"monitor_in_task_below_mb": 0})
    if engine == "spark-connect":  # a client of the standing server the parent started
        settings, engine = settings.model_copy(update={"spark_remote": os.environ[CONNECT_URL]}), "spark"
    root = Path(settings.monitoring_uri)
    for folder in root.glob("*") if root.exists() else []:
        if fresh == "1" or folder.name != "reference":  # kept: the champion's holdout predictions' profile
            shutil.rmtree(folder)
    started = time.perf_counter()
    interval = Interval.of(log_day(settings))
    # The bench wrote the day's log whole (today's, after the champion's promotion): judged as once it is over.
    result = monitor(
        settings, interval, engine, now=max(judgeable_from(settings, interval), dt.datetime.now(dt.UTC))
    )
    seconds = time.perf_counter() - started
    summary = json.loads(Path(result["report"], "monitor.json").read_text())
    drift = summary["drift"]
    prediction = next(s for s in result["signals"] if s["signal"] == "prediction_drift")
    phases = result["seconds"]
    return {
        "seconds": seconds,
        "phases": phases,
        # what plain Evidently's run does too: read the rows and the reference (here its profile), compute the
        # verdicts, write the HTML report
        "like_for_like": sum(
            phases.get(k, 0.0) for k in ("reference", "served", "drift", "prediction_reference", "report")
        ),
        # reading and judging, the report apart (plain Evidently's verdicts: its reports run, before the HTML)
        "to_verdicts": sum(
            phases.get(k, 0.0) for k in ("reference", "served", "drift", "prediction_reference")
        ),
        "rows": result["rows"],
        "verdict": result["verdict"]["status"],
        "pass_on": result["pass_on"],
        "columns": {
            name: {"score": c["score"], "drifted": c["drifted"], "bound": c["error_bound"]}
            for name, c in drift["columns"].items()
        },
        "prediction": {"score": prediction["value"], "drifted": prediction["state"] == "breach"},
    }


def child_evidently(work: str) -> dict[str, Any]:
    import mlflow
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    from pipelines.data import datasets, storage
    from pipelines.data.contract import dataset_contract
    from pipelines.monitoring.policy import load_monitoring_policy
    from pipelines.release import audit, tracking

    gc.freeze()  # as the monitor's child (no difference to Evidently's time: 17.4-18.1 s either way)
    settings = _settings(Path(work))
    contract = dataset_contract(settings)
    policy = load_monitoring_policy(settings.resolved_monitoring_policy_path)
    features = contract.feature_columns
    client = tracking.configure(settings)
    champion = client.get_model_version(settings.model_name, str(audit.champion(settings, client)))
    started = time.perf_counter()
    current = pd.read_parquet(
        Path(settings.prediction_log_uri) / f"ds={log_day(settings)}", columns=[*features, "probability"]
    )
    reference = pd.read_parquet(storage.raw_uri(settings.resolved_data_root, settings.dataset, TRAIN_DAY))
    holdout = datasets.read_split(champion.tags["dataset.uri"], "holdout", features)
    model = mlflow.pyfunc.load_model(f"models:/{settings.model_name}/{champion.version}")
    predicted = pd.DataFrame({"probability": model.predict(holdout)["probability"].to_numpy("float64")})
    read = time.perf_counter()
    definition = DataDefinition(
        numerical_columns=contract.numeric_features, categorical_columns=contract.categorical_features
    )
    rule = policy.prediction_drift
    features_report = Report(
        [
            DataDriftPreset(
                columns=features,
                drift_share=policy.feature_drift.max_drifted_share,
                per_column_method={name: contract.drift_test(name)[0] for name in features},
                per_column_threshold={name: contract.drift_test(name)[1] for name in features},
            )
        ]
    ).run(
        Dataset.from_pandas(current[features], data_definition=definition),
        Dataset.from_pandas(reference[features], data_definition=definition),
    )
    probability = DataDefinition(numerical_columns=["probability"])
    predictions_report = Report(
        [ValueDrift(column="probability", method=rule.method, threshold=rule.threshold)]
    ).run(
        Dataset.from_pandas(current[["probability"]], data_definition=probability),
        Dataset.from_pandas(predicted, data_definition=probability),
    )
    judged = time.perf_counter()  # both reports run: the verdicts are known (Evidently renders as it runs)
    out = Path(work) / "evidently"
    out.mkdir(exist_ok=True)
    features_report.save_html(str(out / "features.html"))
    predictions_report.save_html(str(out / "predictions.html"))
    done = time.perf_counter()
    scores = {}
    for snapshot in (features_report, predictions_report):
        for metric in snapshot.dict()["metrics"]:
            config = metric.get("config") or {}
            if config.get("type", "").endswith(":ValueDrift"):
                scores[config["column"]] = {"score": float(metric["value"]), "threshold": config["threshold"]}
    return {
        "read_s": read - started,
        "verdicts_s": judged - started,
        "seconds": done - started,
        "columns": {
            name: {"score": s["score"], "drifted": s["score"] >= s["threshold"]}
            for name, s in scores.items()
            if name != "probability"
        },
        "prediction": {
            "score": scores["probability"]["score"],
            "drifted": scores["probability"]["score"] >= scores["probability"]["threshold"],
        },
    }


def child_compact(work: str) -> dict[str, Any]:
    from pipelines.monitoring.logfiles import compact

    settings = _settings(Path(work))
    day = log_day(settings)
    parts = len(list((Path(settings.prediction_log_uri) / f"ds={day}").glob("part-*.parquet")))
    # Every hour of the day, as once it has ended (the logged day is the champion's first, often today).
    ended = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(1), tzinfo=dt.UTC)
    started = time.perf_counter()
    done = compact(settings.prediction_log_uri, day, ended)
    return done | {"seconds": time.perf_counter() - started, "found": parts}


CHILDREN = {"monitor": child_monitor, "evidently": child_evidently, "compact": child_compact}


# --- the parent -----------------------------------------------------------------------------------------


def run(name: str, *args: Any) -> dict[str, Any]:
    from bench.measure import run_sampled

    command = [sys.executable, __file__, "--child", name, "--args", json.dumps([str(a) for a in args])]
    stdout, peak = run_sampled(command, name)
    return json.loads(stdout.strip().splitlines()[-1]) | {"peak_mib": peak / 2**20}


@contextlib.contextmanager
def connect_server(work: Path) -> Iterator[None]:
    """A standing Spark Connect server (a ``local[2]`` driver) for the ``spark-connect`` runs, started and warmed
    before any clock: a team's server has been up for days. Each monitor run is a new session of it."""
    import socket
    import subprocess

    from pipelines.engines.spark_engine import connect_server as server_command
    from pipelines.engines.spark_engine import spark_session
    from tests.net import free_port

    port = free_port()
    command, env = server_command("local[2]", port)
    log = open(work / "spark-connect.log", "w")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the Spark Connect server did not start; see {log.name}") from None
                time.sleep(0.5)
        url = f"sc://127.0.0.1:{port}"
        with spark_session(_settings(work).model_copy(update={"spark_remote": url})) as spark:
            spark.range(4).mapInPandas(lambda batches: batches, "id long").count()  # its first job: 4-5 s
        os.environ[CONNECT_URL] = url
        yield
    finally:
        os.environ.pop(CONNECT_URL, None)
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        finally:
            log.close()


def _disagreements(ours: dict[str, Any], plain: dict[str, Any]) -> list[str]:
    """Columns (and the probabilities) whose verdicts differ, with both scores."""
    found = []
    for name, column in ours["columns"].items():
        theirs = plain["columns"][name]
        if column["drifted"] != theirs["drifted"]:
            found.append(f"{name} (ours {column['score']:.4f}, Evidently {theirs['score']:.4f})")
    if ours["prediction"]["drifted"] != plain["prediction"]["drifted"]:
        found.append(
            f"probability (ours {ours['prediction']['score']:.4f}, Evidently {plain['prediction']['score']:.4f})"
        )
    return found


def _max_score_gap(ours: dict[str, Any], plain: dict[str, Any]) -> float:
    gaps = [abs(c["score"] - plain["columns"][n]["score"]) for n, c in ours["columns"].items()]
    return max([*gaps, abs(ours["prediction"]["score"] - plain["prediction"]["score"])])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument(
        "--engines",
        nargs="+",
        default=["dask", "spark", "spark-connect"],
        choices=["dask", "spark", "spark-connect", "spark-default", "spark-connect-default"],
        help="spark: a Spark driver in the task (local[2]); spark-connect: a client of a standing Spark Connect "
        "server (CT_SPARK_REMOTE), started before the clocks; both with the pass on Spark whatever the size; "
        "-default: with the default CT_MONITOR_IN_TASK_BELOW_MB (the pass of a small interval in the task)",
    )
    parser.add_argument("--evidently-up-to", type=int, default=1_000_000)
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs of plain Evidently and of each later interval: the median",
    )
    parser.add_argument("--work", default=str(ROOT / ".state" / "bench-monitor"))
    parser.add_argument(
        "--layout",
        default="days",
        choices=["days", "app"],
        help="the log's files: a file per generated day of 200,000 rows, or a file per 10 s flush as the app "
        "writes them, compacted once per size before anything reads them, as a monitor run compacts them",
    )
    parser.add_argument("--child")
    parser.add_argument("--args")
    options = parser.parse_args()
    if options.child:
        print(json.dumps(CHILDREN[options.child](*json.loads(options.args))))
        return
    import logging

    logging.basicConfig(level=logging.WARNING)
    work = Path(options.work)
    now = dt.datetime.now(dt.UTC)
    print(f"bench/monitor.py, {now:%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores")
    version = _champion(work)
    with contextlib.ExitStack() as stack:
        if any(e.startswith("spark-connect") for e in options.engines):
            stack.enter_context(connect_server(work))
        _sizes(options, work, version)


def _median(repeats: int, key: str, name: str, *args: Any) -> tuple[dict[str, Any], str]:
    """The run of the median ``key`` among ``repeats`` runs of a child, and the range of all (empty for one)."""
    found = sorted((run(name, *args) for _ in range(repeats)), key=lambda r: r[key])
    if len(found) == 1:
        return found[0], ""
    return found[len(found) // 2], f" (median of {len(found)}: {found[0][key]:.2f}-{found[-1][key]:.2f} s)"


def _sizes(options: argparse.Namespace, work: Path, version: int) -> None:
    for rows in options.sizes:
        folder, size = write_log(work, rows, version, options.layout)
        print(f"\n{rows:,} logged rows (a day of covariate-shifted traffic); Parquet {size / 2**20:.0f} MiB")
        if options.layout == "app":
            done = run("compact", work)
            print(
                f"  the app's {done['found']:,} files (a file per 10 s flush) compacted into {done['files']} in "
                f"{done['seconds']:.1f} s, {done['rows']:,} rows (once; an hourly run compacts its hour's "
                f"{done['found'] / 24:,.0f} files); what follows reads the compacted files"
            )
            size = sum(f.stat().st_size for f in folder.glob("*.parquet"))
        plain = None
        if rows <= options.evidently_up_to:
            plain, spread = _median(options.repeats, "seconds", "evidently", work)
            print(
                f"  plain Evidently:   {plain['seconds']:7.1f} s{spread} (reading and scoring {plain['read_s']:.1f} s, "
                f"to its verdicts {plain['verdicts_s']:.1f} s)   "
                f"peak {plain['peak_mib']:7.0f} MiB"
            )
        else:
            print(f"  plain Evidently: not run above {options.evidently_up_to:,} rows (linear in rows)")
        runs = [("dask", "1")] if rows == options.sizes[0] and "dask" in options.engines else []
        for engine, fresh in [*runs, *((e, "0") for e in options.engines)]:
            ours, spread = _median(
                1 if fresh == "1" else options.repeats, "like_for_like", "monitor", work, engine, fresh
            )
            drifted = [n for n, c in ours["columns"].items() if c["drifted"]]
            what = (
                "first interval of a champion (scores its holdout)"
                if fresh == "1"
                else "every later interval"
            )
            phases = ", ".join(f"{k} {v:.1f}" for k, v in ours["phases"].items())
            print(
                f"  monitor on {engine}, {what}: {ours['seconds']:.1f} s in all, the pass on {ours['pass_on']} "
                f"({phases}); reading, verdicts "
                f"and report {ours['like_for_like']:.2f} s{spread}; peak {ours['peak_mib']:.0f} MiB "
                f"({ours['peak_mib'] / (size / 2**20):.1f}x the input"
                f"{'; the task alone: the server, whose workers read the log, apart' if engine.startswith('spark-connect') else ''})"
            )
            print(
                f"    verdict {ours['verdict']}; drifted: {', '.join(drifted)}; prediction drift "
                f"{ours['prediction']['score']:.4f}"
            )
            if plain is not None:
                differ = _disagreements(ours, plain)
                memory = (
                    "memory not compared (the server's is not sampled)"
                    if engine.startswith("spark-connect")
                    else f"{plain['peak_mib'] / ours['peak_mib']:.1f}x less memory"
                )
                print(
                    f"    against plain Evidently: {plain['seconds'] / ours['like_for_like']:.1f}x faster like for "
                    f"like, {plain['seconds'] / ours['seconds']:.1f}x counting the whole task; {memory}; verdicts "
                    f"{'the same' if not differ else 'differ on ' + ', '.join(differ)}; largest score gap "
                    f"{_max_score_gap(ours, plain):.5f}"
                )
                print(
                    f"    to the verdicts (reading and judging, the HTML report apart): {ours['to_verdicts']:.1f} s "
                    f"against Evidently's {plain['verdicts_s']:.1f} s (its reports render as they run): "
                    f"{plain['verdicts_s'] / ours['to_verdicts']:.1f}x"
                )


if __name__ == "__main__":
    main()
