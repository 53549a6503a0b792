"""Commands of the data stages: generate, validate, sample-data, prepare."""

from __future__ import annotations

import datetime as dt

import typer

from pipelines.cli.common import DateOption, EngineOption, emit, load_settings, one_of
from pipelines.data.generate import SCENARIOS


def generate(
    date: dt.datetime = DateOption,
    scenario: str = typer.Option("none", help=", ".join(SCENARIOS) + ".", callback=one_of(SCENARIOS)),
) -> None:
    """Write the demo source's raw partitions for the window ending on DATE."""
    from pipelines.data.generate import generate as run

    emit(run(load_settings(), date.date(), scenario))


def validate(
    date: dt.datetime = DateOption,
    engine: str = EngineOption,
    as_json: bool = typer.Option(False, "--json", help="Print the full result as JSON."),
) -> None:
    """Check each day of the window's source against the data contract and ingest it.

    Exit 0 with a one-line summary when the data holds; exit 1 with the report of every violation (the
    failing day is quarantined beside its report).
    """
    from pipelines.data.validate import DataContractError
    from pipelines.data.validate import validate as run

    settings = load_settings()
    try:
        result = run(settings, date.date(), engine)
    except DataContractError as exc:
        for report in exc.reports:
            typer.echo(report.to_markdown(), err=True)
        for folder in exc.quarantined:
            typer.echo(f"quarantined: {folder}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        emit(result)
        return
    days = len(result["partitions"])
    typer.echo(
        f"OK {result['contract']} v{result['contract_version']} {date.date()}: {result['rows']} rows "
        f"in {days} day(s) hold the contract ({result['engine']})"
    )


def sample_data(
    name: str = typer.Argument(
        ...,
        help="breast_cancer (scikit-learn's tumours, dealt over the days as CSV) or bikeshare (ISLP's hourly "
        "Capital Bikeshare rides of 2011, each day on its real date as Parquet).",
    ),
    end: dt.datetime = typer.Option(..., "--end", help="Last day (YYYY-MM-DD).", formats=["%Y-%m-%d"]),
    days: int = typer.Option(
        3,
        min=1,
        help="Days ending on --end to write (bikeshare: those in 2011; --end 2011-12-31 --days 365 is the year).",
    ),
) -> None:
    """Write a real data set from an installed package as daily files at its source URI.

    Each day's file is written through a temporary name and a rename; writing a day again gives the same
    rows (bikeshare leaves an identical file untouched).
    """
    from pipelines.data.samples import SAMPLES, write_sample

    if name not in SAMPLES:  # before the settings, which blamed CT_DATASET for this argument
        typer.echo(f"error: unknown sample data set {name!r}; choose one of {', '.join(SAMPLES)}", err=True)
        raise typer.Exit(2)
    settings = load_settings(dataset=name)
    try:
        written = write_sample(settings, name, end.date(), days)
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    for uri in written:
        typer.echo(uri)


def prepare(
    date: dt.datetime = DateOption,
    engine: str = EngineOption,
) -> None:
    """Build features and the train/validation/holdout split (the promotion policy chooses the holdout)."""
    from pipelines.data.prepare import prepare as run
    from pipelines.evaluation.policy import load_policy

    settings = load_settings()
    holdout = load_policy(settings.resolved_policy_path).holdout
    emit(run(settings, date.date(), engine, holdout.latest_days))
