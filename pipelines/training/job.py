"""A training job's folder on the data root: what every rank reads, where each reports, what it leaves.

One folder per run key (``<data_root>/training/<dataset>/<run key>``), so a restarted rank, a retried Airflow
task or a rank on another host finds the same job:

    job.json                    the job: splits, features, scaling, the model's config, checkpoint settings
    nodes/<host>-<pid>.json     each host that started ranks for it (the task, a node agent, the Spark driver)
    status/rank-<r>.json        each rank's last report: host, pid, restart, state, epoch, step, memory, error
    fatal.json                  a failure no restart can cure (a non-finite loss, a split changed since the job was
                                made, a rank running other code or libraries than the driver): restarted ranks stop at once
    checkpoints/latest.json     the newest complete checkpoint (see :mod:`pipelines.training.checkpoints`)
    result/weights.pt           rank 0's trained weights, then result/training.json (written last: the commit)

No torch here: the driver reads reports and results without importing it.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import importlib.metadata
import json
import os
import re
import socket
import sys
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pipelines
from pipelines.data import storage

# The libraries a rank computes with (the model and its collectives, the seeds of its row order, the read of its
# shards): each host that trains holds the driver's versions of them
RANK_LIBRARIES = ("torch", "numpy", "pyarrow")
# A local label naming a build of one release for a device (torch's +cpu, +cu126, +rocm6.2, +xpu): such builds of
# one version agree. Any other label (a source build's +872d972e41) is a version of its own.
_BUILD_FLAVOUR = re.compile(r"\+(cpu|cu\d+|rocm[\d.]+|xpu)$")

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
    # The code that made the job (:func:`code_identity`): every rank must run the same (:meth:`read`)
    code: dict[str, Any] = field(default_factory=lambda: code_identity())

    def write(self) -> None:
        storage.write_json_atomic(storage.join(self.uri, JOB_FILE), asdict(self))

    @classmethod
    def read(cls, uri: str) -> Job:
        """The job, read by a launched rank: :class:`CodeVersionError` where the driver that made it ran other code
        (so, as it should, for any job made by another version of the project) or other versions of
        :data:`RANK_LIBRARIES`."""
        found = storage.read_json(storage.join(uri, JOB_FILE))
        written, here = found.get("code") or {}, code_identity()
        if not here["fingerprint"] or written.get("fingerprint") != here["fingerprint"]:
            raise CodeVersionError(_code_mismatch(uri, found, written, here))
        if written.get("libraries") != here["libraries"]:
            raise CodeVersionError(_library_mismatch(uri, written, here))
        return cls(**found)

    def path(self, *parts: str) -> str:
        return storage.join(self.uri, *parts)


def _is_module(path: Path, root: Path) -> bool:
    """A module of the package: a regular ``.py`` file whose every part is an identifier (not an editor's lock
    or backup, a notebook's checkpoint, a hidden folder's file)."""
    parts = path.relative_to(root).with_suffix("").parts
    return path.is_file() and not path.is_symlink() and all(part.isidentifier() for part in parts)


@functools.cache
def code_modules() -> dict[str, str]:
    """Each module of this host's ``pipelines`` package by its path in the package: a SHA-256 of its bytes."""
    root = Path(pipelines.__file__).parent
    found = (path for path in root.rglob("*.py") if _is_module(path, root))
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(found, key=lambda p: p.relative_to(root).as_posix())
    }


def code_identity() -> dict[str, Any]:
    """Which code this is, and where it runs: what a job records of its driver, and a rank compares. The
    fingerprint is None where the package's modules cannot be read (imported from a zip, installed as .pyc)."""
    modules = code_modules()
    digest = hashlib.sha256("".join(f"{path}\0{sha}\n" for path, sha in modules.items()).encode())
    return {
        "fingerprint": digest.hexdigest() if modules else None,
        "host": socket.gethostname(),
        "package": str(Path(pipelines.__file__).parent),
        "modules": {path: sha[:16] for path, sha in modules.items()},
        "libraries": dict(library_versions()),
    }


