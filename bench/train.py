"""Benchmark: the torch training stage's launchers against plain single-process torch on the same cores.

    python bench/train.py                                  # demo and wide model, 1 and 2 ranks, default sizes
    python bench/train.py --models wide --rows 1000000     # one model, one size
    python bench/train.py --ranks 2 4 --epochs 5           # more ranks (a bigger host, or a GPU one)
    python bench/train.py --ranks 2 4 8 --rank-threads 1   # ranks alone on a host of many cores
    python bench/train.py --device cuda --ranks            # a host of one GPU: plain torch and one rank
    python bench/train.py --skip-fit --skip-stage --crossover --device cuda   # where auto starts to pick the GPU
    python bench/train.py --skip-stage                     # the fits only, not the whole stage on the demo day
    python bench/train.py --ceiling                        # also N independent one-thread fits at once

Part 1, the fit. For each model (``demo``: the model settings' defaults; ``wide``: a 512-512-256 MLP at batch
1024) and training size, the demo generator's features are written once as a prepared dataset (Parquet split
folders with row groups of 65,536 rows and a manifest carrying the training split's moments, as prepare writes
it). Each run trains a fixed number of epochs without early stopping, in a fresh process:

* ``plain torch``: what a user would write: the whole split in one process's memory, shuffled batches, AdamW,
  torch's threads on every core (``torch.set_num_threads(cores)``);
* ``in-process``, ``torchrun xN``: ``pipelines.training.train.train_torch``, the stage's own fit, through the
  job folder, its rank parts, checkpoints at every epoch's end and its reports; the in-process rank with the
  threads the stage gives it (every core for a model of ``CT_TRAIN_PROCESSES_FROM_PARAMETERS`` or more, else one),
  and, where that is more than one, once more on one thread: the rank the scaling efficiency is measured against.

Printed per run: samples per second of the training loop (every rank's rows, padding included, over rank 0's
loop time), the launcher's fixed cost (the wall time before and after the loop: starting processes, imports,
rendezvous, reading the parts, committing), the seconds to reach the target validation loss (the worst of the
runs' best losses, plus 0.5%, so every run reaches it), the largest rank's peak memory (resident memory at its
peak over resident memory before reading the parts; on a GPU also its peak allocated device memory) and its part
of the splits, and the scaling efficiency (samples/s at N ranks over N times samples/s of one rank on one
thread). With ``--ceiling``, as many independent one-thread fits as ranks are started together, nothing shared
between them (their samples over the longest loop): the efficiency the host itself allows, which the ranks' is
read against. Then which launcher ``auto`` (``CT_TRAIN_WORLD_SIZE``'s default) picks for that size, and its samples/s
against plain torch.

A rank's memory is a fixed part (the pages of torch's and Arrow's code that its first step and first read bring
in, the model and optimiser, a validation slice's activations, a Parquet row group) plus a part that grows with
its data. Per model and run kind, the bench prints the growth between the two largest sizes (where the fixed
buffers are full), in MB per MB of part (the goal's measure), and the fixed rest.

Part 2, the stage: ``pipelines.training.train.train`` on the demo day with real MLflow, cold (a fresh process)
and warm (a second identity in the same process), per launcher. Goal (issue 13): at most 3 s on the demo day.

Goals (issue 18): efficiency at two ranks at least 0.8 for the wide model; on one host ``auto`` never more than
10% slower than plain torch on the same cores; no rank's memory growing by more than 1.5 MB a MB of its part.

Part 3, with ``--crossover``: plain torch's training step for MLPs of several sizes at batches 256 and 1024, data
on the device, on one CPU thread and (``--device cuda``) on the GPU: the step's work (parameters times rows) from
which the GPU's step is the faster, what ``CT_TRAIN_GPU_FROM_STEP_WORK`` (``CT_TRAIN_DEVICE=auto``) stands for.

On a GPU host (``--device cuda``) the stage trains with nccl and, where the GPU has bfloat16, a bfloat16 forward
(``precision: auto``); plain torch then runs under the same autocast.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DAY = dt.date(2026, 11, 20)
MAX_ROWS_PER_DAY = 200_000  # the generator's customer pool: one day holds at most this many rows
ROW_GROUP = 65_536
MODELS = {
    "demo": {},  # the model settings' defaults
    "wide": {"hidden_sizes": [512, 512, 256], "batch_size": 1024},
}
DEFAULT_ROWS = {"demo": [100_000, 1_000_000, 2_000_000], "wide": [100_000, 1_000_000]}
TARGET_SLACK = 1.005


def dataset(rows_train: int, cache: Path) -> Path:
    """A prepared dataset folder with about ``rows_train`` training rows (made once per size)."""
    folder = cache / f"features-{rows_train}"
    if folder.exists():
        return folder
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.data import datasets
    from pipelines.data.contract import load_contract
    from pipelines.data.features import SPLIT_COLUMN, build_features, feature_names
    from pipelines.data.generate import generate_day
    from pipelines.data.moments import split_moments
    from pipelines.data.validation import coerce_partition

    contract = load_contract(ROOT / "include" / "contracts" / "transactions.yaml")
    names = feature_names(contract)
    total = int(rows_train * 100 / contract.splits["train"]) + 1
    frames, day = [], DAY
    while total > 0:
        rows = min(total, MAX_ROWS_PER_DAY)
        frames.append(build_features(coerce_partition(generate_day(day, 7, rows), contract), contract))
        total, day = total - rows, day - dt.timedelta(days=1)
    prepared = pd.concat(frames, ignore_index=True)
    splits = {
        "train": prepared[prepared[SPLIT_COLUMN] == "train"].head(rows_train),
        "validation": prepared[prepared[SPLIT_COLUMN] == "validation"],
    }
    tmp = cache / f"features-{rows_train}.tmp"
    for split, frame in splits.items():
        (tmp / f"split={split}").mkdir(parents=True)
        table = pa.Table.from_pandas(frame[[*names, contract.label]], preserve_index=False)
        pq.write_table(table, tmp / f"split={split}" / "part-0.parquet", row_group_size=ROW_GROUP)
    moments = split_moments(datasets.folder_files(str(tmp / "split=train")), names)
    datasets.write_manifest(
        str(tmp),
        extra={
            "dataset_version": f"bench-{rows_train}",
            "split_rows": {split: len(frame) for split, frame in splits.items()},
            "train_moments": {"features": names, **moments.to_json()},
        },
        final_uri=str(folder),
    )
    tmp.rename(folder)
    return folder


def _settings(world_size: int, epochs: int, device: str):
    from pipelines.settings import get_settings

    return get_settings(train_world_size=world_size, train_epochs=epochs, train_device=device)


def _hyperparameters(settings, model: str) -> dict:
    from pipelines.training.model_settings import ModelSettings, resolved_hyperparameters

    values = resolved_hyperparameters(settings, ModelSettings(), "torch")
    return values | MODELS[model] | {"early_stopping": None}


def child_fit(
    folder: str, model: str, world_size: int, epochs: int, device: str, workdir: str, threads: str = "auto"
) -> dict:
    """Inside a fresh process: the stage's fit (``train_torch``) for a fixed number of epochs; ``threads``, when
    not ``auto``, overrides the in-process rank's threads (the one-thread rank efficiency is measured against)."""
    from pipelines.data import datasets
    from pipelines.data.contract import load_contract
    from pipelines.training import job as jobs
    from pipelines.training import train as training
    from pipelines.training.train import (
        TRAINING_CODE_VERSION,
        FitInputs,
        TrainingPlan,
        torch_runtime,
        train_torch,
    )

    if threads != "auto":
        training._threads_per_rank = lambda *args: int(threads)  # type: ignore[assignment]

    settings = _settings(world_size, epochs, device)
    manifest = datasets.read_manifest(folder)
    contract = load_contract(ROOT / "include" / "contracts" / "transactions.yaml")
    hyperparameters = _hyperparameters(settings, model)
    plan = TrainingPlan(
        family="torch",
        dataset_version=manifest.extra["dataset_version"],
        hyperparameters=hyperparameters,
        runtime=torch_runtime(
            settings, manifest.extra["split_rows"]["train"], hyperparameters=hyperparameters
        ),
        seed=settings.seed,
        code_version=TRAINING_CODE_VERSION,
        libraries={},
    )
    job_uri = str(Path(workdir) / f"job-{time.time_ns()}")
    inputs = FitInputs(settings, folder, manifest, contract, job_uri)
    out = Path(workdir) / f"out-{time.time_ns()}"
    out.mkdir()
    started = time.perf_counter()
    train_torch(inputs, plan, out)
    wall = time.perf_counter() - started
    history = jobs.read_history(job_uri)
    assert history is not None
    ranks = jobs.read_statuses(job_uri)
    job = jobs.Job.read(job_uri)
    return {
        "threads": job.threads_per_rank or max(1, len(os.sched_getaffinity(0)) // world_size),
        "wall": wall,
        "loop": history.fit_seconds,
        "samples": history.samples,
        "val_loss": history.val_loss,
        "epoch_seconds": history.epoch_seconds,
        "ranks": [
            {
                "data_mb": r["peak_rss_mb"] - r["base_rss_mb"],
                "part_mb": r["part_mb"],
                "device_mb": r.get("peak_device_mb"),
            }
            for r in ranks.values()
        ],
        "world_size": plan.runtime["world_size"],
    }


def plain_step(model: Any, optimiser: Any, x: Any, y: Any, device: str, bf16: bool) -> Any:
    """One training step as a user would write it (bfloat16 autocast where the stage would use it); the loss."""
    import torch

    optimiser.zero_grad(set_to_none=True)
    with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
        logits = model(x)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), y)
    loss.backward()
    optimiser.step()
    return loss


