"""The MLP's training loop (one definition for the in-process rank and DDP ranks), its checkpoints, the rank
reports, and the torchrun launcher."""

import contextlib
import dataclasses
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipelines.data import datasets
from pipelines.data.moments import Moments
from pipelines.model.mlp import ChurnMLP
from pipelines.training import ddp_worker, shards
from pipelines.training import job as jobs
from pipelines.training.checkpoints import LATEST, Checkpoints, Position
from pipelines.training.job import Job
from pipelines.training.launchers import TrainingLaunchError, launch
from pipelines.training.train import _layouts

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
    "backend": "none",
}
FEATURES = ["f0", "f1", "f2", "f3"]


def _frames(rows: int = 400, noise: float = 1.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 4)).astype("float32")
    y = (x[:, 0] + noise * rng.normal(size=rows) > 0).astype("int64")
    frame = pd.DataFrame(x, columns=FEATURES).assign(label=y)
    cut = rows * 3 // 4
    return frame.iloc[:cut].reset_index(drop=True), frame.iloc[cut:].reset_index(drop=True)


def _write_split(frame: pd.DataFrame, folder: Path, files: int = 3, row_group: int = 40) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index, part in enumerate(np.array_split(frame, files)):
        part.to_parquet(folder / f"part-{index}.parquet", row_group_size=row_group, index=False)


def _job(tmp_path: Path, rows: int = 400, name: str = "job", **config) -> Job:
    every = config.pop("checkpoint_every_steps", None)
    train, validation = _frames(rows)
    data = tmp_path / "data"
    if not (data / "split=train").exists():
        _write_split(train, data / "split=train")
        _write_split(validation, data / "split=validation", files=2)
    moments = Moments.of(train[FEATURES].to_numpy("float64"))
    job = Job(
        uri=str(tmp_path / name),
        train_uri=str(data / "split=train"),
        validation_uri=str(data / "split=validation"),
        train_rows=len(train),
        features=FEATURES,
        label="label",
        mean=moments.mean.tolist(),
        std=moments.std.tolist(),
        config=CONFIG | config,
        checkpoint_every_steps=every,
        collective_timeout_s=30,
    )
    job.write()
    return job


def _untimed(history: jobs.TrainingHistory) -> jobs.TrainingHistory:
    return dataclasses.replace(history, fit_seconds=0.0, epoch_seconds=[])


def _fit(job: Job) -> tuple[dict[str, torch.Tensor], jobs.TrainingHistory]:
    train, validation = ddp_worker.read_parts(job, 0, 1)
    return ddp_worker.fit(train, validation, job, rank=0, world_size=1, device="cpu")


@pytest.mark.parametrize("world_size", [1, 2, 3, 7])
@pytest.mark.parametrize("row_group", [7, 40, 1000])
def test_ranks_read_disjoint_parts_that_cover_the_split_and_differ_by_one_row_at_most(
    tmp_path, world_size, row_group
):
    train, _ = _frames(301)
    _write_split(train, tmp_path / "split", files=4, row_group=row_group)
    parts = [
        shards.read(str(tmp_path / "split"), FEATURES, "label", rank, world_size, batch_rows=16)
        for rank in range(world_size)
    ]
    assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1
    whole = np.concatenate([p.x for p in parts])
    assert np.array_equal(whole, train[FEATURES].to_numpy("float32"))  # in file order, each row once
    assert np.array_equal(np.concatenate([p.y for p in parts]), train["label"].to_numpy("float32"))


def test_a_rank_reads_only_the_row_groups_of_its_part():
    groups = [shards.RowGroup("a", 0, 10), shards.RowGroup("a", 1, 10), shards.RowGroup("b", 0, 10)]
    assert shards.plan(groups, 0, 3) == [shards.Piece(groups[0], 0, 10)]
    assert shards.plan(groups, 1, 2) == [shards.Piece(groups[1], 5, 10), shards.Piece(groups[2], 0, 10)]
    with pytest.raises(ValueError, match="rank 3 is not in a world of 3"):
        shards.plan(groups, 3, 3)


def test_moments_merge_to_the_whole_splits_mean_and_std():
    values = np.random.default_rng(1).normal(3, 2, size=(1001, 3))
    merged = Moments.of(values[:10]).merge(Moments.of(values[10:700])).merge(Moments.of(values[700:]))
    assert merged.rows == 1001
    assert np.allclose(merged.mean, values.mean(axis=0)) and np.allclose(merged.std, values.std(axis=0))


@pytest.mark.parametrize(("rows", "per_rank"), [(10, 10), (9, 10), (1, 3)])
def test_every_rank_takes_the_same_steps_over_each_of_its_rows(rows, per_rank):
    order = ddp_worker.epoch_order(rows, per_rank, epoch=2, seed=5, rank=1)
    assert len(order) == per_rank and set(order.tolist()) == set(range(rows))
    assert torch.equal(order, ddp_worker.epoch_order(rows, per_rank, 2, 5, 1))
    assert not torch.equal(ddp_worker.epoch_order(50, 50, 2, 5, 1), ddp_worker.epoch_order(50, 50, 3, 5, 1))
    with pytest.raises(ValueError, match="fewer rows than ranks"):
        ddp_worker.epoch_order(0, 3, 1, 5, 2)
    # held as int32, the very permutation int64 would give (a checkpoint's position names the same rows)
    order = ddp_worker.epoch_order(1000, 1000, 2, 5, 1)
    generator = torch.Generator()
    generator.manual_seed(int(np.random.SeedSequence([5, 2, 1]).generate_state(1)[0]))
    assert order.dtype == torch.int32 and torch.equal(order.long(), torch.randperm(1000, generator=generator))


