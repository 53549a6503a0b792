"""``pipelines``: every stage as a command, so a run can be replayed and debugged without Airflow.

Each command takes the logical date; inputs that an earlier stage produced default to that stage's record
for the same date, so ``pipelines prepare -d 2026-11-20`` then ``pipelines train -d 2026-11-20`` just works.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any

import typer

from pipelines import runlog
from pipelines.settings import Settings, get_settings

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False)

DateOption = typer.Option(
    ..., "--date", "-d", help="Logical date (YYYY-MM-DD) of the run.", formats=["%Y-%m-%d"]
)


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("distributed", "py4j", "alembic", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("distributed.shuffle").setLevel(logging.ERROR)  # every shuffle logs a WARNING


def _emit(result: Any) -> None:
    typer.echo(json.dumps(result, indent=2, default=str))


def _previous(settings: Settings, day: dt.date, stage: str) -> dict[str, Any]:
    records = runlog.read_records(settings, day)
    if stage not in records:
        typer.echo(f"no '{stage}' record for {day}: run `pipelines {stage} -d {day}` first", err=True)
        raise typer.Exit(2)
    return records[stage]["result"]


@app.callback()
def main() -> None:
    _setup_logging()


@app.command()
def generate(
    date: dt.datetime = DateOption,
    scenario: str = typer.Option(
        "none", help="none, covariate_shift, concept_drift, missing_values, schema_break."
    ),
) -> None:
    """Write the demo source's raw partitions for the window ending on DATE."""
    from pipelines.generate import generate as run

    _emit(run(get_settings(), date.date(), scenario))


