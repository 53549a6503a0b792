"""Register: the trained model becomes a new version of the registered model, alias ``challenger``.

Idempotent: a version is looked up by its source run first, so a retried task never makes a second one.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException

from pipelines import runlog, tracking
from pipelines.settings import Settings

log = logging.getLogger(__name__)

LINEAGE_TAGS = (
    "dataset.hash", "dataset.uri", "dataset.engine", "model.family", "logical_date",
    "airflow.dag_id", "airflow.run_id", "git.commit", "ct.run_key", "reference_profile",
)  # fmt: skip


@runlog.stage("register")
def register(settings: Settings, logical_date: dt.date, run_id: str) -> dict[str, Any]:
    """Register the run's model (once), copy its lineage tags onto the version, point ``challenger`` at it."""
    client = tracking.configure(settings)
    name = settings.model_name
    try:
        client.create_registered_model(name, description="Continuously retrained classifier; see the README.")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    existing = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if existing:
        version = existing[0]
        log.info("run %s is already version %s of %s", run_id, version.version, name)
    else:
        run_tags = client.get_run(run_id).data.tags
        tags = {key: run_tags[key] for key in LINEAGE_TAGS if key in run_tags}
        model_uri = run_tags.get("ct.model_uri")
        if not model_uri:
            raise ValueError(
                f"MLflow run {run_id} has no ct.model_uri tag: it did not finish logging a model"
            )
        version = mlflow.register_model(model_uri, name, tags=tags)
        log.info("registered run %s as version %s of %s", run_id, version.version, name)
    client.set_registered_model_alias(name, tracking.CHALLENGER, version.version)
    version = client.get_model_version(name, version.version)
    return {"name": name, "version": int(version.version), "run_id": run_id, "tags": dict(version.tags)}
