"""DDP ranks under torchrun, disturbed for real: a rank SIGKILLed mid-epoch, a rank frozen (SIGSTOP), a loss that
explodes. Real torch, gloo, MLflow and the job folder on the data root; no part of the launch is simulated."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipelines.data.generate import generate
from pipelines.data.prepare import prepare
from pipelines.data.validate import validate
from pipelines.release import tracking
from pipelines.release.register import register
from pipelines.settings import get_settings
from pipelines.training.ddp_worker import NonFiniteLossError
from pipelines.training.launchers import TrainingLaunchError
from pipelines.training.train import job_uri, train
from tests.days import DAY
from tests.net import free_port

pytestmark = pytest.mark.slow

# Small batches and no early stopping: about 50 steps a rank per epoch and a fixed number of epochs, so an
# epoch lasts long enough to be disturbed in its middle and two runs of the same seed can be compared.
MODEL = "torch: {hidden_sizes: [16], dropout: 0.2, batch_size: 8, max_epochs: 10, early_stopping: null}\n"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """One prepared demo day of 1,200 rows (about 840 training rows) and a model settings file."""
    state_dir = tmp_path_factory.mktemp("ddp")
    settings = get_settings(state_dir=state_dir, rows_per_day=1200)
    generate(settings, DAY, "none")
    validate(settings, DAY)
    model_file = state_dir / "model.yaml"
    model_file.write_text(MODEL)
    return state_dir, prepare(settings, DAY, "dask")["uri"]


def _settings(state_dir: Path, **changes):
    defaults = {
        "train_world_size": 2,
        "train_device": "cpu",
        "seed": 7,
        "rows_per_day": 1200,
        "model_settings_path": state_dir / "model.yaml",
        "train_checkpoint_every_steps": 10,
    }
    return get_settings(state_dir=state_dir, **(defaults | changes))


def _when_rank_reports(
    state_dir: Path, prefix: str, rank: int, epoch: int, act, mid_epoch_checkpoint: bool = False
) -> threading.Thread:
    """Watch the job folders under ``prefix`` for ``rank``'s report of a step inside ``epoch`` (or later) and,
    with ``mid_epoch_checkpoint``, for a committed checkpoint inside such an epoch; then ``act(pid, position)``
    once: the rank is then in the middle of an epoch."""
    jobs = str(state_dir / "data" / "training" / "*" / prefix / "*")

    def read(path: str) -> dict | None:
        try:
            return json.loads(Path(path).read_text())
        except FileNotFoundError:
            return None

    def watch() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            for job in glob.glob(jobs):
                status = read(f"{job}/status/rank-{rank}.json")
                if not status or status["state"] != "training":
                    continue
                position = (status.get("epoch", 0), status.get("step", 0))
                if mid_epoch_checkpoint:
                    pointer = read(f"{job}/checkpoints/latest.json") or {}
                    position = (pointer.get("epoch", 0), pointer.get("step", 0))
                if position[0] >= epoch and position[1] > 0:
                    act(status["pid"], position)
                    return
            time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    return watcher


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_a_rank_killed_mid_epoch_is_restarted_and_the_run_resumes_from_its_checkpoint(prepared, strategy):
    """Under fsdp the checkpoint's model and optimiser are torch's distributed checkpoint, a shard per rank."""
    state_dir, uri = prepared
    model_file = state_dir / f"model-{strategy}.yaml"
    model_file.write_text(
        MODEL.replace("early_stopping: null", f"early_stopping: null, strategy: {strategy}")
    )
    settings = _settings(state_dir, model_settings_path=model_file)
    undisturbed = train(settings, DAY, uri, tracking.RunContext(f"calm-{strategy}"), "torch")

    killed: list[tuple[int, int]] = []  # the committed checkpoint's (epoch, step) when rank 1 was killed
    watcher = _when_rank_reports(
        state_dir,
        f"stormy-{strategy}",
        1,
        3,
        lambda pid, position: (os.kill(pid, signal.SIGKILL), killed.append(position)),
        mid_epoch_checkpoint=True,
    )
    disturbed = train(settings, DAY, uri, tracking.RunContext(f"stormy-{strategy}"), "torch")
    watcher.join()
    assert killed, "no checkpoint inside epoch 3 or later was seen"

    client = tracking.configure(settings)
    run = client.get_run(disturbed["run_id"])
    resumed = json.loads(run.data.tags["training.resumed_from"])
    # torchrun restarted the group once; it resumed from the checkpoint (one committed after the kill was
    # decided at the latest), not from epoch 0.
    assert [r["restart"] for r in resumed] == [1]
    assert (resumed[0]["epoch"], resumed[0]["step"]) >= killed[0]
    assert run.data.tags["training.resumed"] == "true" and run.data.metrics["resumes"] == 1
    assert run.data.metrics["stopped_epoch"] == 10
    # The same seed, undisturbed, gives the same model: the stated tolerance is 1e-6 on every metric.
    for name, value in undisturbed["val_metrics"].items():
        assert disturbed["val_metrics"][name] == pytest.approx(value, abs=1e-6), name
    calm = client.get_run(undisturbed["run_id"]).data.metrics
    assert run.data.metrics["best_val_loss"] == pytest.approx(calm["best_val_loss"], abs=1e-6)
    # Registered once; the job folder with its checkpoints is removed once the model is logged.
    registered = register(settings, DAY, disturbed["run_id"])
    assert register(settings, DAY, disturbed["run_id"])["version"] == registered["version"]
    versions = client.search_model_versions(
        f"name = '{settings.model_name}' and run_id = '{disturbed['run_id']}'"
    )
    assert len(versions) == 1
    assert not Path(job_uri(settings, disturbed["run_key"])).exists()


def test_a_frozen_rank_fails_the_launch_within_the_collective_timeout_and_is_named(prepared):
    state_dir, uri = prepared
    settings = _settings(state_dir, train_rendezvous_timeout_s=5, train_max_restarts=0, seed=8)
    frozen: list[int] = []
    watcher = _when_rank_reports(
        state_dir, "frozen", 1, 2, lambda pid, _: (os.kill(pid, signal.SIGSTOP), frozen.append(pid))
    )
    try:
        with pytest.raises(TrainingLaunchError) as failure:
            train(settings, DAY, uri, tracking.RunContext("frozen"), "torch")
    finally:
        watcher.join()
        for pid in frozen:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert frozen, "rank 1 was never seen training epoch 2"
    message = str(failure.value)
    host = os.uname().nodename
    # Rank 0 waited for rank 1 in a collective and gave up after the timeout; each rank is named with its host
    # and last position, so the frozen one stands out.
    assert f"rank 0 on host {host}" in message and f"rank 1 on host {host}" in message
    assert "training at epoch" in message.split(f"rank 1 on host {host}")[1].splitlines()[0]
    assert "failed" in message.split(f"rank 0 on host {host}")[1].splitlines()[0]


def test_an_exploding_loss_fails_on_every_rank_at_once_and_logs_no_model(prepared, tmp_path):
    state_dir, uri = prepared
    model_file = tmp_path / "model.yaml"
    model_file.write_text(MODEL.replace("dropout: 0.2", "dropout: 0.2, learning_rate: 1.0e+30"))
    settings = _settings(state_dir, model_settings_path=model_file, train_max_restarts=2)
    # NonFiniteLossError, as in one process (the CLI's exit 1 with its message), not the launch's error.
    with pytest.raises(NonFiniteLossError, match=r"(?s)training loss is (nan|inf) at epoch \d+, batch \d+"):
        train(settings, DAY, uri, tracking.RunContext("exploding"), "torch")
    client = tracking.configure(settings)
    runs = client.search_runs(
        [tracking.experiment_id(client, settings)], filter_string="tags.`ct.run_key` LIKE 'exploding/%'"
    )
    assert runs and all(r.info.status == "FAILED" for r in runs)
    assert all("ct.model_uri" not in r.data.tags for r in runs)


def _node_agent(state_dir: Path) -> subprocess.Popen:
    """``python -m pipelines.training.node --once``: a second host's node agent, on loopback."""
    env = {**os.environ, "CT_STATE_DIR": str(state_dir), "CT_ROWS_PER_DAY": "1200"}
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.training.node", "--once", "--poll-seconds", "0.2"], env=env
    )