def child_plain(folder: str, model: str, epochs: int, device: str) -> dict:
    """Inside a fresh process: plain single-process torch, torch's threads on every core, the whole split."""
    import numpy as np
    import pandas as pd
    import psutil
    import torch

    from pipelines.data import datasets
    from pipelines.data.contract import load_contract
    from pipelines.model.mlp import ChurnMLP
    from pipelines.training.train import resolve_compute_dtype

    settings = _settings(1, epochs, device)
    config = _hyperparameters(settings, model)
    bf16 = resolve_compute_dtype(config["precision"], device) == "bfloat16"  # as the stage would
    manifest = datasets.read_manifest(folder)
    moments = manifest.extra["train_moments"]
    names = moments["features"]
    label = load_contract(ROOT / "include" / "contracts" / "transactions.yaml").label
    cores = len(os.sched_getaffinity(0))
    torch.set_num_threads(cores)
    torch.manual_seed(settings.seed)
    from pipelines.training.ddp_worker import peak_rss_mb, reset_peak_rss

    reset_peak_rss()  # this process was forked from the one that built the data: not its high-water mark
    base = psutil.Process().memory_info().rss / 2**20
    train = pd.read_parquet(Path(folder) / "split=train")
    validation = pd.read_parquet(Path(folder) / "split=validation")
    # Row-major, as torch.tensor(frame.values) would give: pandas hands out a column-major array, whose rows a
    # batch would gather from as many places as there are features.
    x = torch.from_numpy(np.ascontiguousarray(train[names].to_numpy("float32"))).to(device)
    y = torch.from_numpy(train[label].to_numpy("float32")).to(device)
    x_val = torch.from_numpy(np.ascontiguousarray(validation[names].to_numpy("float32"))).to(device)
    y_val = torch.from_numpy(validation[label].to_numpy("float32")).to(device)
    del train, validation
    model_ = ChurnMLP(len(names), tuple(config["hidden_sizes"]), config["dropout"])
    model_.set_scaling(np.asarray(moments["mean"]), np.asarray(moments["std"]))
    model_ = model_.to(device)
    optimiser = torch.optim.AdamW(
        model_.parameters(), lr=config["learning_rate"], weight_decay=config["weight_decay"]
    )
    batch, losses, times, samples = config["batch_size"], [], [], 0
    started = time.perf_counter()
    for _ in range(epochs):
        model_.train()
        order = torch.randperm(len(x), device=device)
        for start in range(0, len(order), batch):
            rows = order[start : start + batch]
            plain_step(model_, optimiser, x[rows], y[rows], device, bf16)
            samples += len(rows)
        model_.eval()
        with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            logits = model_(x_val)
        losses.append(float(torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), y_val)))
        times.append(time.perf_counter() - started)
    loop = time.perf_counter() - started
    peak = peak_rss_mb(base)
    part_mb = (x.numel() + y.numel() + x_val.numel() + y_val.numel()) * 4 / 2**20
    return {
        "wall": loop,
        "loop": loop,
        "samples": samples,
        "val_loss": losses,
        "epoch_seconds": times,
        "ranks": [
            {
                "data_mb": peak - base,
                "part_mb": part_mb,
                "device_mb": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
            }
        ],
        "world_size": 1,
        "threads": cores,
        "plain": True,
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


def run_child(*args: str) -> dict:
    return run_children(1, *args)[0]


def run_children(count: int, *args: str) -> list[dict]:
    """``count`` copies of one child, started together; their results."""
    command = [sys.executable, __file__, "--child", *args]
    children = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        for _ in range(count)
    ]
    results = []
    for child in children:
        stdout, stderr = child.communicate()
        if child.returncode != 0:
            for other in children:  # none left running to skew the next measurement
                other.kill()
            raise SystemExit(f"child {args} failed (exit {child.returncode}):\n{stderr[-3000:]}")
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return results


