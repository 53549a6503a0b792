"""The MLP's training loop: one definition, run in-process (one rank) or by every DDP rank under torchrun.

Each epoch a rank trains on its shard of a seeded permutation of the training rows (the shard
``DistributedSampler`` would give it), then scores the whole validation split; the ranks average their
training loss and validation loss in one ``all_reduce``, so every rank sees the same numbers and takes the
same early-stopping decision. Rank 0 (or the one in-process rank) writes the weights and the curves.

Under torchrun, RANK, LOCAL_RANK and WORLD_SIZE come from the environment it sets, so the same module runs
one host or many. Usage:
``python -m torch.distributed.run --nproc-per-node N -m pipelines.training.ddp_worker DATA.npz CONFIG.json OUT_DIR``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from pipelines.model.mlp import ChurnMLP
from pipelines.training.arrays import TrainingData

WEIGHTS_FILE = "weights.pt"
HISTORY_FILE = "training.json"
RENDEZVOUS_TIMEOUT_S = 120  # joining the group, and any one collective: a rank that hangs fails the launch


@dataclass(frozen=True)
class TrainingHistory:
    """What the loop did: the loss of every epoch run, and which epoch's weights were kept."""

    train_loss: list[float]
    val_loss: list[float]
    best_epoch: int  # 1-based
    best_val_loss: float
    epochs_run: int
    restored_best: bool


def shard_indices(rows: int, epoch: int, seed: int, rank: int, world_size: int) -> torch.Tensor:
    """This rank's rows for ``epoch``: ``DistributedSampler``'s shuffled, padded, strided shard."""
    generator = torch.Generator()
    generator.manual_seed(seed + epoch)
    order = torch.randperm(rows, generator=generator)
    per_rank = -(-rows // world_size)
    padding = per_rank * world_size - rows
    if padding:
        order = torch.cat([order, order[:padding]])
    return order[rank : per_rank * world_size : world_size]


class _BestWeights:
    """Tracks the lowest validation loss (by at least ``min_delta``) and a copy of that epoch's weights."""

    def __init__(self, early_stopping: dict[str, Any] | None):
        self.patience = early_stopping["patience"] if early_stopping else None
        self.min_delta = early_stopping["min_delta"] if early_stopping else 0.0
        self.restore = bool(early_stopping and early_stopping["restore_best"])
        self.loss, self.epoch = float("inf"), 0
        self.state: dict[str, torch.Tensor] | None = None

    def update(self, epoch: int, loss: float, model: torch.nn.Module) -> bool:
        """Record ``epoch``'s validation loss; True when training should stop."""
        if loss < self.loss - self.min_delta:
            self.loss, self.epoch = loss, epoch
            if self.restore:
                self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        return self.patience is not None and epoch - self.epoch >= self.patience


def _validation_loss(model: ChurnMLP, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return torch.nn.functional.binary_cross_entropy_with_logits(model(features), labels)


def fit(
    data: TrainingData, config: dict[str, Any], rank: int, world_size: int, device: str
) -> tuple[dict[str, torch.Tensor], TrainingHistory]:
    """Train the MLP on this rank's shards (DDP when ``world_size`` > 1); return its weights and history."""
    torch.manual_seed(config["seed"])
    x = torch.from_numpy(data.x_train.astype("float32")).to(device)
    y = torch.from_numpy(data.y_train.astype("float32")).to(device)
    x_val = torch.from_numpy(data.x_validation.astype("float32")).to(device)
    y_val = torch.from_numpy(data.y_validation.astype("float32")).to(device)
    model = ChurnMLP(x.shape[1], tuple(config["hidden_sizes"]), config["dropout"])
    model.set_scaling(data.x_train.mean(axis=0), data.x_train.std(axis=0))
    model = model.to(device)
    trained: torch.nn.Module = model
    if world_size > 1:
        trained = DistributedDataParallel(model, device_ids=[device] if device != "cpu" else None)
    optimiser = torch.optim.AdamW(
        trained.parameters(), lr=config["learning_rate"], weight_decay=config["weight_decay"]
    )
    batch_size = config["batch_size"]
    best = _BestWeights(config["early_stopping"])
    train_curve: list[float] = []
    val_curve: list[float] = []
    for epoch in range(1, config["max_epochs"] + 1):
        trained.train()
        indices = shard_indices(len(x), epoch, config["seed"], rank, world_size).to(device)
        loss_sum = torch.zeros((), device=device)
        for start in range(0, len(indices), batch_size):
            batch = indices[start : start + batch_size]
            optimiser.zero_grad(set_to_none=True)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(trained(x[batch]), y[batch])
            loss.backward()
            optimiser.step()
            loss_sum += loss.detach() * len(batch)
        totals = torch.stack(
            [
                loss_sum,
                torch.tensor(float(len(indices)), device=device),
                _validation_loss(model, x_val, y_val),
            ]
        )
        if world_size > 1:
            dist.all_reduce(totals)  # every rank gets the same sums, so every rank stops at the same epoch
        train_curve.append(float(totals[0] / totals[1]))
        val_curve.append(float(totals[2] / world_size))
        if best.update(epoch, val_curve[-1], model):
            break
    if best.state is not None:
        model.load_state_dict(best.state)
    history = TrainingHistory(
        train_loss=train_curve,
        val_loss=val_curve,
        best_epoch=best.epoch,
        best_val_loss=best.loss,
        epochs_run=len(train_curve),
        restored_best=best.state is not None,
    )
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}, history


def save(weights: dict[str, torch.Tensor], history: TrainingHistory, out_dir: str | Path) -> None:
    torch.save(weights, Path(out_dir) / WEIGHTS_FILE)
    (Path(out_dir) / HISTORY_FILE).write_text(json.dumps(asdict(history)))


def read_history(out_dir: str | Path) -> TrainingHistory:
    return TrainingHistory(**json.loads((Path(out_dir) / HISTORY_FILE).read_text()))


@contextmanager
def _threads(count: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_in_process(data: TrainingData, config: dict[str, Any], out_dir: str | Path) -> TrainingHistory:
    """One rank, no launcher and no process group: the loop in this process, its RNG and threads restored."""
    device: str = config["device"]
    gpus: list[int] = []
    if device == "cuda":
        gpus = [torch.cuda.current_device()]
        device = f"cuda:{gpus[0]}"
    # One thread: the MLP's matrices are too small for intra-op threads to pay, and on a busy machine their
    # spin-waits make a step 10-40x slower (measured: 1 ms a step on one thread, 12-50 ms on two).
    with torch.random.fork_rng(devices=gpus), _threads(1):
        weights, history = fit(data, config, rank=0, world_size=1, device=device)
    save(weights, history, out_dir)
    return history


def run(data_path: str, config: dict[str, Any], out_dir: str) -> None:
    """One torchrun rank: join the group, train on this rank's shards, and on rank 0 save the result."""
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    device = "cpu"
    if config["device"] == "cuda":
        gpu = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(gpu)
        device = f"cuda:{gpu}"
    dist.init_process_group(config["backend"], timeout=dt.timedelta(seconds=RENDEZVOUS_TIMEOUT_S))
    try:
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
        weights, history = fit(TrainingData.load(data_path), config, rank, world_size, device)
        if rank == 0:
            save(weights, history, out_dir)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    data, config_file, out = sys.argv[1:4]
    run(data, json.loads(Path(config_file).read_text()), out)
