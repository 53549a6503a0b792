"""Benchmark: the torch training stage in one in-process rank against DDP ranks under torchrun.

    python bench/train.py                               # 10k, 50k, 100k, 200k and 500k training rows
    python bench/train.py --sizes 14000 --ranks 2 4     # one size, more launchers
    python bench/train.py --skip-stage                  # the fit only, not the whole stage on the demo day
    python bench/train.py --skip-fit                    # the whole stage on the demo day only

Part 1, the fit: the demo's features (``pipelines.data.generate``, through the same feature code as the
prepare stage) at each size of the training split, with a validation split of about a fifth of it. Each
launcher runs the family's fit (``train_torch``) with the model settings' defaults (early stopping on the
validation split), in a fresh process that has imported torch, as the train stage does. Timed: the fit alone,
from the hand-over of the arrays to the weights on disk; for torchrun that includes starting the ranks, their
imports and the rendezvous. Printed per size and launcher: seconds, epochs run, seconds per epoch, the
validation AUC, and torchrun's time over the in-process rank's; then the smallest size from which the ranks
win at every larger size measured, which is what ``CT_TRAIN_PROCESSES_FROM_ROWS`` should be.

Part 2, the stage: ``pipelines.training.train.train`` on the demo day (``CT_ROWS_PER_DAY`` rows through
generate, validate and prepare on Dask) with real MLflow, in a fresh process per launcher: the first call
(cold: torch, scikit-learn and MLflow's store load inside it) and a second call with a new identity in the
same process (warm); and, in another fresh process, the time to load the libraries any cold stage loads (the
floor no launcher removes). Goal (issue 13): the stage at most 3 s on the demo day.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DAY = dt.date(2026, 11, 20)
MAX_ROWS_PER_DAY = 200_000  # the generator's customer pool: one day holds at most this many rows
SIZES = (10_000, 50_000, 100_000, 200_000, 500_000)


def features(rows_train: int, cache: Path) -> Path:
    """An ``.npz`` of train and validation arrays with about ``rows_train`` training rows (made once)."""
    path = cache / f"features-{rows_train}.npz"
    if path.exists():
        return path
    import numpy as np
    import pandas as pd

    from pipelines.data.contract import load_contract
    from pipelines.data.features import SPLIT_COLUMN, build_features, feature_names
    from pipelines.data.generate import generate_day
    from pipelines.data.validation import coerce_partition
    from pipelines.training.arrays import TrainingData

    contract = load_contract(ROOT / "include" / "contracts" / "transactions.yaml")
    total = int(rows_train * 100 / contract.splits["train"]) + 1
    frames, day = [], DAY
    while total > 0:
        rows = min(total, MAX_ROWS_PER_DAY)
        frames.append(build_features(coerce_partition(generate_day(day, 7, rows), contract), contract))
        total, day = total - rows, day - dt.timedelta(days=1)
    prepared = pd.concat(frames, ignore_index=True)
    names = feature_names(contract)
    train = prepared[prepared[SPLIT_COLUMN] == "train"].head(rows_train)
    validation = prepared[prepared[SPLIT_COLUMN] == "validation"]
    TrainingData(
        x_train=train[names].to_numpy("float32"),
        y_train=train[contract.label].to_numpy(),
        x_validation=validation[names].to_numpy("float32"),
        y_validation=validation[contract.label].to_numpy().astype(np.int64),
    ).save(path)
    return path


def child_fit(data_path: str, world_size: int, max_epochs: int | None) -> dict:
    """Inside a fresh process: one fit with the default model settings; its seconds, epochs and AUC."""
    import torch
    from sklearn.metrics import roc_auc_score

    from pipelines.model.mlp import load_mlp, predict_proba_mlp
    from pipelines.settings import get_settings
    from pipelines.training.arrays import TrainingData
    from pipelines.training.model_settings import ModelSettings, resolved_hyperparameters
    from pipelines.training.train import TRAINING_CODE_VERSION, TrainingPlan, torch_runtime, train_torch

    data = TrainingData.load(data_path)
    settings = get_settings(train_world_size=world_size, train_epochs=max_epochs, train_device="cpu")
    plan = TrainingPlan(
        family="torch",
        dataset_version="bench",
        hyperparameters=resolved_hyperparameters(settings, ModelSettings(), "torch"),
        runtime=torch_runtime(settings, len(data.x_train)),
        seed=settings.seed,
        code_version=TRAINING_CODE_VERSION,
        libraries={},
    )
    with tempfile.TemporaryDirectory(prefix="ct-bench-train-") as tmp:
        started = time.perf_counter()
        report = train_torch(data, plan, Path(tmp))
        seconds = time.perf_counter() - started
        model = load_mlp(Path(tmp) / "weights.pt", plan.model_config(data.x_train.shape[1]))
    auc = roc_auc_score(data.y_validation, predict_proba_mlp(model, data.x_validation))
    return {
        "seconds": seconds,
        "epochs": int(report.metrics["stopped_epoch"]),
        "best_epoch": int(report.metrics["best_epoch"]),
        "val_auc": float(auc),
        "threads": torch.get_num_threads(),
    }


def child_stage(state_dir: str, uri: str, world_size: int) -> dict:
    """Inside a fresh process: ``train()`` twice on the prepared demo day (cold, then warm)."""
    import logging

    logging.disable(logging.WARNING)
    from pipelines.release.tracking import RunContext
    from pipelines.settings import get_settings
    from pipelines.training.train import train

    seconds = []
    for attempt, epochs in enumerate((None, 199)):  # a second identity: the model is trained again, warm
        settings = get_settings(state_dir=state_dir, train_world_size=world_size, train_epochs=epochs)
        started = time.perf_counter()
        result = train(settings, DAY, uri, RunContext(f"bench/{time.time_ns()}/{attempt}"), "torch")
        seconds.append(time.perf_counter() - started)
    return {"cold": seconds[0], "warm": seconds[1], "val_auc": result["val_metrics"]["roc_auc"]}


def child_imports(state_dir: str) -> dict:
    """Inside a fresh process: load what any torch training stage loads, and nothing else (the floor)."""
    started = time.perf_counter()
    import onnxruntime  # noqa: F401
    import sklearn.metrics  # noqa: F401
    import torch
    import torch._dynamo  # noqa: F401  (torch.optim loads it on first use)
    from mlflow.utils.requirements_utils import _init_packages_to_modules_map

    from pipelines.release import tracking
    from pipelines.settings import get_settings

    tracking.configure(get_settings(state_dir=state_dir))
    _init_packages_to_modules_map()  # what MLflow's log_model scans once per process
    torch.cuda.is_available()
    return {"seconds": time.perf_counter() - started}


def run_child(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, cwd=ROOT
    )
    if out.returncode != 0:
        raise SystemExit(f"child {args} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def prepared_demo_day(state_dir: Path) -> tuple[str, int]:
    """Generate, validate and prepare the demo day in ``state_dir``; its features URI and training rows."""
    from pipelines.data.generate import generate
    from pipelines.data.prepare import prepare
    from pipelines.data.validate import validate
    from pipelines.settings import get_settings

    settings = get_settings(state_dir=state_dir)
    generate(settings, DAY, "none")
    validate(settings, DAY)
    prepared = prepare(settings, DAY, "dask")
    return prepared["uri"], prepared["split_rows"]["train"]


def launcher_name(world_size: int) -> str:
    return "in-process" if world_size == 1 else f"torchrun x{world_size}"


def bench_fit(sizes: list[int], ranks: list[int], max_epochs: int | None, cache: Path) -> int | None:
    """Part 1; returns the smallest size from which the ranks beat the in-process rank at every larger size."""
    print("# the fit with the default model settings (early stopping), in a fresh process per launcher")
    print(
        f"{'train rows':>10}  {'launcher':<13}{'seconds':>9}{'epochs':>8}{'s/epoch':>9}{'val AUC':>9}"
        f"{'vs 1 rank':>11}"
    )
    threshold = None
    for size in sizes:
        path = features(size, cache)
        results = {}
        for world_size in [1, *ranks]:
            result = run_child("fit", str(path), str(world_size), str(max_epochs or 0))
            results[world_size] = result
            ratio = result["seconds"] / results[1]["seconds"]
            print(
                f"{size:>10,}  {launcher_name(world_size):<13}{result['seconds']:>9.2f}{result['epochs']:>8}"
                f"{result['seconds'] / result['epochs']:>9.3f}{result['val_auc']:>9.4f}{ratio:>10.2f}x",
                flush=True,
            )
        wins = all(results[w]["seconds"] < results[1]["seconds"] for w in ranks)
        threshold = (threshold or size) if wins else None  # a loss at a larger size resets it
    return threshold


def bench_stage(ranks: list[int], workdir: Path) -> dict[int, dict]:
    uri, train_rows = prepared_demo_day(workdir / "stage")
    print(f"# the train stage on the demo day ({train_rows:,} training rows), MLflow on SQLite")
    print(f"{'launcher':<13}{'cold s':>9}{'warm s':>9}{'val AUC':>9}")
    stage = {}
    for world_size in [1, *ranks]:
        result = run_child("stage", str(workdir / "stage"), uri, str(world_size))
        stage[world_size] = result
        print(
            f"{launcher_name(world_size):<13}{result['cold']:>9.2f}{result['warm']:>9.2f}"
            f"{result['val_auc']:>9.4f}",
            flush=True,
        )
    floor = run_child("imports", str(workdir / "stage"))["seconds"]
    print(f"# of a cold stage, {floor:.2f}s is loading torch, scikit-learn, ONNX Runtime and MLflow's store")
    return stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="training rows")
    parser.add_argument("--ranks", type=int, nargs="+", default=[2], help="torchrun world sizes to time")
    parser.add_argument("--max-epochs", type=int, default=None, help="CT_TRAIN_EPOCHS (default: settings)")
    parser.add_argument("--skip-stage", action="store_true", help="time the fit only")
    parser.add_argument("--skip-fit", action="store_true", help="time the stage on the demo day only")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "fit":
            print(json.dumps(child_fit(rest[0], int(rest[1]), int(rest[2]) or None)))
        elif kind == "imports":
            print(json.dumps(child_imports(rest[0])))
        else:
            print(json.dumps(child_stage(rest[0], rest[1], int(rest[2]))))
        return

    import psutil
    import torch

    memory = psutil.virtual_memory().total / 2**30
    print(
        f"# train benchmark, {dt.date.today()}, {os.cpu_count()} cores, {memory:.0f} GiB, torch "
        f"{torch.__version__}; load average {os.getloadavg()[0]:.1f} at the start"
    )
    with tempfile.TemporaryDirectory(prefix="ct-bench-train-") as tmp:
        workdir = Path(tmp)
        threshold = (
            None if args.skip_fit else bench_fit(sorted(args.sizes), args.ranks, args.max_epochs, workdir)
        )
        stage = {} if args.skip_stage else bench_stage(args.ranks, workdir)
    parts = []
    if not args.skip_fit:
        parts.append(
            f"torchrun wins from {threshold:,} training rows"
            if threshold
            else f"torchrun never won up to {max(args.sizes):,} training rows"
        )
    if stage:
        parts.append(
            "demo-day stage "
            + ", ".join(
                f"{launcher_name(w)} {r['cold']:.1f}s cold / {r['warm']:.1f}s warm" for w, r in stage.items()
            )
        )
    print(f"SUMMARY {'; '.join(parts)} (goal: the stage <= 3 s on the demo day)")
    print(f"# load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