def at_once(results: list[dict]) -> dict:
    """Independent runs started together as one: every run's samples over the longest loop (no credit for a
    run that finished early and left the cores to the others)."""
    first = results[0]
    return first | {
        "samples": sum(r["samples"] for r in results),
        "loop": max(r["loop"] for r in results),
        "wall": max(r["wall"] for r in results),
        "ranks": [rank for r in results for rank in r["ranks"]],
        "world_size": len(results),
        "at_once": True,
    }


def _to_target(result: dict, target: float) -> float | None:
    for loss, seconds in zip(result["val_loss"], result["epoch_seconds"], strict=True):
        if loss <= target:
            return seconds
    return None


def _fits(
    folder: str,
    model: str,
    ranks: list[int],
    epochs: int,
    device: str,
    workdir: Path,
    ceiling: bool,
    rank_threads: str,
    show: Callable[[str, dict[str, dict]], None],
) -> dict[str, dict]:
    """Plain torch, the in-process rank (its own threads), one rank on one thread when that differs (the unit
    of the scaling efficiency), torchrun with each number of ranks (each rank on ``rank_threads`` threads, by
    default its node's cores over its ranks, as the stage gives them) and, with ``ceiling``, as many one-thread
    in-process fits started together, with nothing between them: the efficiency the host itself allows.

    ``show(name, results)`` is called as soon as a run's figures can be printed (the in-process rank's once its
    efficiency's unit is known), so a bench stopped by a time limit keeps what it measured."""

    def fit_args(world_size: int, threads: str = "auto") -> tuple[str, ...]:
        return ("fit", folder, model, str(world_size), str(epochs), device, str(workdir), threads)

    def fit(world_size: int, threads: str = "auto") -> dict:
        return run_child(*fit_args(world_size, threads))

    results = {"plain torch": run_child("plain", folder, model, str(epochs), device)}
    show("plain torch", results)
    results["in-process"] = fit(1)
    if (
        results["in-process"]["threads"] != 1 and device != "cuda"
    ):  # a GPU rank's unit is the GPU, not a thread
        results["one thread"] = fit(1, "1")
    show("in-process", results)
    if "one thread" in results:
        show("one thread", results)
    for world_size in ranks:
        results[f"torchrun x{world_size}"] = fit(world_size, rank_threads)
        show(f"torchrun x{world_size}", results)
        if ceiling:
            results[f"{world_size} at once"] = at_once(run_children(world_size, *fit_args(1, "1")))
            show(f"{world_size} at once", results)
    return results


