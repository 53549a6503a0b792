"""Dask and Spark validate, ingest and prepare the same data into exactly the same results."""

import dataclasses
import datetime as dt
import os
import threading

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.data import datasets, sources, storage
from pipelines.data.contract import dataset_contract
from pipelines.data.features import feature_names, raw_columns
from pipelines.data.generate import generate, generate_day
from pipelines.data.prepare import prepare
from pipelines.data.profile import HOW, KEYS, PARTIALS
from pipelines.data.validate import check_partition, validate
from pipelines.engines import open_engine
from pipelines.engines.dask_engine import DaskEngine
from pipelines.evaluation.drift_stats import compare_column
from pipelines.monitoring.served import LOG_READ, served_figures, served_partials
from pipelines.training import shards
from pipelines.training.model_settings import ModelSettings
from pipelines.training.train import FAMILIES, plan_training
from tests.days import DAY
from tests.sources_lab import day_of_files

pytestmark = pytest.mark.slow


def _read_all(uri: str) -> pd.DataFrame:
    frames = [datasets.read_split(uri, s).assign(split=s) for s in ("train", "validation", "holdout")]
    frame = pd.concat(frames).sort_values(["customer_id", "event_ts"]).reset_index(drop=True)
    for column in ("customer_id", "channel", "region", "plan", "split"):
        frame[column] = frame[column].astype(object)
    return frame


def _fresh_raw(settings) -> None:
    """Forget the committed raw day, so the next validate ingests it again."""
    storage.url_to_fs(settings.resolved_data_root)[0].rm(
        storage.raw_uri(settings.resolved_data_root, settings.dataset, DAY), recursive=True
    )


def test_dask_and_spark_ingest_and_prepare_the_same_data(settings, contract):
    generate(settings, DAY, "none")
    on_dask = validate(settings, DAY, "dask")["partitions"][0]
    _fresh_raw(settings)
    on_spark = validate(settings, DAY, "spark")["partitions"][0]
    assert on_dask["status"] == on_spark["status"] == "validated"
    assert on_dask["content_hash"] == on_spark["content_hash"]  # same typed raw rows, whoever wrote them

    dask_result = prepare(settings, DAY, "dask")
    dask_frame, dask_profile = _read_all(dask_result["uri"]), storage.read_json(dask_result["profile"])
    dask_manifest = datasets.read_manifest(dask_result["uri"])
    spark_result = prepare(settings, DAY, "spark")  # overwrites the same dataset folder atomically
    spark_frame, spark_profile = _read_all(spark_result["uri"]), storage.read_json(spark_result["profile"])

    assert dask_result["rows"] == spark_result["rows"] == settings.rows_per_day
    assert dask_result["split_rows"] == spark_result["split_rows"]
    pd.testing.assert_frame_equal(dask_frame, spark_frame, check_exact=False, rtol=1e-12)
    # The version comes from the typed raw rows, never from features that may differ in the last bit.
    assert dask_result["dataset_version"] == spark_result["dataset_version"]
    manifest = datasets.read_manifest(spark_result["uri"])
    assert manifest.extra["engine"] == "spark"
    # So does the prepared hash: the rows as read and split, not the features computed from them.
    assert (
        set(manifest.schema) == set(dask_frame.columns) - set(manifest.extra["features"])
        and "split" in manifest.schema
    )
    assert dask_result["content_hash"] == spark_result["content_hash"]
    # The splits' rows in the files' order, which training takes them in: sorted, one order on both engines.
    splits = {f"split={s}" for s in ("train", "validation", "holdout")}
    assert set(dask_manifest.row_order) == set(manifest.row_order) == splits
    assert dask_manifest.row_order == manifest.row_order
    assert _plan(settings, dask_manifest).identity == _plan(settings, manifest).identity

    # Profiles: the same statistics on both engines; a drift test of one against the other finds nothing.
    assert dask_profile["rows"] == spark_profile["rows"] == settings.rows_per_day
    for name, column in dask_profile["columns"].items():
        other = spark_profile["columns"][name]
        assert column["nulls"] == other["nulls"], name
        if column["kind"] == "categorical":
            assert column["counts"] == other["counts"], name
        else:
            assert column["min"] == other["min"] and column["max"] == other["max"], name
            assert column["mean"] == pytest.approx(other["mean"], rel=1e-9), name
            assert column["std"] == pytest.approx(other["std"], rel=1e-9), name
            assert sum(column["buckets"]["count"]) == sum(other["buckets"]["count"]) == column["count"], name
            # The window's scheme on both (their moments agree but for the last bits): the same buckets.
            assert (
                column["scheme"] == other["scheme"]
                and column["buckets"]["count"] == other["buckets"]["count"]
            )
            np.testing.assert_allclose(column["buckets"]["mean"], other["buckets"]["mean"], rtol=1e-12)
            against = compare_column(column, other, "jensenshannon", 0.1)
            assert against["score"] < 1e-6 and not against["drifted"], name


def _plan(settings, manifest: datasets.Manifest):
    return plan_training(settings, ModelSettings(), FAMILIES["torch"], manifest.uri, manifest)


def test_the_engines_write_a_window_s_splits_in_one_order_so_the_ranks_read_the_same_rows(settings):
    """A window of three raw days: Spark packs the files into tasks by size, Dask takes them in order, and they
    cut the rows into other files. Both write each split sorted by its raw values, so the ranks' parts hold the
    same rows in the same order and the training has one identity (the orders differed, and trained other
    models)."""
    settings = settings.model_copy(update={"window_days": 3})
    days = [DAY - dt.timedelta(days=n) for n in (2, 1, 0)]
    for day in days:
        generate(settings, day, "none")
        validate(settings, day, "dask")
    contract = dataset_contract(settings)
    features, label = feature_names(contract), contract.label
    manifests, parts, files = {}, {}, {}
    for engine in ("dask", "spark"):
        result = prepare(settings, DAY, engine)
        manifests[engine] = datasets.read_manifest(result["uri"])
        assert result["rows"] == 3 * settings.rows_per_day
        train = storage.split_uri(result["uri"], "train")
        files[engine] = [f.rsplit("/", 1)[-1] for f in datasets.folder_files(train)]
        parts[engine] = [shards.read(train, features, label, rank, 2) for rank in (0, 1)]
        rows = pd.concat([pd.read_parquet(f) for f in datasets.folder_files(train)], ignore_index=True)
        keys = raw_columns(contract)
        sorted_rows = rows.sort_values(keys, na_position="last", kind="stable").reset_index(drop=True)
        pd.testing.assert_frame_equal(rows, sorted_rows)
    assert len(files["dask"]) == 3 and files["dask"] != files["spark"]  # cut into files apart
    dask, spark = manifests["dask"], manifests["spark"]
    assert (
        dask.extra["dataset_version"] == spark.extra["dataset_version"]
        and dask.content_hash == spark.content_hash
    )
    assert dask.row_order == spark.row_order
    for on_dask, on_spark in zip(parts["dask"], parts["spark"], strict=True):
        np.testing.assert_array_equal(on_dask.y, on_spark.y)
        np.testing.assert_allclose(on_dask.x, on_spark.x, rtol=1e-6)  # float32 features, computed apart
    assert _plan(settings, dask).identity == _plan(settings, spark).identity