def test_early_stopping_ends_before_the_ceiling_and_keeps_the_best_epoch(tmp_path):
    job = _job(tmp_path)
    weights, history = _fit(job)
    assert history.epochs_run < CONFIG["max_epochs"] and history.restored_best
    assert history.epochs_run == history.best_epoch + 3
    assert history.best_val_loss == min(history.val_loss) == history.val_loss[history.best_epoch - 1]
    model = ChurnMLP(4, (8,), 0.0)
    model.load_state_dict(weights)
    _, validation = ddp_worker.read_parts(job, 0, 1)
    best = ddp_worker._validation_sum(
        model, torch.from_numpy(validation.x), torch.from_numpy(validation.y), 1024, contextlib.nullcontext
    )
    assert float(best) / len(validation) == pytest.approx(history.best_val_loss, rel=1e-5)
    # The scaling is the job's (the prepare stage's moments), not a pass over the data.
    assert np.allclose(model.mean.numpy(), job.mean) and np.allclose(model.std.numpy(), job.std)


def test_without_early_stopping_every_epoch_runs_and_the_last_weights_stay(tmp_path):
    _, history = _fit(_job(tmp_path, max_epochs=4, early_stopping=None))
    assert history.epochs_run == 4 and len(history.val_loss) == 4 and not history.restored_best


def test_the_in_process_rank_is_reproducible_and_leaves_the_callers_rng_and_threads(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    threads = torch.get_num_threads()
    job = _job(tmp_path)
    first = ddp_worker.run_in_process(job)
    assert torch.equal(torch.rand(3), expected) and torch.get_num_threads() == threads
    assert jobs.read_history(job.uri) == first and not first.resumed_from
    report = json.loads((Path(job.uri) / "status" / "rank-0.json").read_text())
    assert report["state"] == "done" and report["part_rows"] == 300
    assert report["part_mb"] == pytest.approx((300 + 100) * 5 * 4 / 2**20)  # 4 features and a label, float32
    assert report["peak_rss_mb"] >= report["base_rss_mb"] > 0
    weights = torch.load(Path(job.uri) / jobs.RESULT_WEIGHTS, weights_only=True)
    again = _job(tmp_path, name="again")
    assert _untimed(ddp_worker.run_in_process(again)) == _untimed(first)
    assert first.samples == first.epochs_run * 300 and len(first.epoch_seconds) == first.epochs_run
    rerun = torch.load(Path(again.uri) / jobs.RESULT_WEIGHTS, weights_only=True)
    assert all(torch.equal(weights[k], rerun[k]) for k in weights)


def test_bf16_runs_the_forward_in_bfloat16_and_keeps_float32_weights(tmp_path):
    fp32_weights, fp32 = _fit(_job(tmp_path, name="fp32", max_epochs=5, early_stopping=None))
    seen: list[torch.dtype] = []
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, output: (
            seen.append(output.dtype) if isinstance(module, torch.nn.Linear) else None
        )
    )
    try:
        weights, bf16 = _fit(
            _job(tmp_path, name="bf16", max_epochs=5, early_stopping=None, compute_dtype="bfloat16")
        )
    finally:
        hook.remove()
    assert seen and set(seen) == {torch.bfloat16}  # every linear layer, in training and in validation
    assert all(w.dtype == fp32_weights[k].dtype for k, w in weights.items())  # the logged model is unchanged
    assert not all(torch.equal(weights[k], fp32_weights[k]) for k in weights)
    # bfloat16 keeps 8 bits of mantissa: the curves follow float32's to about 1%.
    assert bf16.val_loss == pytest.approx(fp32.val_loss, rel=0.02)
    assert bf16.train_loss == pytest.approx(fp32.train_loss, rel=0.02)


@pytest.mark.parametrize(
    ("widths", "rows"), [([20, 64, 32], 8192), ([20, 512, 512, 256], 1024), ([5000], 256)]
)
def test_validation_slices_keep_the_widest_activation_near_2_mb(widths, rows):
    assert ddp_worker.validation_slice_rows(widths) == rows