def _rate(result: dict) -> float:
    return result["samples"] / result["loop"]


def _auto_line(
    model: str, size: int, folder: str, results: dict, ranks: list[int], device: str
) -> str | None:
    from pipelines.data import datasets
    from pipelines.settings import get_settings
    from pipelines.training.train import mlp_parameters, resolve_world_size

    defaults = get_settings()
    hidden = _hyperparameters(defaults, model)["hidden_sizes"]
    n_features = len(datasets.read_manifest(folder).extra["train_moments"]["features"])
    auto = resolve_world_size(
        "auto",
        defaults.train_processes_from_rows,
        size,
        device,
        mlp_parameters(n_features, hidden),
        defaults.train_processes_from_parameters,
    )
    auto_name = "in-process" if auto == 1 else f"torchrun x{auto}"
    if auto_name not in results:
        return None
    plain = _rate(results["plain torch"])
    line = (
        f"{model} {size:,} rows: auto picks {auto_name}, {_rate(results[auto_name]) / plain:.2f}x plain torch's "
        "samples/s (goal >= 0.90)"
    )
    one = _rate(results.get("one thread", results["in-process"]))
    if ranks and f"torchrun x{ranks[0]}" in results:
        line += f"; efficiency at {ranks[0]} ranks {_rate(results[f'torchrun x{ranks[0]}']) / (ranks[0] * one):.2f}"
        if (alone := results.get(f"{ranks[0]} at once")) is not None:
            line += (
                f" ({ranks[0]} independent one-thread fits at once: {_rate(alone) / (ranks[0] * one):.2f})"
            )
    return line


