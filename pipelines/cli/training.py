"""The train command, and retention of what training leaves (prune)."""

from __future__ import annotations

import datetime as dt

import typer

from pipelines.cli.common import DateOption, emit, load_settings, one_of, previous
from pipelines.settings import FAMILY_NAMES


def _checked_run_key(value: str | None) -> str | None:
    from pipelines.release.tracking import RunContext

    if value is not None:
        try:
            RunContext(value)
        except ValueError as exc:  # the characters a run key may hold
            raise typer.BadParameter(str(exc)) from None
    return value


def train(
    date: dt.datetime = DateOption,
    family: str = typer.Option(
        None,
        help="torch or sklearn (default: CT_MODEL_FAMILY, else the model settings file's family).",
        callback=one_of(FAMILY_NAMES),
    ),
    run_key: str = typer.Option(
        None,
        callback=_checked_run_key,
        help="Prefix of the idempotency key (default: retrain/<date>, the retrain DAG's); the training's "
        "identity (a hash of the dataset version, family, hyperparameters, world size, seed and code version) "
        "is appended, so a re-run with the same configuration, here or in the DAG, reuses its run and any "
        "change trains a new model. Another prefix trains the same configuration again on purpose.",
    ),
) -> None:
    """Train on the prepared dataset and log the model to MLflow."""
    from pipelines.release.tracking import RunContext, daily_run_key
    from pipelines.training.train import train as run

    settings = load_settings()
    day = date.date()
    dataset_uri = previous(settings, day, "prepare")["uri"]
    emit(run(settings, day, dataset_uri, RunContext(run_key or daily_run_key(day)), family))


def prune(
    date: dt.datetime = typer.Option(
        None,
        "--date",
        "-d",
        help="The retrain day retention counts back from (YYYY-MM-DD; default: today, UTC).",
        formats=["%Y-%m-%d"],
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be removed; remove nothing."),
) -> None:
    """Remove the prepared windows older than CT_PREPARED_KEEP_DAYS (but those of versions holding an alias or
    once champion, and any written in the last 4 days) and the training job folders no run will resume (the
    retrain DAG does this after its gate)."""
    from pipelines.training.retention import prune as run

    day = date.date() if date else dt.datetime.now(dt.UTC).date()
    emit(run(load_settings(), day, dry_run=dry_run))
