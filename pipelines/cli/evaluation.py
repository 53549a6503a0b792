"""Commands of evaluation: evaluate, drift, gate, and the policy check."""

from __future__ import annotations

import datetime as dt

import typer

from pipelines.cli.common import DateOption, EngineOption, emit, load_settings, previous


def evaluate(
    date: dt.datetime = DateOption, version: int = typer.Option(None, min=1, help="Challenger version.")
) -> None:
    """Score challenger and champion on the same holdout."""
    from pipelines.evaluation.evaluate import evaluate as run

    settings, day = load_settings(), date.date()
    version = previous(settings, day, "register")["version"] if version is None else version
    emit(run(settings, day, previous(settings, day, "prepare")["uri"], version))


drift_app = typer.Typer(invoke_without_command=True, no_args_is_help=False)


@drift_app.callback()
def drift(
    context: typer.Context,
    date: dt.datetime = typer.Option(
        None, "--date", "-d", help="Logical date (YYYY-MM-DD) of the run.", formats=["%Y-%m-%d"]
    ),
    version: int = typer.Option(None, min=1, help="Challenger version."),
) -> None:
    """Drift of the date's window against the champion's reference profile, with Evidently's report;
    `pipelines drift compare` compares any two datasets."""
    if context.invoked_subcommand is not None:
        return
    if date is None:
        raise typer.BadParameter("--date is required (or use `pipelines drift compare`)", param_hint="--date")
    from pipelines.evaluation.drift import drift as run

    settings, day = load_settings(), date.date()
    version = previous(settings, day, "register")["version"] if version is None else version
    result = run(settings, day, previous(settings, day, "prepare")["uri"], version)
    emit({k: v for k, v in result.items() if k != "columns"})


def gate(date: dt.datetime = DateOption) -> None:
    """Apply the promotion policy to the date's evaluation and drift; exit 3 when it rejects."""
    from pipelines.evaluation.gate import gate as run

    settings, day = load_settings(), date.date()
    record = run(settings, day, previous(settings, day, "evaluate"), previous(settings, day, "drift"))
    typer.echo(record.pop("markdown"), err=True)
    emit(record)
    if record["decision"] != "promote":
        raise typer.Exit(3)


def policy(
    path: str = typer.Argument(
        None, help="Policy file (default: the dataset's policy, as a run resolves it)."
    ),
    schema: bool = typer.Option(False, "--schema", help="Print the policy's JSON Schema instead."),
) -> None:
    """Check a promotion policy file against its schema and the dataset's contract."""
    from pathlib import Path

    from pipelines.data.contract import dataset_contract
    from pipelines.evaluation.policy import (
        Policy,
        PolicyError,
        check_against_contract,
        load_policy,
        rules_checked,
    )

    if schema:
        emit(Policy.model_json_schema())
        return
    settings = load_settings()
    target = Path(path) if path else settings.resolved_policy_path
    try:
        loaded = load_policy(target)
        check_against_contract(loaded, dataset_contract(settings), target)
    except PolicyError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    onnx = f"onnx_runtime ({loaded.onnx.runtime})" if loaded.onnx else "onnx_runtime"
    named = [
        [onnx if rule == "onnx_runtime" else rule for rule in rules_checked(loaded, champion)]
        for champion in (True, False)
    ]
    with_champion, first = ", ".join(named[0]), ", ".join(named[1])
    typer.echo(
        f"OK {target}: policy v{loaded.version} on {loaded.primary_metric} for {settings.dataset}; "
        f"rules against a champion: {with_champion}; rules with no champion yet: {first}; "
        f"approval {loaded.approval}{', dry run' if loaded.dry_run else ''}"
    )


@drift_app.command("compare")
def drift_compare(
    reference: str = typer.Option(..., help="Parquet file or folder (any fsspec URI): the reference window."),
    current: str = typer.Option(..., help="Parquet file or folder: the window compared with it."),
    contract: str = typer.Option(None, help="Contract file (default: the dataset's contract)."),
    engine: str = EngineOption,
) -> None:
    """Compare any two Parquet datasets of a contract: per column the method, score, error bound and verdict."""
    from pathlib import Path

    from pipelines.data.contract import dataset_contract, load_contract
    from pipelines.data.datasets import NotParquetError
    from pipelines.evaluation.drift import UnknownColumnsError, compare_datasets

    settings = load_settings()
    chosen = load_contract(Path(contract)) if contract else dataset_contract(settings)
    try:
        emit(compare_datasets(settings, reference, current, chosen, engine))
    except (FileNotFoundError, NotParquetError, UnknownColumnsError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
