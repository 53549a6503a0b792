"""A training job's folder on the data root: what every rank reads, where each reports, what it leaves.

One folder per run key (``<data_root>/training/<dataset>/<run key>``), so a restarted rank, a retried Airflow
task or a rank on another host finds the same job:

    job.json                    the job: splits, features, scaling, the model's config, checkpoint settings
    status/rank-<r>.json        each rank's last report: host, pid, restart, state, epoch, step, error
    fatal.json                  a failure no restart can cure (a non-finite loss): restarted ranks stop at once
    checkpoints/latest.json     the newest complete checkpoint (see :mod:`pipelines.training.checkpoints`)
    result/weights.pt           rank 0's trained weights, then result/training.json (written last: the commit)

No torch here: the driver reads reports and results without importing it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
from dataclasses import asdict, dataclass, field
from typing import Any

from pipelines.data import storage

JOB_FILE = "job.json"
FATAL_FILE = "fatal.json"
RESULT_WEIGHTS = "result/weights.pt"
RESULT_HISTORY = "result/training.json"


@dataclass(frozen=True)
class Job:
    """Everything a rank needs to train, written once by the driver."""

    uri: str
    train_uri: str
    validation_uri: str
    train_rows: int
    features: list[str]
    label: str
    mean: list[float]  # the training split's feature scaling, from the prepare stage
    std: list[float]
    config: dict[str, Any]  # hyperparameters, runtime (device, world size, backend), seed, n_features
    checkpoint_every_steps: int | None  # None: a checkpoint at the end of every epoch only
    collective_timeout_s: float  # joining the group, and any one collective

    def write(self) -> None:
        storage.write_json_atomic(storage.join(self.uri, JOB_FILE), asdict(self))

    @classmethod
    def read(cls, uri: str) -> Job:
        return cls(**storage.read_json(storage.join(uri, JOB_FILE)))

    def path(self, *parts: str) -> str:
        return storage.join(self.uri, *parts)


@dataclass(frozen=True)
class TrainingHistory:
    """What the loop did: the loss of every epoch run, which epoch's weights were kept, and every resume."""

    train_loss: list[float]
    val_loss: list[float]
    best_epoch: int  # 1-based
    best_val_loss: float
    epochs_run: int
    restored_best: bool
    resumed_from: list[dict[str, int]] = field(default_factory=list)  # epoch, step, restart of each resume
    samples: int = 0  # rows trained on, over every rank and epoch (a part's padding included)
    fit_seconds: float = 0.0  # rank 0's time in the loop (resumed attempts added), not starting or reading
    epoch_seconds: list[float] = field(default_factory=list)  # fit_seconds at the end of each epoch


def read_history(job_uri: str) -> TrainingHistory | None:
    """The finished training's history, or None while no rank 0 has committed a result."""
    uri = storage.join(job_uri, RESULT_HISTORY)
    return TrainingHistory(**storage.read_json(uri)) if storage.exists(uri) else None


def write_history(job_uri: str, history: TrainingHistory) -> None:
    storage.write_json_atomic(storage.join(job_uri, RESULT_HISTORY), asdict(history))


class Reporter:
    """One rank's status file: rewritten (atomically) whenever the rank's state or position changes."""

    def __init__(self, job_uri: str, rank: int, restart: int = 0):
        self.uri = storage.join(job_uri, "status", f"rank-{rank}.json")
        self.fields: dict[str, Any] = {
            "rank": rank,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "restart": restart,
        }

    def __call__(self, state: str, **fields: Any) -> None:
        self.fields |= {"state": state, **fields}
        self.fields["updated"] = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        storage.write_json_atomic(self.uri, self.fields)


def read_statuses(job_uri: str) -> dict[int, dict[str, Any]]:
    from fsspec.core import url_to_fs

    fs, path = url_to_fs(storage.join(job_uri, "status"))
    if not fs.exists(path):
        return {}
    statuses = {}
    for name in fs.ls(path, detail=False):
        base = name.rsplit("/", 1)[-1]
        if base.startswith("rank-") and base.endswith(".json"):
            with fs.open(name, "r") as fh:
                status = json.load(fh)
            statuses[int(status["rank"])] = status
    return statuses


def describe_ranks(job_uri: str, world_size: int, now: dt.datetime | None = None) -> str:
    """One line per rank: host, state, position and how long ago it last reported; ranks never heard of too."""
    now = now or dt.datetime.now(dt.UTC)
    statuses = read_statuses(job_uri)
    lines = []
    for rank in range(max(world_size, max(statuses, default=-1) + 1)):
        status = statuses.get(rank)
        if status is None:
            lines.append(f"rank {rank}: never reported (it did not start, or could not reach the data root)")
            continue
        ago = (now - dt.datetime.fromisoformat(status["updated"])).total_seconds()
        where = f"epoch {status['epoch']}, step {status['step']}" if "epoch" in status else "before epoch 1"
        line = (
            f"rank {rank} on host {status['host']} (pid {status['pid']}, restart {status['restart']}): "
            f"{status['state']} at {where}, last reported {ago:.0f}s ago"
        )
        if status.get("error"):
            line += f": {status['error']}"
        lines.append(line)
    return "\n".join(lines)


def write_fatal(job_uri: str, rank: int, error: str) -> None:
    storage.write_json_atomic(storage.join(job_uri, FATAL_FILE), {"rank": rank, "error": error})


def read_fatal(job_uri: str) -> dict[str, Any] | None:
    uri = storage.join(job_uri, FATAL_FILE)
    return storage.read_json(uri) if storage.exists(uri) else None
