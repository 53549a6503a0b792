"""Commands of monitoring: one interval of served traffic judged, the trend over days, the policy check."""

from __future__ import annotations

import datetime as dt

import typer

from pipelines.cli.common import EngineOption, emit, load_settings

monitor_app = typer.Typer(invoke_without_command=True, no_args_is_help=False)


@monitor_app.callback()
def monitor(
    context: typer.Context,
    date: dt.datetime = typer.Option(
        None,
        "--date",
        "-d",
        help="The UTC day of served traffic (YYYY-MM-DD), judged once it is over.",
        formats=["%Y-%m-%d"],
    ),
    hour: int = typer.Option(
        None, "--hour", min=0, max=23, help="One hour of the day, once it is over (default: the whole day)."
    ),
    engine: str = EngineOption,
) -> None:
    """Judge an interval of the prediction log against the champion with the monitoring policy (no Airflow:
    a retrain the policy would ask for is reported as would_trigger, and neither asked for nor recorded);
    `pipelines monitor history` prints the trend, `pipelines monitor policy` checks the policy file."""
    if context.invoked_subcommand is not None:
        return
    if date is None:
        raise typer.BadParameter(
            "--date is required (or use `pipelines monitor history`)", param_hint="--date"
        )
    from pipelines.monitoring.monitor import Interval, IntervalNotOverError
    from pipelines.monitoring.monitor import monitor as run
    from pipelines.monitoring.retention import PrunedIntervalError

    try:
        result = run(load_settings(), Interval.of(date.date(), hour), engine, ask=False)
    except (PrunedIntervalError, IntervalNotOverError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    emit(result)


@monitor_app.command("prune")
def prune(
    date: dt.datetime = typer.Option(
        None,
        "--date",
        "-d",
        help="The day retention counts back from (YYYY-MM-DD; default: today, UTC).",
        formats=["%Y-%m-%d"],
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be removed; remove nothing."),
) -> None:
    """Remove the reports, monitoring runs and prediction log days that the policy's retention says are old
    (the monitor DAG does this after every interval)."""
    from pipelines.monitoring.retention import prune_now

    day = date.date() if date else dt.datetime.now(dt.UTC).date()
    emit(prune_now(load_settings(), day, dry_run=dry_run))


@monitor_app.command("compact")
def compact(
    date: dt.datetime = typer.Option(
        ..., "--date", "-d", help="The UTC day folder of the log (YYYY-MM-DD).", formats=["%Y-%m-%d"]
    ),
) -> None:
    """Compact the prediction log's closed hours of a day: the app's file per flush into one file per hour
    (every monitor run does this for its interval's days; this is for days it did not run on)."""
    from pipelines.monitoring.logfiles import compact as run

    emit(run(load_settings().prediction_log_uri, date.date()))


@monitor_app.command("history")
def history(days: int = typer.Option(14, min=1, help="The last N days with figures.")) -> None:
    """The monitor's figures over days: rows, each signal's figure and state, and the verdict per interval."""
    from rich.console import Console
    from rich.table import Table

    from pipelines.monitoring.monitor import read_figures, read_triggers
    from pipelines.monitoring.policy import SIGNALS

    settings = load_settings()
    figures = read_figures(settings)
    if not figures:
        typer.echo(
            f"no monitor figures for {settings.dataset} yet: run `pipelines monitor -d <date>`", err=True
        )
        raise typer.Exit(1)
    first = dt.date.fromisoformat(figures[-1]["start"][:10]) - dt.timedelta(days=days - 1)
    shown = [f for f in figures if dt.date.fromisoformat(f["start"][:10]) >= first]
    table = Table(title=f"monitor of {settings.dataset}, {len(shown)} intervals since {first}")
    for column in ("interval", "champion", "rows", *SIGNALS, "verdict"):
        table.add_column(column, justify="right" if column == "rows" else "left")
    for row in shown:
        cells = []
        for name in SIGNALS:
            signal = (row.get("signals") or {}).get(name)
            if signal is None:
                cells.append("")
                continue
            value = signal["value"]
            mark = {"breach": "!", "ok": "", "not_judged": "-"}[signal["state"]]
            cells.append(("-" if value is None else f"{value:.3g}") + mark)
        table.add_row(row["interval"], f"v{row['champion']}", f"{row['rows']:,}", *cells, row["status"])
    Console().print(table)
    triggers = [t for t in read_triggers(settings) if t["at"][:10] >= first.isoformat()]
    for trigger in triggers:
        typer.echo(f"{trigger['at']} {trigger['status']}: {trigger['detail']}")
    typer.echo("a figure marked ! breached the policy, - was not judged (too few rows, no labels yet)")


@monitor_app.command("policy")
def policy(
    path: str = typer.Argument(
        None, help="Policy file (default: the dataset's, as the monitor resolves it)."
    ),
    schema: bool = typer.Option(False, "--schema", help="Print the policy's JSON Schema instead."),
) -> None:
    """Check a monitoring policy file against its schema and the dataset's contract."""
    from pathlib import Path

    from pipelines.data.contract import dataset_contract
    from pipelines.monitoring.policy import (
        MonitoringPolicy,
        MonitoringPolicyError,
        check_against_contract,
        load_monitoring_policy,
    )

    if schema:
        emit(MonitoringPolicy.model_json_schema())
        return
    settings = load_settings()
    target = Path(path) if path else settings.resolved_monitoring_policy_path
    try:
        loaded = load_monitoring_policy(target)
        contract = dataset_contract(settings)
        check_against_contract(loaded, contract.feature_columns, contract.label_delay_hours, target)
    except MonitoringPolicyError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    rule = loaded.triggers
    typer.echo(
        f"OK {target}: retrains on {', '.join(rule.retrain_on) or 'nothing'}; cooldown {rule.cooldown_hours:g} h, "
        f"at most {rule.max_per_day} a day; judges intervals of at least {loaded.min_served_rows} rows"
    )
