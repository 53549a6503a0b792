"""How the DDP ranks of one training job are started: one setting, ``CT_TRAIN_LAUNCHER``, three ways.

* ``local``: torchrun on this host, ``world_size`` ranks, a c10d rendezvous on loopback.
* ``torchrun``: torchrun on this host as one node of several (``CT_TRAIN_NNODES``, ``N`` or ``MIN:MAX``), meeting
  at an external c10d endpoint (``CT_TRAIN_RDZV_ENDPOINT``). The task writes the launch to
  ``<data_root>/training/<dataset>/_launch.json``; on every other host ``python -m pipelines.training.node`` (a
  Kubernetes pod, a Slurm step, a systemd service) reads it and runs the same torchrun command.
* ``spark``: PySpark's ``TorchDistributor`` on ``CT_SPARK_MASTER``, one rank per executor task of a barrier
  stage, so the cluster that prepares the data also trains on it.

Every way runs the same rank code (:func:`pipelines.training.ddp_worker.run`) on the same job folder; a rank
reads its part, reports, checkpoints and commits there whatever started it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass

from pipelines.data import storage
from pipelines.host import die_with_parent
from pipelines.release.history import LockHeldError, exclusive
from pipelines.settings import Settings
from pipelines.training import job as jobs
from pipelines.training.job import Job
from pipelines.training.model_settings import TrainingConfigError

log = logging.getLogger(__name__)

# torchrun shares its rendezvous TCPStore with the ranks by default; after a restart the new group's gloo then
# reads the dead group's addresses from it and fails to connect (measured here: "connectFullMesh failed ...
# Connection refused", then a 10-minute hang; pytorch/pytorch#135712). One store per rendezvous round instead.
LAUNCH_ENVIRONMENT = {"PYTHONUNBUFFERED": "1", "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
LAUNCH_FILE = "_launch.json"
#: How long a stopped launch's output is read for before the error is raised without the rest of it.
PIPE_DRAIN_S = 10.0


class TrainingLaunchError(RuntimeError):
    """The launch failed or did not finish in time."""


@dataclass(frozen=True)
class Launch:
    """One torchrun launch, as every node runs it: written to the data root for the other hosts."""

    launch_id: str
    job_uri: str
    rdzv_endpoint: str
    nnodes: str
    nproc_per_node: int
    max_restarts: int
    join_timeout_s: float
    timeout_s: float
    started: str

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes",
            self.nnodes,
            "--nproc-per-node",
            str(self.nproc_per_node),
            "--rdzv-backend",
            "c10d",
            "--rdzv-endpoint",
            self.rdzv_endpoint,
            "--rdzv-id",
            self.launch_id,
            "--rdzv-conf",
            f"join_timeout={self.join_timeout_s:g}",
            "--max-restarts",
            str(self.max_restarts),
            "-m",
            "pipelines.training.rank",
            self.job_uri,
        ]


def launch_pointer_uri(settings: Settings) -> str:
    return storage.join(settings.resolved_data_root, "training", settings.dataset, LAUNCH_FILE)


def read_launch(settings: Settings) -> Launch | None:
    uri = launch_pointer_uri(settings)
    return Launch(**storage.read_json(uri)) if storage.exists(uri) else None


def parse_nnodes(nnodes: str) -> tuple[int, int]:
    """``N`` or ``MIN:MAX`` nodes; a ValueError naming the setting otherwise."""
    low, _, high = nnodes.partition(":")
    try:
        bounds = int(low), int(high or low)
    except ValueError:
        raise TrainingConfigError(
            f"CT_TRAIN_NNODES must be N or MIN:MAX (whole numbers), not {nnodes!r}"
        ) from None
    if not 1 <= bounds[0] <= bounds[1]:
        raise TrainingConfigError(
            f"CT_TRAIN_NNODES must be N or MIN:MAX with 1 <= MIN <= MAX, not {nnodes!r}"
        )
    return bounds


def _stop_tree(process: subprocess.Popen[str]) -> list[int]:
    """Kill the launcher and every rank it started (torchrun does not outlive a SIGKILL gracefully); the pids
    still alive 30 s after the SIGKILL (none, unless one is stuck in the kernel)."""
    import psutil

    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    for proc in [*children]:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    process.kill()
    # A kill is delivered when the process next runs: on busy cores a rank can outlive this call by moments.
    # Wait until every one has gone, so that "its ranks were stopped" is true when the error is raised.
    _, alive = psutil.wait_procs(children, timeout=30)
    if alive:  # a SIGKILLed process that stays is stuck in the kernel (a hung mount, a dead device)
        log.error(
            "ranks still alive 30 s after SIGKILL (stuck in the kernel?): %s",
            ", ".join(f"pid {proc.pid}" for proc in alive),
        )
    return [proc.pid for proc in alive]


def _drain(process: subprocess.Popen[str]) -> tuple[str, bool]:
    """The rest of a stopped launch's output, and whether its pipe closed within :data:`PIPE_DRAIN_S`. A process
    that survived the SIGKILL (stuck in the kernel) or left the tree holds the pipe open: reading to its end
    would wait as long as that process lives, so the output is what came in that time."""
    try:
        output, _ = process.communicate(timeout=PIPE_DRAIN_S)
    except subprocess.TimeoutExpired as still_open:
        partial = still_open.output
        text = partial.decode(errors="replace") if isinstance(partial, bytes) else partial or ""
        return text, False
    return output or "", True


def launch(command: list[str], timeout_s: float, describe: Callable[[], str] = lambda: "") -> str:
    """Run a launcher command and return its output; raise :class:`TrainingLaunchError` with the output's tail on
    failure or timeout, and ``describe()`` (each rank's last report) when there is one."""
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **LAUNCH_ENVIRONMENT},
        preexec_fn=die_with_parent,  # a task killed outright (SIGKILL, SIGTERM) takes torchrun with it
    ) as process:
        try:
            output, _ = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            alive = _stop_tree(process)
            output, closed = _drain(process)
            stopped = "its ranks were stopped"
            if alive:
                stopped = (
                    f"its ranks were killed, but pid(s) {', '.join(map(str, alive))} outlived the SIGKILL by 30 s "
                    "(stuck in the kernel: a hung mount or device?)"
                )
            elif not closed:
                stopped += (
                    f", but a process outside its tree (a detached child) still held its output {PIPE_DRAIN_S:.0f}s "
                    "later: the output below may end early"
                )
            raise TrainingLaunchError(
                f"DDP training did not finish within {timeout_s:.0f}s (CT_TRAIN_TIMEOUT_S); {stopped}."
                f"{_ranks(describe)}\nLast output:\n{output[-4000:]}"
            ) from None
        except BaseException:  # the task is stopped by an exception (Airflow's SIGTERM, a KeyboardInterrupt)
            _stop_tree(process)
            raise
    if process.returncode != 0:
        raise TrainingLaunchError(
            f"DDP training failed (exit {process.returncode}).{_ranks(describe)}\n"
            f"Last output:\n{output[-4000:]}"
        )
    return output


