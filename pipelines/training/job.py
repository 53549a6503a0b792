"""A training job's folder on the data root: what every rank reads, where each reports, what it leaves.

One folder per run key (``<data_root>/training/<dataset>/<run key>``), so a restarted rank, a retried Airflow
task or a rank on another host finds the same job:

    job.json                    the job: splits, features, scaling, the model's config, checkpoint settings
    nodes/<host>-<pid>.json     each host that started ranks for it (the task, a node agent, the Spark driver)
    status/rank-<r>.json        each rank's last report: host, pid, restart, state, epoch, step, memory, error
    fatal.json                  a failure no restart can cure (a non-finite loss, a split changed since the job was
                                made): restarted ranks stop at once
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
    threads_per_rank: int | None = None  # None: the node's cores over its ranks
    validation_rows: int | None = None  # None: a job written before jobs kept it
    # Each split's sequence of rows (:func:`pipelines.training.shards.layout`) by folder (split=train), as the job
    # was made: what every rank's read is held to (:func:`pipelines.training.shards.check`)
    layouts: dict[str, str] = field(default_factory=dict)

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


class FatalTrainingError(RuntimeError):
    """A rank's failure that no restart of the ranks cures: the first rank to meet it marks the job
    (:data:`FATAL_FILE`), restarted ranks stop at once, and the launch fails as it (:func:`fatal_error`)."""


class NonFiniteLossError(FatalTrainingError):
    """The training loss became NaN or infinite: no restart cures it, and no model may be logged."""


class SplitChangedError(FatalTrainingError):
    """A rank read a split other than the one its job was made from: the dataset was prepared again since. The
    job is the attempt's, so no restart of its ranks cures it; the task's retry makes the job afresh."""


FATAL_KINDS: dict[str, type[FatalTrainingError]] = {
    kind.__name__: kind for kind in (NonFiniteLossError, SplitChangedError)
}


def read_history(job_uri: str) -> TrainingHistory | None:
    """The finished training's history, or None while no rank 0 has committed a result."""
    uri = storage.join(job_uri, RESULT_HISTORY)
    return TrainingHistory(**storage.read_json(uri)) if storage.exists(uri) else None


def write_history(job_uri: str, history: TrainingHistory) -> None:
    storage.write_json_atomic(storage.join(job_uri, RESULT_HISTORY), asdict(history))


def _launched_by() -> str:
    """What started this rank, from the environment its launcher sets."""
    if "PYSPARK_TORCH_DISTRIBUTOR_RDZV_ID" in os.environ:
        return "spark TorchDistributor"
    if "TORCHELASTIC_RUN_ID" in os.environ:
        return "torchrun"
    return "in-process"


class Reporter:
    """One rank's status file: rewritten (atomically) whenever the rank's state or position changes."""

    def __init__(self, job_uri: str, rank: int, restart: int = 0):
        self.uri = storage.join(job_uri, "status", f"rank-{rank}.json")
        self.fields: dict[str, Any] = {
            "rank": rank,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "restart": restart,
            "launched_by": _launched_by(),
        }

    def __call__(self, state: str, **fields: Any) -> None:
        self.fields |= {"state": state, **fields}
        self.fields["updated"] = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        storage.write_json_atomic(self.uri, self.fields)


def report_node(job_uri: str, role: str) -> None:
    """A host that starts ranks for the job says so: a missing node is then named by the nodes that came."""
    host, pid = socket.gethostname(), os.getpid()
    storage.write_json_atomic(
        storage.join(job_uri, "nodes", f"{host}-{pid}.json"),
        {"host": host, "pid": pid, "role": role, "started": dt.datetime.now(dt.UTC).isoformat()},
    )


def _read_folder(uri: str) -> list[dict[str, Any]]:
    from fsspec.core import url_to_fs

    fs, path = url_to_fs(uri)
    if not fs.exists(path):
        return []
    found = []
    for name in sorted(fs.ls(path, detail=False)):
        if name.endswith(".json"):
            with fs.open(name, "r") as fh:
                found.append(json.load(fh))
    return found


def read_statuses(job_uri: str) -> dict[int, dict[str, Any]]:
    return {int(status["rank"]): status for status in _read_folder(storage.join(job_uri, "status"))}


def describe_ranks(
    job_uri: str, world_size: int, now: dt.datetime | None = None, expected_nodes: int | None = None
) -> str:
    """One line per rank: host, state, position and how long ago it last reported; ranks never heard of too."""
    now = now or dt.datetime.now(dt.UTC)
    statuses = read_statuses(job_uri)
    nodes = _read_folder(storage.join(job_uri, "nodes"))
    lines = [
        "nodes that started ranks: "
        + (", ".join(f"{n['host']} (pid {n['pid']}, {n['role']})" for n in nodes) or "none reported")
    ]
    if expected_nodes is not None and len(nodes) < expected_nodes:
        lines.append(
            f"{expected_nodes - len(nodes)} of {expected_nodes} node(s) never joined: is every host's "
            "python -m pipelines.training.node running, and can it reach the rendezvous endpoint?"
        )
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


def write_fatal(job_uri: str, rank: int, error: FatalTrainingError) -> None:
    storage.write_json_atomic(
        storage.join(job_uri, FATAL_FILE), {"rank": rank, "error": str(error), "kind": type(error).__name__}
    )


def read_fatal(job_uri: str) -> dict[str, Any] | None:
    uri = storage.join(job_uri, FATAL_FILE)
    return storage.read_json(uri) if storage.exists(uri) else None


def fatal_error(fatal: dict[str, Any], context: str = "") -> FatalTrainingError:
    """The failure a job was marked with (:func:`read_fatal`), as its own kind, naming the rank; ``context`` after."""
    # marked before kinds were kept: a non-finite loss; a kind this code does not know: still fatal
    kind = FATAL_KINDS.get(fatal.get("kind", NonFiniteLossError.__name__), FatalTrainingError)
    return kind(f"rank {fatal['rank']}: {fatal['error']}" + (f"\n{context}" if context else ""))