def _broken_days():
    clean = generate_day(DAY, seed=7, rows=1500)
    many = clean.copy()
    many.loc[0, "channel"] = "fax"
    many.loc[1, "age"] = 7
    many.loc[2, "avg_basket"] = float("inf")
    many.loc[[3, 4], "customer_id"] = many.loc[5, "customer_id"]
    many.loc[6, "event_ts"] = many.loc[6, "event_ts"] - pd.Timedelta(days=1)
    csv_bad = clean.astype({"age": object})
    csv_bad.loc[0, "age"] = "forty"
    return {
        "schema_break": ("parquet", generate_day(DAY, seed=7, rows=1500, scenario="schema_break")),
        "missing_values": ("parquet", generate_day(DAY, seed=7, rows=1500, scenario="missing_values")),
        "many_rules": ("parquet", pd.concat([many, many.iloc[[20]]], ignore_index=True)),
        "header_only_csv": ("csv", clean.head(0)),
        "csv_bad_value": ("csv", csv_bad),
    }


def test_spark_and_dask_report_exactly_the_same_violations(settings, contract, tmp_path):
    cases = []
    for name, (fmt, frame) in _broken_days().items():
        folder = tmp_path / name / DAY.isoformat()
        folder.mkdir(parents=True)
        if fmt == "csv":
            frame.to_csv(folder / "part-0.csv", index=False)
        else:
            frame.to_parquet(folder / "part-0.parquet", index=False, coerce_timestamps="us")
        case_contract = contract.model_copy(
            update={"source": contract.source.model_copy(update={"format": fmt})}
        )
        case_settings = settings.model_copy(update={"source_uri": str(tmp_path / name / "{ds}")})
        cases.append((name, sources.partition(case_settings, case_contract, DAY), case_contract))

    on_dask = {name: check_partition(DaskEngine(client=None), source, c) for name, source, c in cases}
    with open_engine("spark", settings) as spark:
        on_spark = {name: check_partition(spark, source, c) for name, source, c in cases}
    for name, _, _ in cases:
        assert not on_dask[name].ok, name
        assert on_dask[name].violations == on_spark[name].violations, name
        assert on_dask[name].rows == on_spark[name].rows, name
        assert on_dask[name].null_counts == on_spark[name].null_counts, name
    rules = {(v.column, v.rule) for v in on_spark["many_rules"].violations}
    assert rules >= {
        ("channel", "isin(['web', 'app', 'store'])"),
        ("age", "greater_than_or_equal_to(18.0)"),
        ("avg_basket", "finite"),
        ("customer_id", "unique"),
        ("<table>", "duplicate_rows"),
        ("event_ts", f"within_partition_day({DAY})"),
    }


def test_a_day_whose_files_disagree_on_types_is_reported_alike_by_both_engines(settings, contract, tmp_path):
    folder = tmp_path / "mixed" / DAY.isoformat()
    folder.mkdir(parents=True)
    frame = generate_day(
        DAY, seed=7, rows=1500
    )  # pandas writes nanosecond timestamps: both engines read them
    frame.iloc[:700].to_parquet(folder / "part-0.parquet")
    frame.iloc[700:].assign(amount=frame["amount"].iloc[700:].astype(str)).to_parquet(
        folder / "part-1.parquet"
    )
    source = sources.partition(
        settings.model_copy(update={"source_uri": str(tmp_path / "mixed/{ds}")}), contract, DAY
    )
    with open_engine("spark", settings) as spark:  # Spark alone would fail the whole read in the JVM
        reports = [
            check_partition(DaskEngine(client=None), source, contract),
            check_partition(spark, source, contract),
        ]
    for report in reports:
        assert [(v.column, v.rule) for v in report.violations] == [("<table>", "unreadable file")]
        assert report.violations[0].examples == [
            "part-1.parquet: column 'amount' is string in this file but double in part-0.parquet: one day's "
            "files must have the same types"
        ]
    alone = dataclasses.replace(source, files=source.files[:1])  # the nanosecond file alone reads on Spark
    with open_engine("spark", settings) as spark:
        assert not [v for v in check_partition(spark, alone, contract).violations if "unreadable" in v.rule]


def test_spark_maps_many_items_in_a_few_tasks_in_order(settings):
    """A task per item cost 24 ms on local[2]: a day of 1,000 small source files took 24 s to examine."""
    from pyspark import TaskContext

    with open_engine("spark", settings) as spark:
        slices = 4 * spark.spark.sparkContext.defaultParallelism
        found = spark.map_files(lambda n: (n * n, TaskContext.get().partitionId()), list(range(1000)))
    assert [square for square, _ in found] == [n * n for n in range(1000)]
    assert len({partition for _, partition in found}) == slices


def test_prepare_refuses_uncommitted_raw_data(settings):
    with pytest.raises(datasets.DatasetNotFoundError):
        prepare(settings, DAY, "dask")
    with pytest.raises(ValueError, match="unknown engine 'pandas'"):
        prepare(settings, DAY, "pandas")