def test_a_training_resumed_from_an_epochs_checkpoint_ends_where_an_undisturbed_one_does(tmp_path):
    undisturbed, full = _fit(_job(tmp_path, max_epochs=6, early_stopping=None, dropout=0.2))
    stopped = _job(tmp_path, name="resumed", max_epochs=3, early_stopping=None, dropout=0.2)
    _fit(stopped)  # leaves the checkpoint written after epoch 2: epoch 3, step 0
    pointer = json.loads((Path(stopped.uri) / "checkpoints" / LATEST).read_text())
    assert (pointer["epoch"], pointer["step"]) == (3, 0)
    (folder,) = [p.name for p in (Path(stopped.uri) / "checkpoints").iterdir() if p.name != LATEST]
    assert (
        folder.startswith("e00003-s000000000-w1-") and pointer["folder"] == folder
    )  # the older ones are gone
    resumed_job = Job(**{**stopped.__dict__, "config": stopped.config | {"max_epochs": 6}})
    weights, history = _fit(resumed_job)
    assert history.resumed_from == [{"epoch": 3, "step": 0, "restart": 0}]
    assert history.val_loss == full.val_loss and history.train_loss == full.train_loss
    assert all(torch.equal(weights[k], undisturbed[k]) for k in weights)


def test_a_killed_in_process_training_resumes_mid_epoch_from_its_last_step_checkpoint(tmp_path):
    """The Airflow-retry path: the process dies (SIGKILL) in the middle of an epoch, the next attempt resumes
    from the last step checkpoint and ends with the undisturbed run's weights, bit for bit."""
    settings = {"max_epochs": 40, "early_stopping": None, "dropout": 0.2, "batch_size": 4}
    undisturbed = ddp_worker.run_in_process(_job(tmp_path, name="undisturbed", **settings))
    job = _job(tmp_path, name="killed", checkpoint_every_steps=25, **settings)
    code = f"from pipelines.training import ddp_worker, job; ddp_worker.run_in_process(job.Job.read({job.uri!r}))"
    process = subprocess.Popen([sys.executable, "-c", code])
    latest = Path(job.uri) / "checkpoints" / LATEST
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if latest.exists() and json.loads(latest.read_text())["epoch"] >= 3:
            break
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the training finished before it could be killed"
    assert jobs.read_history(job.uri) is None
    history = ddp_worker.run_in_process(job)
    (resume,) = history.resumed_from
    assert resume["epoch"] >= 3 and history.epochs_run == 40
    assert history.val_loss == undisturbed.val_loss
    weights = torch.load(Path(job.uri) / jobs.RESULT_WEIGHTS, weights_only=True)
    expected = torch.load(Path(tmp_path / "undisturbed") / jobs.RESULT_WEIGHTS, weights_only=True)
    assert all(torch.equal(weights[k], expected[k]) for k in weights)


def test_a_non_finite_loss_stops_within_the_step_and_names_epoch_and_batch(tmp_path):
    job = _job(tmp_path, learning_rate=1e30)
    with pytest.raises(
        ddp_worker.NonFiniteLossError, match=r"is (nan|inf) at epoch \d+, batch \d+ of 10 \(rank 0\)"
    ):
        ddp_worker.run_in_process(job)
    assert jobs.read_history(job.uri) is None  # nothing committed, so nothing can be logged
    assert "at epoch" in jobs.read_fatal(job.uri)["error"]
    assert json.loads((Path(job.uri) / "status" / "rank-0.json").read_text())["state"] == "failed"


def test_the_ranks_reports_name_host_state_position_and_silence(tmp_path):
    reporter = jobs.Reporter(str(tmp_path), rank=1, restart=2)
    reporter("training", epoch=4, step=17)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
    text = jobs.describe_ranks(str(tmp_path), world_size=3, now=later)
    nodes, *lines = text.splitlines()
    assert nodes == "nodes that started ranks: none reported"
    assert lines[0].startswith("rank 0: never reported")
    assert lines[1].startswith(f"rank 1 on host {os.uname().nodename}") and "restart 2" in lines[1]
    assert "training at epoch 4, step 17, last reported 30s ago" in lines[1]
    assert lines[2].startswith("rank 2: never reported")


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
        TrainingLaunchError,
        match=r"(?s)did not finish within 2s.*CT_TRAIN_TIMEOUT_S.*rank 0 on host.*waiting.*rendezvous",
    ):
        launch([sys.executable, "-c", script], 2, describe=lambda: "rank 0 on host h: waiting")
    assert time.perf_counter() - started < 30
    child = int(pid_file.read_text())
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE


@pytest.mark.timeout(120)  # without the bounded read, the launch waits as long as the detached child lives
def test_a_stopped_launch_whose_output_a_process_outside_its_tree_holds_fails_without_waiting_for_it(
    tmp_path,
):
    """A process the kill cannot end (a rank stuck in the kernel on a hung mount; here a child that left the
    launcher's tree) keeps the launch's output pipe open. The launch read to the pipe's end, so a training past
    its timeout hung for as long as that process lived, holding its run's lock, and said its ranks were stopped."""
    pid_file = tmp_path / "detached.pid"
    # A shell (no interpreter to start, so it is ready long before the timeout however busy the cores) starts
    # a subshell that backgrounds a sleep and exits: the sleep, holding the launcher's stdout, is no longer in the
    # launcher's tree.
    script = f"(sleep 1000 & echo $! > '{pid_file}'); echo 'rank 0 started'; exec sleep 1000"
    import psutil

    try:
        with pytest.raises(TrainingLaunchError) as failure:
            launch(["sh", "-c", script], 5)
        message = str(failure.value)
        assert "did not finish within 5s (CT_TRAIN_TIMEOUT_S)" in message
        assert "a process outside its tree (a detached child) still held its output 10s later" in message
        assert message.endswith("rank 0 started\n")  # the output read before it gave up on the rest
    finally:
        if pid_file.exists():
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(int(pid_file.read_text())).kill()


