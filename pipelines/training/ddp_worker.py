"""The MLP's training loop: one definition, run in-process (one rank) or by every DDP rank under a launcher.

A rank reads only its own part of the training and validation splits (:mod:`pipelines.training.shards`) and
scales the features with the training split's moments from the prepare stage. Each epoch it trains on its
rows in an order drawn from the seed, the epoch and the rank, padded to the longest part so that every rank
takes the same number of steps; then the ranks sum their training loss and validation loss in one
``all_reduce``, so every rank sees the same numbers and takes the same early-stopping decision. Rank 0 (or the
one in-process rank) commits the weights and the curves to the job folder.

Checkpoints (:mod:`pipelines.training.checkpoints`) are written at the end of every epoch, and every
``checkpoint_every_steps`` steps when the job says so; a rank that starts where a checkpoint exists resumes
from it: after a rank died and the launcher restarted the group, or when Airflow retries the task. A
non-finite training loss stops the rank within the step, with an error naming epoch and batch.

RANK, LOCAL_RANK, WORLD_SIZE and TORCHELASTIC_RESTART_COUNT come from the launcher's environment, so the
same module runs on one host or many. Usage:
``python -m torch.distributed.run --nproc-per-node N -m pipelines.training.ddp_worker JOB_URI``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from pipelines.host import die_with_parent, usable_cores
from pipelines.model.mlp import ChurnMLP
from pipelines.training import job as jobs
from pipelines.training import shards, strategies
from pipelines.training.checkpoints import Checkpoints, Position, rng_state, save_torch, set_rng_state
from pipelines.training.job import FatalTrainingError, Job, NonFiniteLossError, Reporter, TrainingHistory


def epoch_order(rows: int, per_rank: int, epoch: int, seed: int, rank: int) -> torch.Tensor:
    """This rank's row order for ``epoch``: a permutation of its ``rows`` drawn from (seed, epoch, rank),
    padded from its start to ``per_rank`` so that every rank takes the same number of steps."""
    if rows < 1:
        raise ValueError(f"rank {rank} has no training rows: the training split has fewer rows than ranks")
    generator = torch.Generator()
    generator.manual_seed(int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0]))
    # int32 (the same permutation as int64's) where it fits: 4 bytes a row of the part, not 8
    dtype = torch.int32 if per_rank < 2**31 else torch.int64
    order = torch.randperm(rows, generator=generator, dtype=dtype)
    while len(order) < per_rank:
        order = torch.cat([order, order[: per_rank - len(order)]])
    return order


class _BestWeights:
    """Tracks the lowest validation loss (by at least ``min_delta``) and a copy of that epoch's weights."""

    def __init__(self, early_stopping: dict[str, Any] | None):
        self.patience = early_stopping["patience"] if early_stopping else None
        self.min_delta = early_stopping["min_delta"] if early_stopping else 0.0
        self.restore = bool(early_stopping and early_stopping["restore_best"])
        self.loss, self.epoch = float("inf"), 0
        self.state: dict[str, torch.Tensor] | None = None

    def update(self, epoch: int, loss: float, snapshot: Callable[[], dict[str, torch.Tensor]]) -> bool:
        """Record ``epoch``'s validation loss (``snapshot()`` gives the weights to keep; every rank calls it at
        the same epochs, as a sharded model's snapshot is a collective); True when training should stop."""
        if loss < self.loss - self.min_delta:
            self.loss, self.epoch = loss, epoch
            if self.restore:
                self.state = snapshot()
            return False
        return self.patience is not None and epoch - self.epoch >= self.patience

    def to_dict(self) -> dict[str, Any]:
        return {"loss": self.loss, "epoch": self.epoch, "state": self.state}

    def load(self, saved: dict[str, Any]) -> None:
        self.loss, self.epoch, self.state = saved["loss"], saved["epoch"], saved["state"]


VALIDATION_SLICE_VALUES = 2**19  # a validation slice's widest activation: 2 MB of float32