def _memory_slopes(by_size: dict[int, dict[str, dict]]) -> dict[str, tuple[float, float]]:
    """Per run kind, what one more MB of a rank's part costs it (its largest rank's memory between the two
    largest sizes, where the fixed buffers are full: a validation slice, a Parquet row group), and the fixed rest."""
    if len(by_size) < 2:
        return {}
    low, high = sorted(by_size)[-2:]
    slopes = {}
    for name in [n for n in by_size[high] if n in by_size[low]]:
        a = max(by_size[low][name]["ranks"], key=lambda r: r["part_mb"])
        b = max(by_size[high][name]["ranks"], key=lambda r: r["part_mb"])
        slope = (b["data_mb"] - a["data_mb"]) / (b["part_mb"] - a["part_mb"])
        slopes[name] = (slope, b["data_mb"] - slope * b["part_mb"])
    return slopes


def bench_fits(
    models: list[str],
    rows: dict[str, list[int]],
    ranks: list[int],
    epochs: int,
    device: str,
    workdir: Path,
    ceiling: bool = False,
    rank_threads: str = "auto",
) -> list[str]:
    print(
        f"# the fit: {epochs} epochs, no early stopping, a fresh process per run; MB/rank: peak resident over "
        "resident before reading (the largest rank's); efficiency: against one rank on one thread"
    )
    header = (
        f"{'model':<6}{'train rows':>11}  {'launcher':<20}{'samples/s':>11}{'loop s':>8}{'fixed s':>8}"
        f"{'best loss':>10}{'MB/rank':>8}{'part MB':>8}{'efficiency':>11}"
        + (f"{'GPU MB':>8}" if device == "cuda" else "")
    )
    print(header)
    summary, slopes = [], []
    for model in models:
        by_size = {}
        for size in rows[model]:
            folder = str(dataset(size, workdir))

            def show(name: str, results: dict[str, dict], model: str = model, size: int = size) -> None:
                result, rate = results[name], _rate(results[name])
                one = (
                    _rate(results.get("one thread", results["in-process"])) if "in-process" in results else 0
                )
                efficiency = f"{rate / (result['world_size'] * one):>11.2f}" if one else f"{'':>11}"
                worst = max(result["ranks"], key=lambda rank: rank["part_mb"])
                if result.get("at_once"):
                    label = f"{name}, 1 thr"
                elif name == "one thread":
                    label = "in-process (1 thr)"
                else:
                    label = f"{name} ({result['threads']} thr)"
                gpu = f"{worst['device_mb'] or 0:>8.0f}" if device == "cuda" else ""
                print(
                    f"{model:<6}{size:>11,}  {label:<20}{rate:>11,.0f}{result['loop']:>8.1f}"
                    f"{result['wall'] - result['loop']:>8.1f}{min(result['val_loss']):>10.4f}"
                    f"{worst['data_mb']:>8.0f}{worst['part_mb']:>8.0f}{efficiency}{gpu}",
                    flush=True,
                )

            results = by_size[size] = _fits(
                folder, model, ranks, epochs, device, workdir, ceiling, rank_threads, show
            )
            target = max(min(r["val_loss"]) for r in results.values()) * TARGET_SLACK
            reached = {name: _to_target(result, target) for name, result in results.items()}
            print(
                f"# {model} {size:,} rows, seconds to a validation loss of {target:.4f} (the worst best loss + "
                f"{(TARGET_SLACK - 1) * 100:.1f}%): "
                + ", ".join(f"{name} {'-' if t is None else f'{t:.1f}'}" for name, t in reached.items())
            )
            if line := _auto_line(model, size, folder, results, ranks, device):
                summary.append(line)
                print(f"# {line}")
        low, high = sorted(by_size)[-2:] if len(by_size) > 1 else (0, 0)
        for name, (slope, fixed) in _memory_slopes(by_size).items():
            goal = name != "plain torch" and "at once" not in name
            print(
                f"# memory: {model} {name}: {slope:.2f} MB a MB of part, {fixed:.0f} MB fixed ({low:,} to "
                f"{high:,} rows)" + (" (goal <= 1.5)" if goal else "")
            )
            if goal:
                slopes.append(slope)
    if slopes:
        summary.append(
            f"a rank's memory grows by at most {max(slopes):.2f} MB a MB of its part (goal <= 1.5)"
        )
    return summary