@pytest.mark.parametrize("engine", ["dask", "spark"])
def test_the_newest_day_can_be_the_holdout_on_either_engine(tmp_path, engine):
    import datetime as dt

    from pipelines.settings import get_settings

    settings = get_settings(state_dir=tmp_path, rows_per_day=1500, window_days=2)
    earlier = DAY - dt.timedelta(days=1)
    for day in (earlier, DAY):
        generate(settings, day, "none")
        validate(settings, day)
    result = prepare(settings, DAY, engine, holdout_days=1)
    holdout = datasets.read_split(result["uri"], "holdout")
    assert len(holdout) == 1500 and (pd.to_datetime(holdout["event_ts"], utc=True).dt.date == DAY).all()
    for split in ("train", "validation"):  # the held-out day is never trained on
        rows = datasets.read_split(result["uri"], split)
        assert (pd.to_datetime(rows["event_ts"], utc=True).dt.date == earlier).all(), split
    assert datasets.read_manifest(result["uri"]).extra["holdout"] == f"newest 1 day(s), from {DAY}"


def test_the_embedded_dask_engine_runs_threads_below_the_callers_threshold(settings):
    two = settings.model_copy(update={"dask_workers": 2})
    size = 100 * 2**20  # above CT_DASK_PROCESSES_FROM_MB (64), below the monitor's (1024)
    with open_engine("dask", two, size) as engine:  # two worker processes of one thread
        assert sorted(w["nthreads"] for w in engine.client.scheduler_info()["workers"].values()) == [1, 1]
        assert os.getpid() not in engine.map_files(lambda _: os.getpid(), [0, 1])
    with open_engine("dask", two, size, processes_from_mb=two.monitor_dask_processes_from_mb) as engine:
        assert engine.client is None  # no cluster: two threads of this process
        both = threading.Barrier(2, timeout=120)  # each task waits for the other: they must run at once
        ran = engine.map_files(lambda _: (both.wait(), os.getpid(), threading.get_ident())[1:], [0, 1])
    assert {pid for pid, _ in ran} == {os.getpid()} and len({thread for _, thread in ran}) == 2


def test_dask_reads_the_log_as_arrow_strings_with_the_figures_of_python_strings(settings, contract, tmp_path):
    start = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
    frame = generate_day(DAY, seed=7, rows=1000)[contract.feature_columns]
    frame = frame.assign(
        served_at=pd.date_range(start, periods=1000, freq="1min", tz="UTC"),
        model_version=3,
        probability=np.linspace(0, 1, 1000),
    )
    for part in range(3):
        rows = frame.iloc[part * 200 : part * 200 + 200]
        pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), tmp_path / f"a{part}.parquet")
    later = pa.Table.from_pandas(frame.iloc[600:], preserve_index=False)
    at = later.schema.get_field_index("channel")
    later = later.set_column(at, "channel", pa.nulls(400))  # a batch that sent no channel: typed null
    pq.write_table(later, tmp_path / "b.parquet")
    files = [*(str(tmp_path / f"a{part}.parquet") for part in range(3)), str(tmp_path / "b.parquet")]
    engine = DaskEngine(client=None)

    def figures(arrow_strings: bool) -> dict:
        table = engine.select(engine.read(files, arrow_strings=arrow_strings), columns)
        found = engine.aggregate(
            table,
            lambda f: served_partials(f, contract, 3, start, start + dt.timedelta(days=1)),
            PARTIALS,
            KEYS,
            HOW,
        )
        return served_figures(found, contract, 3)

    columns = [*contract.feature_columns, *LOG_READ]
    for arrow_strings, dtype in ((True, "string"), (False, object)):  # Arrow's, or one Python object per row
        read = engine.select(engine.read(files, arrow_strings=arrow_strings), columns)
        assert read.partitions[0]["region"].compute().dtype == dtype
    arrow, python = figures(True), figures(False)
    assert arrow["profile"]["columns"]["channel"]["nulls"] == 400
    for found in (arrow, python):
        found["profile"].pop("created_at")
    assert arrow == python


def _engine(request, settings, engine_name: str):
    """``spark-connect``: Spark through a Spark Connect server (``CT_SPARK_REMOTE``), not a driver of its own."""
    if engine_name != "spark-connect":
        return engine_name, settings
    return "spark", settings.model_copy(update={"spark_remote": request.getfixturevalue("spark_connect")})


