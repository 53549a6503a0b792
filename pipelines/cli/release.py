"""Commands of release: register, promote, rollback, history."""

from __future__ import annotations

import datetime as dt

import typer

from pipelines.cli.common import DateOption, emit, load_settings, previous


def register(
    date: dt.datetime = DateOption,
    run_id: str = typer.Option(None, help="MLflow run (default: the date's train)."),
) -> None:
    """Register the trained model as a new version with alias challenger (idempotent)."""
    from mlflow.exceptions import MlflowException

    from pipelines.release.register import register as run

    settings = load_settings()
    try:
        emit(run(settings, date.date(), run_id or previous(settings, date.date(), "train")["run_id"]))
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        typer.echo(f"error: {exc.message}", err=True)  # "Run with id=... not found"
        raise typer.Exit(2) from None


def promote(
    date: dt.datetime = DateOption,
    dry_run: bool = typer.Option(False, "--dry-run", help="Record 'would promote' and move nothing."),
    approved_by: str = typer.Option(
        None,
        "--approved-by",
        help="Who approved the promotion, when the policy asks a person to (approval: required); kept in the "
        "promotion history.",
    ),
) -> None:
    """Move the champion alias to the date's challenger, if its gate said promote (and a person approved it,
    when the policy asks for that); never back to a version a person rolled back from, or a champion replaced
    since (`rollback --to N` does that)."""
    from pipelines.release.audit import AliasMovedError
    from pipelines.release.integrity import IntegrityError
    from pipelines.release.promote import ChampionChangedError, NoSuchVersionError, PromotionRefusedError
    from pipelines.release.promote import promote as run

    settings, day = load_settings(**({"promotion_dry_run": True} if dry_run else {})), date.date()
    record = previous(settings, day, "gate")
    if record["decision"] != "promote":
        typer.echo(f"the gate for {day} said {record['decision']}: nothing to promote", err=True)
        raise typer.Exit(3)
    record.pop("markdown", None)
    try:
        emit(
            run(
                settings,
                day,
                record["challenger_version"],
                record["champion_version"],
                decision=record,
                approved_by=approved_by,
            )
        )
    except (
        IntegrityError,
        ChampionChangedError,
        AliasMovedError,
        PromotionRefusedError,
        NoSuchVersionError,  # the day's challenger deleted from the registry since its gate
    ) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None


def rollback(
    to: int = typer.Option(None, "--to", help="Version to make champion (default: the previous champion)."),
    reason: str = typer.Option(..., help="Why; kept in the promotion history."),
) -> None:
    """Move the champion back (compare-and-set, under the promotion lock, recorded in the history)."""
    from pipelines.release.integrity import IntegrityError
    from pipelines.release.promote import ChampionChangedError, NoSuchVersionError, RollbackRequestError
    from pipelines.release.promote import rollback as run

    try:
        emit(run(load_settings(), to, reason))
    except (RollbackRequestError, NoSuchVersionError, ChampionChangedError, IntegrityError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None


def history(
    limit: int = typer.Option(50, min=1, help="The newest N attempts."),
    check: bool = typer.Option(
        False,
        "--check",
        help="Compare the champion alias with the history and resolve interrupted promotions; exit 1 when the "
        "alias was moved outside the gate.",
    ),
    repair: bool = typer.Option(
        False, "--repair", help="With --check: move a moved alias back, on the record."
    ),
) -> None:
    """Print the promotion history: every attempt to move the champion, oldest first."""
    from rich.console import Console
    from rich.table import Table

    from pipelines.release import audit
    from pipelines.release.history import read

    settings = load_settings()
    if check or repair:
        try:
            found = audit.check(settings, repair=repair)
        except audit.AliasMovedError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(1) from None
        emit(found)
        if not found["consistent"]:
            typer.echo(found["problem"], err=True)
            raise typer.Exit(1)
        return
    table = Table(title=f"Promotion history of {settings.model_name}")
    for column in (
        "#",
        "at (UTC)",
        "action",
        "from",
        "to",
        "expected",
        "outcome",
        "trigger",
        "reason",
        "Airflow run",
    ):
        table.add_column(column)
    for row in read(settings, settings.model_name, limit):
        version = lambda v: "-" if v is None else f"v{v}"  # noqa: E731
        table.add_row(
            str(row["id"]),
            row["at"],
            row["action"],
            version(row["from_version"]),
            version(row["to_version"]),
            version(row["expected_version"]),
            row["outcome"],
            row["trigger"],
            row["reason"] or "",
            f"{row['dag_id']}/{row['run_id']}" if row["run_id"] else "",
        )
    Console(width=200).print(table)