def _ranks(describe: Callable[[], str]) -> str:
    text = describe()
    return f"\nThe ranks' last reports:\n{text}" if text else ""


def _describe(job: Job, world_size: int | str, expected_nodes: int | None = None) -> Callable[[], str]:
    expected = world_size if isinstance(world_size, int) else 0
    return lambda: jobs.describe_ranks(job.uri, expected, expected_nodes=expected_nodes)


def run_local(settings: Settings, job: Job, world_size: int) -> str:
    """torchrun on this host: ``world_size`` ranks meeting on loopback."""
    plan = Launch(
        launch_id=uuid.uuid4().hex,
        job_uri=job.uri,
        # Port 0: the agent's rendezvous store binds a port the kernel picks and holds it from then on, so two
        # trainings starting on one host at once never race for a port chosen beforehand (torchrun --standalone's way)
        rdzv_endpoint="127.0.0.1:0",
        nnodes="1",
        nproc_per_node=world_size,
        max_restarts=settings.train_max_restarts,
        join_timeout_s=settings.train_rendezvous_timeout_s,
        timeout_s=settings.train_timeout_s,
        started=dt.datetime.now(dt.UTC).isoformat(),
    )
    jobs.report_node(job.uri, "task (local launcher)")
    return launch(plan.command(), settings.train_timeout_s, _describe(job, world_size))


def torchrun_launch(settings: Settings, job: Job) -> Launch:
    if not settings.train_rdzv_endpoint:
        raise TrainingConfigError(
            "CT_TRAIN_LAUNCHER=torchrun needs CT_TRAIN_RDZV_ENDPOINT (host:port of the c10d rendezvous every "
            "node reaches)"
        )
    parse_nnodes(settings.train_nnodes)
    return Launch(
        launch_id=uuid.uuid4().hex,
        job_uri=job.uri,
        rdzv_endpoint=settings.train_rdzv_endpoint,
        nnodes=settings.train_nnodes,
        nproc_per_node=settings.train_procs_per_node,
        max_restarts=settings.train_max_restarts,
        join_timeout_s=settings.train_rendezvous_timeout_s,
        timeout_s=settings.train_timeout_s,
        started=dt.datetime.now(dt.UTC).isoformat(),
    )


def run_torchrun(settings: Settings, job: Job, world_size: int | str) -> str:
    """This host as one node of several: publish the launch for the other hosts' node agents, then join it."""
    plan = torchrun_launch(settings, job)
    pointer = launch_pointer_uri(settings)
    # One launch of a dataset at a time: the other hosts' node agents join the launch the pointer names, at the
    # one rendezvous endpoint; a second training (another date's, a backfill beside it) would overwrite the
    # pointer, and the first would wait for nodes that had gone to the second.
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(exclusive(*launch_lock(settings, pointer)))
        except LockHeldError as exc:
            running = read_launch(settings)
            if running is None:
                raise
            raise LockHeldError(
                f"{exc}: launch {running.launch_id} of {running.job_uri}, started {running.started}"
            ) from None
        return _run_published(settings, plan, pointer, job, world_size)