@pytest.mark.parametrize("engine_name", ["dask", "spark", "spark-connect"])
def test_a_read_between_two_times_keeps_exactly_the_rows_in_them(request, settings, tmp_path, engine_name):
    engine_name, settings = _engine(request, settings, engine_name)
    start = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
    times = pd.date_range(start, periods=600, freq="1min", tz="UTC")  # 10 hours, one row a minute
    frame = pd.DataFrame({"served_at": times, "n": np.arange(600)})
    # Microseconds, as the prediction log writes; row groups of an hour, so whole groups can be skipped.
    table = pa.Table.from_pandas(frame, preserve_index=False).cast(
        pa.schema([("served_at", pa.timestamp("us", tz="UTC")), ("n", pa.int64())])
    )
    pq.write_table(table.slice(0, 300), tmp_path / "a.parquet", row_group_size=60)
    pq.write_table(table.slice(300), tmp_path / "b.parquet", row_group_size=60)
    files = [str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")]
    low, high = start + dt.timedelta(hours=4, minutes=30), start + dt.timedelta(hours=6)  # across both files
    with open_engine(engine_name, settings, 1) as engine:
        table = engine.read(files, between=("served_at", low, high))
        counted = engine.aggregate(
            table,
            lambda f: pd.DataFrame(
                {"key": ["n"], "count": [len(f)], "low": [f["n"].min()], "high": [f["n"].max()]}
            ),
            pa.schema(
                [("key", pa.string()), ("count", pa.int64()), ("low", pa.int64()), ("high", pa.int64())]
            ),
            ["key"],
            {"count": "sum", "low": "min", "high": "max"},
        )
        with pytest.raises(ValueError, match="Parquet reads only"):
            engine.read(files, fmt="csv", between=("served_at", low, high))
    assert counted.to_dict("records") == [{"key": "n", "count": 90, "low": 270, "high": 359}]


@pytest.mark.parametrize("engine_name", ["dask", "spark", "spark-connect"])
def test_a_reduce_gives_each_key_once_with_its_figures_and_joins_on_the_keys(
    request, settings, tmp_path, engine_name
):
    engine_name, settings = _engine(request, settings, engine_name)
    at = pd.Timestamp("2026-11-30 10:00", tz="UTC")
    rows = pd.DataFrame(
        {
            "entity_id": ["a", "a", "b", "c", "c", "c", "d", "d"],
            "event_time": [at, at, at, at, at, at + pd.Timedelta(minutes=1), at, at],
            "value": [0.5, 0.25, 0.75, 1.0, None, 2.0, None, None],
        }
    )
    other = pd.DataFrame({"entity_id": ["a", "b", "d"], "event_time": [at] * 3, "tag": [1, 2, 3]})
    for name, frame in (("rows", rows), ("other", other)):
        half = len(frame) // 2  # two files: a key's rows in both
        frame.iloc[:half].to_parquet(tmp_path / f"{name}-0.parquet", index=False)
        frame.iloc[half:].to_parquet(tmp_path / f"{name}-1.parquet", index=False)
    keys = ["entity_id", "event_time"]
    with open_engine(engine_name, settings, 1) as engine:
        table = engine.read([str(tmp_path / f"rows-{n}.parquet") for n in (0, 1)])
        reduced = engine.reduce(
            table,
            keys,
            {
                "low": ("value", "min"),
                "high": ("value", "max"),
                "n": ("value", "count"),
                "total": ("value", "sum"),
            },
        )
        joined = engine.join(
            reduced, engine.read([str(tmp_path / f"other-{n}.parquet") for n in (0, 1)]), keys
        )
        found = engine.aggregate(
            joined,
            lambda f: pd.DataFrame(
                {
                    "key": f["entity_id"].astype(str) + "@" + f["event_time"].astype(str),
                    "low": f["low"].astype("float64"),
                    "high": f["high"].astype("float64"),
                    "n": f["n"].astype("int64"),
                    "total": f["total"].astype("float64"),
                    "tag": f["tag"].astype("int64"),
                }
            ),
            pa.schema(
                [
                    ("key", pa.string()),
                    ("low", pa.float64()),
                    ("high", pa.float64()),
                    ("n", pa.int64()),
                    ("total", pa.float64()),
                    ("tag", pa.int64()),
                ]
            ),
            ["key"],
            {"low": "min", "high": "max", "n": "sum", "total": "max", "tag": "sum"},
        )
    # In the keys' order on every engine; a key with no value has no sum (pandas' own groupby says 0).
    assert [
        (r["key"][0], *(None if pd.isna(r[c]) else r[c] for c in ("low", "high", "n", "total", "tag")))
        for r in found.to_dict("records")
    ] == [
        ("a", 0.25, 0.5, 2, 0.75, 1),
        ("b", 0.75, 0.75, 1, 0.75, 2),
        ("d", None, None, 0, None, 3),
    ]


@pytest.mark.parametrize("engine_name", ["dask", "spark", "spark-connect"])
def test_a_sorted_table_is_written_with_each_partitions_rows_in_the_keys_order_in_its_files_name_order(
    request, settings, tmp_path, engine_name
):
    engine_name, settings = _engine(request, settings, engine_name)
    rng = np.random.default_rng(3)
    rows = 600
    tag = rng.choice(["b", "a", "ä", "B", "c"], rows).astype(object)
    tag[rng.choice(rows, 60, replace=False)] = None
    x = rng.choice([0.5, 1.5, -2.0, np.nan], rows)  # ties, and NaN among the values
    nulls = np.arange(rows) % 7 == 0  # nulls beside the NaN: Spark tells them apart, pandas does not
    table = pa.table(
        {
            "key": pa.array(rng.choice(["b", "a", "ä", "B"], rows).tolist(), mask=np.arange(rows) % 11 == 5),
            "x": pa.array(x, mask=nulls),  # from numpy: NaN stays NaN
            "tag": pa.array(list(tag), pa.string()),
            "w": pa.array(rng.choice([1.0, 2.0], rows)),
            "n": pa.array(rng.permutation(rows)),
            "part": pa.array(rng.choice(["train", "validation"], rows).tolist()),
        }
    )
    assert table["x"].null_count and pa.compute.sum(pa.compute.is_nan(table["x"])).as_py()
    # Rows equal but for two zeros' signs, which both engines sort as equal, arriving in the order the sort must
    # undo: x's sign decides first, then w's.
    signs = [(-0.0, -0.0), (-0.0, 0.0), (0.0, -0.0), (0.0, 0.0)]
    zero = {"key": ["a"], "tag": ["z"], "n": [rows], "part": ["train"]}
    zeros = [pa.table({**zero, "x": [x0], "w": [w0]}).select(table.column_names) for x0, w0 in signs]
    table = pa.concat_tables([*zeros[:2], table, *zeros[2:]])
    # Three input files: the engines cut them apart.
    for number, start in enumerate(range(0, len(table), 202)):
        pq.write_table(table.slice(start, 202), tmp_path / f"in-{number}.parquet")
    out = tmp_path / "out"
    with open_engine(engine_name, settings, 1) as engine:
        keys = ["key", "x", "tag", "w", "n"]
        ordered = engine.sort(engine.read([str(tmp_path / f"in-{n}.parquet") for n in range(3)]), keys)
        # A step between, as prepare computes its features after the sort: partitions and rows keep their order.
        doubled = engine.map_partitions(ordered, lambda f: f.assign(n=f["n"] * 2), table.schema)
        engine.write_parquet(doubled, str(out), partition_on="part", sorted_by=keys)
    expected = (
        table.to_pandas()
        .assign(**{f"{c}_signed": (lambda f, c=c: (f[c] == 0) & np.signbit(f[c])) for c in ("x", "w")})
        .sort_values([*keys, "x_signed", "w_signed"], na_position="last")
        .drop(columns=["x_signed", "w_signed"])
        .assign(n=lambda f: f["n"] * 2)
    )
    for part in ("train", "validation"):
        files = datasets.folder_files(str(out / f"part={part}"))
        found = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
        want = expected[expected["part"] == part].drop(columns="part").reset_index(drop=True)
        pd.testing.assert_frame_equal(found[keys], want[keys], check_dtype=False)
        for column in ("x", "w"):  # 0.0 before -0.0, x first, on both
            np.testing.assert_array_equal(np.signbit(found[column]), np.signbit(want[column]))


@pytest.mark.parametrize("engine_name", ["dask", "spark", "spark-connect"])
def test_an_aggregate_of_parquet_files_counts_the_rows_between_two_times_with_arrow_strings(
    request, settings, tmp_path, engine_name
):
    # Through Spark Connect the files go in as many groups as the shuffle partitions: four here, as on local[2].
    engine_name, settings = _engine(
        request, settings.model_copy(update={"spark_shuffle_partitions": 4}), engine_name
    )
    start = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
    times = pd.date_range(start, periods=420, freq="1min", tz="UTC")  # a file an hour, seven hours
    aware = pa.timestamp("us", tz="UTC")
    channels = [
        pa.nulls(60),  # a batch that sent no channel: typed null
        pa.array(["web", "app"] * 30),
        pa.array(["web"] * 60),
        None,  # a file from before the column existed
        pa.array(["app"] * 60),
        pa.array(["web"] * 60),  # this hour and the next lie outside the interval
        pa.array(["web"] * 60),
    ]
    files = []
    for hour, channel in enumerate(channels):
        served_at = pa.array(times[hour * 60 : (hour + 1) * 60].to_numpy(), aware)
        columns = {"served_at": served_at} | ({} if channel is None else {"channel": channel})
        # The first hour in one file of three row groups, the others a file per 6 minutes (as the app writes
        # a file per flush): 61 files.
        for part, rows in enumerate(
            [slice(0, 60)] if hour == 0 else [slice(m, m + 6) for m in range(0, 60, 6)]
        ):
            files.append(str(tmp_path / f"{hour}-{part}.parquet"))
            pq.write_table(pa.table(columns)[rows], files[-1], row_group_size=20)
    naive = pa.array(times[:60].tz_localize(None).to_numpy(), pa.timestamp("us"))  # UTC by convention
    pq.write_table(pa.table({"served_at": naive, "channel": ["web"] * 60}), tmp_path / "naive.parquet")
    low, high = start + dt.timedelta(minutes=30), start + dt.timedelta(hours=5)

    def counts(frame: pd.DataFrame) -> pd.DataFrame:
        assert isinstance(frame["channel"].dtype, pd.CategoricalDtype), frame["channel"].dtype
        channel = frame["channel"].astype("object").where(frame["channel"].notna(), "none")
        found = channel.value_counts().rename_axis("key").rename("count").reset_index()
        calls = pd.DataFrame({"key": ["<calls>"], "count": [1]})  # Spark calls it in other processes
        return pd.concat([found, calls]).astype({"key": "object", "count": "int64"})

    schema = pa.schema([("key", pa.string()), ("count", pa.int64())])
    # Two cores on either engine (Spark's default master is local[2]): at most four tasks, two per core.
    with open_engine(engine_name, settings.model_copy(update={"dask_workers": 2}), 1) as engine:
        found, naive_found = (
            engine.aggregate_parquet(
                some, ["channel"], counts, schema, ["key"], {"count": "sum"}, between=("served_at", low, high)
            )
            for some in (files, [str(tmp_path / "naive.parquet")])  # Dask's read refuses naive with aware
        )
    # Each key from several files and tasks: combined within a task and across them.
    calls = found.set_index("key").pop("count").pop("<calls>")
    assert found[found["key"] != "<calls>"].to_dict("records") == [
        {"key": "app", "count": 90},
        {"key": "none", "count": 90},
        {"key": "web", "count": 90},
    ]
    # A task's files are read together, not a call per file: a day of log is thousands of small files, and
    # a partition per file made the monitor's pass over one take 93 s instead of 7 s on Dask.
    assert 1 <= calls <= 4, calls
    assert naive_found.to_dict("records") == [{"key": "<calls>", "count": 1}, {"key": "web", "count": 30}]


def test_a_dask_read_between_two_times_takes_a_first_file_with_a_null_typed_column_and_naive_times(tmp_path):
    start = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
    times = pd.date_range(start, periods=120, freq="1min", tz="UTC")
    aware = pa.timestamp("us", tz="UTC")
    # The first file's batch sent no channel (typed null); a filtered read cast the later files to its type.
    pq.write_table(
        pa.table({"served_at": pa.array(times[:60].to_numpy(), aware), "channel": pa.nulls(60)}),
        tmp_path / "a.parquet",
    )
    pq.write_table(
        pa.table({"served_at": pa.array(times[60:].to_numpy(), aware), "channel": pa.array(["web"] * 60)}),
        tmp_path / "b.parquet",
    )
    naive = pa.table({"served_at": pa.array(times.tz_localize(None).to_numpy(), pa.timestamp("us"))})
    pq.write_table(naive, tmp_path / "naive.parquet")  # times written without a zone: UTC by convention
    low, high = start + dt.timedelta(minutes=30), start + dt.timedelta(minutes=90)
    engine = DaskEngine(client=None)
    read = engine.read(
        [str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")], between=("served_at", low, high)
    )
    frame = read.compute()
    assert len(frame) == 60 and frame["channel"].value_counts(dropna=False).to_dict() == {None: 30, "web": 30}
    assert frame["served_at"].min() == pd.Timestamp(low) and frame["served_at"].max() < pd.Timestamp(high)
    assert (
        len(engine.read([str(tmp_path / "naive.parquet")], between=("served_at", low, high)).compute()) == 60
    )


def _files_of_a_day(frame: pd.DataFrame) -> dict[str, dict[str, object]]:
    """Days whose files disagree with each other, hold malformed rows or ids above 2**53, by name: each file's
    name and its rows (or bytes)."""
    columns = list(frame.columns)
    swapped = columns.copy()
    at, other = swapped.index("amount"), swapped.index("avg_basket")  # two float columns: no type error
    swapped[at], swapped[other] = swapped[other], swapped[at]
    parts = [frame.iloc[:400], frame.iloc[400:800], frame.iloc[800:]]
    big_ids = frame.assign(customer_id=np.int64(1_700_000_000_000_000_000) + np.arange(len(frame)))
    repeated = big_ids.copy()
    repeated.loc[7, "customer_id"] = repeated.loc[8, "customer_id"]
    times = frame["event_ts"].to_numpy(dtype="datetime64[us]").copy()
    times[[3, 7]] = np.datetime64("3026-01-01T01:00:00", "us")
    far_future = frame.assign(event_ts=pd.Series(times, index=frame.index).dt.tz_localize("UTC"))
    twice = frame.copy()
    twice.loc[7, "customer_id"] = twice.loc[8, "customer_id"]

    def damaged(part: pd.DataFrame) -> bytes:  # a data page of "amount" overwritten: its footer still parses
        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), sink, compression="snappy")
        data = bytearray(sink.getvalue().to_pybytes())
        footer = pq.read_metadata(pa.BufferReader(bytes(data)))
        chunk = footer.row_group(0).column(footer.schema.names.index("amount"))
        data[chunk.data_page_offset + 30 : chunk.data_page_offset + 330] = bytes(300)
        return bytes(data)

    def with_row(part: pd.DataFrame, change) -> bytes:
        lines = part.to_csv(index=False).splitlines()
        lines[5] = change(lines[5])
        return ("\n".join(lines) + "\n").encode()

    def with_bytes(part: pd.DataFrame, value: str, written: bytes) -> bytes:  # one row's value as other bytes
        lines = part.to_csv(index=False).encode().split(b"\n")
        lines[5] = lines[5].replace(value.encode(), written, 1)
        return b"\n".join(lines)

    # A text field holding the delimiter, a quote (written doubled) and a line break (LF, CRLF or a lone CR),
    # quoted in every row of one file; the other file holds no quote.
    breaks = ["\n", "\r\n", "\r"]
    noted = parts[0].assign(
        note=[f'row {i} says "hi",{breaks[i % 3]}then more' for i in range(len(parts[0]))]
    )
    return {
        "csv_reordered": {"part-0.csv": parts[0], "part-1.csv": parts[1][swapped], "part-2.csv": parts[2]},
        "csv_quoted_line_breaks": {
            "part-0.csv": noted,
            "part-1.csv": parts[1].assign(note="plain"),
            "part-2.csv": parts[2].assign(note="plain"),
        },
        # Lines ended by a lone CR (an old Mac export): every reader takes them as lines; the header was read
        # as the whole file.
        "csv_cr_lines": {
            "part-0.csv": parts[0],
            "part-1.csv": parts[1].to_csv(index=False, lineterminator="\r").encode(),
            "part-2.csv": parts[2],
        },
        # One line of an LF file ended by a lone CR: read whole (it has lone-CR lines), Spark split it at LF only
        # and read that CR into a value, merging two rows; pandas split it there.
        "csv_mixed_line_ends": {
            "part-0.csv": parts[0],
            "part-1.csv": with_row(parts[1], lambda line: line + "\r" + line.replace("C0", "D0", 1)),
            "part-2.csv": parts[2],
        },
        "csv_extra_field": {
            "part-0.csv": parts[0],
            "part-1.csv": parts[1][swapped],
            "part-2.csv": with_row(parts[2], lambda line: line + ",EXTRA"),
        },
        "csv_short_row": {
            "part-0.csv": parts[0],
            "part-1.csv": with_row(parts[1], lambda line: line.rsplit(",", 1)[0]),
        },
        "csv_other_columns": {"part-0.csv": parts[0], "part-1.csv": parts[1].drop(columns=["plan"])},
        # A region written in Latin-1 in a UTF-8 file: Spark read it as U+FFFD and passed the day, Dask failed.
        "csv_invalid_utf8": {
            "part-0.csv": parts[0],
            "part-1.csv": with_bytes(
                parts[1], f",{parts[1].iloc[4]['region']},", ",m\xe9lange,".encode("latin-1")
            ),
        },
        # Excel's "CSV UTF-8" (a byte order mark first); every line ended by the delimiter (an empty last name).
        "csv_byte_order_mark": {
            "part-0.csv": parts[0],
            "part-1.csv": parts[1].to_csv(index=False).encode("utf-8-sig"),
            "part-2.csv": parts[2],
        },
        "csv_trailing_delimiter": {
            f"part-{n}.csv": "".join(f"{line},\n" for line in part.to_csv(index=False).splitlines()).encode()
            for n, part in enumerate(parts)
        },
        # Nulls written as NaN text; an id written a second time with a leading zero.
        "csv_nan_text": {
            "part-0.csv": parts[0].assign(avg_basket=1.5),
            "part-1.csv": parts[1].assign(avg_basket="NaN"),
            "part-2.csv": parts[2].assign(avg_basket=2.5),
        },
        "csv_64_bit_id_written_twice": {
            "part-0.csv": big_ids.astype({"customer_id": object}).assign(
                customer_id=lambda f: f["customer_id"].where(f.index != 8, f"0{f.loc[7, 'customer_id']}")
            )
        },
        "parquet_extra_column": {
            "part-0.parquet": parts[0],
            "part-1.parquet": parts[1].assign(plan_tier="x"),
        },
        "parquet_missing_column": {
            "part-0.parquet": parts[0].drop(columns=["plan"]),
            "part-1.parquet": parts[1],
        },
        "parquet_damaged_page": {"part-0.parquet": parts[0], "part-1.parquet": damaged(parts[1])},
        # Integers narrower than the contract's int64 (DuckDB's INTEGER, Spark's IntegerType): every value holds.
        "parquet_narrow_ints": {
            "part-0.parquet": frame.astype({"age": "int32", "num_txn_30d": "uint16", "churned": "int8"})
        },
        # Snowflake ids: distinct above 2**53, where a float64 holds only every 256th whole number.
        "parquet_64_bit_ids": {"part-0.parquet": big_ids},
        "parquet_64_bit_id_twice": {"part-0.parquet": repeated},
        # A pandas writer that kept the id as its index (its metadata says so): Dask read it as the index, the
        # unique rule on it had no column to check, and a day with an id twice passed (ingest then failed).
        "parquet_id_as_index": {"part-0.parquet": _parquet_bytes(twice.set_index("customer_id"))},
        # An upstream that now writes a float as text: coerced, "NaN" and " nan " passed as nulls past the
        # null share and "1_000" as a thousand. A type error, as for an int column.
        # A sentinel past 2262 in microseconds: either engine's read failed (pandas holds nanoseconds), at every
        # retry, with no report. The footer's statistics say so; the file's time column is read for the count.
        "parquet_time_out_of_range": {"part-0.parquet": far_future},
        "parquet_float_as_text": {
            "part-0.parquet": frame.assign(
                avg_basket=[("NaN", "1_000", " nan ")[i % 3] for i in range(len(frame))]
            )
        },
    }


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    """A Parquet file as pandas writes it by default: its index kept, and named in its pandas metadata."""
    import io

    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    return buffer.getvalue()


