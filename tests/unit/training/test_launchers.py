"""How a training's ranks are started: the launch settings, and when a node agent joins a published launch."""

from __future__ import annotations

import dataclasses
import datetime as dt
import subprocess
import sys

import pytest

from pipelines.data import storage
from pipelines.settings import get_settings
from pipelines.training import job as jobs
from pipelines.training import launchers, node
from pipelines.training.launchers import Launch, parse_nnodes, world_size_of
from pipelines.training.model_settings import TrainingConfigError


@pytest.mark.parametrize(("text", "bounds"), [("1", (1, 1)), ("2", (2, 2)), ("2:4", (2, 4))])
def test_nodes_are_a_number_or_a_range(text, bounds):
    assert parse_nnodes(text) == bounds


@pytest.mark.parametrize("text", ["", "two", "3:2", "0", "1:x"])
def test_a_bad_node_count_names_the_setting(text):
    with pytest.raises(TrainingConfigError, match="CT_TRAIN_NNODES"):
        parse_nnodes(text)


def test_the_world_size_follows_the_launcher():
    assert world_size_of(get_settings(), resolved_local=3) == 3
    torchrun = get_settings(train_launcher="torchrun", train_nnodes="2", train_procs_per_node=4)
    assert world_size_of(torchrun, resolved_local=1) == 8
    elastic = get_settings(train_launcher="torchrun", train_nnodes="2:4", train_procs_per_node=1)
    assert world_size_of(elastic, resolved_local=1) == "2:4x1"  # known when the nodes have met
    assert world_size_of(get_settings(train_launcher="spark", train_world_size=3), resolved_local=1) == 3
    with pytest.raises(
        TrainingConfigError, match="CT_TRAIN_LAUNCHER=spark needs CT_TRAIN_WORLD_SIZE as a number"
    ):
        world_size_of(get_settings(train_launcher="spark"), resolved_local=1)


def test_a_world_size_that_contradicts_the_torchrun_nodes_is_refused_naming_both():
    """torchrun starts CT_TRAIN_NNODES x CT_TRAIN_PROCS_PER_NODE ranks: a CT_TRAIN_WORLD_SIZE of another number
    was ignored without a word (a team that set 4 trained on 2)."""
    two = {"train_launcher": "torchrun", "train_nnodes": "2", "train_procs_per_node": 1}
    assert world_size_of(get_settings(**two, train_world_size=2), resolved_local=1) == 2  # the same: fine
    with pytest.raises(
        ValueError, match=r"CT_TRAIN_WORLD_SIZE=4 with CT_TRAIN_LAUNCHER=torchrun.*\(2 x 1 = 2\)"
    ):
        world_size_of(get_settings(**two, train_world_size=4), resolved_local=1)
    elastic = {"train_launcher": "torchrun", "train_nnodes": "1:2", "train_procs_per_node": 1}
    with pytest.raises(TrainingConfigError, match=r"\(1:2 x 1 = 1:2x1\)"):
        world_size_of(get_settings(**elastic, train_world_size=2), resolved_local=1)


def test_the_torchrun_launcher_needs_an_endpoint(tmp_path):
    job = jobs.Job(str(tmp_path), "t", "v", 10, ["a"], "y", [0.0], [1.0], {}, None, 30)
    with pytest.raises(TrainingConfigError, match="CT_TRAIN_RDZV_ENDPOINT"):
        launchers.torchrun_launch(get_settings(train_launcher="torchrun", train_nnodes="2"), job)


def test_every_node_runs_the_same_command_with_the_launchs_rendezvous(tmp_path):
    job = jobs.Job(str(tmp_path / "job"), "t", "v", 10, ["a"], "y", [0.0], [1.0], {}, None, 30)
    settings = get_settings(
        state_dir=tmp_path,
        train_launcher="torchrun",
        train_nnodes="2:3",
        train_rdzv_endpoint="trainer-0:29400",
        train_rendezvous_timeout_s=45,
        train_max_restarts=1,
    )
    command = launchers.torchrun_launch(settings, job).command()
    text = " ".join(command)
    assert "--nnodes 2:3 --nproc-per-node 1 --rdzv-backend c10d --rdzv-endpoint trainer-0:29400" in text
    assert "--rdzv-conf join_timeout=45 --max-restarts 1 -m pipelines.training.rank" in text
    assert command[-1] == job.uri