def validation_slice_rows(widths: list[int]) -> int:
    """Rows per validation slice for an MLP whose layers have ``widths``: its widest activation stays near 2 MB
    (scoring a whole part at once would cost a 512-wide model eight times its part, and 65,536-row slices 130 MB)."""
    return max(256, VALIDATION_SLICE_VALUES // max(widths))


def _validation_sum(
    model: torch.nn.Module,
    features: torch.Tensor,
    labels: torch.Tensor,
    rows: int,
    autocast: Callable[[], Any],
    slices: int | None = None,
) -> torch.Tensor:
    """The summed loss over a part, ``rows`` at a time (``slices``: how many, the same on every rank of a
    sharded model, whose every forward is a collective)."""
    model.eval()
    total = torch.zeros((), device=labels.device, dtype=torch.float64)
    count = slices if slices is not None else math.ceil(len(labels) / rows)
    with torch.no_grad():
        for start in range(0, count * rows, rows):
            part = slice(start, start + rows)
            with autocast():
                logits = model(features[part])
            total += torch.nn.functional.binary_cross_entropy_with_logits(
                logits.float(), labels[part], reduction="sum"
            ).double()
    return total


def _from_rank0(value: Any) -> Any:
    """Rank 0's ``value``, on every rank."""
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _rank_seed(seed: int, rank: int, epoch: int | None = None) -> int:
    """A rank's seed for its own draws (dropout): rank 0's is the run's seed, as one process has it, and an epoch
    started over after the world changed takes one of the epoch's."""
    if epoch is not None:
        return int(np.random.SeedSequence([seed, epoch, *([rank] if rank else [])]).generate_state(1)[0])
    return seed if not rank else int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


class _Loop:
    """One rank's training: its model, optimiser, position and curves, saved to and restored from checkpoints."""

    def __init__(
        self, train: shards.Shard, validation: shards.Shard, job: Job, rank: int, world_size: int, device: str
    ):
        config = job.config
        self.job, self.rank, self.world_size, self.device = job, rank, world_size, device
        torch.manual_seed(config["seed"])
        self.x, self.y = torch.from_numpy(train.x).to(device), torch.from_numpy(train.y).to(device)
        self.x_val = torch.from_numpy(validation.x).to(device)
        self.y_val = torch.from_numpy(validation.y).to(device)
        model = ChurnMLP(len(job.features), tuple(config["hidden_sizes"]), config["dropout"])
        model.set_scaling(np.asarray(job.mean), np.asarray(job.std))
        self.model = model.to(device)
        # Every rank built the same weights from the seed; its dropout draws from a stream of its own. From one
        # seed on every rank, row j of each rank's batch was dropped alike: ranks regularised as one. Rank 0 keeps
        # the stream one process has.
        if rank:
            torch.manual_seed(_rank_seed(config["seed"], rank))
        self.holder = strategies.holder(config.get("strategy", "ddp"), self.model, world_size, device)
        self.trained = self.holder.trained
        self.dtype = getattr(torch, config.get("compute_dtype", "float32"))
        self.validation_rows = validation_slice_rows([len(job.features), *config["hidden_sizes"]])
        self.validation_slices: int | None = None
        if isinstance(
            self.holder, strategies.Sharded
        ):  # every rank scores as many slices as the longest part
            longest = torch.tensor([len(self.y_val)], device=device)
            dist.all_reduce(longest, op=dist.ReduceOp.MAX)
            self.validation_slices = math.ceil(int(longest) / self.validation_rows)
        self.optimiser = torch.optim.AdamW(
            self.trained.parameters(), lr=config["learning_rate"], weight_decay=config["weight_decay"]
        )
        self.batch_size = config["batch_size"]
        self.per_rank = -(-job.train_rows // world_size)
        self.steps = math.ceil(self.per_rank / self.batch_size)
        self.best = _BestWeights(config["early_stopping"])
        self.train_curve: list[float] = []
        self.val_curve: list[float] = []
        self.loss_sum, self.rows_seen = 0.0, 0  # this epoch's summed training loss and rows on this rank
        self.global_step = 0
        self.resumed_from: list[dict[str, int]] = []
        self.samples, self.seconds_before, self.started = 0, 0.0, time.perf_counter()
        self.epoch_seconds: list[float] = []
        self.checkpoints = Checkpoints(
            job.uri,
            rank,
            world_size,
            dist.barrier if world_size > 1 else None,
            _from_rank0 if world_size > 1 else None,
            train.layout,
        )

    def autocast(self) -> Any:
        """The forward's precision: bfloat16 under autocast when the job says so (the weights stay float32);
        else nothing to enter (a disabled autocast costs about 1% of a small MLP's step)."""
        if self.dtype != torch.bfloat16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.split(":")[0], dtype=torch.bfloat16)

    def restore(self, restart: int) -> Position:
        """Resume from the job's last checkpoint, if it has one; the position to start from."""
        restored = self.checkpoints.restore()
        if restored is None:
            return Position(1, 0)
        shared = restored.shared
        self.holder.restore(restored.folder, shared, self.optimiser)
        self.best.load(shared["best"])
        self.train_curve, self.val_curve = shared["train_curve"], shared["val_curve"]
        self.global_step = shared["global_step"]
        self.samples, self.seconds_before = shared["samples"], shared["fit_seconds"]
        self.epoch_seconds = shared["epoch_seconds"]
        position = restored.position
        resume = {"epoch": position.epoch, "step": position.step, "restart": restart}
        if restored.own is None:  # another world size or cut: this epoch starts over, with a seed of its own
            torch.manual_seed(_rank_seed(self.job.config["seed"], self.rank, position.epoch))
            if restored.from_world_size is not None:
                resume["from_world_size"] = int(restored.from_world_size)
            if restored.layout_changed:
                resume["split_cut_again"] = True
        else:
            set_rng_state(restored.own["rng"])
            self.loss_sum, self.rows_seen = float(restored.own["sums"][0]), int(restored.own["sums"][1])
        self.resumed_from = [*shared["resumed_from"], resume]
        return position

    def save(self, position: Position) -> None:
        self.checkpoints.save(
            position,
            shared=lambda: {
                **self.holder.shared_state(self.optimiser),
                "best": self.best.to_dict(),
                "train_curve": self.train_curve,
                "val_curve": self.val_curve,
                "global_step": self.global_step,
                "resumed_from": self.resumed_from,
                "samples": self.samples,
                "fit_seconds": self.fit_seconds,
                "epoch_seconds": self.epoch_seconds,
            },
            own={
                "rng": rng_state(),
                "sums": torch.tensor([self.loss_sum, self.rows_seen], dtype=torch.float64),
            },
            shards=lambda folder: self.holder.save_shards(folder, self.optimiser),
        )

    def step(self, epoch: int, step: int, batch: torch.Tensor) -> None:
        self.optimiser.zero_grad(set_to_none=True)
        with self.autocast():
            logits = self.trained(self.x[batch])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), self.y[batch])
        value = loss.item()  # one read a step serves the non-finite check and the epoch's sum
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"the training loss is {value} at epoch {epoch}, batch {step + 1} of {self.steps} (rank "
                f"{self.rank}): training stopped and no model is logged; lower the learning rate or look for "
                "extreme feature values"
            )
        loss.backward()
        self.optimiser.step()
        self.loss_sum += value * len(batch)
        self.rows_seen += len(batch)
        self.global_step += 1

    def end_epoch(self, epoch: int) -> bool:
        """Sum the ranks' training and validation losses, record them; True when training should stop."""
        validation = torch.stack(
            [
                # The bare module under DDP: its wrapper's forward broadcasts buffers, a collective a rank with
                # no validation rows would skip; a sharded model's forward is one anyway, in equal slices.
                _validation_sum(
                    self.trained if self.validation_slices is not None else self.model,
                    self.x_val,
                    self.y_val,
                    self.validation_rows,
                    self.autocast,
                    self.validation_slices,
                ),
                torch.tensor(float(len(self.y_val)), device=self.device, dtype=torch.float64),
            ]
        )
        sums = torch.tensor([self.loss_sum, self.rows_seen], dtype=torch.float64, device=self.device)
        totals = torch.cat([sums, validation])
        if self.world_size > 1:
            dist.all_reduce(totals)  # every rank gets the same sums, so every rank stops at the same epoch
        self.train_curve.append(float(totals[0] / totals[1]))
        self.val_curve.append(float(totals[2] / totals[3]))
        if not math.isfinite(self.val_curve[-1]):  # the same sums on every rank: every rank stops here
            raise NonFiniteLossError(
                f"the validation loss is {self.val_curve[-1]} at the end of epoch {epoch}: an update of that "
                "epoch made the weights non-finite; training stopped and no model is logged; lower the learning "
                "rate or look for extreme feature values"
            )
        self.samples += int(totals[1])
        self.epoch_seconds.append(self.fit_seconds)
        self.loss_sum, self.rows_seen = 0.0, 0
        return self.best.update(epoch, self.val_curve[-1], self.holder.full_state)

    @property
    def fit_seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.started

    def result(self) -> tuple[dict[str, torch.Tensor], TrainingHistory]:
        if self.best.state is not None:
            self.holder.load_full(self.best.state)
        history = TrainingHistory(
            train_loss=self.train_curve,
            val_loss=self.val_curve,
            best_epoch=self.best.epoch,
            best_val_loss=self.best.loss,
            epochs_run=len(self.train_curve),
            restored_best=self.best.state is not None,
            resumed_from=self.resumed_from,
            samples=self.samples,
            fit_seconds=self.fit_seconds,
            epoch_seconds=self.epoch_seconds,
        )
        return self.holder.full_state(), history