EXPECTED_ON_BOTH = {
    "csv_reordered": [],
    "csv_quoted_line_breaks": [("note", "unexpected column", 3)],
    "csv_cr_lines": [],
    "csv_mixed_line_ends": [("<table>", "unreadable file", 1)],
    "csv_extra_field": [("<table>", "malformed rows (another number of fields than the header)", 1)],
    "csv_short_row": [("<table>", "malformed rows (another number of fields than the header)", 1)],
    "csv_other_columns": [("plan", "missing column", 1)],
    "csv_invalid_utf8": [("<table>", "unreadable file", 1)],
    "csv_byte_order_mark": [],
    "csv_trailing_delimiter": [("", "unexpected column", 3)],
    "csv_nan_text": [("avg_basket", "max_null_share(0.1)", 400)],
    "csv_64_bit_id_written_twice": [("customer_id", "unique", 1)],
    "parquet_extra_column": [("plan_tier", "unexpected column", 1)],
    "parquet_missing_column": [("plan", "missing column", 1)],
    "parquet_damaged_page": [("<table>", "unreadable file", 1)],
    "parquet_narrow_ints": [],
    "parquet_64_bit_ids": [],
    "parquet_64_bit_id_twice": [("customer_id", "unique", 1)],
    "parquet_id_as_index": [("customer_id", "unique", 1)],
    "parquet_time_out_of_range": [("event_ts", sources.TIME_RANGE_RULE, 2)],
    "parquet_float_as_text": [("avg_basket", "dtype('float64') (found object)", 1200)],
}