def test_a_deadline_is_marked_passed_before_what_it_stops_has_returned():
    """The spark launcher tells a timeout from a cluster failure by its deadline: the job it cancels can fail
    while the cancel is still returning, and was then reported as an ordinary failure of the cluster."""
    import threading

    from pipelines.training.launchers import Deadline

    stopping, release = threading.Event(), threading.Event()

    def slow_stop() -> None:
        stopping.set()
        release.wait(30)

    deadline = Deadline(0.01, slow_stop)
    try:
        assert stopping.wait(30)
        assert deadline.passed.is_set()  # while the stop has not returned
    finally:
        release.set()
    cancelled = Deadline(30, slow_stop)
    cancelled.cancel()
    assert not cancelled.passed.is_set()


def test_a_failing_launch_reports_its_exit_and_output():
    with pytest.raises(TrainingLaunchError, match=r"(?s)failed \(exit 3\).*rank 0 broke"):
        launch([sys.executable, "-c", "import sys; print('rank 0 broke'); sys.exit(3)"], 30)


@pytest.mark.parametrize("key", ["hidden_sizes", "hidden"])  # "hidden": models trained before code version 2
def test_a_models_config_rebuilds_its_mlp(tmp_path, key):
    from pipelines.model.mlp import load_mlp

    weights, _ = _fit(_job(tmp_path, rows=40, max_epochs=1))
    torch.save(weights, tmp_path / "weights.pt")
    model = load_mlp(tmp_path / "weights.pt", {"n_features": 4, key: [8], "dropout": 0.0})
    assert not model.training and all(torch.equal(model.state_dict()[k], weights[k]) for k in weights)


def test_a_checkpoint_of_another_world_size_resumes_at_the_start_of_its_epoch(tmp_path):
    """An elastic launch that lost a node: the model, optimiser and curves carry over; the epoch starts over."""
    job = _job(tmp_path, max_epochs=3, early_stopping=None, checkpoint_every_steps=4)
    _fit(job)
    pointer = Path(job.uri) / "checkpoints" / LATEST
    written = json.loads(pointer.read_text())
    pointer.write_text(json.dumps(written | {"world_size": 2}))  # as if two ranks had written it
    resumed = Job(**{**job.__dict__, "config": job.config | {"max_epochs": 4}})
    _, history = _fit(resumed)
    assert history.resumed_from == [
        {"epoch": written["epoch"], "step": 0, "restart": 0, "from_world_size": 2}
    ]
    assert history.epochs_run == 4


def _write_again(job: Job, order: slice, manifest: bool) -> None:
    """Prepare run again: the training split's rows (in ``order``) cut into other files and row groups; with the
    dataset's manifest written again too when ``manifest`` (it knows each split's row order)."""
    train_folder = Path(job.train_uri)
    train = pd.concat([pd.read_parquet(f) for f in sorted(train_folder.iterdir())], ignore_index=True)
    for old in train_folder.iterdir():
        old.unlink()
    _write_split(train.iloc[order], train_folder, files=2, row_group=25)
    if manifest:
        datasets.write_manifest(str(train_folder.parent), ordered=["split=train", "split=validation"])


@pytest.mark.parametrize("manifest", [True, False], ids=["manifest", "no-manifest"])
def test_a_mid_epoch_checkpoint_of_a_split_written_again_in_another_order_starts_its_epoch_over(
    tmp_path, manifest
):
    """The same rows in another order: a rank's part and its place in it then mean other rows, so the epoch in
    progress starts over instead of resuming at a step that would skip some rows and repeat others. (Through
    ``train`` another order is another training identity, so another job; this guards the sequence's name.)
    Without a manifest that knows the rows' order (a dataset prepared before manifests kept it), any other cut
    counts as another order."""
    job = _job(tmp_path, max_epochs=3, early_stopping=None, checkpoint_every_steps=4)
    if manifest:
        datasets.write_manifest(str(Path(job.train_uri).parent), ordered=["split=train", "split=validation"])
    _fit(job)
    written = json.loads((Path(job.uri) / "checkpoints" / LATEST).read_text())
    assert written["step"] > 0  # in the middle of an epoch
    _write_again(job, slice(None, None, -1), manifest)

    resumed = Job(**{**job.__dict__, "config": job.config | {"max_epochs": 4}})
    _, history = _fit(resumed)
    assert history.resumed_from == [
        {"epoch": written["epoch"], "step": 0, "restart": 0, "split_cut_again": True}
    ]
    assert history.epochs_run == 4