CROSSOVER_HIDDEN = [(64, 32), (128, 64), (256, 128), (256, 256), (512, 256), (512, 512, 256)]


def _step_rate(hidden: tuple[int, ...], batch: int, device: str, seconds: float = 2.0) -> float:
    """Samples per second of plain torch's training step (the demo's features, AdamW, bfloat16 autocast on a GPU
    that has it, as the stage's ``precision: auto``), data already on the device."""
    import torch

    from pipelines.model.mlp import ChurnMLP
    from pipelines.training.train import resolve_compute_dtype

    torch.manual_seed(0)
    bf16 = resolve_compute_dtype("auto", device) == "bfloat16"
    model = ChurnMLP(16, hidden, 0.1).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3)
    x, y = torch.randn(batch * 64, 16, device=device), (torch.rand(batch * 64, device=device) > 0.5).float()

    def step(i: int) -> None:
        rows = slice((i % 64) * batch, (i % 64 + 1) * batch)
        plain_step(model, optimiser, x[rows], y[rows], device, bf16).item()  # the stage reads it once a step

    for i in range(10):
        step(i)
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        step(steps)
        steps += 1
    return steps * batch / (time.perf_counter() - started)


def bench_crossover(device: str) -> list[str]:
    """Plain torch's step on one CPU thread against the GPU's, per MLP and batch: where ``CT_TRAIN_DEVICE=auto``
    should start to pick the GPU (``CT_TRAIN_GPU_FROM_STEP_WORK``, in parameters times rows a step)."""
    import torch

    from pipelines.training.train import mlp_parameters

    torch.set_num_threads(1)
    devices = ["cpu", "cuda"] if device == "cuda" else ["cpu"]
    print("# a training step's samples/s, plain torch, data on the device; the CPU on one thread")
    print(
        f"{'hidden':<16}{'parameters':>11}{'batch':>7}{'param-rows':>13}"
        + "".join(f"{d:>12}" for d in devices)
    )
    gpu_wins = []
    for hidden in CROSSOVER_HIDDEN:
        for batch in (256, 1024):
            rates = [_step_rate(hidden, batch, d) for d in devices]
            work = mlp_parameters(16, hidden) * batch
            print(
                f"{str(hidden):<16}{mlp_parameters(16, hidden):>11,}{batch:>7}{work:>13,}"
                + "".join(f"{r:>12,.0f}" for r in rates),
                flush=True,
            )
            if len(rates) == 2 and rates[1] > rates[0]:
                gpu_wins.append(work)
    if device != "cuda":
        return []
    return [
        f"the GPU's step is faster than one CPU thread's from {min(gpu_wins):,} parameter-rows"
        if gpu_wins
        else "one CPU thread's step was faster than the GPU's for every MLP here"
    ]