def test_the_torchrun_launcher_trains_across_two_nodes_as_the_local_one_does_on_one(prepared):
    """Two process groups on loopback acting as two hosts: this process's torchrun (the task's node) and a node
    agent's, meeting at an external c10d endpoint. The ranks are the same as the local launcher's two, so the
    model is too (stated tolerance 1e-6 on every metric)."""
    state_dir, uri = prepared
    local = train(_settings(state_dir), DAY, uri, tracking.RunContext("one-host"), "torch")
    settings = _settings(
        state_dir,
        train_launcher="torchrun",
        train_nnodes="2",
        train_procs_per_node=1,
        train_rdzv_endpoint=f"127.0.0.1:{free_port()}",
        train_keep_checkpoints=True,
    )
    agent = _node_agent(state_dir)
    try:
        two_hosts = train(settings, DAY, uri, tracking.RunContext("two-hosts"), "torch")
        assert agent.wait(timeout=120) == 0
    finally:
        agent.kill()
    for name, value in local["val_metrics"].items():
        assert two_hosts["val_metrics"][name] == pytest.approx(value, abs=1e-6), name
    params = tracking.configure(settings).get_run(two_hosts["run_id"]).data.params
    assert params["launcher"] == "torchrun" and params["world_size"] == "2"
    job = Path(job_uri(settings, two_hosts["run_key"]))
    roles = sorted(json.loads(p.read_text())["role"] for p in (job / "nodes").iterdir())
    assert roles == ["node agent", "task (torchrun launcher)"]
    ranks = [json.loads((job / "status" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert all(r["state"] == "done" and r["launched_by"] == "torchrun" for r in ranks)


def test_a_node_that_never_joins_fails_the_launch_within_the_rendezvous_timeout_and_is_counted(prepared):
    state_dir, uri = prepared
    settings = _settings(
        state_dir,
        train_launcher="torchrun",
        train_nnodes="2",
        train_rdzv_endpoint=f"127.0.0.1:{free_port()}",
        train_rendezvous_timeout_s=5,
        train_max_restarts=0,
        seed=9,
    )
    with pytest.raises(TrainingLaunchError) as failure:
        train(settings, DAY, uri, tracking.RunContext("alone"), "torch")
    message = str(failure.value)
    host = os.uname().nodename
    assert f"nodes that started ranks: {host} (pid {os.getpid()}, task (torchrun launcher))" in message
    assert "1 of 2 node(s) never joined" in message
    assert "RendezvousTimeoutError" in message


def test_the_spark_launcher_trains_on_the_cluster_as_the_local_one_does(prepared, spark_cluster):
    """TorchDistributor on the loopback standalone cluster (two workers, one core each): one rank per executor
    task of a barrier stage. Same ranks as the local launcher's two, so the same model (tolerance 1e-6)."""
    state_dir, uri = prepared
    local = train(_settings(state_dir), DAY, uri, tracking.RunContext("local-two"), "torch")
    settings = _settings(
        state_dir, train_launcher="spark", spark_master=spark_cluster, train_keep_checkpoints=True
    )
    on_spark = train(settings, DAY, uri, tracking.RunContext("on-spark"), "torch")
    for name, value in local["val_metrics"].items():
        assert on_spark["val_metrics"][name] == pytest.approx(value, abs=1e-6), name
    run = tracking.configure(settings).get_run(on_spark["run_id"]).data
    assert run.params["launcher"] == "spark" and run.params["world_size"] == "2"
    job = Path(job_uri(settings, on_spark["run_key"]))
    ranks = [json.loads((job / "status" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert all(r["state"] == "done" and r["launched_by"] == "spark TorchDistributor" for r in ranks)
    # the run says where its ranks ran (here both executors are on this host)
    assert json.loads(run.tags["training.hosts"]) == {"0": os.uname().nodename, "1": os.uname().nodename}


def test_fsdp_shards_the_model_over_the_ranks_and_learns_what_ddp_learns(prepared):
    """The same seed on two ranks with both strategies: each fsdp rank holds about half of the parameters, and
    the logged model (the same full MLP) scores within the stated tolerance of ddp's: 1e-3 on every metric
    (the two reduce gradients in another order, so the last bits differ and grow a little over the epochs)."""
    state_dir, uri = prepared
    results, held = {}, {}
    for strategy in ("ddp", "fsdp"):
        model_file = state_dir / f"model-{strategy}.yaml"
        model_file.write_text(
            MODEL.replace("early_stopping: null", f"early_stopping: null, strategy: {strategy}")
        )
        settings = _settings(state_dir, model_settings_path=model_file, train_keep_checkpoints=True)
        results[strategy] = train(settings, DAY, uri, tracking.RunContext(f"compare-{strategy}"), "torch")
        job = Path(job_uri(settings, results[strategy]["run_key"]))
        held[strategy] = [json.loads((job / "status" / f"rank-{r}.json").read_text()) for r in (0, 1)]
        assert {r["strategy"] for r in held[strategy]} == {strategy}
    whole = held["ddp"][0]["local_parameters"]
    assert all(r["local_parameters"] == whole for r in held["ddp"])
    assert sum(r["local_parameters"] for r in held["fsdp"]) >= whole  # every parameter on some rank
    assert all(r["local_parameters"] <= whole / 2 + 64 for r in held["fsdp"])  # about half each (padding)
    for name, value in results["ddp"]["val_metrics"].items():
        assert results["fsdp"]["val_metrics"][name] == pytest.approx(value, abs=1e-3), name


def _all_reduces_a_step(rank: int, port: int, steps: int) -> int:
    """In a spawned rank: the gradient all-reduces of the last of ``steps`` steps of the DDP holder on the CPU,
    counted by a comm hook (DDP calls it once a bucket)."""
    import torch
    import torch.distributed as dist
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    from pipelines.training.strategies import holder

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        # 1.6 MB of gradients, the 512 x 512 weight alone 1 MiB: DDP's default splits them into two buckets
        model = torch.nn.Sequential(
            torch.nn.Linear(16, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512), torch.nn.ReLU(),
            torch.nn.Linear(512, 256), torch.nn.ReLU(), torch.nn.Linear(256, 1),
        )  # fmt: skip
        trained = holder("ddp", model, 2, "cpu").trained
        calls = [0]

        def counted(state, bucket):
            calls[0] += 1
            return default_hooks.allreduce_hook(state, bucket)

        trained.register_comm_hook(dist.group.WORLD, counted)
        for _ in range(steps):  # DDP rebuilds its buckets after the first step, in the order grads arrived
            calls[0] = 0
            trained(torch.randn(32, 16)).sum().backward()
        return calls[0]
    finally:
        dist.destroy_process_group()


def test_ddp_on_the_cpu_reduces_a_step_s_gradients_in_one_all_reduce():
    """On the CPU a step's gradients travel in one all-reduce: DDP's default 1 MiB first bucket, whose
    all-reduce overlaps the rest of the backward pass, took a core from that backward on a host whose cores
    all compute, and made a step pay two all-reduces (the README's figures)."""
    import concurrent.futures
    import multiprocessing

    port = free_port()
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=context) as pool:
        futures = [pool.submit(_all_reduces_a_step, rank, port, 4) for rank in (0, 1)]
        assert [f.result(timeout=300) for f in futures] == [1, 1]


def _draws_after_setup(rank: int, port: int, job_uri: str) -> tuple[list[float], list[float]]:
    """In a spawned rank: its model's first weights, and what its dropout would draw next, once its loop is set up."""
    import torch
    import torch.distributed as dist

    from pipelines.training import ddp_worker
    from pipelines.training.job import Job

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        job = Job.read(job_uri)
        train_part, validation_part = ddp_worker.read_parts(job, rank, 2)
        loop = ddp_worker._Loop(train_part, validation_part, job, rank, 2, "cpu")
        weights = next(loop.model.parameters()).detach().flatten()[:8].tolist()
        return weights, torch.rand(8).tolist()
    finally:
        dist.destroy_process_group()


def test_each_rank_drops_its_own_rows_from_weights_every_rank_shares(tmp_path):
    """Every rank seeded its draws with the run's seed alone: row j of each rank's batch got one dropout mask on
    every rank (a reviewer saw it at all 551 positions on 2 ranks), so W ranks regularised unlike one process with
    the same global batch. Rank 0 keeps the stream a single process has."""
    import concurrent.futures
    import multiprocessing

    import torch

    from tests.unit.training.test_training_loop import _job

    job = _job(tmp_path, dropout=0.5, hidden_sizes=[16])
    port = free_port()
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=context) as pool:
        futures = [pool.submit(_draws_after_setup, rank, port, job.uri) for rank in (0, 1)]
        (weights0, draws0), (weights1, draws1) = [f.result(timeout=300) for f in futures]
    assert weights0 == weights1  # one model: DDP and FSDP start every rank from the same weights
    assert draws0 != draws1
    with torch.random.fork_rng():  # rank 0's draws: a process's own, after the same seed and the same model
        from pipelines.model.mlp import ChurnMLP

        torch.manual_seed(job.config["seed"])
        ChurnMLP(len(job.features), tuple(job.config["hidden_sizes"]), job.config["dropout"])
        assert torch.rand(8).tolist() == draws0


def test_a_fit_in_one_process_reads_only_the_dataset_its_run_key_names(prepared, tmp_path):
    """scikit-learn's fit read the splits whole without holding them to the manifest the task planned from: a
    date prepared again meanwhile trained on the new rows under the old version's run key and hash."""
    import dataclasses

    from pipelines.data import datasets
    from pipelines.data.contract import dataset_contract
    from pipelines.training.job import SplitChangedError
    from pipelines.training.train import FitInputs, _read_arrays

    state_dir, uri = prepared
    settings = _settings(state_dir)
    manifest = datasets.read_manifest(uri)
    inputs = FitInputs(settings, uri, manifest, dataset_contract(settings), f"file://{tmp_path / 'job'}")
    assert len(_read_arrays(inputs).x_train) == manifest.extra["split_rows"]["train"]
    planned = dataclasses.replace(manifest, content_hash="0" * 64)  # read before prepare ran again
    with pytest.raises(SplitChangedError, match="prepared again with other rows"):
        _read_arrays(dataclasses.replace(inputs, manifest=planned))


def test_a_retry_that_reuses_the_finished_run_removes_the_job_folder_left_behind(prepared):
    """A task killed after its MLflow run ended but before it removed the job folder (checkpoints, result)
    left it for good: the retry found the run finished and returned it. Kept here by the first run's setting
    (the same identity), the folder is removed by the reuse, unless the setting keeps it."""
    state_dir, uri = prepared
    kept = _settings(state_dir, train_world_size=1, train_keep_checkpoints=True, seed=11)
    first = train(kept, DAY, uri, tracking.RunContext("reuse-removes"), "torch")
    folder = Path(job_uri(kept, first["run_key"]))
    assert (folder / "checkpoints").is_dir()
    again = train(kept, DAY, uri, tracking.RunContext("reuse-removes"), "torch")  # keeping: kept
    assert again["run_id"] == first["run_id"] and folder.is_dir()
    retry = train(
        _settings(state_dir, train_world_size=1, seed=11),
        DAY,
        uri,
        tracking.RunContext("reuse-removes"),
        "torch",
    )
    assert retry["run_id"] == first["run_id"] and not folder.exists()


def test_weights_made_non_finite_by_an_epoch_s_last_update_fail_naming_the_epoch(prepared, tmp_path):
    """The loss is checked before each update: an update that made the weights non-finite on an epoch's last
    step reached the validation metrics, which failed on NaN probabilities, naming neither the epoch nor
    the cause. One step an epoch at a learning rate of 1e30, in-process."""
    state_dir, uri = prepared
    model_file = tmp_path / "model.yaml"
    model_file.write_text(
        "torch: {hidden_sizes: [16], learning_rate: 1.0e+30, batch_size: 1024, max_epochs: 1, "
        "early_stopping: null}\n"
    )
    settings = _settings(state_dir, model_settings_path=model_file, train_world_size=1)
    with pytest.raises(
        NonFiniteLossError, match=r"validation loss is (nan|inf) at the end of epoch 1: an update"
    ):
        train(settings, DAY, uri, tracking.RunContext("non-finite-weights"), "torch")


@pytest.mark.parametrize(("first", "then"), [(2, 1), (1, 2)])
def test_an_fsdp_job_whose_world_changes_across_one_rank_resumes_from_its_checkpoint(
    prepared, tmp_path, first, then
):
    """An elastic fsdp launch that loses ranks down to one (or grows from one): one rank holds the model
    whole and checkpoints it in state.pt, more shard it into dcp/. Each holder read only its own format, so
    every restart failed (KeyError 'model', or a dcp load of a folder that is not there). Here the result of
    a finished run is removed, as if the node died before its commit, and the other world size resumes."""
    import shutil

    from pipelines.data import datasets
    from pipelines.data.contract import dataset_contract
    from pipelines.training import job as jobs
    from pipelines.training import launchers
    from pipelines.training.model_settings import load_model_settings
    from pipelines.training.train import FAMILIES, FitInputs, make_job, plan_training

    state_dir, uri = prepared
    model_file = tmp_path / "model.yaml"
    model_file.write_text(MODEL.replace("max_epochs: 10", "max_epochs: 3").replace("}", ", strategy: fsdp}"))
    settings = _settings(state_dir, model_settings_path=model_file, train_max_restarts=0)
    manifest = datasets.read_manifest(uri)
    plan = plan_training(settings, load_model_settings(model_file), FAMILIES["torch"], uri, manifest)
    inputs = FitInputs(settings, uri, manifest, dataset_contract(settings), f"file://{tmp_path / 'job'}")
    job = make_job(inputs, plan)
    # what every rank's read is held to: the manifest's row orders and counts of both splits
    assert job.layouts == {f: f"rows:{manifest.row_order[f]}" for f in ("split=train", "split=validation")}
    assert [job.train_rows, job.validation_rows] == [
        manifest.extra["split_rows"][split] for split in ("train", "validation")
    ]
    job.write()
    launchers.run_local(settings, job, first)
    before = jobs.read_history(job.uri)
    shutil.rmtree(tmp_path / "job" / "result")
    launchers.run_local(settings, job, then)
    after = jobs.read_history(job.uri)
    assert after.resumed_from == [{"epoch": 3, "step": 0, "restart": 0, "from_world_size": first}]
    assert after.val_loss[:2] == before.val_loss[:2] and len(after.val_loss) == 3


def _holder_round(rank: int, port: int, world: int, folder: str, phase: str) -> None:
    """In a spawned rank (``world`` of them): ``save`` trains the fsdp holder of this world three steps and
    checkpoints it as a job does (``state.pt`` from rank 0, ``dcp/`` shards from every rank), with the whole
    model and optimiser state beside it (``whole.pt``); ``load`` restores that checkpoint into a fresh holder of
    this world and checks it holds exactly the saved model and optimiser state."""
    from pathlib import Path

    import torch
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    from pipelines.training.strategies import holder

    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0 if phase == "save" else 1)  # the fresh holder starts from other weights
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
        held = holder("fsdp", model, world, "cpu")
        optimiser = torch.optim.AdamW(held.trained.parameters(), 1e-2)
        whole = StateDictOptions(full_state_dict=True, cpu_offload=True)
        if phase == "save":
            for step in range(3):
                torch.manual_seed(100 + step)
                optimiser.zero_grad()
                held.trained(torch.randn(16, 4)).sum().backward()
                optimiser.step()
            shared = held.shared_state(optimiser)
            held.save_shards(folder, optimiser)
            state = get_state_dict(held.model, optimiser, options=whole)
            if rank == 0:
                torch.save(shared, Path(folder) / "state.pt")
                torch.save({"model": state[0], "optimiser": state[1]}, Path(folder) / "whole.pt")
            return
        shared = torch.load(Path(folder) / "state.pt", weights_only=False)
        held.restore(folder, shared, optimiser)
        model_state, optimiser_state = get_state_dict(held.model, optimiser, options=whole)
        if rank == 0:
            saved = torch.load(Path(folder) / "whole.pt", weights_only=False)
            assert model_state.keys() == saved["model"].keys()
            for name, value in model_state.items():
                assert torch.equal(value, saved["model"][name]), name
            for name, moments in saved["optimiser"]["state"].items():
                for key, value in moments.items():
                    assert torch.equal(optimiser_state["state"][name][key], value), (name, key)
    finally:
        if world > 1:
            dist.destroy_process_group()


@pytest.mark.parametrize(("first", "then"), [(2, 1), (1, 2)])
def test_an_fsdp_checkpoint_restores_the_exact_model_and_optimiser_state_across_one_rank(
    tmp_path, first, then
):
    """What the job-level test above cannot see: the restored holder holds exactly the saved weights and AdamW
    moments, whichever form (whole in state.pt, or dcp/ shards) the other world size wrote."""
    import concurrent.futures
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    for world, phase in ((first, "save"), (then, "load")):
        port = free_port()
        with concurrent.futures.ProcessPoolExecutor(world, mp_context=context) as pool:
            futures = [pool.submit(_holder_round, r, port, world, str(tmp_path), phase) for r in range(world)]
            for future in futures:
                future.result(timeout=300)


def test_a_training_task_killed_outright_takes_its_launcher_and_ranks_with_it(prepared):
    """SIGKILL (or SIGTERM with Python's default handler) runs no cleanup: torchrun and its ranks trained on,
    writing into the job folder, while the run key's lock was free for a retry, whose checkpoints they then
    removed. The kernel now kills the launcher when the task dies, and each rank when the launcher does."""
    import psutil

    state_dir, uri = prepared
    model_file = state_dir / "model-long.yaml"
    model_file.write_text(MODEL.replace("max_epochs: 10", "max_epochs: 400"))
    code = (
        "import sys; from pathlib import Path; from pipelines.release import tracking; "
        "from pipelines.settings import get_settings; from pipelines.training.train import train; "
        "from tests.days import DAY; "
        f"s = get_settings(state_dir=Path({str(state_dir)!r}), train_world_size=2, train_device='cpu', seed=7, "
        f"rows_per_day=1200, train_checkpoint_every_steps=10, model_settings_path=Path({str(model_file)!r})); "
        f"train(s, DAY, {uri!r}, tracking.RunContext('orphans'), 'torch')"
    )
    task = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    ranks: list[int] = []
    started: list[psutil.Process] = []
    try:
        watcher = _when_rank_reports(state_dir, "orphans", 1, 1, lambda pid, position: ranks.append(pid))
        watcher.join()
        assert ranks, "rank 1 never reported a step"
        started = psutil.Process(task.pid).children(recursive=True)  # torchrun and both ranks
        assert len(started) >= 3, started
        task.kill()
        task.wait()
        gone, alive = psutil.wait_procs(started, timeout=60)
        assert not alive, [(p.pid, p.cmdline()[-2:]) for p in alive]
    finally:
        # What this test started, should a check above have failed: the task's own processes only (the
        # session's Spark and Dask clusters are this process's children too, and later tests use them).
        if task.poll() is None:
            started = started or psutil.Process(task.pid).children(recursive=True)
            task.kill()
            task.wait()
        for proc in started:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