def fit(
    train: shards.Shard,
    validation: shards.Shard,
    job: Job,
    rank: int,
    world_size: int,
    device: str,
    reporter: Reporter | None = None,
    restart: int = 0,
) -> tuple[dict[str, torch.Tensor], TrainingHistory]:
    """Train the MLP on this rank's part (DDP when ``world_size`` > 1), checkpointing and resuming in the job
    folder; return its weights and history."""
    report = reporter or (lambda state, **fields: None)
    loop = _Loop(train, validation, job, rank, world_size, device)
    report("training", strategy=loop.holder.name, local_parameters=loop.holder.local_parameters())
    start = loop.restore(restart)
    every, max_epochs = job.checkpoint_every_steps, job.config["max_epochs"]
    for epoch in range(start.epoch, max_epochs + 1):
        first = start.step if epoch == start.epoch else 0
        report("training", epoch=epoch, step=first)
        loop.trained.train()
        order = epoch_order(len(loop.x), loop.per_rank, epoch, job.config["seed"], rank).to(device)
        for step in range(first, loop.steps):
            loop.step(epoch, step, order[step * loop.batch_size : (step + 1) * loop.batch_size])
            if every and loop.global_step % every == 0 and step + 1 < loop.steps:
                loop.save(Position(epoch, step + 1))
                report("training", epoch=epoch, step=step + 1)
        del order  # before the next epoch draws its own, so that two are never held at once
        if loop.end_epoch(epoch) or epoch == max_epochs:
            break
        loop.save(Position(epoch + 1, 0))
    return loop.result()


