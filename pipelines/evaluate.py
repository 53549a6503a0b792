"""Evaluate: challenger and current champion scored on the same fresh holdout."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import mlflow
import pandas as pd

from pipelines import runlog, storage, tracking
from pipelines.contract import Contract, load_contract
from pipelines.metrics import classification_metrics
from pipelines.settings import Settings

log = logging.getLogger(__name__)


class EvaluationError(RuntimeError):
    """A model could not be scored; the gate treats this as 'do not promote'."""


def score_version(name: str, version: int, holdout: pd.DataFrame, contract: Contract) -> dict[str, float]:
    """Load one registered version and score it on the holdout's raw feature columns."""
    try:
        model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
        predicted = model.predict(holdout[contract.feature_columns])
    except Exception as exc:  # any load or predict failure is a failed evaluation, with its cause
        raise EvaluationError(f"could not score {name} version {version}: {exc}") from exc
    return classification_metrics(holdout[contract.label].to_numpy(), predicted["probability"].to_numpy())


@runlog.stage("evaluate")
def evaluate(
    settings: Settings, logical_date: dt.date, dataset_uri: str, challenger_version: int
) -> dict[str, Any]:
    """Score challenger and champion on the run's holdout; log both to the challenger's MLflow run."""
    client = tracking.configure(settings)
    contract = load_contract(settings.resolved_contract_path)
    name = settings.model_name
    holdout = storage.read_split(dataset_uri, "holdout")
    challenger_metrics = score_version(name, challenger_version, holdout, contract)
    champion = tracking.version_by_alias(client, name, tracking.CHAMPION)
    champion_result = None
    if champion is not None:
        champion_metrics = score_version(name, int(champion.version), holdout, contract)
        champion_result = {"version": int(champion.version), "metrics": champion_metrics}
    run_id = client.get_model_version(name, str(challenger_version)).run_id
    logged = {f"holdout_{k}": v for k, v in challenger_metrics.items()}
    if champion_result:
        logged |= {f"champion_holdout_{k}": v for k, v in champion_result["metrics"].items()}
    for key, value in logged.items():
        client.log_metric(run_id, key, value)
    log.info(
        "holdout: challenger v%s %s; champion %s", challenger_version, challenger_metrics, champion_result
    )
    return {
        "holdout_uri": storage.split_uri(dataset_uri, "holdout"),
        "holdout_rows": len(holdout),
        "challenger": {"version": challenger_version, "metrics": challenger_metrics},
        "champion": champion_result,
    }
