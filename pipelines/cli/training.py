"""The train command."""

from __future__ import annotations

import datetime as dt

import typer

from pipelines.cli.common import DateOption, emit, load_settings, previous


def train(
    date: dt.datetime = DateOption,
    family: str = typer.Option(
        None, help="torch or sklearn (default: CT_MODEL_FAMILY, else the model settings file's family)."
    ),
    run_key: str = typer.Option(
        None,
        help="Prefix of the idempotency key (default: cli/<date>); the training's identity (a hash of the "
        "dataset version, family, hyperparameters, world size, seed and code version) is appended, so a "
        "re-run with the same configuration reuses its run and any change trains a new model.",
    ),
) -> None:
    """Train on the prepared dataset and log the model to MLflow."""
    from pipelines.release.tracking import RunContext
    from pipelines.training.train import train as run

    settings = load_settings()
    day = date.date()
    dataset_uri = previous(settings, day, "prepare")["uri"]
    emit(run(settings, day, dataset_uri, RunContext(run_key or f"cli/{day}"), family))