def commit(job: Job, weights: dict[str, torch.Tensor], history: TrainingHistory) -> None:
    """Rank 0's result: the weights, then the history, which marks the training finished."""
    save_torch(weights, job.path(jobs.RESULT_WEIGHTS))
    jobs.write_history(job.uri, history)


def read_parts(job: Job, rank: int, world_size: int) -> tuple[shards.Shard, shards.Shard]:
    """This rank's parts of the training and validation splits, each held to the version its job was made from."""
    train = shards.read(job.train_uri, job.features, job.label, rank, world_size)
    shards.check(train, job.train_uri, job.train_rows, job.layouts, rank)
    validation = shards.read(job.validation_uri, job.features, job.label, rank, world_size)
    shards.check(validation, job.validation_uri, job.validation_rows, job.layouts, rank)
    return train, validation


@contextmanager
def _threads(count: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


def reset_peak_rss() -> None:
    """Start the peak resident size afresh (Linux): a process forked from a big one (an Airflow worker, a
    benchmark that built the data) inherits its high-water mark, which says nothing of this rank's data."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:  # not Linux: the peak then counts from the process's start
        pass


def peak_rss_mb(floor: float = 0.0) -> float:
    """The resident size's peak since the last reset, and at least ``floor`` (a size seen since)."""
    return max(_high_water_mb(), floor)


def _high_water_mb() -> float:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:  # not Linux
        return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, _rss_mb())
    peak_kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    # The high-water mark is updated lazily: it can trail the current resident size a little.
    return max(peak_kib / 1024, _rss_mb())