def test_both_engines_check_each_files_columns_and_fields_and_read_them_by_name(
    settings, contract, tmp_path, monkeypatch
):
    from pipelines.data.contract import ColumnSpec
    from pipelines.engines import dask_engine

    # Blocks of 4 KB: Dask reads a file in many blocks, and put the first file's header before each of a
    # later file's blocks but its first (values of a file with another column order landed in other columns).
    monkeypatch.setattr(dask_engine, "CSV_BLOCK_BYTES", 4096)
    frame = generate_day(DAY, seed=7, rows=1200)
    cases = []
    for name, files in _files_of_a_day(frame).items():
        fmt = name.split("_", 1)[0]
        case_contract = contract
        if "64_bit" in name:
            ids = {**contract.columns, "customer_id": ColumnSpec(type="int")}
            case_contract = contract.model_copy(update={"columns": ids})
        cases.append((name, *day_of_files(settings, case_contract, tmp_path / name, files, fmt)))

    def by_id(table: pd.DataFrame) -> pd.DataFrame:  # the values of a few columns as text, nulls as None
        table = table[["customer_id", "amount", "avg_basket", "age"]].astype(object)
        table = table.where(table.notna(), None).set_index("customer_id")
        return table.loc[list(frame["customer_id"])]

    expected = by_id(frame.astype({"amount": str, "avg_basket": str, "age": str}).replace("nan", None))
    dask = DaskEngine(client=None)
    on_dask = {name: check_partition(dask, source, c) for name, source, c in cases}
    reordered = next(source for name, source, _ in cases if name == "csv_reordered")
    pd.testing.assert_frame_equal(by_id(dask.read(reordered.files, "csv").compute()), expected)
    quoted = next(source for name, source, _ in cases if name == "csv_quoted_line_breaks")
    shapes = [sources.csv_shape(uri, ",", 12) for uri in quoted.files]
    assert [shape.quoted for shape in shapes] == [True, False, False] and not any(s.malformed for s in shapes)
    whole = [quoted.files[0]]
    # A line break in a value is read as LF on both engines (Spark turned only the file's own kind into LF;
    # pandas kept each as written).
    notes = {
        str(customer): f'row {i} says "hi",\nthen more' if i < 400 else "plain"
        for i, customer in enumerate(frame["customer_id"])
    }

    def notes_of(table: pd.DataFrame) -> dict[str, str]:
        return dict(zip(table["customer_id"], table["note"], strict=True))

    assert notes_of(dask.read(quoted.files, "csv", csv_whole_files=whole).compute()) == notes
    local = settings.model_copy(update={"spark_master": "local[1]", "spark_shuffle_partitions": 2})
    with open_engine("spark", local) as spark:
        on_spark = {name: check_partition(spark, source, c) for name, source, c in cases}
        read = spark.read(reordered.files, "csv").toPandas()
        assert notes_of(spark.read(quoted.files, "csv", csv_whole_files=whole).toPandas()) == notes
    pd.testing.assert_frame_equal(by_id(read), expected)
    for name, _, _ in cases:
        found = [(v.column, v.rule, v.failing) for v in on_dask[name].violations]
        assert found == EXPECTED_ON_BOTH[name], (name, on_dask[name].violations)
        assert on_dask[name].violations == on_spark[name].violations, name
        assert on_dask[name].rows == on_spark[name].rows, name
    assert on_spark["csv_other_columns"].violations[0].examples == ["part-1.csv"]
    assert on_spark["parquet_missing_column"].violations[0].examples == ["part-0.parquet"]
    assert (
        on_spark["csv_extra_field"]
        .violations[0]
        .examples[0]
        .startswith("part-2.csv: a row of 12 fields, the header has 11: ")
    )
    assert on_spark["csv_mixed_line_ends"].violations[0].examples == [
        "part-1.csv: not a readable csv file: its lines end in LF and CR (outside quoted values); a file "
        "with quotes or lone-CR lines must end every line alike (Spark splits it at its first line's kind of "
        "line break only, pandas at every kind): write one kind of line break"
    ]
    assert on_spark["csv_invalid_utf8"].violations[0].examples == [
        "part-1.csv: not a readable csv file: not UTF-8 at line 6, byte 0xe9"
    ]
    assert on_spark["parquet_64_bit_id_twice"].violations[0].examples == ["1700000000000000008"]
    assert on_spark["parquet_time_out_of_range"].violations[0].examples == ["3026-01-01T01:00:00.000000"]
    assert (
        on_spark["parquet_damaged_page"]
        .violations[0]
        .examples[0]
        .startswith("part-1.parquet: its data does not decode: ")
    )