def launch_lock(settings: Settings, pointer: str) -> tuple[Settings, str, str]:
    return (
        settings,
        f"ct-train-launch:{settings.dataset}",
        f"the torchrun launch of dataset {settings.dataset} (one at a time: the other hosts join the launch "
        f"published at {pointer}); retry when it is over",
    )


def _run_published(settings: Settings, plan: Launch, pointer: str, job: Job, world_size: int | str) -> str:
    storage.write_json_atomic(pointer, asdict(plan))
    jobs.report_node(job.uri, "task (torchrun launcher)")
    log.info(
        "launched %s: %s node(s) x %d rank(s) meeting at %s; other hosts join with python -m pipelines.training.node",
        plan.launch_id,
        plan.nnodes,
        plan.nproc_per_node,
        plan.rdzv_endpoint,
    )
    expected_nodes = parse_nnodes(plan.nnodes)[0]
    try:
        return launch(plan.command(), settings.train_timeout_s, _describe(job, world_size, expected_nodes))
    finally:  # over, one way or the other: no node agent should join it from now on
        current = read_launch(settings)
        if current is not None and current.launch_id == plan.launch_id:
            storage.remove(pointer)


class Deadline:
    """Call ``stop`` once ``seconds`` have passed, unless cancelled first. ``passed`` is set before ``stop`` is
    called: what ``stop`` stops can fail while the call is still returning (a Spark job cancelled by a py4j call
    that a busy driver answers late), and that failure is then told as the timeout it is."""

    def __init__(self, seconds: float, stop: Callable[[], object]) -> None:
        self.passed = threading.Event()
        self._stop = stop
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def _expire(self) -> None:
        self.passed.set()
        self._stop()

    def cancel(self) -> None:
        self._timer.cancel()


def run_spark(settings: Settings, job: Job, world_size: int) -> str:
    """``world_size`` ranks as the tasks of one barrier stage on the Spark cluster (``TorchDistributor``)."""
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException
    from pyspark.ml.torch.distributor import TorchDistributor

    from pipelines.engines.spark_engine import spark_session
    from pipelines.training import ddp_worker

    jobs.report_node(job.uri, "task (spark launcher, the driver)")
    with spark_session(settings, app_name=f"ct-train-{job.uri.rsplit('/', 1)[-1]}", classic=True) as spark:
        deadline = Deadline(settings.train_timeout_s, spark.sparkContext.cancelAllJobs)
        try:
            distributor = TorchDistributor(
                num_processes=world_size, local_mode=False, use_gpu=job.config["device"] == "cuda"
            )
            distributor.run(ddp_worker.run, job.uri)
        except (Py4JError, PySparkException, RuntimeError) as error:
            cause = (
                f"did not finish within {settings.train_timeout_s:.0f}s (CT_TRAIN_TIMEOUT_S); its Spark job was "
                "cancelled"
                if deadline.passed.is_set()
                else f"failed on the Spark cluster ({type(error).__name__})"
            )
            raise TrainingLaunchError(
                f"DDP training under TorchDistributor {cause}.{_ranks(_describe(job, world_size))}\n"
                f"Spark said:\n{str(error)[-4000:]}"
            ) from error
        finally:
            deadline.cancel()
    return ""


def world_size_of(settings: Settings, resolved_local: int) -> int | str:
    """The ranks a launch will have: a number, or ``MIN:MAX xP`` for an elastic torchrun launch."""
    if settings.train_launcher == "torchrun":
        low, high = parse_nnodes(settings.train_nnodes)
        per_node = settings.train_procs_per_node
        ranks = low * per_node if low == high else f"{low}:{high}x{per_node}"
        if settings.train_world_size != "auto" and settings.train_world_size != ranks:
            raise TrainingConfigError(  # it was ignored: the nodes' ranks are what torchrun starts
                f"CT_TRAIN_WORLD_SIZE={settings.train_world_size} with CT_TRAIN_LAUNCHER=torchrun, whose ranks are "
                f"CT_TRAIN_NNODES x CT_TRAIN_PROCS_PER_NODE ({settings.train_nnodes} x {per_node} = {ranks}): "
                "leave it auto, or set the nodes and ranks a node"
            )
        return ranks
    if settings.train_launcher == "spark":
        if settings.train_world_size == "auto":
            raise TrainingConfigError(
                "CT_TRAIN_LAUNCHER=spark needs CT_TRAIN_WORLD_SIZE as a number: one rank per executor task, "
                "and the barrier stage needs that many task slots free at once"
            )
        return int(settings.train_world_size)
    return resolved_local