def test_a_mid_epoch_checkpoint_of_a_split_written_again_in_its_order_resumes_at_its_step(tmp_path):
    """Prepare run again on the other engine, or on a cluster of another size, writes the same rows in the same
    (sorted) order cut into other files and row groups: the manifest's row order is the same, every rank's part
    and its place in it mean the same rows, and the run resumes where it stopped, as if nothing had been written."""
    job = _job(tmp_path, max_epochs=3, early_stopping=None, checkpoint_every_steps=4)
    datasets.write_manifest(str(Path(job.train_uri).parent), ordered=["split=train", "split=validation"])
    _fit(job)
    written = json.loads((Path(job.uri) / "checkpoints" / LATEST).read_text())
    assert written["step"] > 0
    twin_uri = tmp_path / "twin"
    shutil.copytree(job.uri, twin_uri)
    more = {"max_epochs": 4}
    undisturbed, undisturbed_history = _fit(
        Job(**{**job.__dict__, "uri": str(twin_uri), "config": job.config | more})
    )

    _write_again(job, slice(None), manifest=True)
    weights, history = _fit(Job(**{**job.__dict__, "config": job.config | more}))
    assert history.resumed_from == [{"epoch": written["epoch"], "step": written["step"], "restart": 0}]
    assert history.resumed_from == undisturbed_history.resumed_from
    assert history.train_loss == undisturbed_history.train_loss
    assert all(torch.equal(weights[name], undisturbed[name]) for name in undisturbed)


def test_a_split_written_again_while_a_rank_read_it_is_named_by_its_cut(tmp_path, monkeypatch):
    """The manifest is read before and after the part: prepare publishing the day again in between (its files and
    its manifest) leaves a rank that cannot tell which version's order its rows are in; it names them by the cut
    it read, and resumes no mid-epoch checkpoint of the manifest's order."""
    job = _job(tmp_path)
    data = str(Path(job.train_uri).parent)
    written = datasets.write_manifest(data, ordered=["split=train", "split=validation"])
    quiet = shards.read(job.train_uri, FEATURES, "label", 0, 1)
    assert quiet.layout == f"rows:{written.row_order['split=train']}"

    fill = shards._fill

    def publish_while_reading(*args, **kwargs):
        # another manifest (its extra differs; its created_at may not, being stamped to the second)
        datasets.write_manifest(data, {"published": "again"}, ordered=["split=train", "split=validation"])
        return fill(*args, **kwargs)

    monkeypatch.setattr(shards, "_fill", publish_while_reading)
    raced = shards.read(job.train_uri, FEATURES, "label", 0, 1)
    groups = shards.row_groups(datasets.folder_files(job.train_uri))
    assert raced.layout == shards.layout(groups) != quiet.layout
    assert np.array_equal(raced.x, quiet.x)


def _job_of_manifest(job: Job, manifest: bool = True) -> Job:
    """The job as ``make_job`` writes it from the dataset's manifest, which knows each split's row order when
    ``manifest`` (else: a dataset prepared before manifests kept it)."""
    data = str(Path(job.train_uri).parent)
    datasets.write_manifest(data, ordered=["split=train", "split=validation"] if manifest else ())
    return dataclasses.replace(job, validation_rows=100, layouts=_layouts(data, datasets.read_manifest(data)))


@pytest.mark.parametrize("manifest", [True, False], ids=["manifest", "no-manifest"])
def test_a_job_names_each_split_by_its_manifests_row_order_or_else_by_its_cut(tmp_path, manifest):
    job = _job_of_manifest(_job(tmp_path), manifest)
    written = datasets.read_manifest(str(Path(job.train_uri).parent))
    for split_uri in (job.train_uri, job.validation_uri):
        folder = Path(split_uri).name
        cut = shards.layout(shards.row_groups(datasets.folder_files(split_uri)))
        assert job.layouts[folder] == (f"rows:{written.row_order[folder]}" if manifest else cut)


def test_a_rank_reads_the_split_its_job_was_made_from_cut_into_other_files_as_that_split(tmp_path):
    job = _job_of_manifest(_job(tmp_path))
    _write_again(job, slice(None), manifest=True)
    for rank in range(2):
        train, validation = ddp_worker.read_parts(job, rank, 2)
        assert train.split_rows == job.train_rows and validation.split_rows == job.validation_rows


SEQUENCE = r"in the sequence \w+"
CUT = r"in files and row groups \w+ \(no row order in the manifest\)"


@pytest.mark.parametrize(
    ("again", "manifest", "named"),
    [
        ((slice(None, None, -1), True), True, f"its rows are {SEQUENCE} where the job's were {SEQUENCE}"),
        (
            (slice(0, 250), True),
            True,
            f"it holds 250 rows where the job counted 300; its rows are {SEQUENCE}",
        ),
        (
            (slice(0, 250), False),
            True,
            "it holds 250 rows where the job counted 300. The dataset was prepared again",
        ),
        ((slice(None), False), False, f"its rows are {CUT} where the job's were {CUT}"),
    ],
    ids=["other-order", "fewer-rows", "fewer-rows-manifest-kept", "no-row-order-cut-again"],
)
def test_a_rank_that_reads_another_version_of_the_split_than_its_job_fails_naming_what_differs(
    tmp_path, again, manifest, named
):
    """The dataset prepared again after the job was made (a cleared prepare task beside a running training): the
    job's scaling and row counts are the old version's, and ranks that read before and after the publish would
    train on different versions. Each rank holds its read to the job's; a retry makes the job afresh."""
    job = _job_of_manifest(_job(tmp_path), manifest)
    _write_again(job, *again)
    for rank in range(2):
        with pytest.raises(jobs.SplitChangedError, match=rf"rank {rank} read .*split=train.*: {named}"):
            ddp_worker.read_parts(job, rank, 2)