@app.command()
def validate(
    date: dt.datetime = DateOption,
    engine: str = typer.Option(None, help="dask or spark (default: CT_ENGINE)."),
    as_json: bool = typer.Option(False, "--json", help="Print the full result as JSON."),
) -> None:
    """Check each day of the window's source against the data contract and ingest it.

    Exit 0 with a one-line summary when the data holds; exit 1 with the report of every violation (the
    failing day is quarantined beside its report).
    """
    from pipelines.validate import DataContractError
    from pipelines.validate import validate as run

    settings = get_settings()
    try:
        result = run(settings, date.date(), engine)
    except DataContractError as exc:
        for report in exc.reports:
            typer.echo(report.to_markdown(), err=True)
        for folder in exc.quarantined:
            typer.echo(f"quarantined: {folder}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        _emit(result)
        return
    days = len(result["partitions"])
    typer.echo(
        f"OK {result['contract']} v{result['contract_version']} {date.date()}: {result['rows']} rows "
        f"in {days} day(s) hold the contract ({result['engine']})"
    )


@app.command("sample-data")
def sample_data(
    name: str = typer.Argument(..., help="breast_cancer (scikit-learn's bundled data set)."),
    end: dt.datetime = typer.Option(..., "--end", help="Last day (YYYY-MM-DD).", formats=["%Y-%m-%d"]),
    days: int = typer.Option(3, min=1, help="Days to cut the data set into."),
) -> None:
    """Write a real data set from an installed package as daily CSV files at its source URI."""
    from pipelines.samples import write_sample

    settings = get_settings(dataset=name)
    for uri in write_sample(settings, name, end.date(), days):
        typer.echo(uri)


@app.command()
def prepare(
    date: dt.datetime = DateOption,
    engine: str = typer.Option(None, help="dask or spark (default: CT_ENGINE)."),
) -> None:
    """Build features and the train/validation/holdout split."""
    from pipelines.prepare import prepare as run

    _emit(run(get_settings(), date.date(), engine))


@app.command()
def train(
    date: dt.datetime = DateOption,
    family: str = typer.Option(None, help="torch or sklearn (default: CT_MODEL_FAMILY)."),
    run_key: str = typer.Option(None, help="Idempotency key (default: cli/<date>/<family>)."),
) -> None:
    """Train on the prepared dataset and log the model to MLflow."""
    from pipelines.tracking import RunContext
    from pipelines.train import train as run

    settings = get_settings()
    day = date.date()
    family = family or settings.model_family
    dataset_uri = _previous(settings, day, "prepare")["uri"]
    _emit(run(settings, day, dataset_uri, RunContext(run_key or f"cli/{day}/{family}"), family))


@app.command()
def register(
    date: dt.datetime = DateOption,
    run_id: str = typer.Option(None, help="MLflow run (default: the date's train)."),
) -> None:
    """Register the trained model as a new version with alias challenger (idempotent)."""
    from pipelines.register import register as run

    settings = get_settings()
    _emit(run(settings, date.date(), run_id or _previous(settings, date.date(), "train")["run_id"]))


@app.command()
def evaluate(
    date: dt.datetime = DateOption, version: int = typer.Option(None, help="Challenger version.")
) -> None:
    """Score challenger and champion on the same holdout."""
    from pipelines.evaluate import evaluate as run

    settings, day = get_settings(), date.date()
    version = version or _previous(settings, day, "register")["version"]
    _emit(run(settings, day, _previous(settings, day, "prepare")["uri"], version))


@app.command()
def drift(
    date: dt.datetime = DateOption, version: int = typer.Option(None, help="Challenger version.")
) -> None:
    """Evidently drift report of the window against the champion's training data."""
    from pipelines.drift import drift as run

    settings, day = get_settings(), date.date()
    version = version or _previous(settings, day, "register")["version"]
    result = run(settings, day, _previous(settings, day, "prepare")["uri"], version)
    _emit({k: v for k, v in result.items() if k != "columns"})


@app.command()
def gate(date: dt.datetime = DateOption) -> None:
    """Apply the promotion policy to the date's evaluation and drift; exit 3 when it rejects."""
    from pipelines.gate import gate as run

    settings, day = get_settings(), date.date()
    record = run(settings, day, _previous(settings, day, "evaluate"), _previous(settings, day, "drift"))
    typer.echo(record.pop("markdown"), err=True)
    _emit(record)
    if record["decision"] != "promote":
        raise typer.Exit(3)


@app.command()
def promote(
    date: dt.datetime = DateOption,
    dry_run: bool = typer.Option(False, "--dry-run", help="Record 'would promote' and move nothing."),
) -> None:
    """Move the champion alias to the date's challenger, if its gate said promote."""
    from pipelines.integrity import IntegrityError
    from pipelines.promote import ChampionChangedError
    from pipelines.promote import promote as run

    settings, day = get_settings(**({"promotion_dry_run": True} if dry_run else {})), date.date()
    record = _previous(settings, day, "gate")
    if record["decision"] != "promote":
        typer.echo(f"the gate for {day} said {record['decision']}: nothing to promote", err=True)
        raise typer.Exit(3)
    record.pop("markdown", None)
    try:
        _emit(run(settings, day, record["challenger_version"], record["champion_version"], decision=record))
    except (IntegrityError, ChampionChangedError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None


@app.command()
def policy(
    path: str = typer.Argument(
        None, help="Policy file (default: the dataset's policy, as a run resolves it)."
    ),
    schema: bool = typer.Option(False, "--schema", help="Print the policy's JSON Schema instead."),
) -> None:
    """Check a promotion policy file against its schema and the dataset's contract."""
    from pathlib import Path

    from pipelines.contract import load_contract
    from pipelines.gate import Policy, PolicyError, check_against_contract, load_policy

    if schema:
        _emit(Policy.model_json_schema())
        return
    settings = get_settings()
    target = Path(path) if path else settings.resolved_policy_path
    try:
        loaded = load_policy(target)
        check_against_contract(loaded, load_contract(settings.resolved_contract_path), target)
    except PolicyError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    rules = ["min_improvement", "confidence_interval", "min_holdout_rows", "drift"]
    rules += [f"slice:{s.column}" for s in loaded.slices]
    rules += ["latency_p99"] * bool(loaded.latency) + ["model_size"] * bool(loaded.max_model_size_mb)
    rules += [f"onnx_runtime ({loaded.onnx.runtime})"] if loaded.onnx else []
    typer.echo(
        f"OK {target}: policy v{loaded.version} on {loaded.primary_metric} for {settings.dataset}; rules: "
        f"{', '.join(rules)}; approval {loaded.approval}{', dry run' if loaded.dry_run else ''}"
    )


@app.command()
def rollback(
    to: int = typer.Option(None, "--to", help="Version to make champion (default: the previous champion)."),
    reason: str = typer.Option(..., help="Why; kept in the promotion history."),
) -> None:
    """Move the champion back (compare-and-set, under the promotion lock, recorded in the history)."""
    from pipelines.integrity import IntegrityError
    from pipelines.promote import ChampionChangedError
    from pipelines.promote import rollback as run

    try:
        _emit(run(get_settings(), to, reason))
    except (ValueError, ChampionChangedError, IntegrityError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None


@app.command()
def history(limit: int = typer.Option(50, help="The newest N attempts.")) -> None:
    """Print the promotion history: every attempt to move the champion, oldest first."""
    from rich.console import Console
    from rich.table import Table

    from pipelines.history import read

    settings = get_settings()
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
            str(row["id"]), row["at"], row["action"], version(row["from_version"]), version(row["to_version"]),
            version(row["expected_version"]), row["outcome"], row["trigger"], row["reason"] or "",
            f"{row['dag_id']}/{row['run_id']}" if row["run_id"] else "",
        )  # fmt: skip
    Console(width=200).print(table)


@app.command()
def summary(
    dates: list[dt.datetime] = typer.Argument(..., help="Logical dates, oldest first.", formats=["%Y-%m-%d"]),
) -> None:
    """Print versions, champion, the last gate decision, drift, stage times and one served prediction."""
    from pipelines.summary import print_summary

    print_summary(get_settings(), [d.date() for d in dates])


@app.command()
def serve(
    host: str = typer.Option(None, help="Bind address (default: CT_SERVE_HOST)."),
    port: int = typer.Option(None, help="Port (default: CT_SERVE_PORT)."),
    access_log: bool = typer.Option(False, help="Log every request (costs throughput)."),
) -> None:
    """Serve the champion (one process); it follows the alias and hot-swaps. /docs has the API."""
    import uvicorn

    from pipelines.serving.app import create_app

    settings = get_settings()
    uvicorn.run(
        create_app(settings),
        host=host or settings.serve_host,
        port=port or settings.serve_port,
        access_log=access_log,
        timeout_graceful_shutdown=30,
    )


if __name__ == "__main__":
    sys.exit(app())