def bench_stage(ranks: list[int], workdir: Path) -> dict[int, dict]:
    from pipelines.data.generate import generate
    from pipelines.data.prepare import prepare
    from pipelines.data.validate import validate
    from pipelines.settings import get_settings

    state_dir = workdir / "stage"
    settings = get_settings(state_dir=state_dir)
    generate(settings, DAY, "none")
    validate(settings, DAY)
    prepared = prepare(settings, DAY, "dask")
    print(
        f"# the train stage on the demo day ({prepared['split_rows']['train']:,} training rows), MLflow on SQLite"
    )
    print(f"{'launcher':<13}{'cold s':>9}{'warm s':>9}{'val AUC':>9}")
    stage = {}
    for world_size in [1, *ranks]:
        result = run_child("stage", str(state_dir), prepared["uri"], str(world_size))
        stage[world_size] = result
        name = "in-process" if world_size == 1 else f"torchrun x{world_size}"
        print(f"{name:<13}{result['cold']:>9.2f}{result['warm']:>9.2f}{result['val_auc']:>9.4f}", flush=True)
    return stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    parser.add_argument("--rows", type=int, nargs="+", help="training rows (default: per model)")
    parser.add_argument(
        "--ranks",
        type=int,
        nargs="*",
        default=[2],
        help="world sizes besides 1 (none: plain torch and one rank)",
    )
    parser.add_argument(
        "--rank-threads",
        default="auto",
        help="threads of each launched rank (default: its node's cores over its ranks, as the stage gives them); "
        "with 1 on a host of many cores, the efficiency is that of ranks alone",
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-stage", action="store_true", help="time the fits only")
    parser.add_argument("--skip-fit", action="store_true", help="time the stage on the demo day only")
    parser.add_argument(
        "--crossover",
        action="store_true",
        help="also time a step of MLPs of several sizes on one CPU thread and on the GPU (CT_TRAIN_GPU_FROM_STEP_WORK)",
    )
    parser.add_argument(
        "--ceiling",
        action="store_true",
        help="also run N one-thread fits at once, independent: the efficiency the host allows",
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "fit":
            print(
                json.dumps(child_fit(rest[0], rest[1], int(rest[2]), int(rest[3]), rest[4], rest[5], rest[6]))
            )
        elif kind == "plain":
            print(json.dumps(child_plain(rest[0], rest[1], int(rest[2]), rest[3])))
        else:
            print(json.dumps(child_stage(rest[0], rest[1], int(rest[2]))))
        return

    import psutil
    import torch

    memory = psutil.virtual_memory().total / 2**30
    print(
        f"# train benchmark, {dt.date.today()}, {os.cpu_count()} cores, {memory:.0f} GiB, torch "
        f"{torch.__version__}, {args.device}"
        + (f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else "")
        + f"; load average {os.getloadavg()[0]:.1f} at the start"
    )
    rows = {model: args.rows or DEFAULT_ROWS[model] for model in args.models}
    with tempfile.TemporaryDirectory(prefix="ct-bench-train-") as tmp:
        workdir = Path(tmp)
        summary = (
            []
            if args.skip_fit
            else bench_fits(
                args.models,
                rows,
                args.ranks,
                args.epochs,
                args.device,
                workdir,
                args.ceiling,
                args.rank_threads,
            )
        )
        stage = {} if args.skip_stage else bench_stage(args.ranks, workdir)
        if args.crossover:
            summary += bench_crossover(args.device)
    if stage:
        summary.append(
            "demo-day stage "
            + ", ".join(
                f"{'in-process' if w == 1 else f'torchrun x{w}'} {r['cold']:.1f}s cold / {r['warm']:.1f}s warm"
                for w, r in stage.items()
            )
            + " (goal: <= 3 s)"
        )
    print("SUMMARY " + "; ".join(summary))
    print(f"# load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