def test_the_local_launcher_lets_the_rendezvous_store_take_a_port_the_kernel_picks(tmp_path, monkeypatch):
    """A port found free and closed, then handed to torchrun, could be taken in the seconds before torchrun bound
    it (two trainings starting on one host, a worker's other tasks): the rendezvous failed, or the agent fell back
    to joining whatever held the port. Port 0 is bound by the agent's store itself, as torchrun --standalone does."""
    job = jobs.Job(str(tmp_path / "job"), "t", "v", 10, ["a"], "y", [0.0], [1.0], {}, None, 30)
    run: list[list[str]] = []
    monkeypatch.setattr(launchers, "launch", lambda command, timeout_s, describe: run.append(command) or "")
    launchers.run_local(get_settings(state_dir=tmp_path), job, 2)
    text = " ".join(run[0])
    assert "--nnodes 1 --nproc-per-node 2 --rdzv-backend c10d --rdzv-endpoint 127.0.0.1:0 " in text


def test_a_second_torchrun_launch_of_the_dataset_is_refused_while_one_runs_leaving_its_pointer(tmp_path):
    """The other hosts join the launch the pointer names: a second training of the dataset (a backfill beside
    the day's) overwrote it, and the first waited for nodes that had joined the second."""
    from pipelines.release.history import LockHeldError, exclusive

    job = jobs.Job(str(tmp_path / "job"), "t", "v", 10, ["a"], "y", [0.0], [1.0], {}, None, 30)
    settings = get_settings(
        state_dir=tmp_path, train_launcher="torchrun", train_nnodes="2", train_rdzv_endpoint="trainer-0:29400"
    )
    pointer = launchers.launch_pointer_uri(settings)
    first = launchers.torchrun_launch(settings, dataclasses.replace(job, uri=str(tmp_path / "first")))
    with exclusive(*launchers.launch_lock(settings, pointer)):  # the first launch, running
        storage.write_json_atomic(pointer, dataclasses.asdict(first))
        with pytest.raises(
            LockHeldError, match=r"the torchrun launch of dataset \w+ \(one at a time"
        ) as held:
            launchers.run_torchrun(settings, job, 2)
    assert f"launch {first.launch_id} of {tmp_path / 'first'}" in str(held.value)
    assert launchers.read_launch(settings) == first  # the other hosts still join the first


def test_a_node_agent_joins_a_fresh_launch_once_and_never_a_finished_or_stale_one(tmp_path):
    settings = get_settings(state_dir=tmp_path)
    job_uri = str(tmp_path / "job")
    now = dt.datetime.now(dt.UTC)
    launch = Launch("id-1", job_uri, "127.0.0.1:1", "2", 1, 0, 30, 600, now.isoformat())
    assert node.pending(settings, set()) is None  # nothing published
    from pipelines.data import storage

    storage.write_json_atomic(launchers.launch_pointer_uri(settings), dataclasses.asdict(launch))
    assert node.pending(settings, set()) == launch
    assert node.pending(settings, {"id-1"}) is None  # this node ran it already
    stale = dataclasses.replace(
        launch, launch_id="id-2", started=(now - dt.timedelta(seconds=601)).isoformat()
    )
    storage.write_json_atomic(launchers.launch_pointer_uri(settings), dataclasses.asdict(stale))
    assert node.pending(settings, set()) is None  # older than its timeout: over
    storage.write_json_atomic(launchers.launch_pointer_uri(settings), dataclasses.asdict(launch))
    jobs.write_history(job_uri, jobs.TrainingHistory([1.0], [1.0], 1, 1.0, 1, False))
    assert node.pending(settings, set()) is None  # its result is committed: over


def test_a_training_with_more_ranks_than_rows_is_refused_before_it_starts():
    from pipelines.training.train import check_world_size

    check_world_size({"train": 4, "validation": 2}, 2)
    with pytest.raises(TrainingConfigError, match="validation split has 2 rows, fewer than the 3 ranks"):
        check_world_size({"train": 4, "validation": 2}, 3)
    with pytest.raises(TrainingConfigError, match="train split has 4 rows, fewer than the 6 ranks"):
        check_world_size({"train": 4, "validation": 9}, "1:3x2")  # an elastic launch: its largest world


def test_a_launched_rank_is_bound_to_its_launcher_before_it_imports_torch(tmp_path):
    """torch takes seconds to import: a launcher killed in them would leave a rank that asked for the parent-death
    signal only afterwards training on. The entry point torchrun starts asks first (checked in a fresh
    interpreter: what had been imported when the rank asked)."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import sys\n"
        "import pipelines.host as host\n"
        "def record():\n"
        "    print('torch imported when bound:', 'torch' in sys.modules, flush=True)\n"
        "    raise SystemExit(0)\n"
        "host.die_with_parent = record\n"
        "import runpy\n"
        "sys.argv = ['rank', 'file:///nowhere']\n"
        "runpy.run_module('pipelines.training.rank', run_name='__main__')\n"
    )
    done = subprocess.run(
        [sys.executable, str(probe)], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "torch imported when bound: False"