@functools.cache
def library_versions() -> dict[str, str | None]:
    """The version of each of :data:`RANK_LIBRARIES` here: the imported module's own where it is imported (what
    runs, whatever else is installed), else its installed distribution's; None where neither names one. A build
    flavour's label is dropped: torch's ``+cpu`` and ``+cu126`` builds of one version agree (a driver without a
    GPU launches ranks on hosts with one)."""
    found: dict[str, str | None] = {}
    for name in RANK_LIBRARIES:
        version = getattr(sys.modules.get(name), "__version__", None)
        if not version:
            try:
                version = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                version = None
        found[name] = release(str(version)) if version else None
    return found


def release(version: str) -> str:
    """A library's version without its build flavour's label: torch's ``2.13.0+cpu`` and ``2.13.0+cu126`` are
    one release, whose ranks agree and whose runs of one request are one run."""
    return _BUILD_FLAVOUR.sub("", version)


def _library_differences(written: dict[str, Any], here: dict[str, Any]) -> list[str]:
    """Each library whose version differs between the job's driver and this rank, with both versions."""
    theirs, ours = written.get("libraries") or {}, here["libraries"]
    return [
        f"{name} {theirs.get(name) or 'no version found'} (driver) against "
        f"{ours.get(name) or 'no version found'} (here)"
        for name in sorted(set(theirs) | set(ours))
        if theirs.get(name) != ours.get(name)
    ]


def _library_mismatch(uri: str, written: dict[str, Any], here: dict[str, Any]) -> str:
    return (
        f"{storage.join(uri, JOB_FILE)} was made on host {written.get('host')} with other library versions than "
        f"this rank's (host {here['host']}): {'; '.join(_library_differences(written, here))}: every host that "
        "trains must install the driver's versions (ranks of other versions can train differently, or hang in "
        "their collectives)"
    )


def _code_mismatch(uri: str, found: dict[str, Any], written: dict[str, Any], here: dict[str, Any]) -> str:
    """What differs between the job's code and this host's: both, the modules that differ, and the job's fields
    unknown or missing here."""
    if not here["fingerprint"]:
        return (
            f"this rank cannot tell which code it runs: no modules to read in its pipelines package at "
            f"{here['package']} (host {here['host']}; a zip or compiled-only install?): a rank of a launched "
            "training must run from an installed source tree, so that its code can be held to the driver's"
        )
    driver = (
        f"code {written['fingerprint'][:12]} (host {written.get('host')}, {written.get('package')})"
        if written.get("fingerprint")
        else "a version of the project older than code fingerprints, or whose modules could not be read"
    )
    message = (
        f"{storage.join(uri, JOB_FILE)} was made by {driver}; this rank runs code {here['fingerprint'][:12]} "
        f"(host {here['host']}, {here['package']}): every host that trains must run the same version of the "
        "project (install the driver's version here, then run the task again)"
    )
    theirs, ours = written.get("modules") or {}, here["modules"]
    if theirs:
        differ = [
            path
            + (" (only the driver's)" if path not in ours else " (only here)" if path not in theirs else "")
            for path in sorted(set(theirs) | set(ours))
            if theirs.get(path) != ours.get(path)
        ]
        more = ", ..." if len(differ) > 5 else ""
        message += f"; modules that differ ({len(differ)}): {', '.join(differ[:5])}{more}"
    if written.get("libraries") and (libraries := _library_differences(written, here)):
        message += f"; libraries that differ: {'; '.join(libraries)}"
    names = {f.name for f in fields(Job)}
    needed = {f.name for f in fields(Job) if f.default is MISSING and f.default_factory is MISSING}
    if unknown := sorted(set(found) - names):
        message += f"; the job's fields unknown here: {unknown}"
    if missing := sorted(needed - set(found)):
        message += f"; fields this code needs that the job lacks: {missing}"
    return message


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


class CodeVersionError(FatalTrainingError):
    """A rank runs other code (or other versions of :data:`RANK_LIBRARIES`) than the driver that made its job:
    another host, or an install changed since. A restart of the rank runs the same code, so it is fatal; every
    host needs the driver's version."""


FATAL_KINDS: dict[str, type[FatalTrainingError]] = {
    kind.__name__: kind for kind in (NonFiniteLossError, SplitChangedError, CodeVersionError)
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