def test_a_split_changed_under_its_job_marks_the_job_so_that_restarted_ranks_stop_at_once(
    tmp_path, monkeypatch
):
    """No restart of the ranks cures it (the job is the attempt's): the first rank marks the job, as for a
    non-finite loss, a restarted rank stops before it joins the group, and the launch fails as a SplitChangedError."""
    job = _job_of_manifest(_job(tmp_path))
    _write_again(job, slice(None, None, -1), manifest=True)
    with pytest.raises(jobs.SplitChangedError):
        ddp_worker.run_in_process(job)
    fatal = jobs.read_fatal(job.uri)
    assert fatal["kind"] == "SplitChangedError" and fatal["rank"] == 0
    raised = jobs.fatal_error(fatal, "the launch's output")
    assert type(raised) is jobs.SplitChangedError
    assert str(raised).startswith("rank 0: rank 0 read ") and str(raised).endswith("\nthe launch's output")
    # a job marked before kinds were kept: a non-finite loss, the only kind there was; a kind unknown here: fatal
    assert type(jobs.fatal_error({"rank": 1, "error": "loss nan"})) is jobs.NonFiniteLossError
    assert type(jobs.fatal_error({"rank": 1, "error": "?", "kind": "Newer"})) is jobs.FatalTrainingError

    # rank 1 restarted by torchrun: it stops at the mark, before joining a group or reading anything
    _rank_env(monkeypatch, rank=1, world_size=2, restart=1)
    monkeypatch.setattr(
        ddp_worker, "read_parts", lambda *args: pytest.fail("a marked job's rank read its part")
    )
    with pytest.raises(jobs.SplitChangedError, match=r"rank 0: rank 0 read .*\n\(it failed for good earlier"):
        ddp_worker.run(job.uri)
    assert jobs.read_fatal(job.uri) == fatal


def _rank_env(monkeypatch, rank: int, world_size: int, restart: int = 0) -> None:
    monkeypatch.setattr(ddp_worker, "die_with_parent", lambda: None)
    for name, value in {
        "RANK": rank,
        "LOCAL_RANK": rank,
        "WORLD_SIZE": world_size,
        "TORCHELASTIC_RESTART_COUNT": restart,
    }.items():
        monkeypatch.setenv(name, str(value))


def test_a_job_records_the_code_that_made_it_and_a_rank_of_the_same_code_reads_it(tmp_path):
    job = _job(tmp_path)
    assert job.code == jobs.code_identity() and len(job.code["fingerprint"]) == 64
    assert Job.read(job.uri) == job


def test_a_rank_running_other_code_than_its_driver_fails_naming_both_and_marks_the_job(tmp_path, monkeypatch):
    """A host left on an older (or newer) version: a restart runs the same code, so the first rank marks the job and
    the launch fails as a CodeVersionError naming both versions, and the job's fields this code does not know."""
    job = _job(tmp_path)
    written = json.loads(Path(job.uri, jobs.JOB_FILE).read_text())
    # made by a newer driver: a field this code lacks, one it needs gone, another fingerprint and host
    written |= {"code": {"fingerprint": "f" * 64, "host": "driver-7", "package": "/opt/ct"}, "shards_v2": {}}
    del written["validation_uri"]
    Path(job.uri, jobs.JOB_FILE).write_text(json.dumps(written))
    _rank_env(monkeypatch, rank=1, world_size=2)
    monkeypatch.setattr(ddp_worker, "read_parts", lambda *args: pytest.fail("a rank of other code read"))
    here = jobs.code_identity()["fingerprint"][:12]
    with pytest.raises(jobs.CodeVersionError) as raised:
        ddp_worker.run(job.uri)
    message = str(raised.value)
    assert "made by code ffffffffffff (host driver-7, /opt/ct)" in message
    assert f"this rank runs code {here}" in message and "must run the same version" in message
    assert "unknown here: ['shards_v2']" in message and "the job lacks: ['validation_uri']" in message
    fatal = jobs.read_fatal(job.uri)
    assert fatal["kind"] == "CodeVersionError" and fatal["rank"] == 1
    assert type(jobs.fatal_error(fatal)) is jobs.CodeVersionError
    status = jobs.read_statuses(job.uri)[1]
    assert status["state"] == "failed" and "ffffffffffff" in status["error"]

    # the modules that differ are named: the driver's edited one, and one it has that this host lacks
    modules = jobs.code_identity()["modules"] | {"training/shards.py": "0" * 16, "training/gpus.py": "1" * 16}
    written["code"]["modules"] = modules
    Path(job.uri, jobs.JOB_FILE).write_text(json.dumps(written))
    with pytest.raises(
        jobs.CodeVersionError,
        match=r"modules that differ \(2\): training/gpus.py \(only the driver's\), training/shards.py;",
    ):
        Job.read(job.uri)

    # a job made before jobs recorded their code is another version too
    del written["code"]
    Path(job.uri, jobs.JOB_FILE).write_text(json.dumps(written))
    with pytest.raises(jobs.CodeVersionError, match="older than code fingerprints"):
        Job.read(job.uri)


