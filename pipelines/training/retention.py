"""Retention of what retraining leaves on the data root: prepared windows and training jobs no run will resume.

Every retrain writes its own prepared window (``features/<dataset>/ds=<day>``: features, splits and profile of
``CT_WINDOW_DAYS`` days of rows), so the data root holds one more copy of a window a day, without end; and a
training that failed for good leaves its job folder (checkpoints, reports, ``training/<dataset>/<run key>``) for
a retry that never comes. :func:`prune`, the retrain DAG's last task, removes:

- the prepared windows of days more than ``CT_PREPARED_KEEP_DAYS`` before the run's logical date (so a re-run of
  a date removes what its first run removed, and a late run of an old date removes less, never more), except the
  window a model version holding an alias (the champion, the challenger) was trained on. Nothing reads an old
  window: a version's reference profile and files live in MLflow, and a re-run of an old date prepares its window
  again from the raw partitions, as the same dataset version;
- a training job folder whose run key has a finished MLflow run (its model is logged: a task killed before it
  removed the folder) unless ``CT_TRAIN_KEEP_CHECKPOINTS`` keeps them, and one that no run finished and nothing has
  written to for ``CT_TRAINING_JOBS_KEEP_DAYS`` days (its retry would have resumed from it by then). Each is removed
  under the run key's training lock: a training under way is never touched, and listed as in use.

``0`` for either setting keeps everything of its kind.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from pipelines.data import storage
from pipelines.release import tracking
from pipelines.release.history import LockHeldError, exclusive
from pipelines.training.job import JOB_FILE
from pipelines.training.train import find_finished_run, job_uri, jobs_root, training_lock

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from pipelines.settings import Settings

log = logging.getLogger(__name__)


def _protected_windows(client: MlflowClient, settings: Settings) -> dict[str, list[str]]:
    """The prepared windows (by URI) that a version holding an alias was trained on: ``v<n> (<alias>)`` each."""
    name = settings.model_name
    if not tracking.model_exists(client, name):
        return {}
    found: dict[str, list[str]] = {}
    for alias, number in sorted(client.get_registered_model(name).aliases.items()):
        uri = client.get_model_version(name, number).tags.get("dataset.uri")
        if uri:
            found.setdefault(_same_place(uri), []).append(f"v{number} ({alias})")
    return found


def _job_folders(settings: Settings, only: str | None = None) -> dict[str, dt.datetime]:
    """Each training job folder of the dataset (a folder holding a job file), by run key, with the time its newest
    file was written; ``only``: that run key's alone."""
    from fsspec.core import url_to_fs

    fs, path = url_to_fs(job_uri(settings, only) if only else jobs_root(settings))
    if not fs.exists(path):
        return {}
    base = url_to_fs(jobs_root(settings))[1].rstrip("/") + "/"
    files = fs.find(path)
    folders = {name[len(base) : -len(JOB_FILE) - 1] for name in files if name.endswith("/" + JOB_FILE)}
    newest: dict[str, dt.datetime] = {}
    for name in files:
        parts = name[len(base) :].split("/")
        # The job folder a file lies in: the deepest folder above it that holds a job file.
        key = next(
            (k for k in ("/".join(parts[:n]) for n in range(len(parts) - 1, 0, -1)) if k in folders), None
        )
        if key is not None:
            when = storage.modified(fs, name)
            newest[key] = max(newest.get(key, when), when)
    return newest


def _why_stale(
    client: MlflowClient, settings: Settings, run_key: str, newest: dt.datetime, now: dt.datetime
) -> str | None:
    """Why the job folder of ``run_key`` is done with, or None when a run may still need it."""
    if run := find_finished_run(client, settings, run_key):
        return (
            None if settings.train_keep_checkpoints else f"its model is logged (MLflow run {run.info.run_id})"
        )
    keep_days = settings.training_jobs_keep_days
    if keep_days and newest < now - dt.timedelta(days=keep_days):
        return f"no run finished it, and nothing was written to it after {newest:%Y-%m-%d %H:%M} UTC"
    return None


def _remove_job(client: MlflowClient, settings: Settings, run_key: str) -> str:
    """Remove the job folder of ``run_key`` if it is still done with, under its training lock: ``removed``,
    ``in use`` (a training of the key holds it) or ``kept`` (one started and left it since it was listed)."""
    try:
        with exclusive(settings, *training_lock(settings, run_key)):
            newest = _job_folders(settings, only=run_key).get(run_key)
            if newest is None:
                return "removed"  # by the training that held the key, or another prune
            if _why_stale(client, settings, run_key, newest, dt.datetime.now(dt.UTC)) is None:
                return "kept"
            storage.remove(job_uri(settings, run_key))
            return "removed"
    except LockHeldError:
        return "in use"


def _same_place(uri: str) -> str:
    """``uri`` as its file system names it, so that a path and its ``file://`` URI compare equal."""
    from fsspec.core import url_to_fs

    fs, path = url_to_fs(uri)
    return str(fs.unstrip_protocol(path.rstrip("/")))


def _old_windows(
    client: MlflowClient, settings: Settings, before: dt.date
) -> tuple[list[str], dict[str, list[str]]]:
    """The prepared windows of days before ``before``: those to remove, and those kept for the versions named."""
    aliased = _protected_windows(client, settings)
    windows, protected = [], {}
    root = storage.join(settings.resolved_data_root, "features", settings.dataset)
    for uri in storage.day_folders_before(root, before):
        if versions := aliased.get(_same_place(uri)):
            protected[uri] = versions
        else:
            windows.append(uri)
    return windows, protected


def prune(settings: Settings, day: dt.date, client: Any = None, dry_run: bool = False) -> dict[str, Any]:
    """Remove the prepared windows and training job folders that retention says are done with on ``day`` (a
    retrain's logical date); what it removed (with ``dry_run``, what it would). A day after today (UTC) is
    refused: a typo of a year would remove every window."""
    storage.check_not_future(day, "retention of prepared windows and training jobs")
    client = client or tracking.configure(settings)
    keep = settings.prepared_keep_days
    before = day - dt.timedelta(days=keep) if keep else None
    windows, protected = _old_windows(client, settings, before) if before else ([], {})
    now = dt.datetime.now(dt.UTC)
    jobs, kept = [], []
    for key, newest in sorted(_job_folders(settings).items()):
        if why := _why_stale(client, settings, key, newest, now):
            jobs.append({"run_key": key, "why": why})
        else:
            kept.append(key)
    result: dict[str, Any] = {
        "day": day.isoformat(),
        "prepared_before": None if before is None else before.isoformat(),
        "prepared_removed": windows,
        "prepared_kept_for_versions": protected,
        "training_jobs_removed": jobs,
        "training_jobs_kept": kept,
        "training_jobs_in_use": [],
        "dry_run": dry_run,
    }
    if dry_run:
        return result
    for uri in windows:
        storage.remove(uri)
        log.info("retention: removed the prepared window %s", uri)
    for job in list(jobs):
        outcome = _remove_job(client, settings, job["run_key"])
        if outcome == "removed":
            log.info("retention: removed the training job %s: %s", job["run_key"], job["why"])
            continue
        jobs.remove(job)
        result["training_jobs_in_use" if outcome == "in use" else "training_jobs_kept"].append(job["run_key"])
    return result