def test_a_raw_day_committed_again_while_prepare_reads_it_fails_prepare_and_writes_nothing(
    settings, monkeypatch
):
    """A validate of a day beside a prepare of a window holding it (a backfill beside the schedule) commits the day
    again between prepare's reading of its hash and of its rows: the window was prepared from one version's rows
    under the other's hash, so the dataset version named rows it did not hold."""
    from pipelines.data import prepare as stage
    from pipelines.data.prepare import RawChangedError

    generate(settings, DAY, "none")
    validate(settings, DAY, "dask")
    raw = storage.raw_uri(settings.resolved_data_root, settings.dataset, DAY)
    committed = datasets.read_manifest(raw)
    real = stage.build_profile

    def profile_then_commit_the_day_again(session, frame, contract):
        # another version of the day, committed whole, its files under the same names
        with storage.atomic_dir(raw) as tmp:
            for file in datasets.parquet_files(raw):
                table = pq.read_table(file)
                amount = table.column("amount").to_numpy() + 1.0
                table = table.set_column(table.column_names.index("amount"), "amount", pa.array(amount))
                pq.write_table(table, storage.join(tmp, file.rsplit("/", 1)[-1]))
            datasets.write_manifest(tmp, committed.extra, final_uri=raw)
        return real(session, frame, contract)

    monkeypatch.setattr(stage, "build_profile", profile_then_commit_the_day_again)
    with pytest.raises(RawChangedError, match=f"raw data of {DAY} was committed again while prepare read it"):
        prepare(settings, DAY, "dask")
    features = storage.features_uri(settings.resolved_data_root, settings.dataset, DAY)
    assert not storage.exists(features)  # nothing committed, nothing left half written
    monkeypatch.setattr(stage, "build_profile", real)
    assert prepare(settings, DAY, "dask")["rows"] == settings.rows_per_day  # its retry, from the day as it is