def test_a_rank_with_other_library_versions_than_its_driver_fails_naming_each(tmp_path, monkeypatch):
    """The same code over another torch (or numpy, or pyarrow) trains differently or hangs in a collective: the
    rank fails as a CodeVersionError naming each library and both versions. A local label (+cpu, +cu126) is not
    a version of its own."""
    job = _job(tmp_path)
    here = job.code["libraries"]
    assert set(here) == {"torch", "numpy", "pyarrow"} and here["torch"] == torch.__version__.split("+")[0]
    assert here["numpy"] == np.__version__ and all("+" not in version for version in here.values())
    written = json.loads(Path(job.uri, jobs.JOB_FILE).read_text())
    written["code"]["libraries"] |= {"torch": "2.12.1", "pyarrow": None}
    Path(job.uri, jobs.JOB_FILE).write_text(json.dumps(written))
    _rank_env(monkeypatch, rank=0, world_size=2)
    monkeypatch.setattr(ddp_worker, "read_parts", lambda *args: pytest.fail("a rank of other libraries read"))
    with pytest.raises(jobs.CodeVersionError) as raised:
        ddp_worker.run(job.uri)
    message = str(raised.value)
    assert f"torch 2.12.1 (driver) against {here['torch']} (here)" in message
    assert f"pyarrow no version found (driver) against {here['pyarrow']} (here)" in message
    assert "numpy" not in message and "must install the driver's versions" in message
    assert jobs.read_fatal(job.uri)["kind"] == "CodeVersionError"

    # other code and other libraries: the code's message names the libraries too, so one fix covers both
    written["code"]["fingerprint"] = "f" * 64
    Path(job.uri, jobs.JOB_FILE).write_text(json.dumps(written))
    with pytest.raises(
        jobs.CodeVersionError, match=r"libraries that differ: pyarrow .*; torch 2\.12\.1 \(driver\)"
    ):
        Job.read(job.uri)


@pytest.mark.parametrize(
    ("version", "compared"),
    [
        ("2.13.0+cpu", "2.13.0"),
        ("2.13.0+cu126", "2.13.0"),
        ("2.13.0+rocm6.2", "2.13.0"),
        ("2.13.0+xpu", "2.13.0"),
        ("2.13.0", "2.13.0"),
        # a source build's label names its commit: another build, another version
        ("2.5.0a0+872d972e41", "2.5.0a0+872d972e41"),
    ],
)
def test_a_librarys_version_drops_a_device_builds_label_and_no_other(monkeypatch, version, compared):
    """The imported module's version is the one compared (what runs); a library not imported, its installed
    distribution's; neither: no version, which differs from any."""
    import importlib.metadata
    import types

    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(__version__=version))
    monkeypatch.delitem(sys.modules, "pyarrow", raising=False)
    installed = {"pyarrow": "25.0.1+cpu"}

    def distribution_version(name):
        if name not in installed:
            raise importlib.metadata.PackageNotFoundError(name)
        return installed[name]

    monkeypatch.setattr(importlib.metadata, "version", distribution_version)
    jobs.library_versions.cache_clear()
    try:
        found = jobs.library_versions()
        assert found == {"torch": compared, "numpy": np.__version__, "pyarrow": "25.0.1"}
        del installed["pyarrow"]
        jobs.library_versions.cache_clear()
        assert jobs.library_versions()["pyarrow"] is None
    finally:
        jobs.library_versions.cache_clear()


