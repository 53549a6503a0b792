"""Benchmark: this project's drift against plain Evidently, side by side in one run.

    python bench/drift.py                                   # 1M and 10M rows, sweep at 1M rows
    python bench/drift.py --sizes 1000000 --sweep-rows 100000

Data: a bench contract of 20 features (10 numbers of different shapes, 10 categories of five values),
a reference and a current window of N rows each as Parquet files, three columns drifted in the current.

Measured, each in a fresh process with its peak resident memory (the whole process tree) sampled every
50 ms:

- **plain Evidently**: read both windows into pandas, ``Report([DataDriftPreset(...)])`` with the same
  test per column and drift share, HTML saved. Skipped above ``--evidently-up-to`` rows (at 1M rows it
  takes over a minute and 1.6 GB; it grows linearly);
- **the profiles** of both windows on Dask (what prepare adds to a run: the reference profile is computed
  once per training window and logged with the model, the current one by the run's prepare);
- **the drift stage**: the two profiles compared with Evidently's tests and the report rendered;
- **the profile inside prepare**: the real prepare transform (sorted, features and split, written as Parquet) on
  a demo window, and the profile on the same session, on Dask and Spark; the profile's share of it;
- **verdict agreement**: the 200-change sweep (bench/drift_sweep.py) against plain Evidently's stat tests on
  the raw rows, on Dask and Spark.

Goals (issue 12): the drift stage at least 20x faster than plain Evidently at 1M rows; 10M rows in under
60 s including the profiles, with peak memory under 2x the Parquet input; the profile adds at most 25% to
prepare; verdicts differ only within 0.005 of Evidently's threshold, scores by at most 0.005.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FILE_ROWS = 500_000
DRIFTED = ("n00", "n03", "k01")  # shifted in the current window


def bench_contract() -> Any:
    from bench.drift_sweep import contract_of

    numbers = {f"n{i:02d}": {"type": "float", "nullable": True} for i in range(10)}
    categories = {f"k{i:02d}": {"type": "category", "allowed": list("abcdef")} for i in range(10)}
    return contract_of(numbers | categories, "drift_bench")


def write_window(folder: Path, rows: int, seed: int, drifted: bool) -> int:
    """``rows`` rows as Parquet files of FILE_ROWS rows; returns the bytes written."""
    import numpy as np
    import pandas as pd

    from bench.drift_sweep import CONTINUOUS

    if (folder / "_done").exists():
        return sum(f.stat().st_size for f in folder.glob("*.parquet"))
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    samplers = list(CONTINUOUS.values())
    shares = np.array([0.35, 0.25, 0.15, 0.12, 0.08, 0.05])
    for part, start in enumerate(range(0, rows, FILE_ROWS)):
        n = min(FILE_ROWS, rows - start)
        rng = np.random.default_rng([seed, part])
        frame: dict[str, Any] = {"id": np.arange(start, start + n).astype(str)}
        frame["ts"] = pd.Timestamp("2026-11-01", tz="UTC")
        for i in range(10):
            values = samplers[i % len(samplers)](rng, n)
            if drifted and f"n{i:02d}" in DRIFTED:
                values = values + 0.3 * values.std()
            frame[f"n{i:02d}"] = values
        for i in range(10):
            p = shares[::-1] if drifted and f"k{i:02d}" in DRIFTED else shares
            frame[f"k{i:02d}"] = pd.Categorical.from_codes(rng.choice(6, n, p=p), list("abcdef")).astype(str)
        frame["y"] = rng.integers(0, 2, n)
        pd.DataFrame(frame).to_parquet(folder / f"part-{part:04d}.parquet", index=False)
    (folder / "_done").touch()
    return sum(f.stat().st_size for f in folder.glob("*.parquet"))


# --- children -------------------------------------------------------------------------------------------


def child_evidently(reference: str, current: str, out: str) -> dict[str, Any]:
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    contract = bench_contract()
    started = time.perf_counter()
    ref, cur = pd.read_parquet(reference), pd.read_parquet(current)
    read = time.perf_counter()
    definition = DataDefinition(
        numerical_columns=contract.numeric_features, categorical_columns=contract.categorical_features
    )
    methods = {name: contract.drift_test(name)[0] for name in contract.feature_columns}
    report = Report(
        [DataDriftPreset(columns=contract.feature_columns, drift_share=0.8, per_column_method=methods)]
    )
    snapshot = report.run(
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition),
    )
    snapshot.save_html(out)
    done = time.perf_counter()
    return {"read_s": read - started, "seconds": done - read}


def child_profiles(reference: str, current: str, out: str) -> dict[str, Any]:
    from pipelines.data.datasets import any_parquet_files
    from pipelines.data.profile import build_profile
    from pipelines.engines import open_engine
    from pipelines.settings import get_settings

    contract = bench_contract()
    settings = get_settings(state_dir=Path(out).parent / "state")
    files = {"reference": any_parquet_files(reference), "current": any_parquet_files(current)}
    with open_engine("dask", settings) as session:
        session.map_files(len, [[0], [1]])  # workers up before timing
        started = time.perf_counter()
        for side, found in files.items():
            Path(out, f"{side}.json").write_text(
                json.dumps(build_profile(session, session.read(found), contract))
            )
        done = time.perf_counter()
    return {"seconds": done - started}


def child_stage(profiles: str, out: str) -> dict[str, Any]:
    import evidently.metrics  # noqa: F401 - imported before timing, as in the plain Evidently child
    import evidently.presets  # noqa: F401

    from pipelines.evaluation import drift, drift_stats

    contract = bench_contract()
    started = time.perf_counter()
    reference = json.loads(Path(profiles, "reference.json").read_text())
    current = json.loads(Path(profiles, "current.json").read_text())
    summary = drift_stats.compare(reference, current, contract) | {"label_column": contract.label}
    snapshot = drift.render_report(reference, current, contract, summary, 0.8)
    page = snapshot.get_html_str(as_iframe=False).replace(
        "<body>", "<body>" + drift.banner(summary, "bench", 0.8)
    )
    Path(out).write_text(page)
    done = time.perf_counter()
    drifted = sorted(name for name, c in summary["columns"].items() if c["drifted"])
    return {"seconds": done - started, "drifted": drifted}


def child_prepare(engine: str, rows: int, out: str) -> dict[str, Any]:
    from bench.prepare import raw_window
    from pipelines.data import datasets
    from pipelines.data.contract import load_contract
    from pipelines.data.prepare import write_prepared
    from pipelines.data.profile import build_profile
    from pipelines.engines import open_engine
    from pipelines.settings import get_settings

    data_root = Path(out).parent / "prepare-data"
    contract = load_contract(ROOT / "include" / "contracts" / "transactions.yaml")
    files = [f for uri in raw_window(data_root, rows) for f in datasets.parquet_files(uri)]
    settings = get_settings(state_dir=Path(out).parent / "state", engine=engine, spark_driver_memory="4g")
    with open_engine(engine, settings) as session:
        session.map_files(len, [[0], [1]])
        started = time.perf_counter()
        raw = session.read(files)
        write_prepared(session, raw, contract, None, out)  # prepare's own transform
        transformed = time.perf_counter()
        build_profile(session, raw, contract)
        profiled = time.perf_counter()
    return {"transform_s": transformed - started, "profile_s": profiled - transformed}


def child_sweep(rows: int, out: str) -> dict[str, Any]:
    from bench import drift_sweep
    from pipelines.evaluation.drift import compare_datasets
    from pipelines.settings import get_settings

    folder = Path(out)
    reference, current, changes = drift_sweep.build(rows, seed=3)
    contract = drift_sweep.contract(changes)
    for name, frame in (("reference", reference), ("current", current)):
        shutil.rmtree(folder / name, ignore_errors=True)
        (folder / name).mkdir(parents=True)
        for part in range(8):
            frame.iloc[part::8].to_parquet(folder / name / f"part-{part}.parquet", index=False)
    theirs = drift_sweep.evidently_scores(reference, current, contract)
    del reference, current
    settings = get_settings(state_dir=folder / "state", spark_driver_memory="6g")
    found = {}
    for engine in ("dask", "spark"):
        ours = compare_datasets(
            settings, str(folder / "reference"), str(folder / "current"), contract, engine
        )
        agreement = drift_sweep.agreement(ours, theirs, changes)
        found[engine] = {
            key: (len(value) if isinstance(value, list) else value) for key, value in agreement.items()
        }
    return found


CHILDREN = {
    "evidently": child_evidently,
    "profiles": child_profiles,
    "stage": child_stage,
    "prepare": child_prepare,
    "sweep": child_sweep,
}


# --- the parent -----------------------------------------------------------------------------------------


def run(name: str, *args: Any) -> dict[str, Any]:
    from bench.measure import run_sampled

    command = [sys.executable, __file__, "--child", name, "--args", json.dumps([str(a) for a in args])]
    stdout, peak = run_sampled(command, name)
    return json.loads(stdout.strip().splitlines()[-1]) | {"peak_mib": peak / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--evidently-up-to", type=int, default=1_000_000)
    parser.add_argument("--sweep-rows", type=int, default=1_000_000)
    parser.add_argument("--prepare-rows", type=int, default=1_000_000)
    parser.add_argument("--work", default=str(ROOT / ".state" / "bench-drift"))
    parser.add_argument("--skip", nargs="*", default=[], choices=["prepare", "sweep"])
    parser.add_argument("--child")
    parser.add_argument("--args")
    options = parser.parse_args()
    if options.child:
        args = json.loads(options.args)
        typed = [int(a) if a.isdigit() else a for a in args]
        print(json.dumps(CHILDREN[options.child](*typed)))
        return
    import os

    work = Path(options.work)
    print(f"bench/drift.py, {dt.date.today()}, {platform.machine()}, {os.cpu_count()} cores")
    for rows in options.sizes:
        reference, current = work / f"{rows}" / "reference", work / f"{rows}" / "current"
        size = write_window(reference, rows, 1, False) + write_window(current, rows, 2, True)
        print(
            f"\n{rows:,} rows x 20 features per window; Parquet input {size / 2**20:.0f} MiB (both windows)"
        )
        profiles = work / f"{rows}" / "profiles"
        profiles.mkdir(exist_ok=True)
        built = run("profiles", reference, current, profiles)
        stage = run("stage", profiles, work / f"{rows}" / "drift.html")
        total = built["seconds"] + stage["seconds"]
        print(
            f"  profiles of both windows (Dask):  {built['seconds']:7.1f} s   peak {built['peak_mib']:7.0f} MiB"
        )
        print(
            f"  drift stage (compare + report):   {stage['seconds']:7.1f} s   peak {stage['peak_mib']:7.0f} MiB"
        )
        print(
            f"  this project, profiles included:  {total:7.1f} s   peak/input {built['peak_mib'] / (size / 2**20):.2f}x"
        )
        print(f"  drifted: {', '.join(stage['drifted'])} (changed: {', '.join(DRIFTED)})")
        if rows <= options.evidently_up_to:
            plain = run("evidently", reference, current, work / f"{rows}" / "evidently.html")
            print(
                f"  plain Evidently (read {plain['read_s']:.1f} s): {plain['seconds']:7.1f} s   "
                f"peak {plain['peak_mib']:7.0f} MiB"
            )
            print(
                f"  ratios: drift stage {plain['seconds'] / stage['seconds']:.1f}x faster, "
                f"{plain['seconds'] / total:.1f}x counting the profiles; "
                f"{plain['peak_mib'] / max(built['peak_mib'], stage['peak_mib']):.1f}x less memory"
            )
        else:
            print(f"  plain Evidently: not run above {options.evidently_up_to:,} rows (linear in rows)")
    if "prepare" not in options.skip:
        _prepare_share(options.prepare_rows, work)
    if "sweep" not in options.skip:
        _sweep(options.sweep_rows, work)


def _prepare_share(rows: int, work: Path) -> None:
    print(f"\nprofile inside prepare, {rows:,} demo rows:")
    for engine in ("dask", "spark"):
        found = run("prepare", engine, rows, work / f"prepare-{engine}")
        share = found["profile_s"] / found["transform_s"]
        print(
            f"  {engine:5s}: transform {found['transform_s']:6.1f} s, profile {found['profile_s']:6.1f} s "
            f"(+{share:.0%}), peak {found['peak_mib']:.0f} MiB"
        )


def _sweep(rows: int, work: Path) -> None:
    print(f"\nverdict agreement, 200-change sweep at {rows:,} rows:")
    swept = run("sweep", rows, work / "sweep")
    for engine in ("dask", "spark"):
        agreement = swept[engine]
        print(
            f"  {engine:5s}: {agreement['verdicts_agree']}/{agreement['changes']} verdicts agree "
            f"({agreement['within_margin_of_threshold']} within 0.005 of the threshold), "
            f"max score difference {agreement['max_score_difference']:.5f}, "
            f"{agreement['score_differs']} scores off by more than 0.005, "
            f"{agreement['outlier_flips']} verdicts changed by one outlier row"
        )


if __name__ == "__main__":
    main()