def test_both_engines_read_nullable_booleans_and_old_times_alike_and_retry_a_file_gone_mid_read(
    settings, tmp_path, monkeypatch
):
    """pandas' nullable ``boolean`` (its metadata asks for it) failed on Dask as 'found boolean' and passed on
    Spark; a time before 1970 with nanoseconds was committed 1 µs apart by the two (Spark truncated toward
    zero), so the raw data's version differed with the engine; a file removed after the day was listed was
    'unreadable data' on Spark (quarantined, as bad data) where Dask failed the read for a retry."""
    from pipelines.data import validate as validate_module
    from pipelines.data.contract import Contract
    from pipelines.data.validation import coerce_partition

    contract = Contract.model_validate(
        {
            "dataset": "tx",
            "entity_id": "id",
            "event_time": "ts",
            "label": "y",
            "source": {"uri": "x"},
            "splits": {"train": 70, "validation": 15, "holdout": 15},
            "unique": ["id"],
            "columns": {
                "id": {"type": "string"},
                "ts": {"type": "timestamp"},
                "born": {"type": "timestamp"},
                "vip": {"type": "category", "allowed": [True, False], "role": "feature"},
                "x": {"type": "float", "role": "feature"},
                "y": {"type": "int", "allowed": [0, 1]},
            },
        }
    )
    frame = pd.DataFrame(
        {
            "id": ["c0", "c1", "c2"],
            "ts": pd.Timestamp(DAY, tz="UTC") + pd.to_timedelta([1, 2, 3], unit="h"),
            "born": pd.to_datetime([-1500, 1500, -2_000_000_500], unit="ns", utc=True),
            "vip": pd.array([True, False, True], dtype="boolean"),
            "x": [1.0, 2.0, 3.0],
            "y": [0, 1, 0],
        }
    )
    typed, _ = day_of_files(settings, contract, tmp_path / "typed", {"part-0.parquet": frame}, "parquet")
    two = {"part-0.parquet": frame, "part-1.parquet": frame.assign(id=["d0", "d1", "d2"])}
    going, _ = day_of_files(settings, contract, tmp_path / "going", two, "parquet")
    listed = sources.inspect_files

    def listed_then_removed(source, contract):  # another process replaces the day after it was listed
        found = listed(source, contract)
        if source == going:
            (tmp_path / "going" / DAY.isoformat() / "part-1.parquet").unlink()
        return found

    def committed_births(engine) -> list[int]:
        table = engine.map_partitions(
            engine.read(typed.files), lambda part: coerce_partition(part, contract), contract.arrow_schema()
        )
        out = tmp_path / f"committed-{engine.name}"
        engine.write_parquet(table, str(out))
        return pd.read_parquet(out)["born"].astype("int64").tolist()

    monkeypatch.setattr(validate_module.sources, "inspect_files", listed_then_removed)
    local = settings.model_copy(update={"spark_master": "local[1]", "spark_shuffle_partitions": 2})
    births = {}
    for name in ("dask", "spark"):
        (tmp_path / "going" / DAY.isoformat() / "part-1.parquet").unlink(missing_ok=True)
        frame.assign(id=["d0", "d1", "d2"]).to_parquet(
            tmp_path / "going" / DAY.isoformat() / "part-1.parquet"
        )
        with open_engine(name, local) as engine:
            report = check_partition(engine, typed, contract)
            assert report.ok, (name, report.violations)
            births[name] = committed_births(engine)
            with pytest.raises(sources.SourceReadError, match="part-1.parquet"):  # not a bad day: a retry
                check_partition(engine, going, contract)
    assert births["dask"] == births["spark"] == [-2, 1, -2_000_001]  # rounded down, as pandas rounds
