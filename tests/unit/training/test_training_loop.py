"""The MLP's training loop (one definition for the in-process rank and DDP ranks) and the torchrun launcher."""

import sys
import time

import numpy as np
import pytest
import torch
from torch.utils.data.distributed import DistributedSampler

from pipelines.model.mlp import ChurnMLP
from pipelines.training import ddp_worker
from pipelines.training.arrays import TrainingData
from pipelines.training.train import TrainingLaunchError, launch

CONFIG = {
    "hidden_sizes": [8],
    "dropout": 0.0,
    "learning_rate": 0.01,
    "weight_decay": 0.0,
    "batch_size": 32,
    "max_epochs": 200,
    "early_stopping": {"patience": 3, "min_delta": 0.0, "restore_best": True},
    "seed": 3,
    "device": "cpu",
}


def _data(rows: int = 400, noise: float = 1.0) -> TrainingData:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 4)).astype("float32")
    y = (x[:, 0] + noise * rng.normal(size=rows) > 0).astype("int64")
    cut = rows * 3 // 4
    return TrainingData(x[:cut], y[:cut], x[cut:], y[cut:])


@pytest.mark.parametrize(("rows", "world_size"), [(10, 1), (10, 3), (11, 4), (64, 2)])
def test_a_rank_gets_the_shard_distributed_sampler_would_give_it(rows, world_size):
    for rank in range(world_size):
        sampler = DistributedSampler(range(rows), num_replicas=world_size, rank=rank, shuffle=True, seed=5)
        sampler.set_epoch(2)
        assert ddp_worker.shard_indices(rows, 2, 5, rank, world_size).tolist() == list(sampler)
    shards = [ddp_worker.shard_indices(rows, 0, 5, r, world_size) for r in range(world_size)]
    assert len({len(s) for s in shards}) == 1  # equal steps on every rank, or DDP would hang
    assert set(torch.cat(shards).tolist()) == set(range(rows))


def test_early_stopping_ends_before_the_ceiling_and_keeps_the_best_epoch():
    data = _data()
    weights, history = ddp_worker.fit(data, CONFIG, rank=0, world_size=1, device="cpu")
    assert history.epochs_run < CONFIG["max_epochs"] and history.restored_best
    assert history.epochs_run == history.best_epoch + 3
    assert history.best_val_loss == min(history.val_loss) == history.val_loss[history.best_epoch - 1]
    model = ChurnMLP(4, (8,), 0.0)
    model.load_state_dict(weights)
    best = ddp_worker._validation_loss(
        model, torch.from_numpy(data.x_validation), torch.from_numpy(data.y_validation.astype("float32"))
    )
    assert float(best) == pytest.approx(history.best_val_loss, rel=1e-5)  # the best epoch's weights


def test_without_early_stopping_every_epoch_runs_and_the_last_weights_stay():
    config = CONFIG | {"max_epochs": 4, "early_stopping": None}
    _, history = ddp_worker.fit(_data(), config, rank=0, world_size=1, device="cpu")
    assert history.epochs_run == 4 and len(history.val_loss) == 4 and not history.restored_best


def test_the_in_process_rank_is_reproducible_and_leaves_the_callers_rng_and_threads(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    threads = torch.get_num_threads()
    first = ddp_worker.run_in_process(_data(), CONFIG, tmp_path)
    assert torch.equal(torch.rand(3), expected) and torch.get_num_threads() == threads
    weights = torch.load(tmp_path / ddp_worker.WEIGHTS_FILE, weights_only=True)
    assert ddp_worker.read_history(tmp_path) == first
    second = ddp_worker.run_in_process(_data(), CONFIG, tmp_path)
    assert second == first
    again = torch.load(tmp_path / ddp_worker.WEIGHTS_FILE, weights_only=True)
    assert all(torch.equal(weights[k], again[k]) for k in weights)


def test_training_data_round_trips_through_a_file(tmp_path):
    data = _data(40)
    data.save(tmp_path / "data.npz")
    loaded = TrainingData.load(tmp_path / "data.npz")
    assert all(np.array_equal(getattr(data, f), getattr(loaded, f)) for f in data.__dataclass_fields__)


def test_a_launch_that_hangs_is_stopped_with_its_children(tmp_path):
    import psutil

    pid_file = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time, pathlib; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"pathlib.Path({str(pid_file)!r}).write_text(str(child.pid)); print('rendezvous...', flush=True); "
        "time.sleep(60)"
    )
    started = time.perf_counter()
    with pytest.raises(
        TrainingLaunchError, match=r"(?s)did not finish within 2s.*LAUNCH_TIMEOUT_S.*rendezvous"
    ):
        launch([sys.executable, "-c", script], 2)
    assert time.perf_counter() - started < 30
    child = int(pid_file.read_text())
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE


def test_a_failing_launch_reports_its_exit_and_output():
    with pytest.raises(TrainingLaunchError, match=r"(?s)failed \(exit 3\).*rank 0 broke"):
        launch([sys.executable, "-c", "import sys; print('rank 0 broke'); sys.exit(3)"], 30)


@pytest.mark.parametrize("key", ["hidden_sizes", "hidden"])  # "hidden": models trained before code version 2
def test_a_models_config_rebuilds_its_mlp(tmp_path, key):
    from pipelines.model.mlp import load_mlp

    weights, _ = ddp_worker.fit(_data(40), CONFIG | {"max_epochs": 1}, rank=0, world_size=1, device="cpu")
    torch.save(weights, tmp_path / "weights.pt")
    model = load_mlp(tmp_path / "weights.pt", {"n_features": 4, key: [8], "dropout": 0.0})
    assert not model.training and all(torch.equal(model.state_dict()[k], weights[k]) for k in weights)