def test_a_rank_started_from_another_copy_of_the_project_stops_before_training(tmp_path):
    """The real case: a rank process importing another install of ``pipelines`` (one module differs by a line)."""
    job = _job(tmp_path)
    copy = tmp_path / "other-install"
    shutil.copytree(
        Path(jobs.__file__).parents[1], copy / "pipelines", ignore=shutil.ignore_patterns("__pycache__")
    )
    # what is not a module does not count: an editor's lock (a link to nowhere), a notebook's checkpoint
    (copy / "pipelines" / "training" / ".#shards.py").symlink_to("/nowhere/12345")
    (copy / "pipelines" / ".ipynb_checkpoints").mkdir()
    (copy / "pipelines" / ".ipynb_checkpoints" / "job-checkpoint.py").write_text("x = 1\n")
    env = os.environ | {"PYTHONPATH": str(copy)}
    # the same code at another path, under another name: the same version
    read = f"import pipelines; from pipelines.training.job import Job; Job.read({job.uri!r}); print(pipelines.__file__)"
    same = subprocess.run(
        [sys.executable, "-c", read],
        env=env,
        cwd=tmp_path,  # not this checkout, whose pipelines/ python -c would import first
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert same.returncode == 0, same.stderr[-2000:]
    assert same.stdout.strip() == str(copy / "pipelines" / "__init__.py")

    with (copy / "pipelines" / "training" / "shards.py").open("a") as module:
        module.write("\n# a line this host's install has and the driver's lacks\n")
    env = os.environ | {
        "PYTHONPATH": str(copy),
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "1",
    }
    ran = subprocess.run(
        [sys.executable, "-c", f"from pipelines.training import ddp_worker; ddp_worker.run({job.uri!r})"],
        env=env,
        cwd=tmp_path,  # not this checkout, whose pipelines/ python -c would import first
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode != 0
    assert "CodeVersionError" in ran.stderr and str(copy / "pipelines") in ran.stderr, ran.stderr[-2000:]
    assert "modules that differ (1): training/shards.py\n" in ran.stderr
    assert jobs.read_fatal(job.uri)["kind"] == "CodeVersionError"
    assert "epoch" not in jobs.read_statuses(job.uri)[0]


def test_a_read_that_overlapped_a_publish_fails_for_a_restart_even_with_another_row_count():
    """Listed while the folder was moved aside (no files), or an object store's copy half made: its count tells
    nothing of the version, and a restart may read the same rows again."""
    raced = shards.Shard(np.empty((0, 4)), np.empty(0), layout="0123456789abcdef", split_rows=0)
    with pytest.raises(
        shards.SplitPublishedWhileReadError, match="rank 1 read .* while the dataset's manifest"
    ):
        shards.check(raced, "/data/split=train", 300, {"split=train": "rows:abc"}, 1)


def test_a_rank_that_could_not_name_its_rows_sequence_fails_for_a_restart_to_read_again(
    tmp_path, monkeypatch
):
    job = _job_of_manifest(_job(tmp_path))
    data, fill = str(Path(job.train_uri).parent), shards._fill

    def publish_while_reading(*args, **kwargs):
        datasets.write_manifest(data, {"published": "again"}, ordered=["split=train", "split=validation"])
        return fill(*args, **kwargs)

    monkeypatch.setattr(shards, "_fill", publish_while_reading)
    with pytest.raises(shards.SplitPublishedWhileReadError, match="manifest was written again .* a restart"):
        ddp_worker.run_in_process(job)
    assert jobs.read_fatal(job.uri) is None  # a restart may cure it


@pytest.mark.parametrize(
    ("again", "fails"), [(slice(None), False), (slice(None, None, -1), True), (slice(0, 250), True)]
)
def test_a_job_is_made_only_from_the_dataset_its_task_planned_from(tmp_path, again, fails):
    """The run key and the scaling come from the manifest the task read before its training lock; prepared again
    meanwhile with other rows or in another order, the job would describe another version than its run key."""
    job = _job(tmp_path)
    data = str(Path(job.train_uri).parent)
    planned = datasets.write_manifest(data, ordered=["split=train", "split=validation"])
    _write_again(job, again, manifest=True)
    if fails:
        with pytest.raises(
            jobs.SplitChangedError, match="prepared again with other rows or in another order"
        ):
            _layouts(data, planned)
    else:
        assert _layouts(data, planned) == _layouts(data, datasets.read_manifest(data))


def test_rank_0_s_sequence_of_rows_decides_for_every_rank_whether_to_resume_mid_epoch(tmp_path):
    """A rank that named the split otherwise than rank 0 (it read the manifest while the split was published again)
    resumes where rank 0 does: ranks resumed at other steps would wait on each other's collectives."""
    sent: list = []

    def from_rank0_on_rank0(value):
        sent.append(value)
        return value

    def from_rank0_elsewhere(start: int):
        replies = iter(sent[start:])
        return lambda value: next(replies)

    uri = str(tmp_path / "job")
    zero = Checkpoints(uri, 0, 2, None, from_rank0_on_rank0, layout="rows:abc")
    one = Checkpoints(uri, 1, 2, None, from_rank0_elsewhere(0), layout="rows:abc")
    one.save(Position(2, 5), shared=dict, own={"sums": torch.zeros(2)})
    zero.save(Position(2, 5), shared=lambda: {"global_step": 9}, own={"sums": torch.zeros(2)})

    start = len(sent)
    zero = Checkpoints(uri, 0, 2, None, from_rank0_on_rank0, layout="rows:abc")
    zero_restored = zero.restore()
    one = Checkpoints(uri, 1, 2, None, from_rank0_elsewhere(start), layout="0123456789abcdef")
    one_restored = one.restore()
    assert zero_restored.position == one_restored.position == Position(2, 5)
    assert one_restored.own is not None and not one_restored.layout_changed


def test_a_boosting_whose_loss_went_nan_logs_no_model():
    """scikit-learn fitted a learning rate of 1.7e308 to NaN losses and answered 0.0 for every row; the
    training ended FINISHED with the model logged. (The model settings now refuse such a rate as well.)"""
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingClassifier

    from pipelines.training.job import NonFiniteLossError
    from pipelines.training.train import _check_finite_boosting

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    y = (x[:, 0] > 0).astype(int)
    sane = HistGradientBoostingClassifier(max_iter=5, early_stopping=True, validation_fraction=None)
    _check_finite_boosting(sane.fit(x, y, X_val=x, y_val=y), x)
    wild = HistGradientBoostingClassifier(
        max_iter=5, learning_rate=1.7e308, early_stopping=True, validation_fraction=None
    )
    with pytest.raises(NonFiniteLossError, match=r"loss of the boosting is nan at iteration \d+ of 5"):
        _check_finite_boosting(wild.fit(x, y, X_val=x, y_val=y), x)
