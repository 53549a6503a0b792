"""The run summary: versions and metrics, the champion, the gate's decision, drift, stage times, a prediction."""

from __future__ import annotations

import datetime as dt
from typing import Any

from rich.console import Console
from rich.table import Table

from pipelines import runlog, storage, tracking
from pipelines.contract import load_contract
from pipelines.settings import Settings


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def sample_prediction(settings: Settings, dataset_uri: str) -> dict[str, Any]:
    """Ask the real serving app (in process) for one prediction of a holdout row."""
    from fastapi.testclient import TestClient

    from pipelines.serving.app import create_app, wait_until_ready

    contract = load_contract(settings.resolved_contract_path)
    row = storage.read_split(dataset_uri, "holdout", contract.feature_columns).head(1)
    payload = {"rows": row.astype(object).where(row.notna(), None).to_dict(orient="records")}
    with TestClient(create_app(settings)) as client:
        wait_until_ready(client)
        response = client.post("/v1/predict", json=payload)
        return {"status": response.status_code, "request": payload, "response": response.json()}


def print_summary(settings: Settings, dates: list[dt.date], console: Console | None = None) -> dict[str, Any]:
    """Print the summary of the given logical dates (the last one in detail); return what was printed."""
    console = console or Console(width=max(140, Console().width))
    client = tracking.configure(settings)
    name = settings.model_name
    versions = sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))
    champion = tracking.version_by_alias(client, name, tracking.CHAMPION)
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
        "dataset hash",
    ):
        table.add_column(column)
    for mv in versions:
        metrics = client.get_run(mv.run_id).data.metrics
        table.add_row(
            str(mv.version), ", ".join(sorted(aliases.get(str(mv.version), []))) or "-", mv.tags.get("model.family", "?"), mv.tags.get("logical_date", "?"),
            _fmt(metrics.get("val_roc_auc")), _fmt(metrics.get("holdout_roc_auc")), mv.tags.get("gate.decision", "-"),
            mv.tags.get("dataset.hash", "")[:12],
        )  # fmt: skip
    console.print(table)
    console.print(
        f"[bold]Champion:[/bold] {name} v{champion.version}" if champion else "[bold]Champion:[/bold] none"
    )

    stages = Table(title="Stage times (seconds)")
    stages.add_column("stage")
    for day in dates:
        stages.add_column(day.isoformat())
    records = {day: runlog.read_records(settings, day) for day in dates}
    for stage_name in runlog.STAGES:
        cells = [
            f"{records[d][stage_name]['seconds']:.1f}" if stage_name in records[d] else "skipped"
            for d in dates
        ]
        stages.add_row(stage_name, *cells)
    console.print(stages)

    last = records[dates[-1]]
    result: dict[str, Any] = {
        "champion": int(champion.version) if champion else None,
        "versions": len(versions),
    }
    if "gate" in last:
        decision = last["gate"]["result"]
        console.print(f"[bold]Gate decision for {dates[-1]}:[/bold] {decision['decision'].upper()}")
        for reason in decision["reasons"]:
            console.print(f"  {reason}")
        result["decision"] = decision
    if "drift" in last:
        drift = last["drift"]["result"]
        drifted = [c for c, v in drift["columns"].items() if v["drifted"]]
        console.print(
            f"[bold]Drift for {dates[-1]}[/bold] (vs the {drift['reference']}'s reference profile): "
            f"{drift['drifted_columns']} of {len(drift['columns'])} columns drifted "
            f"(share {drift['drift_share']:.2f}){': ' + ', '.join(drifted) if drifted else ''}"
        )
        console.print(f"  report: {drift['html']}  (also in MLflow: {drift['mlflow_artifacts']})")
        result["drift"] = {k: drift[k] for k in ("drifted_columns", "drift_share", "html")}
    if champion and "prepare" in last:
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
