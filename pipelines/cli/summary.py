"""The run summary: versions and metrics, the champion, the gate's decision, drift, stage times, a prediction."""

from __future__ import annotations

import datetime as dt
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from pipelines.cli.common import load_settings
from pipelines.data import datasets, runlog
from pipelines.data.contract import dataset_contract
from pipelines.settings import Settings


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def sample_prediction(settings: Settings, dataset_uri: str) -> dict[str, Any]:
    """Ask the real serving app (in process) for one prediction of a holdout row.

    Its prediction log is off: this row is not served traffic, and the monitor counts what the log holds.
    """
    from fastapi.testclient import TestClient

    from pipelines.serving.app import create_app, wait_until_ready

    contract = dataset_contract(settings)
    row = datasets.read_split(dataset_uri, "holdout", contract.feature_columns).head(1)
    payload = {"rows": row.astype(object).where(row.notna(), None).to_dict(orient="records")}
    with TestClient(create_app(settings.replace(prediction_log=False))) as client:
        wait_until_ready(client)
        response = client.post("/v1/predict", json=payload)
        return {"status": response.status_code, "request": payload, "response": response.json()}


def _versions_table(client: Any, name: str) -> tuple[Table, int]:
    """Every version of the registered model with its aliases, metrics, gate decision and dataset version."""
    versions = sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))
    aliases: dict[str, list[str]] = {}
    if versions:
        for alias, version in client.get_registered_model(name).aliases.items():
            aliases.setdefault(str(version), []).append(alias)
    table = Table(title=f"Model versions of {name}")
    for column in (
        "version",
        "aliases",
        "family",
        "trained on",
        "val roc_auc",
        "holdout roc_auc",
        "gate",
        "dataset version",
    ):
        table.add_column(column)
    for mv in versions:
        metrics = client.get_run(mv.run_id).data.metrics
        table.add_row(
            str(mv.version),
            ", ".join(sorted(aliases.get(str(mv.version), []))) or "-",
            mv.tags.get("model.family", "?"),
            mv.tags.get("logical_date", "?"),
            _fmt(metrics.get("val_roc_auc")),
            _fmt(metrics.get("holdout_roc_auc")),
            mv.tags.get("gate.decision", "-"),
            mv.tags.get("dataset.version", "")[:12],
        )
    return table, len(versions)


def _stages_table(records: dict[dt.date, dict[str, Any]]) -> Table:
    stages = Table(title="Stage times (seconds)")
    stages.add_column("stage")
    for day in records:
        stages.add_column(day.isoformat())
    for stage_name in runlog.STAGES:
        cells = [
            f"{found[stage_name]['seconds']:.1f}" if stage_name in found else "skipped"
            for found in records.values()
        ]
        stages.add_row(stage_name, *cells)
    return stages


def _print_decision(console: Console, day: dt.date, last: dict[str, Any]) -> dict[str, Any]:
    """The day's gate decision with its reasons, and its drift summary; what was printed."""
    printed: dict[str, Any] = {}
    if "gate" in last:
        decision = last["gate"]["result"]
        console.print(f"[bold]Gate decision for {day}:[/bold] {decision['decision'].upper()}")
        for reason in decision["reasons"]:
            console.print(f"  {reason}")
        printed["decision"] = decision
    if "drift" in last:
        drift = last["drift"]["result"]
        drifted = [c for c, v in drift["columns"].items() if v["drifted"]]
        label = drift.get("label") or {}
        label_line = (
            f"; the label {label['method']} {label['score']:.3f}{' (drifted)' if label['drifted'] else ''}"
            if label.get("score") is not None
            else ""
        )
        console.print(
            f"[bold]Drift for {day}[/bold] (vs the {drift['reference']}'s reference profile): "
            f"{drift['drifted_columns']} of {len(drift['columns'])} features drifted "
            f"(share {drift['drift_share']:.2f}){': ' + ', '.join(drifted) if drifted else ''}{label_line}"
        )
        if drift.get("html"):
            console.print(f"  report: {drift['html']}  (also in MLflow: {drift['mlflow_artifacts']})")
        else:  # the day's report is the one that made another version champion
            console.print(f"  report: in MLflow, {drift['mlflow_artifacts']}")
        printed["drift"] = {k: drift[k] for k in ("drifted_columns", "drift_share", "html")}
    return printed


def print_champion(console: Console, settings: Settings, client: Any) -> dict[str, Any]:
    """The champion on the promotion history (the one serving serves, evaluate compares against and a rollback
    starts from), and what is wrong when the MLflow alias says otherwise: an alias moved in MLflow's UI made
    this line name a version nothing else treats as champion."""
    from pipelines.release import audit

    found = audit.audit(settings, client)
    console.print(
        f"[bold]Champion:[/bold] {found.model} v{found.recorded}"
        if found.recorded is not None
        else "[bold]Champion:[/bold] none"
    )
    problem = found.problem()
    if problem:
        console.print(f"[bold red]Champion alias:[/bold red] {problem}")
    return {"champion": found.recorded, "alias_problem": problem}


def print_summary(settings: Settings, dates: list[dt.date], console: Console | None = None) -> dict[str, Any]:
    """Print the summary of the given logical dates (the last one in detail); return what was printed."""
    from pipelines.release import tracking

    console = console or Console(width=max(140, Console().width))
    client = tracking.configure(settings)
    name = settings.model_name
    versions, count = _versions_table(client, name)
    console.print(versions)
    result: dict[str, Any] = print_champion(console, settings, client) | {"versions": count}
    records = {day: runlog.read_records(settings, day) for day in dates}
    console.print(_stages_table(records))
    last = records[dates[-1]]
    result |= _print_decision(console, dates[-1], last)
    if result["champion"] is not None and "prepare" in last:
        prediction = sample_prediction(settings, last["prepare"]["result"]["uri"])
        console.print(
            f"[bold]Serving app, POST /v1/predict[/bold] -> {prediction['status']}: {prediction['response']}"
        )
        result["prediction"] = prediction
    console.print(
        "[bold]UIs:[/bold] `make mlflow` -> http://127.0.0.1:5000 (registry and runs); "
        "`make airflow` -> http://127.0.0.1:8080 (DAG runs, login printed at start); `make serve` -> http://127.0.0.1:8000/docs"
    )
    return result


def summary(
    dates: list[dt.datetime] = typer.Argument(..., help="Logical dates, oldest first.", formats=["%Y-%m-%d"]),
) -> None:
    """Print versions, champion, the last gate decision, drift, stage times and one served prediction."""
    print_summary(load_settings(), [d.date() for d in dates])
