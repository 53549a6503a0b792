"""Retention of what retraining leaves on the data root: prepared windows and training jobs no run will resume.

Every retrain writes its own prepared window (``features/<dataset>/ds=<day>``: features, splits and profile of
``CT_WINDOW_DAYS`` days of rows), so the data root holds one more copy of a window a day, without end; and a
training that failed for good leaves its job folder (checkpoints, reports, ``training/<dataset>/<run key>``) for
a retry that never comes. :func:`prune`, the retrain DAG's last task, removes:

- the prepared windows of days more than ``CT_PREPARED_KEEP_DAYS`` before the run's logical date (so a re-run of
  a date removes what its first run removed, and a late run of an old date removes less), except the window a
  model version holding an alias, or once champion on the promotion history, was trained on (the monitor scores
  a new champion's holdout from it, and a rollback can make any of them champion again), and a window written in
  the last :data:`IN_USE` (a backfill of an old day may be training on it, or its version awaiting approval). A
  version's files and reference profile live in MLflow, and a re-run of an old date prepares its window again
  from the raw partitions, as the same dataset version;
- a training job folder whose run key has a finished MLflow run (its model is logged: a task killed before it
  removed the folder) unless ``CT_TRAIN_KEEP_CHECKPOINTS`` keeps them, and one that no run finished and nothing has
  written to for ``CT_TRAINING_JOBS_KEEP_DAYS`` days (its retry would have resumed from it by then). Each is removed
  under the run key's training lock: a training under way is never touched, and listed as in use. A folder
  holding another run key's folder (run keys ``K`` and ``K/...``) is kept.

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

#: A window written this recently is kept whatever its day (a backfill under way, an approval pending: 3 days).
IN_USE = dt.timedelta(days=4)


def _protected_windows(client: MlflowClient, settings: Settings) -> dict[str, list[str]]:
    """The prepared windows (by folder name, ``ds=<day>``: a root written another way still matches, so a
    mismatch keeps a window rather than removes it) that a version holding an alias, or a version once champion
    on the promotion history (a rollback's target), was trained on: ``v<n> (<why>)`` each. The monitor scores
    a new champion's holdout from its window (its prediction reference)."""
    from pipelines.release import history

    name = settings.model_name
    if not tracking.model_exists(client, name):
        return {}
    why: dict[int, list[str]] = {}
    for alias, number in sorted(client.get_registered_model(name).aliases.items()):
        why.setdefault(int(number), []).append(alias)
    for row in history.read(settings, name):
        if row["outcome"] in history.MOVED and "champion before" not in why.get(row["to_version"], []):
            why.setdefault(int(row["to_version"]), []).append("champion before")
    found: dict[str, list[str]] = {}
    for number, reasons in sorted(why.items()):
        if not tracking.version_exists(client, name, number):
            continue
        uri = client.get_model_version(name, str(number)).tags.get("dataset.uri")
        if uri:
            found.setdefault(_folder_name(uri), []).append(f"v{number} ({', '.join(reasons)})")
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


def _folder_name(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]


def _fs_path(uri: str) -> tuple[Any, str]:
    from fsspec.core import url_to_fs

    fs, path = url_to_fs(uri)
    return fs, path


def _old_windows(
    client: MlflowClient, settings: Settings, before: dt.date
) -> tuple[list[str], dict[str, list[str]]]:
    """The prepared windows of days before ``before``: those to remove, and those kept, with why.

    A window written in the last ``IN_USE`` is kept whatever its day: a backfill of an old day (Airflow runs
    backfills beside the schedule) may be training on it, or its version waiting for a person's approval."""
    versions = _protected_windows(client, settings)
    recent = dt.datetime.now(dt.UTC) - IN_USE
    windows, kept = [], {}
    root = storage.join(settings.resolved_data_root, "features", settings.dataset)
    for uri in storage.day_folders_before(root, before):
        if found := versions.get(_folder_name(uri)):
            kept[uri] = found
        elif storage.changed_since(*_fs_path(uri), recent):
            kept[uri] = [f"written in the last {IN_USE.days} days: a run of its day may still read it"]
        else:
            windows.append(uri)
    return windows, kept


def prune(settings: Settings, day: dt.date, client: Any = None, dry_run: bool = False) -> dict[str, Any]:
    """Remove the prepared windows and training job folders that retention says are done with on ``day`` (a
    retrain's logical date); what it removed (with ``dry_run``, what it would: a dry run takes no training's
    lock, which a training starting at that moment would find held, so a job folder a training holds is
    listed with the others; the run keeps it, as in use). A day after today (UTC) is
    refused: a typo of a year would remove every window."""
    storage.check_not_future(day, "retention of prepared windows and training jobs")
    client = client or tracking.configure(settings)
    keep = settings.prepared_keep_days
    before = day - dt.timedelta(days=keep) if keep else None
    windows, protected = _old_windows(client, settings, before) if before else ([], {})
    now = dt.datetime.now(dt.UTC)
    jobs, kept = [], []
    folders = _job_folders(settings)
    for key, newest in sorted(folders.items()):
        if any(other.startswith(key + "/") for other in folders):
            kept.append(key)  # it holds another run key's job folder: removing it would remove that one too
        elif why := _why_stale(client, settings, key, newest, now):
            jobs.append({"run_key": key, "why": why})
        else:
            kept.append(key)
    result: dict[str, Any] = {
        "day": day.isoformat(),
        "prepared_before": None if before is None else before.isoformat(),
        "prepared_removed": windows,
        "prepared_kept": protected,
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
