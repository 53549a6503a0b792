"""Drift: an Evidently data drift report of the current window against the champion's reference profile.

Neither side re-reads data: the champion's profile was logged with its model version at training time, and
the current window's profile was written by prepare. Both are rendered as deterministic samples
(:func:`pipelines.data.profile.reference_frame`) for Evidently, whose distance tests (Wasserstein, Jensen-Shannon)
then compare the distributions. The report is saved as HTML and JSON beside the data (atomically) and logged
to the challenger's MLflow run; the summary (drifted columns, share, per-column test and score) goes to the gate.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.data import runlog, storage
from pipelines.data.contract import Contract, dataset_contract
from pipelines.data.profile import PROFILE_FILE, reference_frame
from pipelines.release import audit, tracking
from pipelines.settings import Settings

log = logging.getLogger(__name__)

SAMPLE_ROWS = 5_000


def summarise(snapshot_dict: dict[str, Any]) -> dict[str, Any]:
    """Drifted-column count and share, and each column's test, score and verdict, from Evidently's dict."""
    columns: dict[str, dict[str, Any]] = {}
    count = share = None
    for metric in snapshot_dict["metrics"]:
        config = metric["config"]
        kind = config["type"].rsplit(":", 1)[-1]
        if kind == "DriftedColumnsCount":
            count, share = int(metric["value"]["count"]), float(metric["value"]["share"])
        elif kind == "ValueDrift":
            method, threshold, score = config["method"], float(config["threshold"]), float(metric["value"])
            drifted = score < threshold if "p_value" in method else score >= threshold
            columns[config["column"]] = {
                "method": method,
                "threshold": threshold,
                "score": score,
                "drifted": drifted,
            }
    if count is None:
        raise ValueError("the Evidently report has no DriftedColumnsCount metric")
    return {"drifted_columns": count, "drift_share": share, "columns": columns}


def run_report(reference: pd.DataFrame, current: pd.DataFrame, contract: Contract) -> Any:
    """Run Evidently's DataDriftPreset over the contract's features and label."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(
        numerical_columns=contract.numeric_features,
        categorical_columns=[*contract.categorical_features, contract.label],
    )
    return Report([DataDriftPreset()]).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )


@runlog.stage("drift")
def drift(
    settings: Settings, logical_date: dt.date, dataset_uri: str, challenger_version: int
) -> dict[str, Any]:
    """Compare this run's window with the champion's reference profile (with no champion, the challenger's)."""
    client = tracking.configure(settings)
    contract = dataset_contract(settings)
    champion_version = audit.champion(settings, client)  # the history's; a moved alias is refused
    champion = (
        None
        if champion_version is None
        else client.get_model_version(settings.model_name, str(champion_version))
    )
    challenger = client.get_model_version(settings.model_name, str(challenger_version))
    run_id = tracking.run_of(challenger)
    reference_version = champion or challenger
    profile_uri = reference_version.tags.get("reference_profile")
    if not profile_uri:
        raise ValueError(
            f"model version {reference_version.version} of {settings.model_name} has no reference_profile tag: "
            "it was trained before profiles were logged; retrain it or promote a newer version"
        )
    reference_profile = tracking.load_json_artifact(profile_uri)
    current_profile = storage.read_json(storage.join(dataset_uri, PROFILE_FILE))
    reference = reference_frame(reference_profile, contract, SAMPLE_ROWS, settings.seed)
    current = reference_frame(current_profile, contract, SAMPLE_ROWS, settings.seed)
    snapshot = run_report(reference, current, contract)
    summary = summarise(snapshot.dict())

    report_dir = storage.reports_uri(settings.resolved_data_root, settings.dataset, logical_date)
    with tempfile.TemporaryDirectory(prefix="ct-drift-") as tmp:
        html, raw_json = Path(tmp) / "drift.html", Path(tmp) / "drift.json"
        snapshot.save_html(str(html))
        snapshot.save_json(str(raw_json))
        storage.write_text_atomic(storage.join(report_dir, "drift.html"), html.read_text())
        storage.write_text_atomic(storage.join(report_dir, "drift.json"), raw_json.read_text())
        client.log_artifacts(run_id, tmp, artifact_path="drift")
    client.log_metric(run_id, "drift_share", summary["drift_share"])
    client.log_metric(run_id, "drifted_columns", summary["drifted_columns"])
    log.info("drift: %d of %d columns drifted", summary["drifted_columns"], len(summary["columns"]))
    return {
        **summary,
        "reference": "champion" if champion else "challenger",
        "reference_version": int(reference_version.version),
        "reference_profile": profile_uri,
        "reference_rows": reference_profile["rows"],
        "current_rows": current_profile["rows"],
        "html": storage.join(report_dir, "drift.html"),
        "json": storage.join(report_dir, "drift.json"),
        "mlflow_artifacts": f"runs:/{run_id}/drift",
    }
