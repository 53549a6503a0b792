"""Retention of what retraining leaves on the data root, on real MLflow: old prepared windows (but the champion's)
and training job folders no run will resume; a training under way is never touched."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import pytest

from pipelines.data import storage
from pipelines.data.generate import generate
from pipelines.data.prepare import prepare
from pipelines.data.validate import validate
from pipelines.release import tracking
from pipelines.release.history import exclusive
from pipelines.release.promote import move_champion
from pipelines.release.register import register
from pipelines.settings import get_settings
from pipelines.training.retention import prune
from pipelines.training.train import job_uri, jobs_root, train, training_lock
from tests.days import DAY

pytestmark = pytest.mark.slow

OLD, OLDER = DAY - dt.timedelta(days=35), DAY - dt.timedelta(days=40)


def _settings(state_dir: Path, **changes):
    defaults = {"rows_per_day": 1200, "train_epochs": 2, "train_world_size": 1, "train_device": "cpu"}
    return get_settings(state_dir=state_dir, **(defaults | changes))


@pytest.fixture(scope="module")
def days(tmp_path_factory):
    """Three prepared days: the champion's window 40 days before DAY, another 35 days before, and DAY's."""
    settings = _settings(tmp_path_factory.mktemp("retention"))
    prepared = {}
    for day in (OLDER, OLD, DAY):
        generate(settings, day, "none")
        validate(settings, day)
        prepared[day] = prepare(settings, day, "dask")
    trained = train(settings, OLDER, prepared[OLDER]["uri"], tracking.RunContext("seed/older"), "sklearn")
    version = register(settings, OLDER, trained["run_id"])["version"]
    move_champion(settings, version, None, trigger="test seed")
    return settings, prepared, version


def _window(settings, day: dt.date) -> Path:
    return Path(storage.features_uri(settings.resolved_data_root, settings.dataset, day))


def test_old_windows_go_but_the_champions_and_a_rerun_prepares_the_same_version(days):
    settings, prepared, champion = days
    # Just written (a backfill of an old day may be training on it): kept whatever its day.
    fresh = prune(settings, DAY, dry_run=True)
    assert fresh["prepared_removed"] == []
    assert [why[0] for why in fresh["prepared_kept"].values()] == [
        f"v{champion} (champion, champion before)",
        "written in the last 4 days: a run of its day may still read it",
    ]
    for day in (OLDER, OLD, DAY):
        _age(_window(settings, day), 10)
    listed = prune(settings, DAY, dry_run=True)
    assert listed["prepared_before"] == (DAY - dt.timedelta(days=30)).isoformat()
    assert [Path(u.removeprefix("file://")) for u in listed["prepared_removed"]] == [_window(settings, OLD)]
    assert list(listed["prepared_kept"].values()) == [[f"v{champion} (champion, champion before)"]]
    assert _window(settings, OLD).exists()  # a dry run removes nothing
    # Counted back from the run's day: a late run of an old date removes less, and keep 0 keeps everything.
    assert prune(settings, OLD)["prepared_removed"] == []
    assert prune(settings.replace(prepared_keep_days=0), DAY)["prepared_removed"] == []
    assert _window(settings, OLD).exists()

    assert prune(settings, DAY)["prepared_removed"] == listed["prepared_removed"]
    assert not _window(settings, OLD).exists()
    assert _window(settings, OLDER).exists() and _window(settings, DAY).exists()
    assert prune(settings, DAY)["prepared_removed"] == []  # the same day again: nothing more
    with pytest.raises(ValueError, match="which is after today"):
        prune(settings, dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1))

    # A re-run of the old date prepares its window again: the same dataset version, the same content.
    again = prepare(settings, OLD, "dask")
    assert again["dataset_version"] == prepared[OLD]["dataset_version"]
    assert again["content_hash"] == prepared[OLD]["content_hash"]


def _age(folder: Path, days: float) -> None:
    when = (dt.datetime.now(dt.UTC) - dt.timedelta(days=days)).timestamp()
    for path in [folder, *folder.rglob("*")]:
        os.utime(path, (when, when))


def test_job_folders_no_run_will_resume_go_and_a_held_one_stays(days):
    settings, prepared, _ = days
    kept = settings.replace(train_keep_checkpoints=True)
    trained = train(kept, DAY, prepared[DAY]["uri"], tracking.RunContext("retrain/2026-11-20"), "torch")
    logged = Path(job_uri(settings, trained["run_key"]))
    assert (logged / "job.json").exists() and (logged / "checkpoints" / "latest.json").exists()
    # Three trainings that never finished, left as a failed one leaves its folder: two untouched for 8 days.
    abandoned, recent, held = (
        Path(job_uri(settings, f"retrain/2026-10-0{n}/{trained['training_identity']}")) for n in (1, 2, 3)
    )
    for folder in (abandoned, recent, held):
        shutil.copytree(logged, folder)
        shutil.rmtree(folder / "result")
    _age(abandoned, 8)
    _age(held, 8)

    def key(folder: Path) -> str:
        return str(folder.relative_to(jobs_root(settings)))

    # CT_TRAIN_KEEP_CHECKPOINTS keeps the logged run's folder; the abandoned one goes, a held one is in use.
    with exclusive(settings, *training_lock(settings, key(held))):
        found = prune(kept, DAY)
    assert [job["run_key"] for job in found["training_jobs_removed"]] == [key(abandoned)]
    assert "nothing was written to it after" in found["training_jobs_removed"][0]["why"]
    assert found["training_jobs_in_use"] == [key(held)]
    assert sorted(found["training_jobs_kept"]) == sorted([trained["run_key"], key(recent)])
    assert not abandoned.exists() and recent.exists() and held.exists() and logged.exists()

    # Without it, the logged run's folder goes at once (a task killed before it removed it), and the held one
    # once its lock is free; the recent one waits for its retry.
    found = prune(settings, DAY)
    removed = {job["run_key"]: job["why"] for job in found["training_jobs_removed"]}
    assert removed == {
        trained["run_key"]: f"its model is logged (MLflow run {trained['run_id']})",
        key(held): removed[key(held)],
    }
    assert found["training_jobs_kept"] == [key(recent)]
    assert not logged.exists() and not held.exists() and recent.exists()
    # Keep 0: an old, unfinished folder is kept for good.
    _age(recent, 30)
    assert prune(settings.replace(training_jobs_keep_days=0), DAY)["training_jobs_removed"] == []