def _peaks(reporter: Reporter) -> dict[str, float]:
    """The rank's peak resident memory, and its GPU's peak allocated memory when it used one."""
    peaks = {"peak_rss_mb": peak_rss_mb(reporter.fields.get("base_rss_mb", 0))}
    if torch.cuda.is_initialized():
        peaks["peak_device_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return peaks


@contextmanager
def _reported(job_uri: str, reporter: Reporter, rank: int) -> Iterator[None]:
    """Report how the rank ends; a failure no restart cures (a non-finite loss, a split changed since the job was
    made, other code than the driver's) also marks the job so that restarted ranks stop at once."""
    try:
        yield
    except FatalTrainingError as error:
        if jobs.read_fatal(job_uri) is None:  # the first rank to see it; restarted ranks repeat it
            jobs.write_fatal(job_uri, rank, error)
        reporter("failed", error=str(error), **_peaks(reporter))
        raise
    except BaseException as error:
        reporter("failed", error=f"{type(error).__name__}: {error}", **_peaks(reporter))
        raise
    reporter("done", **_peaks(reporter))


def _read_reported(
    job: Job, reporter: Reporter, rank: int, world_size: int
) -> tuple[shards.Shard, shards.Shard]:
    """Read this rank's parts, reporting the resident memory before and the parts' size (the memory goal:
    a rank's data costs its part, not the split)."""
    reset_peak_rss()
    if torch.cuda.is_initialized():  # a warm process's earlier training is not this rank's
        torch.cuda.reset_peak_memory_stats()
    reporter("reading", base_rss_mb=_rss_mb())
    train, validation = read_parts(job, rank, world_size)
    size = sum(a.nbytes for a in (train.x, train.y, validation.x, validation.y))
    reporter("reading", part_mb=size / 2**20, part_rows=len(train))
    return train, validation


def run_in_process(job: Job) -> TrainingHistory:
    """One rank, no launcher and no process group: the loop in this process, its RNG and threads restored."""
    device: str = job.config["device"]
    gpus: list[int] = []
    if device == "cuda":
        gpus = [torch.cuda.current_device()]
        device = f"cuda:{gpus[0]}"
    reporter = Reporter(job.uri, 0)
    with _reported(job.uri, reporter, 0):
        train, validation = _read_reported(job, reporter, 0, 1)
        # The job's threads: one for a small MLP, whose matrices are too small for intra-op threads to pay and
        # whose steps their spin-waits make 10-40x slower on a busy machine (measured: 1 ms a step on one
        # thread, 12-50 ms on two); every core for a big one (train._threads_per_rank).
        with torch.random.fork_rng(devices=gpus), _threads(job.threads_per_rank or 1):
            weights, history = fit(train, validation, job, 0, 1, device, reporter)
        commit(job, weights, history)
    return history


def run(job_uri: str) -> None:
    """One launched rank: join the group, train on this rank's part, and on rank 0 commit the result."""
    # torchrun's agent killed outright: this rank goes too, not on training beside a retry. Under torchrun,
    # pipelines.training.rank asked for it already, before torch was imported; TorchDistributor calls this directly.
    die_with_parent()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    reporter = Reporter(job_uri, rank, restart)
    with _reported(job_uri, reporter, rank):
        if fatal := jobs.read_fatal(job_uri):
            raise jobs.fatal_error(fatal, f"(it failed for good earlier; rank {rank} stops too)")
        # Other code than the driver's (CodeVersionError) is fatal: a restart runs the same code, so it marks the job
        job = Job.read(job_uri)
        device = "cpu"
        if job.config["device"] == "cuda":
            gpu = local_rank % torch.cuda.device_count()
            torch.cuda.set_device(gpu)
            device = f"cuda:{gpu}"
        reporter("joining")
        dist.init_process_group(job.config["backend"], timeout=dt.timedelta(seconds=job.collective_timeout_s))
        try:
            local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
            torch.set_num_threads(job.threads_per_rank or max(1, usable_cores() // local_world))
            train, validation = _read_reported(job, reporter, rank, world_size)
            weights, history = fit(train, validation, job, rank, world_size, device, reporter, restart)
            if rank == 0:
                commit(job, weights, history)
        finally:
            dist.destroy_process_group()
