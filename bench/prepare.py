"""Benchmark: the prepare transform on Dask, on Spark and on DuckDB (the single-machine baseline).

    python bench/prepare.py                 # 1M and 10M rows
    python bench/prepare.py --sizes 1000000 # one size

Each engine runs the same transform (raw Parquet window -> features + split, each split sorted by its raw
values, written as Parquet partitioned by split) on the same committed raw data, in a fresh process, one
engine at a time. Timed: the transform only, after the engine has started (session start-up is printed
apart). Peak memory: the resident set of the engine's whole process tree (the JVM and its Python workers for
Spark), sampled every 50 ms. The three outputs are checked to hold the same split counts, so the engines did
the same work.

Prints rows/s, seconds and peak memory per engine and size, each engine's time over DuckDB's, and each
engine's per-row cost at the largest size over that at the smallest. Goals (issue 3): each engine within 3x
of the baseline; per-row cost at 10M no more than 1.2x that at 1M.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ROWS_PER_DAY = 200_000
END = dt.date(2026, 10, 31)
ENGINES = ("duckdb", "dask", "spark")


def raw_window(data_root: Path, rows: int) -> list[str]:
    """Committed raw partitions holding ``rows`` rows of demo data (generated once, then reused)."""
    from pipelines.data import datasets, storage
    from pipelines.data.contract import load_contract
    from pipelines.data.generate import generate_day
    from pipelines.data.validation import coerce_partition

    contract = load_contract(ROOT / "include" / "contracts" / "transactions.yaml")
    days = max(1, rows // ROWS_PER_DAY)
    fingerprint = contract.fingerprint()
    uris = []
    for offset in range(days):
        day = END - dt.timedelta(days=offset)
        uri = storage.raw_uri(str(data_root), "transactions", day)
        committed = storage.exists(storage.join(uri, datasets.MANIFEST))
        if not committed or datasets.read_manifest(uri).extra.get("contract_fingerprint") != fingerprint:
            frame = coerce_partition(generate_day(day, 7, min(rows, ROWS_PER_DAY)), contract)
            # As validate commits it: prepare uses a day validated under the contract it reads.
            datasets.write_parquet_frame(frame, uri, {"contract_fingerprint": fingerprint})
        uris.append(uri)
    return uris


# --- the transform on each engine (run inside a child process) -------------------------------------------


def _crc32_bucket(ids):  # DuckDB calls this with Arrow arrays: the split function of pipelines.data.features
    import numpy as np
    import pyarrow as pa

    values = ids.to_pylist()
    crc = np.fromiter((zlib.crc32(v.encode("utf-8")) for v in values), dtype=np.uint32, count=len(values))
    return pa.array((crc % 100).astype("int64"))


def duckdb_sql(contract, files: list[str], out: str) -> str:
    """The transform as the SQL a DuckDB user would write."""
    from pipelines.data.features import raw_columns

    selects = raw_columns(contract)
    for column in contract.numeric_features:
        spec = contract.columns[column]
        value = f"CAST({column} AS DOUBLE)"
        if spec.log:
            value = f"ln(1 + greatest({value}, 0))"
        if spec.nullable:
            selects.append(f"coalesce({value}, 0.0) AS f_{column}")
            selects.append(f"CAST({column} IS NULL AS DOUBLE) AS f_{column}__missing")
        else:
            selects.append(f"{value} AS f_{column}")
    for column in contract.categorical_features:
        for allowed in contract.columns[column].allowed or []:
            selects.append(f"CAST({column} = '{allowed}' AS DOUBLE) AS f_{column}__{allowed}")
    train = contract.splits["train"]
    validation = train + contract.splits["validation"]
    selects.append(
        f"CASE WHEN crc32_bucket({contract.entity_id}) < {train} THEN 'train' "
        f"WHEN crc32_bucket({contract.entity_id}) < {validation} THEN 'validation' ELSE 'holdout' END AS split"
    )
    file_list = ", ".join(f"'{f}'" for f in files)
    # Each split's rows in the raw values' order, as prepare writes them on Dask and Spark.
    order = ", ".join(f"{column} NULLS LAST" for column in ["split", *raw_columns(contract)])
    return (
        f"COPY (SELECT {', '.join(selects)} FROM read_parquet([{file_list}]) ORDER BY {order}) "
        f"TO '{out}' (FORMAT parquet, PARTITION_BY (split))"
    )


def child_stage(engine: str, data_root: str, days: int) -> dict:
    """The whole prepare stage (transform, reference profile, split counts, distributed content hash)."""
    from pipelines.data.prepare import prepare
    from pipelines.settings import get_settings

    settings = get_settings(
        state_dir=Path(data_root).parent / "state",
        data_root=data_root,
        window_days=days,
        spark_driver_memory="4g",
    )
    started = time.perf_counter()
    result = prepare(settings, END, engine)
    return {"startup_s": 0.0, "seconds": time.perf_counter() - started, "rows": result["rows"]}


def _warm_worker(_: int) -> None:
    import pipelines.data.features  # noqa: F401 - the code every partition runs, loaded before timing


def child(engine: str, raw_uris: list[str], out: str) -> dict:
    from pipelines.data import datasets
    from pipelines.data.contract import load_contract
    from pipelines.data.prepare import write_prepared
    from pipelines.engines import local_path, open_engine
    from pipelines.settings import get_settings

    contract = load_contract(ROOT / "include" / "contracts" / "transactions.yaml")
    files = [f for uri in raw_uris for f in datasets.parquet_files(uri)]
    started = time.perf_counter()
    if engine == "duckdb":
        import duckdb

        con = duckdb.connect(config={"threads": os.cpu_count() or 2})
        con.create_function("crc32_bucket", _crc32_bucket, ["VARCHAR"], "BIGINT", type="arrow")
        ready = time.perf_counter()
        con.execute(duckdb_sql(contract, [local_path(f) for f in files], out))
        done = time.perf_counter()
    else:
        settings = get_settings(engine=engine, spark_driver_memory="4g")
        with open_engine(engine, settings) as session:
            # The engine is up before timing: the JVM and a first executor task, or Dask workers, with our code.
            session.map_files(_warm_worker, [0, 1])
            ready = time.perf_counter()
            write_prepared(session, session.read(files), contract, None, out)
            done = time.perf_counter()
    return {"startup_s": ready - started, "seconds": done - ready}


# --- the parent: one child per (engine, size), memory sampled from outside --------------------------------


def measure(engine: str, raw_uris: list[str], out: Path, stage: bool = False) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, __file__, "--child", engine, "--out", str(out), "--raw", json.dumps(raw_uris)]
    if stage:
        command.append("--stage")
    from bench.measure import run_sampled

    stdout, peak = run_sampled(command, engine)
    result = json.loads(stdout.strip().splitlines()[-1])
    result["peak_mib"] = peak / 2**20
    if not stage:
        result["split_rows"] = _split_rows(out)
    return result


def _split_rows(out: Path) -> dict[str, int]:
    import pyarrow.dataset as pads

    return {
        split: pads.dataset(str(out / f"split={split}"), format="parquet").count_rows()
        for split in ("train", "validation", "holdout")
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000000,10000000", help="Comma-separated row counts.")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--workdir", default=str(ROOT / ".state" / "bench"), help="Data and outputs.")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--raw", help=argparse.SUPPRESS)
    parser.add_argument("--stage", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.stage:
            data_root = str(Path(args.out).parent)
            print(json.dumps(child_stage(args.child, data_root, len(json.loads(args.raw)))))
        else:
            print(json.dumps(child(args.child, json.loads(args.raw), args.out)))
        return

    import psutil

    workdir = Path(args.workdir)
    sizes = [int(s) for s in args.sizes.split(",")]
    engines = args.engines.split(",")
    print(
        f"# prepare benchmark, {dt.date.today()}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB; transform time only (start-up apart)"
    )
    print(
        f"{'engine':<8}{'rows':>12}{'seconds':>10}{'rows/s':>14}{'peak MiB':>10}{'vs duckdb':>11}{'start s':>9}"
    )
    results: dict[tuple[str, int], dict] = {}
    for rows in sizes:
        started = time.perf_counter()
        raw_uris = raw_window(workdir / f"data-{rows}", rows)
        print(f"# {rows:,} rows of raw data ready in {time.perf_counter() - started:.1f}s", flush=True)
        for engine in engines:
            result = measure(engine, raw_uris, workdir / f"out-{engine}-{rows}")
            results[(engine, rows)] = result
            baseline = results.get(("duckdb", rows))
            ratio = result["seconds"] / baseline["seconds"] if baseline else float("nan")
            print(
                f"{engine:<8}{rows:>12,}{result['seconds']:>10.2f}{rows / result['seconds']:>14,.0f}"
                f"{result['peak_mib']:>10.0f}{ratio:>10.2f}x{result['startup_s']:>9.1f}",
                flush=True,
            )
        counts = {json.dumps(results[(e, rows)]["split_rows"], sort_keys=True) for e in engines}
        if len(counts) != 1:
            raise SystemExit(f"engines disagree on split counts at {rows} rows: {counts}")
        shutil.rmtree(workdir / f"out-{engines[0]}-{rows}", ignore_errors=True)
    summary = []
    if len(sizes) > 1:
        small, large = min(sizes), max(sizes)
        print(f"# per-row cost at {large:,} over {small:,} rows (goal <= 1.2)")
        for engine in engines:
            scale = (results[(engine, large)]["seconds"] / large) / (
                results[(engine, small)]["seconds"] / small
            )
            print(f"{engine:<8}{scale:>8.2f}")
            summary.append(f"{engine} {scale:.2f}")
    largest = max(sizes)
    print(
        f"# the whole prepare stage at {largest:,} rows: transform, reference profile, counts, content hash"
    )
    raw_uris = raw_window(workdir / f"data-{largest}", largest)
    for engine in (e for e in engines if e != "duckdb"):
        result = measure(engine, raw_uris, workdir / f"data-{largest}" / "stage-out", stage=True)
        print(
            f"{engine:<8}{largest:>12,}{result['seconds']:>10.2f}{largest / result['seconds']:>14,.0f}"
            f"{result['peak_mib']:>10.0f}",
            flush=True,
        )
    ratios = [
        f"{e} {results[(e, largest)]['seconds'] / results[('duckdb', largest)]['seconds']:.2f}x"
        for e in engines
        if e != "duckdb" and ("duckdb", largest) in results
    ]
    print(
        f"SUMMARY at {largest:,} rows, time vs duckdb: {', '.join(ratios)}; per-row 10M/1M: {', '.join(summary)}"
    )


if __name__ == "__main__":
    main()
